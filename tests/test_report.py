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
