"""A run killed after step k and resumed logs the same losses for steps k+1... as an uninterrupted run."""

from __future__ import annotations

from pathlib import Path

import pytest

from longrecipe.config import compose
from longrecipe.training.callbacks import SimulatedCrash, read_step_log
from longrecipe.training.train import train


def overrides(tmp: Path, cache: Path, run: str, *extra: str) -> list[str]:
    return [f"paths.output_dir={tmp / 'out'}", f"paths.cache_dir={cache}", f"run_dir={tmp / run}",
            "base_length=64", "target_length=256", "token_ratio=0.25", "data.n_docs=6", "data.val_fraction=0",
            "trainer.max_steps=7", "trainer.enable_progress_bar=false", "logger=none", "export_dir=null",
            "callbacks.checkpoint.every_n_train_steps=2", "optim.lr=1e-3", "optim.schedule=cosine",
            "optim.warmup_steps=2", "data.batch_size=2", "trainer.accumulate_grad_batches=2", *extra]


@pytest.fixture(scope="module")
def cache(tmp_path_factory) -> Path:
    return tmp_path_factory.mktemp("resume_cache")


def test_killed_and_resumed_run_matches_uninterrupted(tmp_path, cache):
    full = train(compose("train", overrides(tmp_path, cache, "full")))
    reference = {r["batch"]: r for r in read_step_log(full["step_log"])}
    assert full["global_step"] == 7

    # crash before step 6 starts: checkpoint of step 4 exists, step 5 ran and is lost (as in a real kill)
    with pytest.raises(SimulatedCrash, match="simulated crash after step 5"):
        train(compose("train", overrides(tmp_path, cache, "killed", "+debug.crash_after_step=5")))
    ckpt_dir = tmp_path / "killed" / "checkpoints"
    assert (ckpt_dir / "last.ckpt").resolve().name == "step000004.ckpt"

    resumed = train(compose("train", overrides(tmp_path, cache, "killed", "resume=true")))
    assert resumed["resumed_from"] == str(ckpt_dir / "last.ckpt")
    assert resumed["global_step"] == 7
    records = read_step_log(resumed["step_log"])
    # the JSONL keeps steps 1-4 of the killed run and steps 5-7 of the resumed one (replayed step 5 dropped)
    assert [r["step"] for r in records] == [r["step"] for r in reference.values()]
    for rec in records:
        ref = reference[rec["batch"]]
        assert rec["loss"] == pytest.approx(ref["loss"], rel=1e-6, abs=0), rec["batch"]
        assert rec["lr"] == pytest.approx(ref["lr"], rel=1e-12)
    assert len({r["loss"] for r in records}) == len(records)  # the losses do move


def test_fresh_run_into_a_folder_with_checkpoints_is_refused(tmp_path, cache):
    ckpt = tmp_path / "run" / "checkpoints"
    ckpt.mkdir(parents=True)
    (ckpt / "step000002.ckpt").write_bytes(b"x")
    with pytest.raises(ValueError, match="already holds checkpoints .*pass resume=true"):
        train(compose("train", overrides(tmp_path, cache, "run")))


def test_resume_without_checkpoint_starts_fresh(tmp_path, cache):
    result = train(compose("train", overrides(tmp_path, cache, "new", "resume=true", "trainer.max_steps=1")))
    assert result["resumed_from"] is None and result["global_step"] == 1
