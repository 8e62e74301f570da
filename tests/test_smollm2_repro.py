"""`experiment=smollm2_repro` (issue 13): the plan of the real-LLM reproduction (existing base, analysis + selection
feeding LongRecipe, FLT at equal tokens), its bad input, and the same experiment file run end to end with a tiny
base model in place of SmolLM2 (analysis with a RoPE-scaled H', prepared data, text replay, merge, ppl + NIAH)."""

from __future__ import annotations

import json
import math
import os
import subprocess
from pathlib import Path

import pytest

from longrecipe.config import compose
from longrecipe.experiments.tiny_repro import tiny_repro_plan


def test_plan_existing_base_selection_and_equal_tokens(tmp_path):
    cfg = compose("run", ["experiment=smollm2_repro", f"run_dir={tmp_path}"])
    plan = tiny_repro_plan(cfg)
    assert [s.name for s in plan] == [
        "base", "selection", "flt_equal_tokens/seed0", "flt/seed0", "rpes/seed0", "pose/seed0", "longrecipe/seed0",
        # general ability (Table 3): the base and every model the runs produce
        "general/base", "general/flt_equal_tokens/seed0/extend", "general/flt/seed0/extend",
        "general/rpes/seed0/extend", "general/pose/seed0/extend", "general/longrecipe/seed0/extend",
        "general/longrecipe/seed0/replay", "general/longrecipe/seed0/merge"]
    by = {s.name: s.values for s in plan}
    assert by["base"]["inputs"] == {"evaluate": "packaged:smollm2_135m_instruct"}
    assert by["selection"]["stages"] == ["analyze", "prepare"]
    dataset = str((tmp_path / "selection" / "prepare" / "dataset").resolve())
    assert by["longrecipe/seed0"]["dataset"] == dataset and by["longrecipe/seed0"]["meta"] == {"selection": "anchors"}
    assert "dataset" not in by["pose/seed0"]
    assert by["longrecipe/seed0"]["stages"] == ["extend", "replay", "merge", "evaluate"]
    steps = {n: v["extend"]["config"]["trainer"]["max_steps"] for n, v in by.items() if "extend" in v}
    assert steps == {"flt/seed0": 12, "rpes/seed0": 12, "pose/seed0": 12, "longrecipe/seed0": 12,
                     "flt_equal_tokens/seed0": math.ceil(12 * 0.3)}
    assert by["flt_equal_tokens/seed0"]["extend"]["config"]["token_ratio"] == 1.0
    assert by["flt_equal_tokens/seed0"]["meta"] == {"method": "FLT (equal tokens)"}
    assert cfg.analyze.config.long_model == "packaged:smollm2_135m_instruct"
    replayed = by["general/longrecipe/seed0/replay"]
    assert replayed["inputs"] == {"evaluate": str((tmp_path / "runs/longrecipe/seed0/replay/model").resolve())}
    assert replayed["meta"] == {"method": "LongRecipe", "stage": "replay", "seed": 0, "selection": "anchors"}
    assert "selection" not in by["general/pose/seed0/extend"]["meta"]
    assert replayed["evaluate"]["evals"] == ["general_probe", "ppl"]
    assert by["general/flt_equal_tokens/seed0/extend"]["meta"]["method"] == "FLT (equal tokens)"
    # a piece without LongRecipe plans no analysis; FLT at equal tokens runs without FLT at equal steps
    piece = tiny_repro_plan(compose("run", ["experiment=smollm2_repro", "tiny_repro.methods=[pose]"]))
    assert [s.name for s in piece if not s.name.startswith("general/")] == ["base", "flt_equal_tokens/seed0",
                                                                             "pose/seed0"]
    # FLT at equal tokens alone (run.sh flt_equal_tokens): the same sub-run as in the full plan, so the same hash
    alone = tiny_repro_plan(compose("run", ["experiment=smollm2_repro", f"run_dir={tmp_path}", "tiny_repro.methods=[]",
                                            "tiny_repro.evaluate_base=false"]))
    assert [s.name for s in alone] == ["flt_equal_tokens/seed0", "general/base", "general/flt_equal_tokens/seed0/extend"]
    assert alone[0] == next(s for s in plan if s.name == "flt_equal_tokens/seed0")


@pytest.mark.parametrize("overrides,message", [
    (["base_model=null"], r"tiny_repro.pretrain is null, so the methods need an existing base: set base_model="),
    (["tiny_repro.selection_methods=[longrecipe,yarn]"], r"tiny_repro.selection_methods has unknown methods "
                                                         r"\['yarn'\]; allowed: \['flt', 'rpes', 'pose', 'longrecipe'\]"),
    (["tiny_repro.equal_tokens_methods=[pose]"], r"tiny_repro.equal_tokens_methods names \['pose'\], which do not "
                                                 r"train on full-length samples"),
])
def test_bad_plan_input(overrides, message):
    with pytest.raises(ValueError, match=message):
        tiny_repro_plan(compose("run", ["experiment=smollm2_repro", *overrides]))


def test_per_eval_names_must_be_evaluated(tmp_path, tiny_model_dir):
    from longrecipe.pipeline.stages import run_pipeline

    base = tiny_model_dir("llama")
    cfg = compose("run", ["stages=[evaluate]", f"run_dir={tmp_path}", f"base_model={base}", f"+inputs.evaluate={base}",
                          "evaluate.evals=[ppl]", "+evaluate.per_eval={general:{eval:{limit:1}}}"])
    with pytest.raises(ValueError, match=r"evaluate.per_eval has \['general'\], which evaluate.evals=\['ppl'\] does "
                                         r"not run"):
        run_pipeline(cfg)


def test_experiment_file_end_to_end_with_a_tiny_base(tmp_path, tiny_model_dir, state_union_dir):
    """The real experiment file with a tiny base: every sub-run completes, selection feeds LongRecipe's extension,
    replay reads plain inaugural text, and the report carries FLT at equal tokens next to the four methods."""
    from longrecipe.pipeline.stages import run_pipeline

    base = tiny_model_dir("llama", max_position_embeddings=128)
    run_dir = tmp_path / "run"
    cfg = compose("run", [
        "experiment=smollm2_repro", f"run_dir={run_dir}", f"base_model={base}",
        "train_common.groups.model=tiny_llama", "train_common.config.base_length=128",
        "train_common.config.target_length=512", "train_common.config.trainer.enable_progress_bar=false",
        "tiny_repro.methods=[flt,longrecipe]", "extend.config.trainer.max_steps=3",
        "analyze.config.context_length=256", "analyze.config.max_samples=2", "analyze.config.n_buckets=4",
        "analyze.config.long_model_rope.max_position_embeddings=256",
        "analyze.config.long_model_rope.rope_parameters.original_max_position_embeddings=128",
        "+analyze.config.min_pos_count=1", "+analyze.config.min_lift=0.0",
        "replay.config.data.max_length=128",
        "evaluate.config.progress=false",
        "evaluate.per_eval.ppl.eval.lengths=[128,512]", "evaluate.per_eval.ppl.eval.num_windows=1",
        "evaluate.per_eval.ppl.eval.num_buckets=2",
        "evaluate.per_eval.ruler.eval.lengths=[512]", "evaluate.per_eval.ruler.eval.num_samples=1",
        "+evaluate.per_eval.ruler.eval.max_new_tokens=4",
        "+tiny_repro.general.per_eval.general_probe.eval.probe_per_family=2",
        "tiny_repro.general.per_eval.ppl.eval.source=" + str(state_union_dir.parent / "inaugural"),
        "tiny_repro.general.per_eval.ppl.eval.lengths=[128]",
    ])
    summary = run_pipeline(cfg)

    analysis = json.loads((run_dir / "selection" / "analyze" / "analysis" / "analysis.json").read_text())
    assert analysis["anchors"], analysis.get("anchors")
    marker = json.loads((run_dir / "runs/longrecipe/seed0/extend/.longrecipe_stage.json").read_text())
    assert marker["inputs"]["data"] == str((run_dir / "selection" / "prepare" / "dataset").resolve())
    assert marker["inputs"]["model"] == str(base)
    replay = json.loads((run_dir / "runs/longrecipe/seed0/replay/.longrecipe_stage.json").read_text())
    assert replay["status"] == "complete" and replay["outputs"]["tokens"] > 0
    meta = {n: json.loads((run_dir / "runs" / n / "run_meta.json").read_text())
            for n in ("base", "flt/seed0", "longrecipe/seed0", "flt_equal_tokens/seed0")}
    assert meta["flt_equal_tokens/seed0"]["method"] == "FLT (equal tokens)"
    assert meta["longrecipe/seed0"]["selection"] == "anchors"
    flt_eq = json.loads((run_dir / "runs/flt_equal_tokens/seed0/extend/.longrecipe_stage.json").read_text())
    assert flt_eq["outputs"]["global_step"] == 1  # ceil(3 * 0.3)
    ruler = json.loads((run_dir / "runs/longrecipe/seed0/evaluate/ruler/results.json").read_text())
    assert {r["task"] for r in ruler} == {"niah_single_2", "niah_multikey_1"}
    assert {r["length"] for r in ruler} == {512}
    ppl = json.loads((run_dir / "runs/base/evaluate/ppl/results.json").read_text())
    assert {r["length"] for r in ppl} == {128, 512}
    methods = {r["method"] for r in summary["ppl"]}
    assert methods == {"base", "FLT", "FLT (equal tokens)", "LongRecipe"}
    general = {(r["method"], r["stage"], r["task"]) for r in summary["general"]}
    assert {(m, st) for m, st, _ in general} == {("base", "base"), ("FLT", "extend"), ("FLT (equal tokens)", "extend"),
                                                 ("LongRecipe", "extend"), ("LongRecipe", "replay"),
                                                 ("LongRecipe", "merge")}
    assert {t for _, _, t in general} == {"probe_arithmetic", "probe_compare", "probe_sequence", "ppl"}
    md = (run_dir / "report" / "summary.md").read_text()
    assert "General ability, short context" in md and "| LongRecipe | replay |" in md


RUN_SH = Path(__file__).resolve().parents[1] / "experiments" / "smollm2_repro" / "run.sh"
PIECES = ["longrecipe", "short", "flt_equal_tokens", "flt", "seed1", "stagewise", "lambda"]


def _piece_argv(tmp_path: Path, piece: str) -> list[list[str]]:
    """The longrecipe-run command lines ``run.sh <piece>`` launches, from a stub longrecipe-run on PATH."""
    bin_dir, log = tmp_path / "bin", tmp_path / f"{piece}.argv"
    bin_dir.mkdir(parents=True, exist_ok=True)
    stub = bin_dir / "longrecipe-run"
    stub.write_text(f"#!/usr/bin/env bash\nprintf '%s\\x1f' \"$@\" >> {log}\necho >> {log}\n")
    stub.chmod(0o755)
    (tmp_path / "nltk" / "corpora" / "state_union").mkdir(parents=True, exist_ok=True)
    env = {**os.environ, "PATH": f"{bin_dir}:{os.environ['PATH']}", "NLTK_DATA": str(tmp_path / "nltk")}
    subprocess.run(["bash", str(RUN_SH), piece], check=True, env=env, capture_output=True, text=True)
    return [line.rstrip("\x1f").split("\x1f") for line in log.read_text().splitlines()]


@pytest.mark.parametrize("piece", PIECES)
def test_run_sh_pieces_compose(tmp_path, piece):
    """Every piece of run.sh launches overrides the real config accepts (Hydra's -m before them), and the driver
    pieces plan sub-runs; a multirun's first sweep value stands in for its list."""
    calls = _piece_argv(tmp_path, piece)
    assert len(calls) == 1
    argv = calls[0]
    assert "-m" not in argv[1:], f"Hydra flags must come before the overrides: {argv}"
    overrides = [a.split(",")[0] if a.startswith("merge.lambda=") else a for a in argv if a != "-m"]
    assert overrides[0] == "experiment=smollm2_repro"
    cfg = compose("run", overrides)
    if piece in ("lambda", "stagewise"):  # evaluation-only runs of LongRecipe's models keep its selection label
        assert cfg.meta.selection == "anchors"
    if piece == "lambda":
        assert argv[0] == "-m" and cfg.merge["lambda"] == 0.3 and list(cfg.stages) == ["merge", "evaluate"]
    elif cfg.driver is None:
        assert list(cfg.stages) == ["evaluate"] and "ruler" not in cfg.evaluate.per_eval
    else:
        assert tiny_repro_plan(cfg)


def test_run_sh_all_runs_every_piece_then_the_report(tmp_path):
    calls = _piece_argv(tmp_path, "all")
    singles = [_piece_argv(tmp_path / p, p)[0] for p in
               ("longrecipe", "short", "flt_equal_tokens", "stagewise", "lambda", "seed1", "flt")]
    assert calls == [*singles, ["experiment=smollm2_repro"]]
