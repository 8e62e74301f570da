"""Sampling uncertainty of scores on the 0-100 scale: binomial standard errors, 95 % intervals, propagation.

A RULER / NIAH score is the mean of ``n`` per-sample scores in ``[0, 1]``. Its binomial standard error is
``100 * sqrt(p (1 - p) / n)`` with ``p = score / 100`` (exact for 0/1 scores, an upper bound for fractional
``string_match_all`` scores, whose variance is at most ``p (1 - p)``); the 95 % interval is Wilson's, which stays
inside ``[0, 100]`` and is not empty at 0 or 100. An average of independent scores ``sum w_i s_i`` has standard error
``sqrt(sum w_i^2 se_i^2)`` and a normal 95 % interval clipped to ``[0, 100]``.
"""

from __future__ import annotations

import math
from collections.abc import Sequence

Z95 = 1.959963984540054  # two-sided 95 % normal quantile


def binomial_se(score: float, n: int) -> float:
    """Standard error (0-100 scale) of a mean of ``n`` per-sample scores in [0, 1] averaging ``score / 100``."""
    if n < 1:
        raise ValueError(f"n must be >= 1 for a standard error, got {n}")
    p = min(max(score / 100.0, 0.0), 1.0)
    return 100.0 * math.sqrt(p * (1.0 - p) / n)


def wilson_interval(score: float, n: int, z: float = Z95) -> tuple[float, float]:
    """Wilson score interval (0-100 scale) for a proportion ``score / 100`` observed over ``n`` samples."""
    if n < 1:
        raise ValueError(f"n must be >= 1 for an interval, got {n}")
    p = min(max(score / 100.0, 0.0), 1.0)
    denom = 1.0 + z * z / n
    center = (p + z * z / (2 * n)) / denom
    half = z * math.sqrt(p * (1.0 - p) / n + z * z / (4 * n * n)) / denom
    return 100.0 * max(center - half, 0.0), 100.0 * min(center + half, 1.0)


def normal_interval(score: float, se: float, z: float = Z95, *, bounds: tuple[float, float] | None = (0.0, 100.0)
                    ) -> tuple[float, float]:
    """``score +- z * se``, clipped to ``bounds`` (``None``: unbounded)."""
    lo, hi = score - z * se, score + z * se
    if bounds is not None:
        lo, hi = max(lo, bounds[0]), min(hi, bounds[1])
    return lo, hi


def sample_se(per_sample: Sequence[float]) -> float | None:
    """Standard error (0-100 scale) of the mean of per-sample scores in [0, 1] from their spread (``None`` for n < 2);
    used for continuous metrics (LongBench F1 / ROUGE), where the binomial bound is loose."""
    n = len(per_sample)
    if n < 2:
        return None
    mean = sum(per_sample) / n
    var = sum((x - mean) ** 2 for x in per_sample) / (n - 1)
    return 100.0 * math.sqrt(var / n)


def combined_se(weights: Sequence[float], ses: Sequence[float | None]) -> float | None:
    """Standard error of ``sum w_i s_i`` for independent ``s_i``; ``None`` if any part has no standard error."""
    if any(se is None or (isinstance(se, float) and math.isnan(se)) for se in ses):
        return None
    return math.sqrt(sum((w * se) ** 2 for w, se in zip(weights, ses)))
