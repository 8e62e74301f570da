"""Training throughput of ``train(cfg)``: tokens/s, MFU, peak accelerator memory, host RSS (prints JSON).

GPU (paper setting, one H100/A800): Llama-3-8B shape, random init from its config (no download), sample
length 24k (30% of 80k), DeepSpeed ZeRO-3 with CPU offload, gradient checkpointing, flash attention
(sdpa when flash-attn is missing), bf16:

    python benchmarks/train_throughput.py --seq-len 24576 --steps 6

CPU smoke (runs anywhere in about a minute; tiny Llama, hidden 64, 2 layers):

    python benchmarks/train_throughput.py --tiny

Steps before ``--warmup`` are excluded from the medians. Results go to benchmarks/RESULTS.md by hand.
"""

from __future__ import annotations

import argparse
import json
import statistics
import tempfile
from pathlib import Path

LLAMA3_8B = {"hidden_size": 4096, "num_hidden_layers": 32, "num_attention_heads": 32, "num_key_value_heads": 8,
             "intermediate_size": 14336, "vocab_size": 128256, "rope_theta": 500000.0}


def overrides(args: argparse.Namespace, run_dir: Path) -> list[str]:
    common = [f"run_dir={run_dir}", f"paths.output_dir={run_dir / 'out'}", f"trainer.max_steps={args.steps}",
              "logger=none", "export_dir=null", "trainer.enable_progress_bar=false", "data.val_fraction=0",
              "callbacks.checkpoint.every_n_train_steps=0", f"data.sample_length={args.seq_len}",
              "data.max_val_samples=1"]
    if args.tiny:
        return common + ["base_length=256", f"target_length={max(1024, 4 * args.seq_len)}", "data.n_docs=40",
                         f"model.loss_chunk_size={args.loss_chunk_size}",
                         f"model.gradient_checkpointing={str(args.grad_ckpt).lower()}",
                         *([f"callbacks.telemetry.peak_tflops={args.peak_tflops}"] if args.peak_tflops else [])]
    shape = [f"model.config.{k}={v}" for k, v in LLAMA3_8B.items()]
    return common + shape + [
        "base_length=8192", f"target_length={args.target_length}", f"data.n_docs={args.n_docs}",
        f"strategy={args.strategy}", "trainer=gpu", "model.dtype=bfloat16", "model.attn_implementation=auto",
        f"model.gradient_checkpointing={str(args.grad_ckpt).lower()}", f"model.loss_chunk_size={args.loss_chunk_size}",
        "rope=paper_llama3_80k", *([f"callbacks.telemetry.peak_tflops={args.peak_tflops}"] if args.peak_tflops else []),
    ]


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--tiny", action="store_true", help="tiny Llama on CPU instead of Llama-3-8B on GPU")
    parser.add_argument("--seq-len", type=int, default=None, help="sample length (default 24576; tiny: 512)")
    parser.add_argument("--target-length", type=int, default=81920)
    parser.add_argument("--steps", type=int, default=None, help="optimizer steps (default 6; tiny: 12)")
    parser.add_argument("--warmup", type=int, default=2, help="steps excluded from the medians")
    parser.add_argument("--strategy", default="deepspeed_zero3_offload")
    parser.add_argument("--grad-ckpt", action=argparse.BooleanOptionalAction, default=None)
    parser.add_argument("--loss-chunk-size", type=int, default=None)
    parser.add_argument("--n-docs", type=int, default=400)
    parser.add_argument("--peak-tflops", type=float, default=None, help="per-device peak for MFU (GPU: auto)")
    parser.add_argument("--run-dir", type=Path, default=None)
    args = parser.parse_args()
    args.seq_len = args.seq_len or (512 if args.tiny else 24576)
    args.steps = args.steps or (12 if args.tiny else 6)
    args.grad_ckpt = (not args.tiny) if args.grad_ckpt is None else args.grad_ckpt
    args.loss_chunk_size = args.loss_chunk_size or (256 if args.tiny else 2048)
    if args.steps <= args.warmup:
        parser.error(f"--steps ({args.steps}) must exceed --warmup ({args.warmup})")

    from longrecipe.config import compose
    from longrecipe.training.callbacks import read_step_log
    from longrecipe.training.telemetry import host_peak_rss_bytes
    from longrecipe.training.train import train

    run_dir = args.run_dir or Path(tempfile.mkdtemp(prefix="longrecipe-bench-"))
    result = train(compose("train", overrides(args, run_dir)))
    records = [r for r in read_step_log(result["step_log"]) if r["step"] > args.warmup]

    def median(key: str) -> float | None:
        values = [r[key] for r in records if r.get(key) is not None]
        return statistics.median(values) if values else None

    out = {
        "mode": "tiny-cpu" if args.tiny else "llama3-8b-shape",
        "seq_len": args.seq_len, "steps": args.steps, "warmup_steps": args.warmup,
        "strategy": "single" if args.tiny else args.strategy, "gradient_checkpointing": args.grad_ckpt,
        "loss_chunk_size": args.loss_chunk_size,
        "tokens_per_s": median("tokens_per_s"), "samples_per_s": median("samples_per_s"),
        "tflops_per_device": median("tflops_per_device"), "mfu": median("mfu"),
        "peak_mem_gb": max((r["peak_mem_gb"] for r in records), default=None),
        "host_peak_rss_gb": host_peak_rss_bytes() / 2**30,
        "final_loss": records[-1]["loss"] if records else None,
        "run_dir": str(run_dir),
    }
    print(json.dumps(out, indent=2))


if __name__ == "__main__":
    main()
