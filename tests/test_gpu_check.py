"""``benchmarks/gpu_check.py`` on CPU with a tiny model: every section runs and reports, so the device check
only meets new ground at the CUDA calls."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

REPO_ROOT = Path(__file__).resolve().parents[1]


def test_gpu_check_cpu_smoke(tmp_path):
    out = tmp_path / "gpu_check.jsonl"
    env = {**os.environ, "HF_HUB_OFFLINE": "1", "LOCAL_KERNELS": ""}
    proc = subprocess.run([sys.executable, str(REPO_ROOT / "benchmarks" / "gpu_check.py"), "--tiny", "--device", "cpu",
                           "--out", str(out)], capture_output=True, text=True, env=env, timeout=600)
    assert proc.returncode == 0, proc.stderr[-2000:]
    records = [json.loads(line) for line in out.read_text().splitlines()]
    sections = [r["section"] for r in records]
    assert sections[0] == "environment" and records[0]["attn"] == "longrecipe/flash-reference"
    checks = {r["check"]: r for r in records if "check" in r and "kernel" in r}
    assert set(checks) == {"simulated_positions/longrecipe", "simulated_positions/pose", "packed_replay/batch1",
                           "packed_replay/batch4"}
    assert all(r["passed"] for r in checks.values())
    assert {"all_passed": True, "section": "correctness"} in records
    (tp,) = [r for r in records if r["section"] == "throughput"]
    assert tp["steps_timed"] == 3 and tp["seq_len"] == 192 and tp["tokens_per_s"] > 0 and len(tp["losses"]) == 4
    assert records[-1] == {"section": "max_length", "longest_trained": 512,
                           "with": "optimizer states allocated, gradient checkpointing, chunked loss, flash attention, "
                                   "batch 1"}
