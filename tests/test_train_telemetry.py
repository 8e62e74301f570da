"""Telemetry arithmetic (hand-computed FLOPs), the step-log truncation on resume, and the CLI entry point."""

from __future__ import annotations

import json
import os
import subprocess
import sys

import pytest
import torch

from longrecipe.tiny import tiny_model_config
from longrecipe.training.callbacks import TrainingTelemetry, read_step_log
from longrecipe.training.telemetry import flops_per_token, matmul_params, peak_flops_for_device


def test_flops_per_token_hand_computed():
    cfg = tiny_model_config("llama")  # 2 layers, 4 heads x head_dim 16 = d_attn 64
    # 6 * 1000 + 12 * 2 * 64 * 100 * 0.5 = 6000 + 76800
    assert flops_per_token(cfg, 100, 1000) == 82800.0
    assert flops_per_token(cfg, 100, 1000, causal=False) == 6000.0 + 153600.0
    with pytest.raises(ValueError, match="seq_len must be >= 1"):
        flops_per_token(cfg, 0, 10)


def test_matmul_params_excludes_the_input_embedding_only_when_untied():
    from transformers import AutoModelForCausalLM

    untied = AutoModelForCausalLM.from_config(tiny_model_config("llama"))
    total = sum(p.numel() for p in untied.parameters())
    assert matmul_params(untied) == total - 512 * 64
    tied = AutoModelForCausalLM.from_config(tiny_model_config("llama", tie_word_embeddings=True))
    assert matmul_params(tied) == sum(p.numel() for p in tied.parameters())


def test_peak_flops():
    assert peak_flops_for_device("cpu") is None
    assert peak_flops_for_device("cpu", 989.0) == 989e12
    with pytest.raises(ValueError, match="peak_tflops must be > 0"):
        peak_flops_for_device("cpu", 0.0)


def test_step_log_truncation_keeps_the_batch_that_finished_the_restored_step(tmp_path):
    log = tmp_path / "log.jsonl"
    steps = [0, 1, 1, 2, 2, 3]  # accumulation 2: batch 1 finished step 1, batch 3 step 2, batch 5 step 3
    log.write_text("".join(json.dumps({"step": s, "batch": i}) + "\n" for i, s in enumerate(steps)))
    TrainingTelemetry(log)._truncate_after(2)
    assert [r["batch"] for r in read_step_log(log)] == [0, 1, 2, 3]
    TrainingTelemetry(log)._truncate_after(0)
    assert read_step_log(log) == []


def test_cli_runs_and_pins_run_dir_to_hydra_output(tmp_path):
    run_dir = tmp_path / "cli_run"
    env = {**os.environ, "WANDB_MODE": "offline", "HF_HUB_OFFLINE": "1"}
    cmd = [sys.executable, "-m", "longrecipe.cli.train", f"run_dir={run_dir}", f"paths.output_dir={tmp_path}",
           "base_length=64", "target_length=256", "token_ratio=0.25", "data.n_docs=6", "data.val_fraction=0",
           "trainer.max_steps=2", "trainer.enable_progress_bar=false"]
    proc = subprocess.run(cmd, env=env, capture_output=True, text=True, timeout=300)
    assert proc.returncode == 0, proc.stderr[-3000:]
    assert (run_dir / ".hydra" / "config.yaml").is_file()
    summary = json.loads((run_dir / "summary.json").read_text())
    assert summary["global_step"] == 2 and summary["export_dir"] == str(run_dir / "export")
    assert list((run_dir / "csv").rglob("metrics.csv"))
    from transformers import AutoModelForCausalLM

    model = AutoModelForCausalLM.from_pretrained(str(run_dir / "export"))
    assert model.config.max_position_embeddings == 256
    assert torch.isfinite(model(input_ids=torch.tensor([[1, 2, 3]])).logits).all()
