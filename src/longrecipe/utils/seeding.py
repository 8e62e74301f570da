"""Deterministic RNG streams: one independent generator per (seed, epoch, sample)."""

from __future__ import annotations

import numpy as np


def sample_rng(seed: int, epoch: int, index: int, *, stream: int = 0) -> np.random.Generator:
    """Generator for one sample, independent of worker count, batch order and resume point."""
    if min(seed, epoch, index, stream) < 0:
        raise ValueError(f"seed/epoch/index/stream must be >= 0, got {(seed, epoch, index, stream)}")
    return np.random.default_rng(np.random.SeedSequence([seed, epoch, index, stream]))
