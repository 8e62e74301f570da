"""Perplexity by position bucket on long documents (PoSE-style length extrapolation check).

Documents are tokenised and concatenated (EOS between them) into one stream; windows of ``L`` tokens are cut
at seeded offsets and scored with the model. Logits are computed chunk by chunk from the final hidden states,
so a ``[T, vocab]`` fp32 tensor never exists for long ``T``.
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from typing import Any

import numpy as np


def token_stream(texts: Sequence[str], tokenizer, *, min_tokens: int) -> np.ndarray:
    """Tokenise ``texts`` (no special tokens) joined by EOS, cycling until ``min_tokens`` are available."""
    eos = tokenizer.eos_token_id
    parts = [np.asarray(tokenizer(t, add_special_tokens=False)["input_ids"], dtype=np.int64) for t in texts if t]
    if not parts or sum(len(p) for p in parts) == 0:
        raise ValueError("ppl documents are empty; set eval.source to a corpus folder or 'synthetic'")
    sep = [np.asarray([eos], dtype=np.int64)] if eos is not None else []
    one = np.concatenate([x for p in parts for x in ([p, *sep])])
    reps = max(1, math.ceil(min_tokens / len(one)))
    return np.tile(one, reps)


def window_starts(stream_len: int, length: int, num: int, rng: np.random.Generator) -> np.ndarray:
    """``num`` window starts: disjoint when the stream allows, otherwise evenly spread (deterministic)."""
    if length > stream_len:
        raise ValueError(f"length {length} exceeds the token stream ({stream_len}); add documents")
    slots = stream_len // length
    if slots >= num:
        return np.sort(rng.choice(slots, size=num, replace=False)) * length
    return np.linspace(0, stream_len - length, num).astype(np.int64)


def token_nll(model, input_ids, *, chunk_size: int = 1024):
    """Per-token negative log-likelihood ``[B, T-1]`` (fp32) of ``input_ids`` ``[B, T]``, chunked over T."""
    import torch
    import torch.nn.functional as F

    base = model.get_decoder() if hasattr(model, "get_decoder") else model.base_model
    head = model.get_output_embeddings()
    mask = torch.ones_like(input_ids)
    positions = torch.arange(input_ids.shape[1], device=input_ids.device).expand_as(input_ids)
    with torch.inference_mode():
        hidden = base(input_ids=input_ids, attention_mask=mask, position_ids=positions).last_hidden_state
        out = []
        T = input_ids.shape[1]
        for s in range(0, T - 1, chunk_size):
            e = min(T - 1, s + chunk_size)
            logits = head(hidden[:, s:e]).float()
            target = input_ids[:, s + 1 : e + 1]
            out.append(F.cross_entropy(logits.transpose(1, 2), target, reduction="none"))
        return torch.cat(out, dim=1)


def bucket_edges(length: int, num_buckets: int) -> np.ndarray:
    """Edges over predicted-token positions ``1..length-1`` (position p predicts token p from tokens < p)."""
    if num_buckets < 1 or num_buckets > length - 1:
        raise ValueError(f"num_buckets must be in [1, length-1={length - 1}], got {num_buckets}")
    return np.linspace(1, length, num_buckets + 1).round().astype(np.int64)


def positional_perplexity(model, tokenizer, texts: Sequence[str], lengths: Sequence[int], *, num_windows: int = 4,
                          num_buckets: int = 8, batch_size: int = 1, chunk_size: int = 1024, seed: int = 0,
                          progress: bool = True) -> list[dict[str, Any]]:
    """For each length: overall perplexity and per-bucket perplexity.

    Returns ``[{length, bucket_start, bucket_end, ppl, nll, tokens}]`` (``bucket_start=None`` for the overall row).
    """
    import torch
    from tqdm.auto import tqdm

    if not lengths:
        raise ValueError("eval.lengths must list at least one length")
    stream = token_stream(texts, tokenizer, min_tokens=max(lengths) * 2)
    device = next(model.parameters()).device
    rows: list[dict[str, Any]] = []
    for length in lengths:
        length = int(length)
        starts = window_starts(len(stream), length, num_windows, np.random.default_rng([seed, length]))
        total = np.zeros(length - 1, dtype=np.float64)
        for b in tqdm(range(0, len(starts), batch_size), desc=f"ppl@{length}", disable=not progress):
            batch = np.stack([stream[s : s + length] for s in starts[b : b + batch_size]])
            nll = token_nll(model, torch.from_numpy(batch).to(device), chunk_size=chunk_size)
            total += nll.double().sum(0).cpu().numpy()
        per_pos = total / len(starts)  # mean nll at each predicted position (1..length-1)
        rows.append(_row(length, None, None, per_pos, len(starts)))
        edges = bucket_edges(length, num_buckets)
        for a, e in zip(edges[:-1], edges[1:]):
            rows.append(_row(length, int(a), int(e), per_pos[a - 1 : e - 1], len(starts)))
    return rows


def _row(length: int, start: int | None, end: int | None, nll: np.ndarray, windows: int) -> dict[str, Any]:
    mean = float(nll.mean())
    return {"length": length, "bucket_start": start, "bucket_end": end, "nll": mean, "ppl": math.exp(mean),
            "tokens": int(len(nll) * windows)}
