"""Throughput arithmetic: model FLOPs per token, device peaks, peak memory.

Training FLOPs per token (forward + backward = 3 x forward), for a sample of ``T`` tokens:

    flops_per_token = 6 * N  +  c * 12 * L * d_attn * T

``N`` = parameters that do matmul work per token (all but the input embedding lookup; a tied head
still counts its ``V x d`` matmul), ``L`` = layers, ``d_attn`` = heads x head_dim. ``12 L d_attn T``
is PaLM's attention term (QK^T and AV, 2 x 2 FLOPs per multiply-add, x3 for fwd+bwd); ``c = 0.5`` for
causal attention (each query sees on average ``T/2`` keys), ``c = 1`` reproduces PaLM's count.
MFU = achieved ``flops_per_token * tokens/s`` / (``peak_flops`` x devices).
"""

from __future__ import annotations

import resource
import sys
from typing import Any

import torch

# dense bf16 tensor-core peaks (FLOP/s) for common training GPUs, matched by substring of the device name
PEAK_FLOPS = {"H200": 989e12, "H100": 989e12, "H800": 989e12, "A100": 312e12, "A800": 312e12, "L40S": 362e12,
              "A6000": 155e12, "A10": 125e12, "4090": 165e12, "V100": 125e12}


def matmul_params(model: torch.nn.Module) -> int:
    """``N``: trainable + frozen parameters minus the input embedding (plus the head matmul when tied)."""
    total = sum(p.numel() for p in model.parameters())
    get_in = getattr(model, "get_input_embeddings", None)
    emb = get_in() if callable(get_in) else None
    if emb is None:
        return int(total)
    emb_n = emb.weight.numel()
    get_out = getattr(model, "get_output_embeddings", None)
    head = get_out() if callable(get_out) else None
    tied = head is not None and head.weight is emb.weight
    return int(total - emb_n + (emb_n if tied else 0))


def flops_per_token(hf_config: Any, seq_len: int, n_params: int, *, causal: bool = True) -> float:
    """Training FLOPs per token for a sample of ``seq_len`` tokens (formula in the module docstring)."""
    if seq_len < 1 or n_params < 0:
        raise ValueError(f"seq_len must be >= 1 and n_params >= 0, got {seq_len}, {n_params}")
    layers = int(hf_config.num_hidden_layers)
    head_dim = getattr(hf_config, "head_dim", None) or hf_config.hidden_size // hf_config.num_attention_heads
    d_attn = int(hf_config.num_attention_heads) * int(head_dim)
    attn = 12.0 * layers * d_attn * seq_len * (0.5 if causal else 1.0)
    return 6.0 * n_params + attn


def peak_flops_for_device(device: torch.device | str | None = None, override_tflops: float | None = None) -> float | None:
    """Peak FLOP/s: ``override_tflops * 1e12`` when given, else the table for the CUDA device, else None."""
    if override_tflops is not None:
        if not override_tflops > 0:
            raise ValueError(f"callbacks.telemetry.peak_tflops must be > 0, got {override_tflops}")
        return float(override_tflops) * 1e12
    dev = torch.device(device) if device is not None else None
    if dev is None or dev.type != "cuda" or not torch.cuda.is_available():
        return None
    name = torch.cuda.get_device_name(dev)
    for key, value in PEAK_FLOPS.items():
        if key in name:
            return value
    return None


def host_peak_rss_bytes() -> int:
    """Peak resident set size of this process (``ru_maxrss``: KiB on Linux, bytes on macOS)."""
    rss = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
    return int(rss if sys.platform == "darwin" else rss * 1024)


def peak_memory_bytes(device: torch.device | str | None = None) -> int:
    """Peak allocated accelerator memory on CUDA, else the host peak RSS."""
    dev = torch.device(device) if device is not None else None
    if dev is not None and dev.type == "cuda" and torch.cuda.is_available():
        return int(torch.cuda.max_memory_allocated(dev))
    return host_peak_rss_bytes()
