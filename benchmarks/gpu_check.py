"""One-GPU device check: flash-path correctness on CUDA, then Llama-3-8B-shaped training throughput and the
longest sample that trains. Prints one JSON object per section (and writes them all to ``--out``).

Run through ``benchmarks/gpu_check.sh`` (installs carried wheels, caps each section's time). Sections:

1. ``correctness`` -- the checks of ``tests/test_flash_paths.py`` (``longrecipe.models.attention_checks``) on
   CUDA: a LongRecipe / PoSE sample on transformers' flash path vs eager with an explicit causal mask, and packed
   replay at batch 1 and 4 vs each document alone; with every flash kernel present (``flash_attention_2`` when
   flash-attn is installed, ``longrecipe/torch-flash`` = PyTorch's own flash kernel, and the fp32 reference).
   Ulysses (sp=2) needs DeepSpeed and two ranks: reported as skipped on one GPU without it.
2. ``throughput`` -- Llama-3-8B shape (random bf16 weights, no download), one 24k-token LongRecipe sample in an
   80k window, paper Table 4 RoPE (dynamic NTK, theta 48.9M, factor 10), gradient checkpointing, chunked loss,
   flash attention; AdamW without ZeRO on one GPU (bf16 parameters, gradients and states: 8 bytes/parameter).
   Tokens/s, MFU (``longrecipe.training.telemetry``), peak memory.
3. ``max_length`` -- forward + backward of ever longer samples with the optimizer states still allocated, until
   out of memory or out of time: the longest sample that trains on this GPU.

CPU: ``python benchmarks/gpu_check.py --tiny --device cpu`` runs every section on a tiny model (what the test
suite does), so everything up to the CUDA calls is exercised without a GPU.
"""

from __future__ import annotations

import argparse
import json
import os
import time
from pathlib import Path
from typing import Any

import numpy as np
import torch

LLAMA3_8B = {"hidden_size": 4096, "intermediate_size": 14336, "num_hidden_layers": 32, "num_attention_heads": 32,
             "num_key_value_heads": 8, "vocab_size": 128256, "max_position_embeddings": 8192, "rope_theta": 500000.0,
             "rms_norm_eps": 1e-5, "tie_word_embeddings": False}
TINY = {"hidden_size": 64, "intermediate_size": 128, "num_hidden_layers": 2, "num_attention_heads": 4,
        "num_key_value_heads": 2, "vocab_size": 512, "max_position_embeddings": 256, "rope_theta": 10000.0}
PAPER_ROPE = {"type": "dynamic", "factor": 10, "rope_theta": 48.9e6}  # Table 4, Llama-3-8B -> 80k


def emit(record: dict[str, Any], out: Path | None) -> None:
    line = json.dumps(record, sort_keys=True)
    print(line, flush=True)
    if out is not None:
        with out.open("a") as fh:
            fh.write(line + "\n")


def flash_kernels(device: str) -> list[tuple[str, torch.dtype, float]]:
    """(implementation, dtype, relative tolerance) for every flash kernel usable on ``device``."""
    from longrecipe.models.attention import REFERENCE_FLASH, TORCH_FLASH, check_attn_usable

    kernels = [(REFERENCE_FLASH, torch.float32, 1e-4)]
    if device == "cuda":
        kernels.append((TORCH_FLASH, torch.bfloat16, 3e-2))
        try:
            check_attn_usable("flash_attention_2", "model.attn_implementation")
            kernels.append(("flash_attention_2", torch.bfloat16, 3e-2))
        except ValueError as err:
            emit({"section": "correctness", "kernel": "flash_attention_2", "status": f"skipped: {err}"[:300]}, None)
    return kernels


def correctness(device: str, out: Path | None) -> bool:
    from longrecipe.models.attention_checks import packed_replay_check, simulated_positions_check

    ok = True
    for impl, dtype, tol in flash_kernels(device):
        for scheme in ("longrecipe", "pose"):
            r = simulated_positions_check(impl, scheme=scheme, batch_size=2, device=device, dtype=dtype)
            passed = r["max_diff"] <= tol * r["scale"] and r["cut_max_diff"] > 10 * r["max_diff"]
            ok &= passed
            emit({"section": "correctness", "check": f"simulated_positions/{scheme}", "kernel": impl,
                  "dtype": str(dtype), "passed": passed, **r}, out)
        for bs in (1, 4):
            r = packed_replay_check(impl, batch_size=bs, device=device, dtype=dtype)
            passed = r["max_diff"] <= tol and (bs == 1 or r["leak_max_diff"] > 10 * max(r["max_diff"], 1e-6))
            ok &= passed
            emit({"section": "correctness", "check": f"packed_replay/batch{bs}", "kernel": impl, "dtype": str(dtype),
                  "passed": passed, **r}, out)
    try:
        import deepspeed  # noqa: F401

        ulysses = "run tests/test_flash_paths.py::test_ulysses_flash_core_matches_single_process (2 ranks)"
    except ImportError:
        ulysses = "skipped: DeepSpeed is not installed (Ulysses parity runs in the CPU test suite on 2 gloo ranks)"
    emit({"section": "correctness", "check": "ulysses_sp2", "status": ulysses}, out)
    return ok


def build_module(shape: dict[str, Any], attn: str, device: str, dtype: torch.dtype, target: int, base: int):
    from transformers import LlamaConfig, LlamaForCausalLM

    from longrecipe.models.module import LongContextLM
    from longrecipe.models.rope import scaled_config

    config = scaled_config(LlamaConfig(**shape), {**PAPER_ROPE, "original_max_position_embeddings": base}, target)
    torch.manual_seed(0)
    previous = torch.get_default_dtype()
    torch.set_default_dtype(dtype)
    try:
        with torch.device(device):
            model = LlamaForCausalLM(config)
    finally:
        torch.set_default_dtype(previous)
    model.set_attn_implementation(attn)
    module = LongContextLM({"gradient_checkpointing": True, "loss_chunk_size": 4096}, hf_model=model)
    module.train()
    return module


def longrecipe_batch(length: int, target: int, vocab: int, device: str, seed: int = 0) -> dict[str, torch.Tensor]:
    """One sample with LongRecipe positions (Algorithm 1) over ~20-token segments, as real text gives."""
    from longrecipe.positions import LongRecipePositions

    rng = np.random.default_rng(seed)
    ids = rng.integers(3, vocab, size=length)
    starts = np.unique(np.concatenate([[0], rng.integers(1, length, size=max(1, length // 20))]))
    pos = LongRecipePositions(target_length=target, delimiter_ids=[1])(ids, rng, segment_starts=starts)
    input_ids = torch.as_tensor(ids, device=device)[None]
    return {"input_ids": input_ids, "labels": input_ids, "position_ids": torch.as_tensor(pos, device=device)[None],
            "attention_mask": torch.ones_like(input_ids)}


def _sync(device: str) -> None:
    if device == "cuda":
        torch.cuda.synchronize()


def throughput(args, out: Path | None):
    from longrecipe.training.telemetry import flops_per_token, matmul_params, peak_flops_for_device

    shape = TINY if args.tiny else LLAMA3_8B
    dtype = torch.float32 if args.device == "cpu" else torch.bfloat16
    t0 = time.perf_counter()
    module = build_module(shape, args.attn, args.device, dtype, args.target_length, args.base_length)
    build_s = time.perf_counter() - t0
    fused = {"fused": True} if args.device == "cuda" else {}
    optimizer = torch.optim.AdamW(module.parameters(), lr=5e-5, betas=(0.9, 0.95), weight_decay=0.0, **fused)
    n = matmul_params(module.hf_model)
    fpt = flops_per_token(module.hf_model.config, args.seq_len, n)
    peak = peak_flops_for_device(args.device)
    times, losses = [], []
    if args.device == "cuda":
        torch.cuda.reset_peak_memory_stats()
    for step in range(args.warmup + args.steps):
        batch = longrecipe_batch(args.seq_len, args.target_length, shape["vocab_size"], args.device, seed=step)
        _sync(args.device)
        start = time.perf_counter()
        loss, _ = module.compute_loss(batch)
        loss.backward()
        optimizer.step()
        optimizer.zero_grad(set_to_none=True)
        _sync(args.device)
        if step >= args.warmup:
            times.append(time.perf_counter() - start)
        losses.append(float(loss.detach()))
    step_s = float(np.median(times))
    tok_s = args.seq_len / step_s
    record = {"section": "throughput", "model": "tiny" if args.tiny else "llama3-8b-shape (random weights)",
              "params": sum(p.numel() for p in module.parameters()), "attn_implementation": args.attn,
              "dtype": str(dtype), "seq_len": args.seq_len, "target_length": args.target_length,
              "positions": "longrecipe (Algorithm 1)", "rope": PAPER_ROPE, "optimizer": "AdamW (torch, states in bf16)"
              if dtype == torch.bfloat16 else "AdamW (fp32)", "zero": "none (single GPU)",
              "gradient_checkpointing": True, "loss": "chunked CE (chunk 4096)", "build_s": round(build_s, 1),
              "steps_timed": len(times), "step_s": round(step_s, 3), "tokens_per_s": round(tok_s, 1),
              "flops_per_token": fpt, "losses": [round(x, 4) for x in losses],
              "mfu": round(fpt * tok_s / peak, 4) if peak else None,
              "peak_memory_gib": round(torch.cuda.max_memory_allocated() / 2**30, 2) if args.device == "cuda" else None,
              "device": torch.cuda.get_device_name() if args.device == "cuda" else "cpu"}
    emit(record, out)
    return module, optimizer


def max_length(args, module, out: Path | None) -> None:
    shape = TINY if args.tiny else LLAMA3_8B
    deadline = time.perf_counter() + args.max_length_budget_s
    best = None
    for length in args.lengths:
        if time.perf_counter() > deadline:
            emit({"section": "max_length", "seq_len": length, "status": "not tried (time budget spent)"}, out)
            break
        target = max(args.target_length, 2 * length)
        module.hf_model.config.max_position_embeddings = target
        batch = longrecipe_batch(length, target, shape["vocab_size"], args.device, seed=length)
        if args.device == "cuda":
            torch.cuda.reset_peak_memory_stats()
        start = time.perf_counter()
        try:
            loss, _ = module.compute_loss(batch)
            loss.backward()
            module.zero_grad(set_to_none=True)
            _sync(args.device)
        except torch.OutOfMemoryError:
            module.zero_grad(set_to_none=True)
            del batch
            if args.device == "cuda":
                torch.cuda.empty_cache()
            emit({"section": "max_length", "seq_len": length, "status": "out of memory"}, out)
            break
        best = length
        emit({"section": "max_length", "seq_len": length, "status": "ok", "fwd_bwd_s": round(time.perf_counter() - start, 1),
              "peak_memory_gib": round(torch.cuda.max_memory_allocated() / 2**30, 2) if args.device == "cuda" else None},
             out)
    emit({"section": "max_length", "longest_trained": best, "with": "optimizer states allocated, gradient "
          "checkpointing, chunked loss, flash attention, batch 1"}, out)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--device", default="cuda" if torch.cuda.is_available() else "cpu")
    parser.add_argument("--tiny", action="store_true", help="tiny model (CPU smoke of every section)")
    parser.add_argument("--sections", default="correctness,throughput,max_length")
    parser.add_argument("--attn", default=None, help="throughput attention (default: flash_attention_2 if installed, "
                        "else longrecipe/torch-flash on CUDA, longrecipe/flash-reference on CPU)")
    parser.add_argument("--seq-len", type=int, default=None, help="default 24576 (tiny: 192)")
    parser.add_argument("--target-length", type=int, default=None, help="default 81920 (tiny: 1024)")
    parser.add_argument("--base-length", type=int, default=8192)
    parser.add_argument("--steps", type=int, default=3)
    parser.add_argument("--warmup", type=int, default=1)
    parser.add_argument("--lengths", default=None, help="comma list for max_length (default 65536,98304,131072,163840)")
    parser.add_argument("--max-length-budget-s", type=float, default=150.0)
    parser.add_argument("--out", type=Path, default=None)
    args = parser.parse_args()
    from longrecipe.models.attention import REFERENCE_FLASH, TORCH_FLASH, check_attn_usable, register_bundled_kernels

    register_bundled_kernels()
    if args.tiny:
        args.seq_len = args.seq_len or 192
        args.target_length = args.target_length or 1024
        args.base_length = min(args.base_length, 256)
        args.lengths = [int(x) for x in (args.lengths or "256,512").split(",")]
    else:
        args.seq_len = args.seq_len or 24576
        args.target_length = args.target_length or 81920
        args.lengths = [int(x) for x in (args.lengths or "65536,98304,131072,163840").split(",")]
    if args.attn is None:
        if args.device == "cuda":
            try:
                check_attn_usable("flash_attention_2", "--attn")
                args.attn = "flash_attention_2"
            except ValueError:
                args.attn = TORCH_FLASH
        else:
            args.attn = REFERENCE_FLASH
    sections = set(args.sections.split(","))
    emit({"section": "environment", "torch": torch.__version__, "cuda": torch.version.cuda,
          "device": torch.cuda.get_device_name() if args.device == "cuda" else "cpu",
          "transformers": __import__("transformers").__version__, "attn": args.attn,
          "local_kernels": os.environ.get("LOCAL_KERNELS", "")}, args.out)
    if "correctness" in sections:
        ok = correctness(args.device, args.out)
        emit({"section": "correctness", "all_passed": ok}, args.out)
    if sections & {"throughput", "max_length"}:
        module, optimizer = throughput(args, args.out)
        if "max_length" in sections:
            max_length(args, module, args.out)


if __name__ == "__main__":
    main()
