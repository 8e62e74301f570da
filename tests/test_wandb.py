"""wandb end to end, read back from the offline run files (no mocks): a tiny `longrecipe-run` sweep of the skip bound
M over two position schemes (FLT, LongRecipe) with `wandb=offline`, `longrecipe-positions` and `longrecipe-report`;
then the dashboard definition is built and checked against the keys those runs logged.

One module fixture runs the commands (~40 s on 2 cores); the tests read what they wrote.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest

from longrecipe.cli.positions import run_positions
from longrecipe.cli.report import run_report
from longrecipe.config import compose
from longrecipe.tracking.layout import stable_run_id
from longrecipe.tracking.offline import find_offline_runs, iter_records

REPO = Path(__file__).resolve().parents[1]
EXPERIMENT = "tiny_repro_quick"
TINY = ["tiny_repro.methods=[flt,longrecipe]", "tiny_repro.pretrain.config.trainer.max_steps=3",
        "tiny_repro.pretrain.config.data.n_docs=24", "extend.config.trainer.max_steps=2", "extend.config.data.n_docs=24",
        "replay.config.data.num_synthetic=8", "evaluate.evals=[ppl,niah_m]", "evaluate.config.eval.lengths=[128,256]",
        "evaluate.config.eval.num_windows=1", "evaluate.config.eval.min_words=800",
        "evaluate.config.eval.num_samples=2", "evaluate.config.eval.num_depths=4",
        "evaluate.config.eval.max_new_tokens=4"]


def _run(args: list[str], cwd: Path) -> None:
    env = {**os.environ, "TOKENIZERS_PARALLELISM": "false", "WANDB_MODE": "offline"}
    env.pop("WANDB_API_KEY", None)
    out = subprocess.run([sys.executable, "-m", *args], cwd=cwd, env=env, capture_output=True, text=True, timeout=600)
    assert out.returncode == 0, out.stderr[-4000:]


@pytest.fixture(scope="module")
def tracked(tmp_path_factory, tiny_tokenizer_dir):
    root = tmp_path_factory.mktemp("wandb_sweep")
    _run(["longrecipe.cli.run", "-m", f"experiment={EXPERIMENT}", "sweep=max_skip",
          "extend.config.position.max_skip=16,64", "wandb=offline", f"sweep_root={root / 'sw'}",
          f"hydra.sweep.dir={root / 'multirun'}", *TINY], REPO)
    # the two stand-alone commands in-process (their Hydra entry points call exactly these)
    run_positions(compose("positions", ["wandb=offline", "target_lengths=[512]", "num_samples=1", "synthetic_docs=40",
                                        f"tokenizer={tiny_tokenizer_dir}", f"output_dir={root / 'positions'}"]))
    run_report(compose("report", [f"runs=[{root / 'sw' / 'max_skip'}]", "wandb=offline", f"wandb.group={EXPERIMENT}",
                                  f"output_dir={root / 'report'}"]))
    runs = find_offline_runs(root)
    return {"root": root, "runs": runs}


def _by(runs, job_type, method=None):
    return [r for r in runs if r.job_type == job_type
            and (method is None or r.config.get("longrecipe", {}).get("method") == method)]


def test_every_stage_lands_with_the_run_layout(tracked):
    runs = tracked["runs"]
    assert {r.job_type for r in runs} == {"base", "extend", "replay", "merge", "evaluate", "report", "positions"}
    assert {r.group for r in runs if r.job_type != "positions"} == {EXPERIMENT}
    assert {r.project for r in runs} == {"longrecipe"}
    for r in runs:  # identity: the run folder, hashed into a stable id
        run_folder = r.folder.parent.parent  # <run folder>/wandb/offline-run-*
        assert r.run_id == stable_run_id(run_folder, r.job_type)
        assert r.config["longrecipe"]["run_dir"] == str(run_folder)
    assert len({r.run_id for r in runs}) == len(runs)
    for r in _by(runs, "extend", "LongRecipe") + _by(runs, "evaluate", "FLT"):
        method = r.config["longrecipe"]["method"]
        assert r.tags == [method, "len512", "tiny_llama"]


def test_sweep_shares_the_runs_M_does_not_change(tracked):
    runs = tracked["runs"]
    flt = _by(runs, "extend", "FLT")
    lr = _by(runs, "extend", "LongRecipe")
    assert len(flt) == 1 and len(lr) == 2  # FLT ran once for both points; LongRecipe once per M
    assert sorted(r.config["position"]["max_skip"] for r in lr) == [16, 64]  # the resolved training config
    assert sorted(r.config["longrecipe"]["max_skip"] for r in lr) == [16, 64]
    assert "max_skip" not in flt[0].config["position"] and "max_skip" not in flt[0].config["longrecipe"]
    assert flt[0].config["position"]["_target_"] == "longrecipe.positions.FullLength"
    assert sorted(r.name for r in lr) == ["LongRecipe M16 r0.3 seed0 extend", "LongRecipe M64 r0.3 seed0 extend"]
    assert len(_by(runs, "evaluate", "FLT")) == 2  # ppl and niah_m, once
    assert len(_by(runs, "evaluate", "LongRecipe")) == 4  # two groups x two M


def test_eval_table_holds_the_records(tracked):
    runs = tracked["runs"]
    for r in _by(runs, "evaluate"):
        group = r.config["longrecipe"]["eval"]
        folder = Path(r.config["longrecipe"]["run_dir"])
        records = json.loads((folder / "results.json").read_text())
        rows = r.table(f"eval/{group}/results")
        assert list(rows[0])[:6] == ["task", "length", "depth", "score", "n", "status"]
        assert {"metric", "model", "run_id", "group"} <= set(rows[0])  # every other flat record field
        assert len(rows) == len(records)
        for row, rec in zip(rows, records):
            assert row["depth"] is None and {k: row[k] for k in rec} == rec
    niah = [r for r in _by(runs, "evaluate") if r.config["longrecipe"]["eval"] == "niah_m"]
    statuses = {row["status"] for r in niah for row in r.table("eval/niah_m/results")}
    assert {"ok", "not run (length too short)"} <= statuses


def test_eval_history_and_figures(tracked):
    from PIL import Image

    runs = tracked["runs"]
    for r in _by(runs, "evaluate"):
        group = r.config["longrecipe"]["eval"]
        records = json.loads((Path(r.config["longrecipe"]["run_dir"]) / "results.json").read_text())
        headline = {rec["length"]: rec["score"] for rec in records if rec["task"] == group and rec["score"] is not None}
        logged = {row["eval/length"]: row[f"eval/{group}/{group}"] for row in r.history
                  if f"eval/{group}/{group}" in row}
        assert logged == pytest.approx(headline, rel=1e-12) and logged  # score / ppl vs length, per run
        assert r.metrics[f"eval/{group}/*"] == "eval/length"
        assert r.summary[f"eval/{group}/mean"] == pytest.approx(sum(headline.values()) / len(headline))
        key = "eval/ppl/ppl_by_position" if group == "ppl" else "eval/niah_m/niah_heatmap"
        (png,) = r.image_paths(key)
        assert Image.open(png).format == "PNG" and Image.open(png).size[0] > 100
        if group == "niah_m":
            depth = r.table("eval/niah_m/by_depth")
            samples = [json.loads(x) for x in (Path(r.config["longrecipe"]["run_dir"]) / "samples.jsonl")
                       .read_text().splitlines() if x.strip()]
            assert sum(row["n"] for row in depth) == len(samples) > 0
            assert {row["depth"] for row in depth} == {round(s["depth"], 4) for s in samples}


def test_training_logs_compute(tracked):
    from safetensors.torch import load_file
    from transformers import AutoConfig

    from longrecipe.training.telemetry import flops_per_token

    for r in _by(tracked["runs"], "extend", "LongRecipe"):
        stage = Path(r.config["longrecipe"]["run_dir"]).parent
        marker = json.loads((stage / ".longrecipe_stage.json").read_text())
        assert r.summary["compute/tokens"] == marker["outputs"]["tokens"] == 2 * 8 * 154  # steps x batch x 30% of 512
        model = stage / "model"
        weights = load_file(str(model / "model.safetensors"))
        n = sum(t.numel() for k, t in weights.items() if "embed_tokens" not in k)
        if "lm_head.weight" not in weights:  # tied head: its matmul still counts
            n += weights["model.embed_tokens.weight"].numel()
        expected = flops_per_token(AutoConfig.from_pretrained(model), 154, n) * 2 * 8 * 154
        assert r.summary["compute/flops"] == pytest.approx(expected, rel=1e-6)
        assert 0 < r.summary["compute/wall_s"] < 120
        assert [row["compute/tokens"] for row in r.history if "compute/tokens" in row] == [8 * 154, 2 * 8 * 154]


def test_report_and_positions_runs(tracked):
    root, runs = tracked["root"], tracked["runs"]
    reports = _by(runs, "report")
    assert len(reports) == 3  # one per sweep point (driver) + the sweep-wide longrecipe-report
    (wide,) = [r for r in reports if Path(r.config["longrecipe"]["run_dir"]) == root / "report"]
    main = wide.table("report/table1_main")
    assert sorted((row["method"], row["max_skip"]) for row in main if row["method"] != "base") == \
        [("FLT", None), ("LongRecipe", 16.0), ("LongRecipe", 64.0)]  # side by side; FLT once
    assert {"report/table2_ablation", "report/table3_stages", "report/perplexity", "report/scores"} <= \
        set(wide.table_keys())
    (png,) = wide.image_paths("report/perplexity")
    assert png.is_file()
    series = wide.table("report/ppl_vs_length_table")
    assert {row["lineKey"] for row in series} >= {"FLT extend len512 ratio=1", "LongRecipe merge len512 ratio=0.3 M=16 λ=0.5",
                                                   "LongRecipe merge len512 ratio=0.3 M=64 λ=0.5"}
    (pos,) = _by(runs, "positions")
    stats = json.loads((root / "positions" / "stats.json").read_text())["results"]
    rows = pos.table("positions/stats")
    assert [row["scheme"] for row in rows] == [s["scheme"] for s in stats]
    assert [row["avg_distance"] for row in rows] == [s["avg_distance"] for s in stats]
    assert pos.image_paths("positions/figure")[0].is_file()


def test_dashboard_builds_against_logged_keys(tracked, tmp_path):
    from longrecipe.cli.dashboard import run_dashboard

    cfg = compose("dashboard", [f"check_runs=[{tracked['root']}]", f"output_dir={tmp_path}",
                                f"filters.experiment={EXPERIMENT}"])
    result = run_dashboard(cfg)
    assert result["missing"] == [] and result["checked_runs"] == len(tracked["runs"])
    assert "history:eval/ppl/ppl" in result["keys"] and "config:longrecipe.max_skip" in result["keys"]
    saved = json.loads((tmp_path / "dashboard.json").read_text())
    assert [s["name"] for s in saved["sections"]][0] == "Methods side by side"
    assert saved["workspace"]["project"] == "longrecipe"
    bad = compose("dashboard", [f"check_runs=[{tracked['root']}]", f"output_dir={tmp_path / 'b'}", "evals=[ruler]",
                                "sections=[methods]"])
    with pytest.raises(ValueError, match=r"keys no run .* logged: \['history:eval/ruler/ruler'"):
        run_dashboard(bad)


def test_offline_reader_rejects_other_files(tmp_path):
    (tmp_path / "x.wandb").write_bytes(b"not a log")
    with pytest.raises(ValueError, match="is not a wandb transaction log"):
        list(iter_records(tmp_path / "x.wandb"))


@pytest.mark.slow
def test_standalone_merge_logs_a_merge_run(tmp_path, tiny_model_dir):
    base, tuned = tiny_model_dir(seed=0), tiny_model_dir(seed=1)
    _run(["longrecipe.cli.merge", f"original={base}", f"tuned={tuned}", "merge.lambda=0.25", "wandb=offline",
          f"output={tmp_path / 'merged'}", f"hydra.run.dir={tmp_path / 'run'}", "progress=false"], REPO)
    (run,) = find_offline_runs(tmp_path)
    assert run.job_type == "merge" and run.group == "default"
    assert run.summary["stage/weights/0"] == 0.75 and run.summary["stage/weights/1"] == 0.25
    assert run.config["merge"]["lambda"] == 0.25 and not (tmp_path / "merged" / "wandb").exists()


@pytest.mark.slow
def test_pipeline_evaluate_and_report_stages_log(tmp_path, tiny_model_dir):
    from longrecipe.pipeline import run_pipeline

    model = tiny_model_dir(seed=0)
    run_pipeline(compose("run", ["stages=[evaluate,report]", f"base_model={model}", f"+inputs.evaluate={model}",
                                 f"run_dir={tmp_path}", "wandb=offline", "experiment_name=probe",
                                 "evaluate.config.eval.lengths=[32,64]", "evaluate.config.eval.num_windows=1",
                                 "evaluate.config.eval.min_words=300", "+evaluate.config.progress=false"]))
    runs = {r.job_type: r for r in find_offline_runs(tmp_path)}
    assert set(runs) == {"evaluate", "report"} and {r.group for r in runs.values()} == {"probe"}
    assert runs["evaluate"].table("eval/ppl/results")[0]["task"] == "ppl"
    assert runs["report"].table("report/perplexity")[0]["ppl@32"] == pytest.approx(
        runs["evaluate"].summary["eval/ppl/ppl@32"])


def test_tracking_settings_modes():
    from longrecipe.tracking.layout import tracking_settings

    assert tracking_settings(compose("evaluate", ["model_path=x"]).wandb) is None  # disabled by default
    on = tracking_settings(compose("evaluate", ["model_path=x", "wandb=offline"]).wandb)
    assert on["mode"] == "offline" and on["project"] == "longrecipe"
    assert tracking_settings({"enabled": True, "mode": "dryrun"})["mode"] == "offline"
    with pytest.raises(ValueError, match=r"wandb.mode must be one of \['offline', 'online', 'disabled'\], got 'sync'"):
        tracking_settings({"enabled": True, "mode": "sync"})
