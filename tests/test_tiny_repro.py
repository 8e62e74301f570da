"""The tiny CPU reproduction: the plan (pure), bad input, and `experiment=tiny_repro_quick` end to end through the
real Hydra config (pretrain -> 4 methods -> replay + merge -> ppl -> report), resumed without recomputation."""

from __future__ import annotations

import json
import time

import pytest

from longrecipe.config import compose
from longrecipe.experiments.tiny_repro import ppl_by_method, summary_markdown, tiny_repro_plan


def test_plan_layout_and_per_method_settings(tmp_path):
    cfg = compose("run", ["experiment=tiny_repro", f"run_dir={tmp_path}", "tiny_repro.seeds=[0,3]"])
    plan = tiny_repro_plan(cfg)
    assert [s.name for s in plan] == ["pretrain", "base", "flt/seed0", "flt/seed3", "rpes/seed0", "rpes/seed3",
                                      "pose/seed0", "pose/seed3", "longrecipe/seed0", "longrecipe/seed3"]
    pre = plan[0].values
    assert pre["stages"] == ["base", "extend"] and pre["extend"]["groups"]["position"] == "flt"
    assert pre["extend"]["config"]["target_length"] == 256 and pre["extend"]["config"]["token_ratio"] == 1.0
    pretrained = str((tmp_path / "pretrain" / "extend" / "model").resolve())
    assert plan[1].values["inputs"] == {"evaluate": pretrained} and plan[1].values["meta"]["method"] == "base"
    by = {s.name: s.values for s in plan}
    assert by["flt/seed3"]["extend"]["config"]["token_ratio"] == 1.0  # FLT: full-length samples
    assert "token_ratio" not in by["pose/seed0"]["extend"]["config"]  # the others: train_common's 0.3
    assert by["pose/seed0"]["extend"]["groups"]["position"] == "pose"
    assert by["longrecipe/seed3"]["stages"] == ["extend", "replay", "merge", "evaluate"]
    assert by["rpes/seed0"]["stages"] == ["extend", "evaluate"]
    assert by["longrecipe/seed3"]["train_common"] == {"config": {"seed": 3}}
    steps = {by[n]["extend"]["config"]["trainer"]["max_steps"] for n in by if "/" in n}
    assert steps == {60}  # identical steps for every method
    assert plan[4].run_dir == str(tmp_path / "runs" / "rpes" / "seed0")


@pytest.mark.parametrize("override,message", [
    ("tiny_repro.methods=[flt,yarn]", r"tiny_repro.methods has unknown methods \['yarn'\]; allowed: \['flt', 'rpes'"),
    ("tiny_repro.methods=[]", r"tiny_repro.methods must list methods from"),  # equal_tokens_methods is [] there
    ("tiny_repro.seeds=[-1]", r"tiny_repro.seeds must be a non-empty list of integers >= 0, got \[-1\]"),
])
def test_bad_plan_input(override, message):
    with pytest.raises(ValueError, match=message):
        tiny_repro_plan(compose("run", ["experiment=tiny_repro", override]))


def test_summary_table_exact():
    ppl = [{"method": "base", "stage": "base", "length": 128, "ppl": 2.0, "ppl_min": 2.0, "ppl_max": 2.0, "seeds": 1},
           {"method": "base", "stage": "base", "length": 512, "ppl": 6.0, "ppl_min": 6.0, "ppl_max": 6.0, "seeds": 1},
           {"method": "LongRecipe", "stage": "extend", "length": 512, "ppl": 9.0, "ppl_min": 9, "ppl_max": 9, "seeds": 2},
           {"method": "LongRecipe", "stage": "merge", "length": 128, "ppl": 2.5, "ppl_min": 2.25, "ppl_max": 2.75,
            "seeds": 2},
           {"method": "LongRecipe", "stage": "merge", "length": 512, "ppl": 3.0, "ppl_min": 2.5, "ppl_max": 3.5,
            "seeds": 2}]
    assert ppl_by_method(ppl) == {"base": {128: 2.0, 512: 6.0}, "LongRecipe": {128: 2.5, 512: 3.0}}
    md = summary_markdown({"ppl": ppl})
    assert "| base | base | 1 | 2.00 | 6.00 |" in md
    assert "| LongRecipe | merge | 2 | 2.50 [2.25, 2.75] | 3.00 [2.50, 3.50] |" in md


@pytest.fixture(scope="module")
def quick_run(tmp_path_factory):
    from longrecipe.pipeline.stages import run_pipeline

    run_dir = tmp_path_factory.mktemp("quick")
    cfg = compose("run", ["experiment=tiny_repro_quick", f"run_dir={run_dir}"])
    t0 = time.time()
    summary = run_pipeline(cfg)
    return run_dir, summary, time.time() - t0, cfg


def test_quick_repro_end_to_end(quick_run):
    run_dir, summary, _, _ = quick_run
    for sub in ("base", "flt/seed0", "rpes/seed0", "pose/seed0", "longrecipe/seed0"):
        meta = json.loads((run_dir / "runs" / sub / "run_meta.json").read_text())
        assert meta["experiment"] == "tiny_repro_quick" and meta["model_name"] == "tiny_llama"
        assert meta["target_length"] == (128 if sub == "base" else 512)
        results = json.loads((run_dir / "runs" / sub / "evaluate" / "ppl" / "results.json").read_text())
        assert {r["length"] for r in results} == {128, 256, 512}
        # 4 buckets: round(linspace(1, L, 5)) with half-to-even (128.5 -> 128)
        assert {r["task"] for r in results} == {"ppl", "ppl[1:33]", "ppl[33:64]", "ppl[64:96]", "ppl[96:128]",
                                                "ppl[1:65]", "ppl[65:128]", "ppl[128:192]", "ppl[192:256]",
                                                "ppl[1:129]", "ppl[129:256]", "ppl[256:384]", "ppl[384:512]"}
    lr = json.loads((run_dir / "runs" / "longrecipe/seed0" / "run_meta.json").read_text())
    assert lr["method"] == "LongRecipe" and lr["merge_lambda"] == 0.5 and lr["token_ratio"] == 0.3
    flt = json.loads((run_dir / "runs" / "flt/seed0" / "run_meta.json").read_text())
    assert flt["method"] == "FLT" and flt["token_ratio"] == 1.0
    assert json.loads((run_dir / "runs/longrecipe/seed0/evaluate/run_meta.json").read_text()) == {"stage": "merge"}
    for name in ("report.md", "perplexity.csv", "perplexity.png", "summary.json", "summary.md"):
        assert (run_dir / "report" / name).is_file(), name
    methods = ppl_by_method(summary["ppl"])
    assert set(methods) == {"base", "FLT", "RPES", "PoSE", "LongRecipe"}
    assert all(set(v) == {128, 256, 512} for v in methods.values())


def test_quick_repro_base_degrades_beyond_window_extended_less(quick_run):
    _, summary, _, _ = quick_run
    ppl = ppl_by_method(summary["ppl"])
    base = ppl["base"]
    assert base[512] > 1.1 * base[128]  # the base model degrades at 4x its window
    for method in ("FLT", "PoSE", "LongRecipe"):  # extended models degrade much less (RPES is noisier)
        assert ppl[method][512] < base[512], method
        assert ppl[method][512] / ppl[method][128] < base[512] / base[128], method


def test_quick_repro_resumes_without_recomputing(quick_run):
    from longrecipe.pipeline.stages import run_pipeline

    run_dir, first, _, cfg = quick_run
    t0 = time.time()
    again = run_pipeline(cfg)
    assert time.time() - t0 < 60
    assert all(v == 0.0 for stages in again["stage_seconds"].values() for v in stages.values())
    assert again["ppl"] == first["ppl"]
