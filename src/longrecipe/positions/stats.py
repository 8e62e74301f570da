"""Statistics of position-id arrays (paper §6.4, Fig. 3), all exact.

* ``average_distance``: mean ``|p_i - p_j|`` over all ``n(n-1)/2`` pairs ``i < j``. For sorted ``p``
  (0-indexed) the sum of pairwise distances is ``sum_i (2i - n + 1) p_i``, so the mean is
  ``2 / (n(n-1)) * sum_i (2i - n + 1) p_i`` — O(n) after an O(n log n) sort, computed in exact int64.
* ``average_segment_length``: mean length of the maximal runs with step +1 (``n / #runs``).
* ``max_position``: the largest position id.
* ``distance_coverage``: the ``T - 1`` non-zero relative distances ``1..T-1`` of a window
  ``[0, T)`` are split into ``num_buckets`` equal buckets (distance ``d`` falls in bucket
  ``floor((d-1) * B / (T-1))``); coverage is the fraction of buckets hit by at least one pair. The set
  of pair distances is the difference set of the positions, read off the autocorrelation of their
  indicator vector (an FFT of length >= 2T, O(T log T): ~10 ms at T = 128k), so it is exact, not
  sampled: counts are integers and the FFT error is far below the 0.5 threshold used. Small inputs
  use the direct O(n^2) difference set, and the two are tested equal.
"""

from __future__ import annotations

from dataclasses import asdict, dataclass
from typing import Any

import numpy as np

_DIRECT_PAIRS = 2_000_000  # below this many pairs, the difference set is computed directly


def _as_positions(positions: Any, *, min_size: int = 1) -> np.ndarray:
    p = np.asarray(positions)
    if p.ndim != 1 or p.size < min_size or not np.issubdtype(p.dtype, np.integer):
        raise ValueError(f"positions must be a 1-D integer array with at least {min_size} entries, "
                         f"got shape {p.shape} and dtype {p.dtype}")
    return p.astype(np.int64, copy=False)


def average_distance(positions: Any) -> float:
    """Exact mean of ``|p_i - p_j|`` over all pairs ``i < j`` (needs at least 2 positions)."""
    p = _as_positions(positions, min_size=2)
    if not bool(np.all(p[1:] >= p[:-1])):
        p = np.sort(p)
    n = p.shape[0]
    weights = 2 * np.arange(n, dtype=np.int64) - (n - 1)
    total = int(np.dot(weights, p))  # exact: |terms| <= n * max|p| and the sum fits in int64 for n, p < 2^26
    return 2.0 * total / (n * (n - 1))


def average_segment_length(positions: Any) -> float:
    """Mean length of the maximal runs of consecutive positions (step exactly +1)."""
    p = _as_positions(positions)
    runs = 1 + int(np.count_nonzero(np.diff(p) != 1))
    return p.shape[0] / runs


def pair_distances_hit(positions: Any, target_length: int) -> np.ndarray:
    """Boolean ``hit[d]`` for ``d`` in ``[0, target_length)``: some pair ``i != j`` has ``|p_i - p_j| = d``."""
    p = _as_positions(positions)
    if target_length < 1:
        raise ValueError(f"target_length must be >= 1, got {target_length}")
    if p.min() < 0 or p.max() >= target_length:
        raise ValueError(f"positions must lie in [0, target_length={target_length}), got "
                         f"[{int(p.min())}, {int(p.max())}]; pass the scheme's target_length")
    n = p.shape[0]
    hit = np.zeros(target_length, dtype=bool)
    if n * (n - 1) // 2 <= _DIRECT_PAIRS:
        diffs = np.abs(p[:, None] - p[None, :])
        hit[diffs[np.triu_indices(n, k=1)]] = True
        return hit
    indicator = np.zeros(target_length, dtype=np.float64)
    indicator[p] = 1.0
    size = 1 << int(2 * target_length - 1).bit_length()
    spectrum = np.fft.rfft(indicator, size)
    counts = np.fft.irfft(spectrum * np.conj(spectrum), size)[:target_length]
    hit[1:] = counts[1:] > 0.5
    if np.unique(p).shape[0] < n:  # repeated positions are pairs at distance 0
        hit[0] = True
    return hit


def distance_coverage(positions: Any, target_length: int, num_buckets: int = 100) -> float:
    """Fraction of the ``num_buckets`` equal buckets of distances ``1..T-1`` hit by some pair."""
    if target_length < 2:
        raise ValueError(f"target_length must be >= 2 for distance coverage, got {target_length}")
    if not 1 <= num_buckets <= target_length - 1:
        raise ValueError(f"num_buckets must be in [1, target_length - 1 = {target_length - 1}], got {num_buckets}; "
                         "use e.g. num_buckets=100")
    hit = pair_distances_hit(positions, target_length)
    d = np.flatnonzero(hit[1:]) + 1
    buckets = ((d - 1) * num_buckets) // (target_length - 1)
    return float(np.unique(buckets).shape[0]) / num_buckets


@dataclass(frozen=True)
class PositionStats:
    avg_distance: float
    avg_segment_length: float
    max_position: int
    coverage: float

    def as_dict(self) -> dict[str, float | int]:
        return asdict(self)


def position_stats(positions: Any, target_length: int, *, num_buckets: int = 100) -> PositionStats:
    """All four statistics of one position array (see the module docstring)."""
    p = _as_positions(positions, min_size=2)
    return PositionStats(
        avg_distance=average_distance(p),
        avg_segment_length=average_segment_length(p),
        max_position=int(p.max()),
        coverage=distance_coverage(p, target_length, num_buckets),
    )
