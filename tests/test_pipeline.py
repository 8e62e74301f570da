"""The named-stage pipeline: markers, skip/redo/refuse logic (toy stages), and the real tiny run with a kill."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest
from omegaconf import OmegaConf

from longrecipe.config import compose
from longrecipe.pipeline import (
    MARKER,
    Stage,
    StageConfigChangedError,
    StageInput,
    StageRegistry,
    read_marker,
    run_stages,
)
from longrecipe.pipeline.registry import default_configure

REPO = Path(__file__).resolve().parents[1]


# ---------------------------------------------------------------- toy stages
def _toy_registry(calls: list[str], fail_in: set[str] | None = None) -> StageRegistry:
    fail_in = fail_in if fail_in is not None else set()

    def make(name: str):
        def run(cfg: dict, inputs: dict[str, Path], out_dir: Path) -> dict:
            calls.append(name)
            if name in fail_in:
                (out_dir / "partial.txt").write_text("half")
                raise RuntimeError(f"{name} crashed")
            src = "".join(Path(p).read_text() for p in inputs.values() if p is not None and Path(p).is_file())
            out = out_dir / "out.txt"
            out.write_text(src + f"{name}({cfg.get('value')})|")
            return {"path": str(out)}

        return run

    reg = StageRegistry()
    reg.register(Stage("base", make("base"), default_configure, produces="base_model"))
    reg.register(Stage("extend", make("extend"), default_configure, produces="model",
                       inputs=(StageInput("model", kind="base_model"),)))
    reg.register(Stage("replay", make("replay"), default_configure, produces="model",
                       inputs=(StageInput("model", kind="model"),)))
    reg.register(Stage("merge", make("merge"), default_configure, produces="model",
                       inputs=(StageInput("tuned", kind="model"), StageInput("original", kind="base_model"))))
    return reg


def _cfg(**values):
    return OmegaConf.create({name: {"value": values.get(name, 1)} for name in ("base", "extend", "replay", "merge")})


ALL = ["base", "extend", "replay", "merge"]


def test_skip_unchanged_and_chain_inputs(tmp_path):
    calls: list[str] = []
    reg = _toy_registry(calls)
    recs = run_stages(_cfg(), run_dir=tmp_path, stages=["merge", "replay", "base", "extend"], registry=reg)
    assert calls == ALL and list(recs) == ALL
    assert (tmp_path / "merge" / "out.txt").read_text() == "base(1)|extend(1)|replay(1)|base(1)|merge(1)|"
    marker = read_marker(tmp_path / "extend")
    assert marker["status"] == "complete" and marker["inputs"] == {"model": str(tmp_path / "base" / "out.txt")}
    assert len(marker["config_hash"]) == 16 and marker["outputs"]["path"] == str(tmp_path / "extend" / "out.txt")
    calls.clear()
    recs = run_stages(_cfg(), run_dir=tmp_path, stages=ALL, registry=reg)
    assert calls == [] and all(r["skipped"] for r in recs.values())
    assert "skipped (complete)" in (tmp_path / "pipeline.md").read_text()


def test_changed_config_refused_then_forced(tmp_path):
    calls: list[str] = []
    reg = _toy_registry(calls)
    run_stages(_cfg(), run_dir=tmp_path, stages=ALL, registry=reg)
    calls.clear()
    with pytest.raises(StageConfigChangedError, match=r"stage 'extend' in .* was completed with a different config.*"
                                                      r"pass force=\[extend\]"):
        run_stages(_cfg(extend=2), run_dir=tmp_path, stages=ALL, registry=reg)
    assert calls == []  # base was skipped, nothing ran
    run_stages(_cfg(extend=2), run_dir=tmp_path, stages=ALL, registry=reg, force=["extend"])
    # extend redone; replay and merge redone because their input stage was re-run
    assert calls == ["extend", "replay", "merge"]
    assert (tmp_path / "merge" / "out.txt").read_text() == "base(1)|extend(2)|replay(1)|base(1)|merge(1)|"


def test_interrupted_stage_is_redone_cleanly(tmp_path):
    calls: list[str] = []
    with pytest.raises(RuntimeError, match="replay crashed"):
        run_stages(_cfg(), run_dir=tmp_path, stages=ALL, registry=_toy_registry(calls, {"replay"}))
    assert read_marker(tmp_path / "replay")["status"] == "running"
    assert (tmp_path / "replay" / "partial.txt").exists() and not (tmp_path / "merge").exists()
    calls.clear()
    recs = run_stages(_cfg(), run_dir=tmp_path, stages=ALL, registry=_toy_registry(calls))
    assert calls == ["replay", "merge"] and recs["extend"]["skipped"] and not recs["replay"]["skipped"]
    assert not (tmp_path / "replay" / "partial.txt").exists()
    assert not [p for p in tmp_path.iterdir() if ".stale-" in p.name]
    # a stage folder without marker (killed before the marker was written) is redone too
    (tmp_path / "merge" / MARKER).unlink()
    calls.clear()
    run_stages(_cfg(), run_dir=tmp_path, stages=ALL, registry=_toy_registry(calls))
    assert calls == ["merge"]


def test_subset_override_and_errors(tmp_path):
    calls: list[str] = []
    reg = _toy_registry(calls)
    run_stages(_cfg(), run_dir=tmp_path, stages=["base", "extend", "merge"], registry=reg)
    assert calls == ["base", "extend", "merge"]
    assert (tmp_path / "merge" / "out.txt").read_text() == "base(1)|extend(1)|base(1)|merge(1)|"
    ext = tmp_path / "external.txt"
    ext.write_text("EXT|")
    calls.clear()
    run_stages(_cfg(), run_dir=tmp_path / "b", stages=["base", "replay"], registry=reg,
               input_overrides={"replay": str(ext)})
    assert (tmp_path / "b" / "replay" / "out.txt").read_text() == "EXT|replay(1)|"
    with pytest.raises(ValueError, match=r"stages has unknown names \['finetune'\]"):
        run_stages(_cfg(), run_dir=tmp_path, stages=["finetune"], registry=reg)
    with pytest.raises(ValueError, match="stage 'evaluate' is not available in this codebase"):
        run_stages(_cfg(), run_dir=tmp_path, stages=["evaluate"], registry=reg)
    with pytest.raises(ValueError, match=r"stage 'replay' needs input 'model' from a stage producing 'model'.*"
                                         r"inputs.replay=<path>"):
        run_stages(_cfg(), run_dir=tmp_path / "c", stages=["replay"], registry=reg)


def test_run_config_composes():
    cfg = compose("run", ["stages=[extend,merge]", "merge.lambda=0.3"])
    assert list(cfg.stages) == ["extend", "merge"] and cfg.merge["lambda"] == 0.3
    assert cfg.replay.config.optim.lr == 5e-6 and cfg.replay.groups.data == "replay"
    from longrecipe.pipeline import default_registry

    reg = default_registry()
    assert {"base", "extend", "replay", "merge"} <= set(reg.names())
    ext = reg.get("extend").configure(cfg, "extend")
    assert ext["groups"]["model"] == "tiny_llama" and ext["groups"]["position"] == "longrecipe"
    assert ext["config"]["target_length"] == 1024 and ext["config"]["trainer"]["max_steps"] == 24


# ---------------------------------------------------------------- the real tiny run, killed during replay
def _run_cli(args: list[str], cwd: Path, **kw) -> subprocess.Popen:
    env = {**os.environ, "OMP_NUM_THREADS": "1", "TOKENIZERS_PARALLELISM": "false", "WANDB_MODE": "offline"}
    return subprocess.Popen([sys.executable, "-m", "longrecipe.cli.run", *args], cwd=cwd, env=env,
                            stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True, start_new_session=True, **kw)


def test_tiny_run_killed_during_replay_resumes(tmp_path):
    run_dir = tmp_path / "run"
    small = [f"run_dir={run_dir}", "extend.config.trainer.max_steps=3", "extend.config.trainer.limit_val_batches=1",
             "extend.config.data.n_docs=12", "replay.config.data.num_synthetic=64",
             "replay.config.data.max_tokens=300", "train_common.groups.logger=none"]
    proc = _run_cli([*small, "replay.debug_sleep_s=120"], tmp_path)
    deadline = time.time() + 400
    try:
        while time.time() < deadline:
            marker = read_marker(run_dir / "replay")
            if marker and marker["status"] == "running":
                break
            if proc.poll() is not None:
                pytest.fail(f"run ended early: {proc.stdout.read()[-3000:]}")
            time.sleep(0.5)
        else:
            pytest.fail("replay never started")
        os.killpg(proc.pid, signal.SIGKILL)
    finally:
        proc.wait(timeout=60)
    extend_marker = read_marker(run_dir / "extend")
    assert extend_marker["status"] == "complete" and read_marker(run_dir / "replay")["status"] == "running"
    assert not (run_dir / "merge").exists()

    proc = _run_cli(small, tmp_path)
    out, _ = proc.communicate(timeout=400)
    assert proc.returncode == 0, out[-4000:]
    summary = json.loads((run_dir / "pipeline.json").read_text())
    assert summary["base"]["skipped"] and summary["extend"]["skipped"]
    assert not summary["replay"]["skipped"] and not summary["merge"]["skipped"]
    assert read_marker(run_dir / "extend")["run_id"] == extend_marker["run_id"]
    for stage in ("replay", "merge"):
        assert read_marker(run_dir / stage)["status"] == "complete"
    merged = run_dir / "merge" / "model"
    prov = json.loads((merged / "longrecipe.json").read_text())
    assert prov["weights"] == [0.5, 0.5] and prov["original"]["path"] == str(run_dir / "base" / "model")
    assert prov["tuned"][0]["path"] == str(run_dir / "replay" / "model")
    cfg = json.loads((merged / "config.json").read_text())
    assert cfg["max_position_embeddings"] == 1024 and cfg["rope_parameters"]["rope_type"] == "dynamic"

    # a changed extend config is detected and refused, naming the stage and the fix
    proc = _run_cli([*small[:1], "extend.config.trainer.max_steps=4", *small[2:]], tmp_path)
    out, _ = proc.communicate(timeout=300)
    assert proc.returncode != 0
    assert "stage 'extend'" in out and "force=[extend]" in out


def test_run_meta_of_a_later_subset_run_keeps_completed_stages(tmp_path):
    """``stages=[evaluate]`` on a run whose prepare / merge already completed must not relabel it as
    ``selection=none`` (the "w/o T" ablation) with no merge λ in run_meta.json (what the report groups by)."""
    import json

    from longrecipe.config import compose
    from longrecipe.pipeline.runner import MARKER
    from longrecipe.pipeline.stages import write_run_meta

    for stage in ("prepare", "extend", "merge"):
        (tmp_path / stage).mkdir()
        (tmp_path / stage / MARKER).write_text(json.dumps({"stage": stage, "status": "complete"}))
    (tmp_path / "replay").mkdir()
    (tmp_path / "replay" / MARKER).write_text(json.dumps({"stage": "replay", "status": "running"}))
    cfg = compose("run", ["stages=[evaluate]"])
    write_run_meta(cfg, tmp_path, {}, ["evaluate"])
    meta = json.loads((tmp_path / "run_meta.json").read_text())
    assert meta["selection"] == "anchors" and meta["merge_lambda"] == 0.5
    fresh = tmp_path / "fresh"
    fresh.mkdir()
    write_run_meta(cfg, fresh, {}, ["evaluate"])  # nothing completed there: no selection, no merge
    meta = json.loads((fresh / "run_meta.json").read_text())
    assert meta["selection"] == "none" and meta["merge_lambda"] is None


# ---------------------------------------------------------------- an interrupted training stage is continued
def _extend_run(run_dir: Path, *extra: str):
    return compose("run", [f"run_dir={run_dir}", "stages=[extend]", "extend.config.trainer.max_steps=3",
                           "extend.config.trainer.limit_val_batches=0", "extend.config.data.n_docs=12",
                           "+extend.config.callbacks.checkpoint.every_n_train_steps=2",
                           "train_common.groups.logger=none", *extra])


def test_interrupted_extend_continues_from_its_checkpoint(tmp_path):
    from longrecipe.pipeline.stages import run_pipeline
    from longrecipe.training.callbacks import SimulatedCrash, read_step_log

    run_dir = tmp_path / "run"
    with pytest.raises(SimulatedCrash, match="after step 2"):
        run_pipeline(_extend_run(run_dir, "+extend.config.debug.crash_after_step=2"))
    first = read_marker(run_dir / "extend")
    assert first["status"] == "running"
    assert (run_dir / "extend" / "run" / "checkpoints" / "last.ckpt").resolve().name == "step000002.ckpt"

    # the same run without the crash hook: same hash, so the stage continues at step 3 instead of starting over
    run_pipeline(_extend_run(run_dir))
    marker = read_marker(run_dir / "extend")
    assert marker["status"] == "complete" and marker["resumed"] == 1 and len(marker["resumed_at"]) == 1
    assert (marker["run_id"], marker["started"], marker["config_hash"]) == (
        first["run_id"], first["started"], first["config_hash"])
    assert marker["outputs"]["global_step"] == 3
    assert [r["step"] for r in read_step_log(run_dir / "extend" / "run" / "train_log.jsonl")] == [1, 2, 3]
    train_cfg = json.loads((run_dir / "extend" / "run" / "train_config.json").read_text())
    assert train_cfg["resume"] is True and "debug" not in train_cfg

    # interrupted with another config: not continued but redone from scratch
    with pytest.raises(SimulatedCrash):
        run_pipeline(_extend_run(tmp_path / "other", "+extend.config.debug.crash_after_step=2"))
    run_pipeline(_extend_run(tmp_path / "other", "extend.config.optim.lr=3e-4"))
    redone = read_marker(tmp_path / "other" / "extend")
    assert redone["status"] == "complete" and "resumed" not in redone
    assert json.loads((tmp_path / "other" / "extend" / "run" / "train_config.json").read_text())["resume"] is False


def test_test_hooks_leave_the_hash_of_completed_stages_unchanged():
    """Stages configure ``debug_sleep_s: null``; markers written before the hooks were neutralised must still match."""
    from longrecipe.pipeline.runner import _hashed
    from longrecipe.utils.confighash import config_hash

    plain = {"evals": ["ppl"], "config": {"lengths": [2048]}, "debug_sleep_s": None}
    assert config_hash(_hashed(plain)) == config_hash(plain)
    assert config_hash(_hashed({**plain, "debug_sleep_s": 120})) == config_hash(plain)
    hooked = {**plain, "config": {"lengths": [2048], "debug": {"crash_after_step": 2}}}
    assert config_hash(_hashed(hooked)) == config_hash(plain)
    assert config_hash(_hashed({**plain, "config": {"lengths": [4096]}})) != config_hash(plain)
