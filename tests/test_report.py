"""longrecipe-report: tables from hand-made results.json folders, exact cells, "—" for missing."""

from __future__ import annotations

import json
import math
from pathlib import Path

import pytest

from longrecipe.reporting import collect_results, main_table, perplexity_table, stage_table
from longrecipe.reporting.tables import niah_m_score, to_markdown


def _write(folder, records, meta=None):
    folder.mkdir(parents=True, exist_ok=True)
    (folder / "results.json").write_text(json.dumps(records))
    if meta is not None:
        (folder / "run_meta.json").write_text(json.dumps(meta))


def _rec(task, score, length=1024, group="ruler", metric="string_match", **kw):
    return {"task": task, "length": length, "score": score, "n": 10, "metric": metric, "model": "m",
            "run_id": "r", "group": group, **kw}


@pytest.fixture()
def runs(tmp_path):
    niah = [_rec("niah_multikey_1", 60.0), _rec("niah_multikey_2", 40.0), _rec("niah_multikey_3", 20.0),
            _rec("niah_multivalue", 70.0), _rec("niah_multiquery", 100.0)]
    # LongRecipe, two lengths: NIAH(M) at 1024 = mean(40, 70, 100) = 70; at 2048 only multikey -> NaN part
    _write(tmp_path / "lr", niah + [_rec("mmlu", 55.0, length=None, group="general", metric="acc")],
           {"model_name": "tiny", "method": "longrecipe", "target_length": 1024, "stage": "merge", "seed": 0})
    _write(tmp_path / "lr" / "replay_eval", [_rec("mmlu", 50.0, length=None, group="general", metric="acc")],
           {"stage": "replay"})
    _write(tmp_path / "pose", [_rec("niah_m", 30.0), _rec("niah_m", 50.0, length=2048),
                               _rec("ppl", 12.5, length=256, group="ppl", metric="ppl"),
                               _rec("ppl", 20.0, length=1024, group="ppl", metric="ppl")],
           {"model_name": "tiny", "method": "pose", "target_length": 1024, "seed": 0})
    return tmp_path


def test_collect_merges_run_meta_nearest_wins(runs):
    frame = collect_results([runs])
    replay = frame[frame["source"].str.contains("replay_eval")]
    assert list(replay["stage"]) == ["replay"] and list(replay["method"]) == ["longrecipe"]


def test_main_table_exact_cells_and_dashes(runs):
    table = main_table(collect_results([runs])).set_index("method")
    assert table.loc["longrecipe", "NIAH(M)"] == pytest.approx(70.0)  # mean(mean(60,40,20), 70, 100)
    assert table.loc["pose", "NIAH(M)"] == pytest.approx(40.0)  # mean over lengths of niah_m records
    assert table.loc["longrecipe", "MMLU"] == pytest.approx(55.0)  # merge stage only
    assert math.isnan(table.loc["pose", "MMLU"])
    md = to_markdown(table.reset_index())
    assert "—" in md and "70.0" in md


def test_niah_m_missing_part_is_not_invented(runs):
    frame = collect_results([runs])
    partial = frame[(frame["task"] == "niah_multikey_1")]
    assert math.isnan(niah_m_score(partial))


def test_stage_and_perplexity_tables(runs):
    frame = collect_results([runs])
    stages = stage_table(frame).set_index(["method", "stage"])
    assert stages.loc[("longrecipe", "replay"), "MMLU"] == pytest.approx(50.0)
    ppl = perplexity_table(frame)
    assert list(ppl.columns[-2:]) == ["ppl@256", "ppl@1024"] and ppl["ppl@1024"].iloc[0] == pytest.approx(20.0)


def test_report_cli_writes_markdown_csv_png(runs, tmp_path):
    from longrecipe.cli.report import run_report
    from longrecipe.config import compose

    cfg = compose("report", [f"runs=[{runs}]", f"output_dir={tmp_path / 'out'}"])
    result = run_report(cfg)
    out = tmp_path / "out"
    assert (out / "report.md").is_file() and (out / "table1_main.csv").is_file()
    assert (out / "perplexity.png").stat().st_size > 1000
    assert "Table 1" in result["markdown"]


def test_report_rejects_missing_folder(tmp_path):
    with pytest.raises(FileNotFoundError, match="report.runs"):
        collect_results([tmp_path / "nope"])


def test_paper_tables_notebook_executes(runs, monkeypatch):
    import nbformat
    from nbclient import NotebookClient

    nb = nbformat.read(Path(__file__).resolve().parents[1] / "notebooks" / "paper_tables.ipynb", as_version=4)
    monkeypatch.setenv("LONGRECIPE_RUNS", str(runs))
    NotebookClient(nb, timeout=120, kernel_name="python3").execute()
    outputs = "".join(
        o.get("text", "") + str(o.get("data", {}).get("text/markdown", ""))
        for cell in nb.cells if cell.cell_type == "code" for o in cell.get("outputs", [])
    )
    assert "Table 1" in outputs and "70.0" in outputs


def test_report_draws_fig3_and_fig4_from_tool_outputs(runs, tmp_path):
    from longrecipe.reporting.report import build_report, load_pos_profile, load_position_stats

    stats = tmp_path / "stats.json"
    stats.write_text(json.dumps({"results": [
        {"scheme": s, "target_length": t, "avg_distance": d, "avg_segment_length": g}
        for s, t, d, g in [("pose", 81920, 20000.0, 12000.0), ("longrecipe", 81920, 27000.0, 60.0)]]}))
    analysis = tmp_path / "analysis.json"
    analysis.write_text(json.dumps({"buckets": [
        {"start": 0, "end": 64, "pos_frequency": {"NUM": 0.4, "PRON": 0.15, "SPACE": 0.1}},
        {"start": 64, "end": 128, "pos_frequency": {"NUM": 0.38, "PRON": 0.16}}]}))
    profile = load_pos_profile([analysis])
    assert sorted(profile["pos"].unique()) == ["NUM", "PRON"] and len(profile) == 4
    assert list(load_position_stats([stats])["scheme"]) == ["pose", "longrecipe"]
    out = build_report([runs], tmp_path / "rep", position_stats=[stats], analyses=[analysis])
    assert {"fig3_positions_png", "fig4_pos_profile_png"} <= set(out["paths"])


def test_table1_uses_each_runs_final_stage_and_full_ruler_only(tmp_path):
    base = {"model_name": "tiny", "target_length": 1024, "seed": 0}
    _write(tmp_path / "pose", [_rec("niah_m", 30.0)], {**base, "method": "pose", "stage": "extend"})
    _write(tmp_path / "lr" / "extend", [_rec("niah_m", 10.0)], {**base, "method": "lr", "stage": "extend"})
    _write(tmp_path / "lr" / "merge", [_rec("niah_m", 50.0)], {**base, "method": "lr", "stage": "merge"})
    table = main_table(collect_results([tmp_path])).set_index("method")
    assert table.loc["pose", "NIAH(M)"] == 30.0 and table.loc["lr", "NIAH(M)"] == 50.0
    assert math.isnan(table.loc["pose", "RULER"])  # only NIAH tasks: not a RULER score


def test_partial_aggregate_records_are_not_taken_as_the_paper_column(tmp_path):
    """eval writes a ``ruler`` / ``niah_m`` / ``longbench`` average even when tasks did not run (naming them in
    the metric); Table 1 must not show such a partial average as the paper's RULER / NIAH(M) / LongBench."""
    from longrecipe.evaluation.ruler import RULER_TASKS
    from longrecipe.reporting.tables import longbench_score, ruler_score

    meta = {"model_name": "tiny", "target_length": 1024, "seed": 0, "method": "lr"}
    ok = [_rec(t, 50.0) for t in RULER_TASKS if t not in ("qa_1", "qa_2")]
    _write(tmp_path / "ruler", ok + [
        _rec("qa_1", None, status="not run (no data)"), _rec("qa_2", None, status="not run (no data)"),
        _rec("ruler", 50.0, metric="string_match (mean of 11 tasks); not run: qa_1, qa_2"),
        _rec("niah_m", 50.0, metric="string_match (mean of 3 categories)")], meta)
    _write(tmp_path / "lb", [_rec("qasper", 40.0, group="longbench", metric="qa_f1"),
                             _rec("longbench", 40.0, group="longbench",
                                  metric="longbench (mean of 1 tasks); not run: narrativeqa")], meta)
    frame = collect_results([tmp_path])
    assert math.isnan(ruler_score(frame))  # qa_1 / qa_2 missing: not RULER, whatever the aggregate says
    assert math.isnan(longbench_score(frame))  # 1 of 21 subsets
    table = main_table(frame).set_index("method")
    assert math.isnan(table.loc["lr", "RULER"]) and math.isnan(table.loc["lr", "LongBench"])
    assert table.loc["lr", "NIAH(M)"] == pytest.approx(50.0)  # a complete aggregate is still used as-is
    # a partial niah_m aggregate falls back to the parts (complete here: 50)
    frame.loc[frame["task"] == "niah_m", ["score", "metric"]] = [99.0, "string_match; not run: niah_multiquery"]
    assert niah_m_score(frame) == pytest.approx(50.0)


def test_ruler_fallback_allows_only_vt_missing(tmp_path):
    from longrecipe.evaluation.ruler import RULER_TASKS
    from longrecipe.reporting.tables import ruler_score

    no_vt = [_rec(t, 60.0) for t in RULER_TASKS if t != "vt"]
    _write(tmp_path / "a", no_vt)
    assert ruler_score(collect_results([tmp_path / "a"])) == pytest.approx(60.0)  # Qwen2: 12 without vt
    no_qa = [_rec(t, 60.0) for t in RULER_TASKS if t != "qa_2"]
    _write(tmp_path / "b", no_qa)
    assert math.isnan(ruler_score(collect_results([tmp_path / "b"])))


def test_report_longbench_subsets_match_the_evaluation():
    from longrecipe.evaluation.longbench import SUBSETS
    from longrecipe.reporting.tables import LONGBENCH_SUBSETS

    assert tuple(SUBSETS) == LONGBENCH_SUBSETS


def test_ablation_and_ratio_runs_are_not_averaged_into_other_rows(tmp_path):
    """Table 1/2 and Fig. 2 rows never average different configurations (ablation runs share method / model /
    length / seed with the main run) nor an earlier stage's evaluation with the final one."""
    from longrecipe.reporting.tables import ablation_table, token_ratio_table

    base = {"model_name": "llama", "target_length": 1024, "seed": 42, "method": "LongRecipe", "stage": "merge"}
    _write(tmp_path / "main", [_rec("niah_m", 80.0)], {**base, "selection": "anchors", "token_ratio": 0.3})
    _write(tmp_path / "main" / "extend_eval", [_rec("niah_m", 10.0)], {"stage": "extend"})
    _write(tmp_path / "none", [_rec("niah_m", 40.0)], {**base, "selection": "none", "token_ratio": 0.3})
    _write(tmp_path / "r10", [_rec("niah_m", 20.0)], {**base, "selection": "anchors", "token_ratio": 0.1})
    frame = collect_results([tmp_path])
    t1 = main_table(frame)
    assert len(t1) == 3 and sorted(t1["NIAH(M)"]) == [20.0, 40.0, 80.0]
    assert {"selection", "token_ratio"} <= set(t1.columns)
    t2 = ablation_table(frame).set_index(["selection", "token_ratio"])
    assert t2.loc[("anchors", 0.3), "NIAH(M)"] == 80.0  # not mean(80, 10) nor mean(80, 20)
    assert t2.loc[("none", 0.3), "NIAH(M)"] == 40.0
    fig2 = token_ratio_table(frame).set_index(["token_ratio", "selection"])
    assert fig2.loc[(0.3, "anchors"), "NIAH(M)"] == 80.0 and fig2.loc[(0.1, "anchors"), "NIAH(M)"] == 20.0


def test_gsm8k_strict_and_flexible_are_not_averaged(tmp_path):
    """lm-eval writes GSM8K under two metrics (two records of task gsm8k); the column takes strict-match."""
    from longrecipe.reporting.tables import general_score

    recs = [_rec("gsm8k", 30.0, length=None, group="general", metric="exact_match,strict-match"),
            _rec("gsm8k", 50.0, length=None, group="general", metric="exact_match,flexible-extract")]
    _write(tmp_path / "a", recs)
    assert general_score(collect_results([tmp_path / "a"]), "GSM8K") == pytest.approx(30.0)  # not 40
    _write(tmp_path / "b", recs[1:])
    assert general_score(collect_results([tmp_path / "b"]), "GSM8K") == pytest.approx(50.0)  # the only metric
    _write(tmp_path / "c", [recs[1], {**recs[1], "metric": "exact_match,other", "score": 10.0}])
    assert math.isnan(general_score(collect_results([tmp_path / "c"]), "GSM8K"))  # ambiguous: "—"


def test_perplexity_rows_keep_configurations_apart(tmp_path):
    base = {"model_name": "tiny", "target_length": 1024, "method": "LongRecipe", "stage": "merge", "seed": 0}
    _write(tmp_path / "r30", [_rec("ppl", 10.0, group="ppl", metric="ppl")], {**base, "token_ratio": 0.3})
    _write(tmp_path / "r10", [_rec("ppl", 30.0, group="ppl", metric="ppl")], {**base, "token_ratio": 0.1})
    ppl = perplexity_table(collect_results([tmp_path])).set_index("token_ratio")
    assert ppl.loc[0.3, "ppl@1024"] == 10.0 and ppl.loc[0.1, "ppl@1024"] == 30.0  # not one row of 20


def test_token_ratio_figure_draws_one_line_per_method(tmp_path, monkeypatch):
    import pandas as pd

    from longrecipe.reporting import figures

    table = pd.DataFrame({"method": ["LongRecipe", "LongRecipe", "PoSE"], "token_ratio": [0.1, 0.3, 0.3],
                          "NIAH(M)": [60.0, 70.0, 65.0]})
    drawn = []
    real = figures.save_figure_atomic

    def capture(fig, path):
        drawn.extend(sorted((line.get_label(), len(line.get_xdata())) for line in fig.axes[0].get_lines()))
        return real(fig, path)

    monkeypatch.setattr(figures, "save_figure_atomic", capture)
    assert figures.token_ratio_figure(table, tmp_path / "f.png").is_file()
    assert drawn == [("LongRecipe NIAH(M)", 2), ("PoSE NIAH(M)", 1)]


def test_tables_carry_the_propagated_standard_error(tmp_path):
    """Each column has a ``<column> se`` companion combined from the records' ``se`` (sqrt(sum w^2 se^2)), shown as
    ``score ± se``; records without ``se`` (older files) leave it unknown."""
    meta = {"model_name": "tiny", "target_length": 1024, "seed": 0, "method": "lr"}
    parts = [("niah_multikey_1", 60.0, 9.0), ("niah_multikey_2", 40.0, 9.0), ("niah_multikey_3", 20.0, 9.0),
             ("niah_multivalue", 70.0, 6.0), ("niah_multiquery", 100.0, 3.0)]
    recs = [_rec(t, s, se=e) for t, s, e in parts] + [_rec(t, s, length=2048, se=e) for t, s, e in parts]
    _write(tmp_path / "a", recs, meta)
    _write(tmp_path / "b", [_rec("niah_m", 50.0)], {**meta, "method": "old"})  # no se: unknown
    table = main_table(collect_results([tmp_path])).set_index("method")
    per_length = math.sqrt(3 * (9.0 / 9) ** 2 + (6.0 / 3) ** 2 + (3.0 / 3) ** 2)  # weights 1/9 x3, 1/3 x2
    assert table.loc["lr", "NIAH(M)"] == pytest.approx(70.0)
    assert table.loc["lr", "NIAH(M) se"] == pytest.approx(math.sqrt(2 * per_length**2) / 2)  # mean of 2 lengths
    assert math.isnan(table.loc["old", "NIAH(M) se"])
    md = to_markdown(table.reset_index())
    assert f"| 70.0 ± {math.sqrt(2 * per_length**2) / 2:.1f} |" in md and "| 50.0 |" in md
    assert "NIAH(M) se" not in md  # folded into the score cell
