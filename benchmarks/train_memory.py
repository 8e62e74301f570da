"""Training speed and peak memory of ``longrecipe-train`` vs a bare PyTorch loop on the same real model (prints JSON).

Both sides: SmolLM2-135M-Instruct (``packaged:smollm2_135m_instruct``), float32, batch 1, gradient checkpointing
(non-reentrant, per decoder layer), AdamW, sdpa attention, the same sample length and positions. The bare loop is
what a user would write by hand: ``model(input_ids, position_ids, labels=...)`` (transformers' own loss over the full
logits), ``loss.backward()``, ``optimizer.step()``. Each variant runs in its own process, so its peak RSS
(``ru_maxrss``) is its own; the first ``--warmup`` steps are excluded from the speed.

    python benchmarks/train_memory.py --tokens 4915 --target-length 16384            # LongRecipe sample, 30 % of 16k
    python benchmarks/train_memory.py --tokens 16384 --target-length 16384 --scheme flt   # FLT at 16k
    python benchmarks/train_memory.py --tokens 32768 --target-length 32768 --scheme flt --variants longrecipe --steps 1 --warmup 0
"""

from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
import tempfile
import time
from pathlib import Path

MODEL = "packaged:smollm2_135m_instruct"


def _peak_rss_gib() -> float:
    import resource

    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 2**20


def _positions(scheme: str, n: int, target: int, seed: int):
    import numpy as np

    from longrecipe.positions import FullLength, LongRecipePositions

    ids = np.arange(n)
    rng = np.random.default_rng(seed)
    if scheme == "flt":
        return FullLength(target_length=target)(ids, rng)
    starts = np.unique(np.concatenate([[0], np.random.default_rng(seed + 1).integers(1, n, size=max(1, n // 17))]))
    return LongRecipePositions(target_length=target, delimiter_ids=[0])(ids, rng, segment_starts=starts)


def run_bare(args) -> dict:
    """The hand-written loop: transformers' loss on full logits, checkpointing on, AdamW."""
    import torch
    from transformers import AutoModelForCausalLM

    from longrecipe.models.loading import resolve_model_ref
    from longrecipe.models.rope import scaled_config

    path = resolve_model_ref(MODEL)
    config = scaled_config(AutoModelForCausalLM.from_pretrained(path).config,
                           {"type": "dynamic", "factor": args.target_length / 8192}, args.target_length)
    model = AutoModelForCausalLM.from_pretrained(path, config=config, dtype=torch.float32, attn_implementation="sdpa")
    model.config.use_cache = False
    model.gradient_checkpointing_enable(gradient_checkpointing_kwargs={"use_reentrant": False})
    model.train()
    opt = torch.optim.AdamW(model.parameters(), lr=1e-5)
    gen = torch.Generator().manual_seed(0)
    times, losses = [], []
    for step in range(args.warmup + args.steps):
        ids = torch.randint(3, model.config.vocab_size, (1, args.tokens), generator=gen)
        pos = torch.as_tensor(_positions(args.scheme, args.tokens, args.target_length, step))[None]
        start = time.perf_counter()
        loss = model(input_ids=ids, position_ids=pos, attention_mask=torch.ones_like(ids), labels=ids,
                     use_cache=False).loss
        loss.backward()
        opt.step()
        opt.zero_grad(set_to_none=True)
        if step >= args.warmup:
            times.append(time.perf_counter() - start)
        losses.append(float(loss.detach()))
    return {"times": times, "losses": losses}


def run_longrecipe(args) -> dict:
    """``train(cfg)`` (what ``longrecipe-train`` runs) with the same model, length and positions."""
    from longrecipe.config import compose
    from longrecipe.training.callbacks import read_step_log
    from longrecipe.training.train import train

    tmp = Path(tempfile.mkdtemp(prefix="lr-mem-"))
    ratio = args.tokens / args.target_length
    cfg = compose("train", [
        "model=smollm2_135m_instruct", f"position={'flt' if args.scheme == 'flt' else 'longrecipe'}",
        "rope=dynamic_ntk", "base_length=8192", f"target_length={args.target_length}", f"token_ratio={ratio}",
        f"data.sample_length={args.tokens}", f"data.n_docs={max(4, 2 * (args.warmup + args.steps) * args.tokens // 600)}",
        "data.val_fraction=0", f"trainer.max_steps={args.warmup + args.steps}", "trainer.enable_progress_bar=false",
        "logger=none", "export_dir=null", "callbacks.checkpoint.every_n_train_steps=0", f"run_dir={tmp / 'run'}",
        f"paths.output_dir={tmp / 'out'}", f"paths.cache_dir={tmp / 'cache'}", "optim.lr=1e-5", "optim.warmup_steps=0"])
    result = train(cfg)
    steps = read_step_log(result["step_log"])
    times = [float(r["time_s"]) for r in steps][args.warmup:]
    return {"times": times, "losses": [float(r["loss"]) for r in steps]}


def child(args) -> None:
    fn = run_bare if args.variant == "bare" else run_longrecipe
    out = fn(args)
    times = out["times"]
    med = sorted(times)[len(times) // 2] if times else None
    print(json.dumps({"variant": args.variant, "tokens": args.tokens, "target_length": args.target_length,
                      "scheme": args.scheme, "steps_timed": len(times), "step_s": med,
                      "tokens_per_s": (args.tokens / med) if med else None, "peak_rss_gib": round(_peak_rss_gib(), 2),
                      "losses": [round(x, 4) for x in out["losses"]]}), flush=True)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--tokens", type=int, default=4915)
    parser.add_argument("--target-length", type=int, default=16384)
    parser.add_argument("--scheme", choices=["longrecipe", "flt"], default="longrecipe")
    parser.add_argument("--steps", type=int, default=2)
    parser.add_argument("--warmup", type=int, default=1)
    parser.add_argument("--variants", default="bare,longrecipe")
    parser.add_argument("--variant", default=None, help=argparse.SUPPRESS)  # set in the child process
    args = parser.parse_args()
    if args.variant:
        child(args)
        return
    results = []
    for variant in args.variants.split(","):
        cmd = [sys.executable, __file__, "--variant", variant, "--tokens", str(args.tokens), "--target-length",
               str(args.target_length), "--scheme", args.scheme, "--steps", str(args.steps), "--warmup", str(args.warmup)]
        proc = subprocess.run(cmd, capture_output=True, text=True, env={**os.environ, "HF_HUB_OFFLINE": "1"})
        lines = [line for line in proc.stdout.splitlines() if line.startswith("{")]
        if proc.returncode != 0 or not lines:
            results.append({"variant": variant, "error": proc.stderr[-1500:]})
        else:
            results.append(json.loads(lines[-1]))
    by = {r["variant"]: r for r in results if "error" not in r}
    summary = {"model": MODEL + " (float32, dequantised from GGUF Q4_1)", "runs": results}
    if {"bare", "longrecipe"} <= set(by) and by["bare"]["step_s"] and by["longrecipe"]["step_s"]:
        summary["speed_vs_bare"] = round(by["longrecipe"]["tokens_per_s"] / by["bare"]["tokens_per_s"], 3)
        summary["peak_rss_vs_bare"] = round(by["longrecipe"]["peak_rss_gib"] / by["bare"]["peak_rss_gib"], 3)
    print(json.dumps(summary, indent=1))


if __name__ == "__main__":
    main()
