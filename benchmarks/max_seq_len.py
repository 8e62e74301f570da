"""Longest trainable FLT sample on one GPU, and tokens/s at 24k with and without the memory switches.

GPU (the target: FLT 128k trainable for a Llama-3-8B shape on one H100 80 GB):

    python benchmarks/max_seq_len.py --shape llama3-8b --min-len 16384 --max-len 262144
    python benchmarks/max_seq_len.py --shape llama3-8b --no-offload-optimizer   # ZeRO-3 without offload

CPU smoke run (tiny shape, seconds): ``python benchmarks/max_seq_len.py --shape tiny --max-len 4096``.

Method: randomly initialised model of the chosen shape (no download), bf16 on GPU, gradient
checkpointing, DeepSpeed ZeRO-3 with optimizer + parameter offload (``conf/strategy/deepspeed_zero3_offload``)
on one process. ``max_len``: binary search over lengths (multiples of ``--granularity``); a length passes
when one full optimizer step (forward, backward, step) runs without running out of memory, with all
switches on (tiled MLP, tiled logits+loss, activation-checkpoint offload). ``throughput``: tokens/s over
``--steps`` steps at ``--throughput-len`` with all switches on and with all off (OOM is reported as such).
Prints one JSON object and writes it to ``--out`` (atomically).
"""

from __future__ import annotations

import argparse
import json
import os
import time
from typing import Any

import torch

from longrecipe.parallel.sharding import shift_labels
from longrecipe.parallel.tiling import (
    activation_offload,
    disable_tiled_mlp,
    enable_tiled_mlp,
    tiled_token_loss_sum,
)
from longrecipe.utils.io import write_json_atomic

SHAPES: dict[str, dict[str, Any]] = {
    "llama3-8b": dict(vocab_size=128_256, hidden_size=4096, intermediate_size=14_336, num_hidden_layers=32,
                      num_attention_heads=32, num_key_value_heads=8, max_position_embeddings=131_072,
                      rope_parameters={"rope_type": "default", "rope_theta": 500_000.0}),
    "tiny": dict(vocab_size=512, hidden_size=64, intermediate_size=256, num_hidden_layers=2, num_attention_heads=4,
                 num_key_value_heads=2, max_position_embeddings=8192,
                 rope_parameters={"rope_type": "default", "rope_theta": 10_000.0}),
}


def _oom_types() -> tuple[type[BaseException], ...]:
    return (torch.cuda.OutOfMemoryError, RuntimeError) if torch.cuda.is_available() else (torch.cuda.OutOfMemoryError,)


def _is_oom(err: BaseException) -> bool:
    return isinstance(err, torch.cuda.OutOfMemoryError) or "out of memory" in str(err).lower()


def build_engine(shape: str, offload_optimizer: bool, offload_params: bool):
    import deepspeed
    import torch.distributed as dist
    from transformers import LlamaConfig, LlamaForCausalLM

    cuda = torch.cuda.is_available()
    if not dist.is_initialized():
        os.environ.setdefault("MASTER_ADDR", "127.0.0.1")
        os.environ.setdefault("MASTER_PORT", "29731")
        for key in ("RANK", "LOCAL_RANK"):
            os.environ.setdefault(key, "0")
        os.environ.setdefault("WORLD_SIZE", "1")
        dist.init_process_group("nccl" if cuda else "gloo", rank=0, world_size=1)
    deepspeed.init_distributed(dist_backend=dist.get_backend(), dist_init_required=False)
    dtype = torch.bfloat16 if cuda else torch.float32
    config = LlamaConfig(**SHAPES[shape], tie_word_embeddings=False, use_cache=False)
    model = LlamaForCausalLM._from_config(config, attn_implementation="sdpa", dtype=dtype)
    model.activation_checkpointing_enable(activation_checkpointing_kwargs={"use_reentrant": False})
    zero: dict[str, Any] = {"stage": 3}
    if offload_optimizer:
        zero["offload_optimizer"] = {"device": "cpu", "pin_memory": cuda}
    if offload_params:
        zero["offload_param"] = {"device": "cpu", "pin_memory": cuda}
    ds_config: dict[str, Any] = {"train_micro_batch_size_per_gpu": 1, "gradient_accumulation_steps": 1,
                                 "zero_optimization": zero, "gradient_clipping": 1.0,
                                 "zero_allow_untested_optimizer": True}
    params = [p for p in model.parameters() if p.requires_grad]
    if cuda:
        ds_config["bf16"] = {"enabled": True}
        if offload_optimizer:
            from deepspeed.ops.adam import DeepSpeedCPUAdam

            optimizer = DeepSpeedCPUAdam(params, lr=1e-5)
        else:
            from deepspeed.ops.adam import FusedAdam

            optimizer = FusedAdam(params, lr=1e-5)
    else:
        ds_config["zero_force_ds_cpu_optimizer"] = False
        optimizer = torch.optim.AdamW(params, lr=1e-5)
    engine, _, _, _ = deepspeed.initialize(model=model, optimizer=optimizer, config=ds_config,
                                           dist_init_required=False)
    return engine


def one_step(engine, seq_len: int, *, tiled: bool, logits_tiles: int) -> float:
    """One optimizer step on a random FLT sample of ``seq_len``; returns seconds."""
    model = engine.module
    device = engine.device
    vocab = model.config.vocab_size
    ids = torch.randint(3, vocab, (1, seq_len), device=device)
    pos = torch.arange(seq_len, device=device).unsqueeze(0)
    targets = shift_labels(ids)
    if torch.cuda.is_available():
        torch.cuda.synchronize()
    start = time.perf_counter()
    with activation_offload(tiled):
        hidden = model.model(input_ids=ids, position_ids=pos, attention_mask=torch.ones_like(ids)).last_hidden_state
        if tiled:
            loss_sum, n = tiled_token_loss_sum(hidden, model.lm_head, targets, logits_tiles)
        else:
            logits = model.lm_head(hidden).float()
            loss_sum = torch.nn.functional.cross_entropy(logits.reshape(-1, vocab), targets.reshape(-1),
                                                         ignore_index=-100, reduction="sum")
            n = (targets != -100).sum()
        loss = loss_sum / n
    engine.backward(loss)
    engine.step()
    if torch.cuda.is_available():
        torch.cuda.synchronize()
    return time.perf_counter() - start


def trial(engine, seq_len: int, *, tiled: bool, logits_tiles: int) -> tuple[bool, float | None, float | None]:
    """``(fits, seconds, peak GiB)`` for one step at ``seq_len``."""
    model = engine.module
    if tiled:
        enable_tiled_mlp(model)
    else:
        disable_tiled_mlp(model)
    if torch.cuda.is_available():
        torch.cuda.empty_cache()
        torch.cuda.reset_peak_memory_stats()
    try:
        seconds = one_step(engine, seq_len, tiled=tiled, logits_tiles=logits_tiles)
    except _oom_types() as err:
        if not _is_oom(err):
            raise
        engine.zero_grad()
        if torch.cuda.is_available():
            torch.cuda.empty_cache()
        return False, None, None
    peak = torch.cuda.max_memory_allocated() / 2**30 if torch.cuda.is_available() else None
    return True, seconds, peak


def max_trainable_length(engine, lo: int, hi: int, granularity: int, logits_tiles: int) -> dict[str, Any]:
    """Binary search for the longest length (multiple of ``granularity``) whose step fits."""
    from tqdm import tqdm

    lo_k, hi_k = max(1, lo // granularity), max(1, hi // granularity)
    best: dict[str, Any] = {"max_len": None, "seconds": None, "peak_gib": None, "tried": []}
    with tqdm(desc="binary search", unit="trial") as bar:
        while lo_k <= hi_k:
            mid = (lo_k + hi_k) // 2
            fits, seconds, peak = trial(engine, mid * granularity, tiled=True, logits_tiles=logits_tiles)
            best["tried"].append({"len": mid * granularity, "fits": fits, "seconds": seconds, "peak_gib": peak})
            bar.update(1)
            if fits:
                best.update(max_len=mid * granularity, seconds=seconds, peak_gib=peak)
                lo_k = mid + 1
            else:
                hi_k = mid - 1
    return best


def throughput(engine, seq_len: int, steps: int, tiled: bool, logits_tiles: int) -> dict[str, Any]:
    fits, _, _ = trial(engine, seq_len, tiled=tiled, logits_tiles=logits_tiles)  # warm-up
    if not fits:
        return {"len": seq_len, "tiled": tiled, "oom": True}
    times, peaks = [], []
    for _ in range(steps):
        fits, seconds, peak = trial(engine, seq_len, tiled=tiled, logits_tiles=logits_tiles)
        if not fits:
            return {"len": seq_len, "tiled": tiled, "oom": True}
        times.append(seconds)
        peaks.append(peak)
    mean = sum(times) / len(times)
    return {"len": seq_len, "tiled": tiled, "oom": False, "seconds_per_step": mean, "tokens_per_s": seq_len / mean,
            "peak_gib": max(peaks) if peaks[0] is not None else None}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--shape", choices=sorted(SHAPES), default="llama3-8b")
    parser.add_argument("--min-len", type=int, default=16_384)
    parser.add_argument("--max-len", type=int, default=262_144)
    parser.add_argument("--granularity", type=int, default=4096)
    parser.add_argument("--throughput-len", type=int, default=24_576)
    parser.add_argument("--steps", type=int, default=3)
    parser.add_argument("--logits-tiles", type=int, default=16)
    parser.add_argument("--no-offload-optimizer", action="store_true")
    parser.add_argument("--no-offload-params", action="store_true")
    parser.add_argument("--out", default="benchmarks/results/max_seq_len.json")
    args = parser.parse_args()
    if args.shape == "tiny" and args.min_len == 16_384:
        args.min_len, args.granularity, args.throughput_len = 256, 256, 1024
    if not 0 < args.min_len <= args.max_len:
        raise ValueError(f"need 0 < --min-len <= --max-len, got {args.min_len}, {args.max_len}")

    engine = build_engine(args.shape, not args.no_offload_optimizer, not args.no_offload_params)
    result = {
        "shape": args.shape,
        "device": torch.cuda.get_device_name(0) if torch.cuda.is_available() else "cpu",
        "offload_optimizer": not args.no_offload_optimizer,
        "offload_params": not args.no_offload_params,
        "max_trainable": max_trainable_length(engine, args.min_len, args.max_len, args.granularity,
                                              args.logits_tiles),
        "throughput": [throughput(engine, args.throughput_len, args.steps, tiled, args.logits_tiles)
                       for tiled in (True, False)],
    }
    write_json_atomic(args.out, result)
    print(json.dumps(result, indent=2))


if __name__ == "__main__":
    main()
