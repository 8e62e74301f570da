"""The DeepSpeed ZeRO strategies: Hydra presets, validation, sampler sharding, and real multi-process runs
through the ``longrecipe-train`` console script on 2 CPU processes (gloo)."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest
from hydra.utils import instantiate

from longrecipe.config import compose
from longrecipe.training.deepspeed import LongRecipeDeepSpeedStrategy

PRESETS = ("deepspeed_zero3", "deepspeed_zero3_offload", "deepspeed_ulysses", "deepspeed_ulysses_cpu")


@pytest.mark.parametrize("preset", PRESETS)
def test_presets_compose_and_instantiate(preset):
    cfg = compose("train", [f"strategy={preset}"])
    strategy = instantiate(cfg.strategy)
    assert isinstance(strategy, LongRecipeDeepSpeedStrategy)
    assert strategy.config["zero_optimization"]["stage"] == 3
    offload = preset == "deepspeed_zero3_offload"
    assert ("offload_optimizer" in strategy.config["zero_optimization"]) is offload
    assert ("offload_param" in strategy.config["zero_optimization"]) is offload
    expected_sp = {"deepspeed_ulysses": 8, "deepspeed_ulysses_cpu": 2}.get(preset, 1)
    assert strategy.sequence_parallel_size == expected_sp
    assert strategy.tiled_logits_shards == (16 if preset == "deepspeed_ulysses" else None)
    assert strategy.tiled_mlp is (preset == "deepspeed_ulysses")
    assert strategy.checkpoint_offload is (preset == "deepspeed_ulysses")


def test_cpu_preset_uses_a_torch_client_optimizer():
    strategy = instantiate(compose("train", ["strategy=deepspeed_ulysses_cpu"]).strategy)
    assert strategy.longrecipe_optimizer == "adamw"
    assert strategy._process_group_backend == "gloo"


def test_sampler_shards_over_data_parallel_replicas_only(monkeypatch):
    from lightning.fabric.plugins.environments import LightningEnvironment
    from lightning.fabric.utilities.rank_zero import rank_zero_only

    # set_global_rank also sets Lightning's process-wide rank_zero_only.rank: restore it after the test, or every
    # later test in this worker runs as rank 3 (loggers become dummies, CSV files are not written)
    monkeypatch.setattr(rank_zero_only, "rank", rank_zero_only.rank)
    strategy = LongRecipeDeepSpeedStrategy(sequence_parallel_size=2)
    env = LightningEnvironment()
    env.set_world_size(4)
    strategy.cluster_environment = env
    expected = {0: (2, 0), 1: (2, 0), 2: (2, 1), 3: (2, 1)}
    for rank, (replicas, dp_rank) in expected.items():
        env.set_global_rank(rank)
        assert strategy.distributed_sampler_kwargs == {"num_replicas": replicas, "rank": dp_rank}
    bad = LongRecipeDeepSpeedStrategy(sequence_parallel_size=3)
    bad.cluster_environment = env
    with pytest.raises(ValueError, match=r"sequence_parallel_size=3 must be >= 1 and divide the world size 4"):
        _ = bad.distributed_sampler_kwargs


@pytest.mark.parametrize(("kwargs", "message"), [
    ({"zero_stage": 4}, r"strategy.zero_stage must be one of \[1, 2, 3\], got 4"),
    ({"optimizer": "sgd"}, r"strategy.optimizer must be one of \['auto', 'adamw', 'deepspeed_cpu_adam', "
                           r"'fused_adam'\], got 'sgd'"),
    ({"core_attn_implementation": "eager"}, r"strategy.core_attn_implementation must be one of"),
    ({"sequence_parallel_size": 0}, r"strategy.sequence_parallel_size must be >= 1, got 0"),
    ({"zero_stage": 2, "offload_parameters": True}, r"offload_parameters=true needs strategy.zero_stage=3"),
    ({"tiled_mlp_shards": 0}, r"strategy.tiled_mlp_shards must be >= 1 or null"),
    ({"tiled_logits_shards": 0}, r"strategy.tiled_logits_shards must be >= 1, got 0"),
])
def test_bad_strategy_values(kwargs, message):
    with pytest.raises(ValueError, match=message):
        LongRecipeDeepSpeedStrategy(**kwargs)


def test_sp_training_step_needs_token_counts():
    strategy = LongRecipeDeepSpeedStrategy(sequence_parallel_size=2)
    with pytest.raises(ValueError, match=r"must return a dict with 'loss' \(mean over its shard's targets\) and "
                                         r"'n_tokens'"):
        strategy._reduce_sp_output({"loss": 1.0})


# ---------------------------------------------------------------- real runs (2 CPU processes, gloo)

def _train(run_root: Path, devices: int, *overrides: str) -> dict:
    exe = Path(sys.executable).with_name("longrecipe-train")
    env = {**os.environ, "TOKENIZERS_PARALLELISM": "false", "WANDB_MODE": "offline", "HF_HUB_OFFLINE": "1",
           "OMP_NUM_THREADS": "1"}
    run_root.mkdir(parents=True, exist_ok=True)
    cmd = [str(exe), "trainer.accelerator=cpu", f"trainer.devices={devices}", "trainer.max_steps=3",
           "trainer.limit_val_batches=0", "trainer.enable_progress_bar=false", "data.n_docs=16", "logger=csv",
           f"paths.output_dir={run_root}", f"run_dir={run_root}/run", f"export_dir={run_root}/export", *overrides]
    proc = subprocess.run(cmd, cwd=run_root, env=env, capture_output=True, text=True, timeout=540)
    assert proc.returncode == 0, proc.stdout[-3000:] + proc.stderr[-6000:]
    return json.loads((run_root / "run" / "summary.json").read_text())


def _step_losses(run_root: Path, summary: dict) -> list[float]:
    from safetensors.torch import load_file

    assert summary["global_step"] == 3
    steps = [json.loads(line) for line in (run_root / "run" / "train_log.jsonl").read_text().splitlines()]
    losses = [s["loss"] for s in steps]
    assert len(losses) == 3 and all(0 < x < 20 for x in losses)
    # the export holds full (gathered) weights
    state = load_file(str(run_root / "export" / "model.safetensors"))
    assert tuple(state["model.embed_tokens.weight"].shape) == (512, 64)
    assert tuple(state["model.layers.0.mlp.down_proj.weight"].shape) == (64, 256)
    return losses


@pytest.mark.distributed
def test_ulysses_sp2_three_steps_match_single_process(tmp_path):
    """``longrecipe-train strategy=deepspeed_ulysses_cpu`` (ZeRO-3, sp=2, dp=1) reproduces the one-process run.

    With dp=1 both runs read the same samples in the same order from the same initial weights, so the three
    step losses (each after the previous optimizer update) must agree.
    """
    sp_losses = _step_losses(tmp_path / "sp", _train(tmp_path / "sp", 2, "strategy=deepspeed_ulysses_cpu"))
    single_losses = _step_losses(tmp_path / "single",
                                 _train(tmp_path / "single", 1, "strategy=single", "strategy.device=cpu"))
    assert sp_losses == pytest.approx(single_losses, rel=1e-5)


@pytest.mark.slow
@pytest.mark.distributed
def test_zero3_data_parallel_three_steps_through_the_console_script(tmp_path):
    _step_losses(tmp_path, _train(tmp_path, 2, "strategy=deepspeed_zero3"))
