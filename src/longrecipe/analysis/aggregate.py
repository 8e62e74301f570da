"""Aggregates of per-token logit shifts: significance per token id / part of speech, top tokens per position bucket.

Definitions (``shift_i = |S_H'(x_i | x_<i) - S_H(x_i | x_<i)|``, eq. 3 summand, one per scored token i):

* ``A_sum(t)``  = sum of ``shift_i`` over occurrences of token id t — the paper's A(t) (eq. 3); tokens are ranked by it.
* ``A_mean(t)`` = ``A_sum(t) / count(t)`` — frequency-free variant, reported beside it.
* Position buckets: ``bucket = position // bucket_width``. In each bucket the top ``top_fraction`` of its tokens
  by shift are kept: ``ceil(top_fraction * n_bucket)`` slots, tokens tied at the threshold sharing the last slots
  fractionally (``top_fraction_weights``), so the counts below are weighted and order-independent.
* ``pos_frequency[b][P]`` = share of bucket b's kept tokens tagged P (Fig. 4); ``top_tokens`` of a bucket: the
  kept token ids ranked by their summed shift in that bucket.
* ``top_share(P)`` = share of all kept tokens tagged P; ``share(P)`` = share of all tokens tagged P;
  ``lift(P) = top_share(P) / share(P)`` (>1: P is over-represented among the most shifted tokens).
* Anchor types: parts of speech with ``count >= min_pos_count``, not in ``exclude``, ``lift >= min_lift`` (1.1:
  clearly over-represented; tags at lift ~1 are noise), ranked by
  ``rank_by`` (``lift`` default: raw ``top_share`` also rewards tags that are merely frequent, e.g. NOUN), the
  first ``n_anchors`` of them.
"""

from __future__ import annotations

import math
from collections.abc import Callable

import numpy as np

RANK_KEYS = ("lift", "top_share", "A_sum", "A_mean")


def top_fraction_weights(buckets: np.ndarray, shift: np.ndarray, fraction: float) -> np.ndarray:
    """Weights selecting the top ``fraction`` of each bucket by shift, ``k_b = ceil(fraction * n_b)`` tokens.

    Tokens strictly above the bucket's k-th largest shift get weight 1; the ``m`` tokens tied at that value share
    the remaining ``r`` slots (weight ``r / m`` each), so weights sum to exactly ``k_b`` per bucket and ties never
    depend on record order (a bucket where most shifts are equal gives each tied token the same weight).
    """
    if not 0.0 < fraction <= 1.0:
        raise ValueError(f"top_fraction must be in (0, 1], got {fraction}; the paper uses 0.2")
    buckets = np.asarray(buckets, dtype=np.int64)
    shift = np.asarray(shift, dtype=np.float64)
    n = len(shift)
    if n == 0:
        return np.zeros(0)
    order = np.lexsort((-shift, buckets))
    sb, ss = buckets[order], shift[order]
    first = np.searchsorted(sb, sb, side="left")
    counts = np.bincount(buckets)
    keep = np.ceil(fraction * counts - 1e-9).astype(np.int64)
    kth = ss[first + keep[sb] - 1]  # the k-th largest shift of each record's bucket
    above = ss > kth
    tied = ss == kth
    n_above = np.bincount(sb, weights=above, minlength=len(counts))
    n_tied = np.bincount(sb, weights=tied, minlength=len(counts))
    w_sorted = np.where(above, 1.0, np.where(tied, (keep[sb] - n_above[sb]) / np.maximum(n_tied[sb], 1), 0.0))
    weights = np.empty(n)
    weights[order] = w_sorted
    return weights


def _group(codes: np.ndarray, values: np.ndarray, size: int) -> tuple[np.ndarray, np.ndarray]:
    return np.bincount(codes, minlength=size), np.bincount(codes, weights=values, minlength=size)


def aggregate_shifts(
    *,
    positions: np.ndarray,
    token_ids: np.ndarray,
    pos_tags: np.ndarray,
    shift: np.ndarray,
    bucket_width: int,
    top_fraction: float = 0.2,
    n_anchors: int = 3,
    rank_by: str = "lift",
    min_pos_count: int = 20,
    min_lift: float = 1.1,
    exclude: tuple[str, ...] | list[str] = ("X", "SPACE"),
    top_k_tokens: int = 50,
    top_k_per_bucket: int = 10,
    shift_entropy: np.ndarray | None = None,
    p_true: np.ndarray | None = None,
    decode: Callable[[int], str] | None = None,
) -> dict:
    """All aggregates as a JSON-ready dict (see the module doc for the definitions)."""
    if bucket_width < 1:
        raise ValueError(f"bucket_width must be >= 1, got {bucket_width}")
    if rank_by not in RANK_KEYS:
        raise ValueError(f"anchor_rank_by must be one of {list(RANK_KEYS)}, got {rank_by!r}")
    positions = np.asarray(positions, dtype=np.int64)
    token_ids = np.asarray(token_ids, dtype=np.int64)
    shift = np.asarray(shift, dtype=np.float64)
    n = len(shift)
    if n == 0:
        raise ValueError("no scored tokens: the corpus gave no sample of >= 2 tokens; check corpus.source")
    decode = decode or (lambda i: str(i))
    buckets = positions // bucket_width
    n_buckets = int(buckets.max()) + 1
    weight = top_fraction_weights(buckets, shift, top_fraction)
    top = weight > 0

    pos_names, pos_codes = np.unique(np.asarray(pos_tags, dtype=str), return_inverse=True)
    n_pos = len(pos_names)
    pos_count, pos_sum = _group(pos_codes, shift, n_pos)
    pos_top = np.bincount(pos_codes, weights=weight, minlength=n_pos)
    share = pos_count / n
    top_share = pos_top / weight.sum()
    lift = np.divide(top_share, share, out=np.zeros(n_pos), where=share > 0)
    pos_rows = [
        {"pos": str(pos_names[j]), "count": int(pos_count[j]), "share": float(share[j]),
         "A_sum": float(pos_sum[j]), "A_mean": float(pos_sum[j] / pos_count[j]),
         "top_share": float(top_share[j]), "lift": float(lift[j])}
        for j in range(n_pos)
    ]
    pos_rows.sort(key=lambda r: (-r[rank_by], r["pos"]))
    anchors = [r["pos"] for r in pos_rows
               if r["count"] >= min_pos_count and r["pos"] not in set(exclude) and r["lift"] >= min_lift][:n_anchors]

    # per token id (A(t), eq. 3), ranked by the sum
    ids, tok_codes = np.unique(token_ids, return_inverse=True)
    tok_count, tok_sum = _group(tok_codes, shift, len(ids))
    best = np.lexsort((ids, -tok_sum))[:top_k_tokens]
    token_rows = []
    for j in best:
        tags, counts = np.unique(pos_codes[tok_codes == j], return_counts=True)
        token_rows.append({
            "token_id": int(ids[j]), "token": decode(int(ids[j])), "pos": str(pos_names[tags[np.argmax(counts)]]),
            "count": int(tok_count[j]), "A_sum": float(tok_sum[j]), "A_mean": float(tok_sum[j] / tok_count[j]),
        })

    # per position bucket: Fig. 4 frequencies, top tokens, eq. 2 summary
    b_count = np.bincount(buckets, minlength=n_buckets)
    b_top = np.bincount(buckets, weights=weight, minlength=n_buckets)
    freq = np.bincount(buckets * n_pos + pos_codes, weights=weight, minlength=n_buckets * n_pos).reshape(n_buckets, n_pos)
    freq = np.divide(freq, b_top[:, None], out=np.zeros_like(freq), where=b_top[:, None] > 0)
    b_shift = np.bincount(buckets, weights=shift, minlength=n_buckets)
    bucket_rows = []
    for b in range(n_buckets):
        if b_count[b] == 0:
            continue
        sel = top & (buckets == b)
        tids, tcodes = np.unique(token_ids[sel], return_inverse=True)
        tcounts = np.bincount(tcodes, minlength=len(tids))
        tsum = np.bincount(tcodes, weights=shift[sel], minlength=len(tids))
        order = np.lexsort((tids, -tcounts, -tsum))[:top_k_per_bucket]
        row = {
            "bucket": b, "start": b * bucket_width, "end": (b + 1) * bucket_width,
            "n_tokens": int(b_count[b]), "n_top": float(b_top[b]), "shift_mean": float(b_shift[b] / b_count[b]),
            "top_threshold": float(shift[sel].min()) if sel.any() else None,
            "pos_frequency": {str(pos_names[j]): float(freq[b, j]) for j in range(n_pos) if freq[b, j] > 0},
            "top_tokens": [{"token_id": int(tids[k]), "token": decode(int(tids[k])), "count": int(tcounts[k]),
                            "A_sum": float(tsum[k])} for k in order],
        }
        in_b = buckets == b
        if shift_entropy is not None:
            row["shift_entropy_mean"] = float(np.mean(np.asarray(shift_entropy)[in_b]))
        if p_true is not None:
            row["p_true_mean"] = float(np.mean(np.asarray(p_true)[in_b]))
        bucket_rows.append(row)

    return {
        "n_tokens": int(n),
        "bucket_width": int(bucket_width),
        "n_buckets": int(n_buckets),
        "top_fraction": float(top_fraction),
        "n_top": float(weight.sum()),
        "A_total": float(shift.sum()),
        "anchor_rank_by": rank_by,
        "min_lift": float(min_lift),
        "anchors": anchors,
        "pos": pos_rows,
        "tokens": token_rows,
        "buckets": bucket_rows,
    }


def auto_bucket_width(context_length: int, n_buckets: int) -> int:
    """``ceil(context_length / n_buckets)`` (>= 1)."""
    if n_buckets < 1:
        raise ValueError(f"n_buckets must be >= 1, got {n_buckets}")
    return max(1, math.ceil(context_length / n_buckets))
