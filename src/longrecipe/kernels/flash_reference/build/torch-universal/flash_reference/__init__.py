"""A pure-PyTorch reference of flash-attn's ``flash_attn_func`` / ``flash_attn_varlen_func`` (any device, any dtype).

Loaded through transformers' attention-kernel mechanism (the ``kernels`` package, ``LOCAL_KERNELS``), so that
transformers' real flash-attention code path (mask pre-processing, varlen boundaries, unpadding) runs on a machine
without flash-attn -- see ``longrecipe.models.attention``. The maths is written out (scores, masks, softmax in
float32) rather than delegated to another attention kernel, so it is an independent reference. Semantics follow
flash-attn 2.x: ``[batch, seq, heads, dim]`` (dense) / ``[total, heads, dim]`` (varlen) layouts, grouped-query
attention by head repetition, causal masks aligned to the bottom-right corner, ``window_size=(left, right)`` with
-1 for unbounded, tanh ``softcap``.
"""

from __future__ import annotations

import math

import torch


def _attend(q, k, v, scale, causal, window_size, softcap):
    """One sequence: ``q`` ``[Tq, H, D]``, ``k``/``v`` ``[Tk, Hk, D]`` -> ``[Tq, H, D]``."""
    heads, kv_heads = q.shape[1], k.shape[1]
    if heads != kv_heads:
        if heads % kv_heads:
            raise ValueError(f"query heads ({heads}) must be a multiple of key/value heads ({kv_heads})")
        k = k.repeat_interleave(heads // kv_heads, dim=1)
        v = v.repeat_interleave(heads // kv_heads, dim=1)
    work = torch.promote_types(q.dtype, torch.float32)  # float32 maths for half inputs, float64 kept
    scores = torch.einsum("qhd,khd->hqk", q.to(work), k.to(work)) * scale
    if softcap:
        scores = softcap * torch.tanh(scores / softcap)
    tq, tk = q.shape[0], k.shape[0]
    row = torch.arange(tq, device=q.device)[:, None] + (tk - tq)  # bottom-right aligned query index
    col = torch.arange(tk, device=q.device)[None, :]
    allowed = torch.ones(tq, tk, dtype=torch.bool, device=q.device)
    left, right = window_size if window_size is not None else (-1, -1)
    if causal:
        allowed &= col <= row
    if left is not None and left >= 0:
        allowed &= col >= row - left
    if right is not None and right >= 0 and not causal:
        allowed &= col <= row + right
    scores = scores.masked_fill(~allowed, float("-inf"))
    probs = torch.softmax(scores, dim=-1).nan_to_num(0.0)  # rows with no visible key give 0, as flash-attn does
    return torch.einsum("hqk,khd->qhd", probs, v.to(work)).to(q.dtype)


def _check(dropout_p: float, alibi_slopes) -> None:
    if dropout_p:
        raise ValueError(f"the reference flash kernel has no dropout (got dropout_p={dropout_p}); use 0.0")
    if alibi_slopes is not None:
        raise ValueError("the reference flash kernel has no ALiBi")


def flash_attn_func(q, k, v, dropout_p=0.0, softmax_scale=None, causal=False, window_size=(-1, -1), softcap=0.0,
                    alibi_slopes=None, deterministic=False, return_attn_probs=False):
    """Dense attention over ``[B, T, H, D]`` inputs (every row one sequence)."""
    _check(dropout_p, alibi_slopes)
    scale = softmax_scale if softmax_scale is not None else 1.0 / math.sqrt(q.shape[-1])
    return torch.stack([_attend(q[b], k[b], v[b], scale, causal, window_size, softcap) for b in range(q.shape[0])])


def flash_attn_varlen_func(q, k, v, cu_seqlens_q, cu_seqlens_k, max_seqlen_q=None, max_seqlen_k=None, dropout_p=0.0,
                           softmax_scale=None, causal=False, window_size=(-1, -1), softcap=0.0, alibi_slopes=None,
                           deterministic=False, return_attn_probs=False):
    """Attention over sequences concatenated along dim 0 (``[total, H, D]``), split by ``cu_seqlens_*``."""
    _check(dropout_p, alibi_slopes)
    if len(cu_seqlens_q) != len(cu_seqlens_k):
        raise ValueError("cu_seqlens_q and cu_seqlens_k must describe the same number of sequences")
    scale = softmax_scale if softmax_scale is not None else 1.0 / math.sqrt(q.shape[-1])
    bq, bk = [int(x) for x in cu_seqlens_q], [int(x) for x in cu_seqlens_k]
    if bq[-1] != q.shape[0] or bk[-1] != k.shape[0]:
        raise ValueError(f"cu_seqlens end at {bq[-1]}/{bk[-1]} but the inputs hold {q.shape[0]}/{k.shape[0]} tokens")
    outs = [_attend(q[bq[i]:bq[i + 1]], k[bk[i]:bk[i + 1]], v[bk[i]:bk[i + 1]], scale, causal, window_size, softcap)
            for i in range(len(bq) - 1)]
    return torch.cat(outs, dim=0)
