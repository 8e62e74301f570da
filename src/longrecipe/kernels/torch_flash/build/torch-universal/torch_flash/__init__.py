"""flash-attn's ``flash_attn_func`` / ``flash_attn_varlen_func`` on top of PyTorch's own flash kernel (CUDA).

For GPU machines without the flash-attn package: transformers' flash-attention code path runs with PyTorch's
built-in FlashAttention-2 backend of ``scaled_dot_product_attention`` (forced with ``sdpa_kernel``), one call per
sequence for the varlen entry point. Grouped-query attention repeats the key/value heads. Inputs must be CUDA
fp16/bf16, as for flash-attn; anything else raises, rather than silently running another kernel.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch.nn.attention import SDPBackend, sdpa_kernel


def _check(q, dropout_p, window_size, softcap, alibi_slopes) -> None:
    if not q.is_cuda or q.dtype not in (torch.float16, torch.bfloat16):
        raise ValueError(f"torch-flash needs CUDA fp16/bf16 inputs, got {q.device} {q.dtype}")
    if dropout_p or softcap or alibi_slopes is not None or tuple(window_size or (-1, -1)) != (-1, -1):
        raise ValueError("torch-flash supports plain (causal or full) attention only: no dropout, softcap, ALiBi "
                         "or sliding window")


def _attend(q, k, v, scale, causal):
    """``[B, T, H, D]`` in and out."""
    heads, kv_heads = q.shape[2], k.shape[2]
    if heads != kv_heads:
        k = k.repeat_interleave(heads // kv_heads, dim=2)
        v = v.repeat_interleave(heads // kv_heads, dim=2)
    with sdpa_kernel(SDPBackend.FLASH_ATTENTION):
        out = F.scaled_dot_product_attention(q.transpose(1, 2), k.transpose(1, 2), v.transpose(1, 2),
                                             is_causal=causal, scale=scale)
    return out.transpose(1, 2)


def flash_attn_func(q, k, v, dropout_p=0.0, softmax_scale=None, causal=False, window_size=(-1, -1), softcap=0.0,
                    alibi_slopes=None, deterministic=False, return_attn_probs=False):
    _check(q, dropout_p, window_size, softcap, alibi_slopes)
    if causal and q.shape[1] != k.shape[1]:
        raise ValueError("torch-flash: causal attention needs as many queries as keys")
    return _attend(q, k, v, softmax_scale, causal)


def flash_attn_varlen_func(q, k, v, cu_seqlens_q, cu_seqlens_k, max_seqlen_q=None, max_seqlen_k=None, dropout_p=0.0,
                           softmax_scale=None, causal=False, window_size=(-1, -1), softcap=0.0, alibi_slopes=None,
                           deterministic=False, return_attn_probs=False):
    _check(q, dropout_p, window_size, softcap, alibi_slopes)
    bq, bk = cu_seqlens_q.tolist(), cu_seqlens_k.tolist()
    if bq != bk:
        raise ValueError("torch-flash varlen: query and key boundaries must match (training layout)")
    outs = [_attend(q[None, bq[i]:bq[i + 1]], k[None, bk[i]:bk[i + 1]], v[None, bk[i]:bk[i + 1]], softmax_scale,
                    causal)[0] for i in range(len(bq) - 1) if bq[i + 1] > bq[i]]
    return torch.cat(outs, dim=0)
