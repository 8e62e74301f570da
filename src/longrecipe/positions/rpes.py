"""Randomized positional encoding scheme (RPES, Ruoss et al. 2023).

The ``n`` positions are a uniformly random ordered subset of ``[0, target_length)`` that always
contains 0: ``{0} ∪ (1 + S)`` with ``S`` a uniform ``(n-1)``-subset of ``[0, target_length-1)``.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import ClassVar

import numpy as np

from longrecipe.positions.base import PositionScheme, check_target_length, sorted_subset


@dataclass(frozen=True)
class RandomizedPositions(PositionScheme):
    target_length: int
    name: ClassVar[str] = "rpes"

    def __post_init__(self) -> None:
        object.__setattr__(self, "target_length", check_target_length(self.target_length))

    def _positions(self, input_ids: np.ndarray, rng: np.random.Generator, segment_starts: np.ndarray | None) -> np.ndarray:
        n = input_ids.shape[0]
        out = np.empty(n, dtype=np.int64)
        out[0] = 0
        out[1:] = sorted_subset(rng, self.target_length - 1, n - 1) + 1
        return out
