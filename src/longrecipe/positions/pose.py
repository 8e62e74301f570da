"""Positional skip-wise training (PoSE, Zhu et al. 2023), generalised to ``num_chunks`` chunks.

Per sample: ``c = min(num_chunks, n)`` contiguous chunks cut at ``c-1`` distinct cut points drawn
uniformly from ``[1, n-1]``; chunk ``j >= 1`` is shifted by a skip bias ``u_j``, where
``u_1 <= ... <= u_{c-1}`` are sorted i.i.d. uniform integers in ``[0, target_length - n]``. The first
chunk keeps ``0..len_0-1``; positions stay strictly increasing and the last is
``n - 1 + u_{c-1} <= target_length - 1``. For ``c = 2`` this is PoSE's recipe with the first chunk
unshifted (skip ``u ~ U{0..L'-n}``).
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import ClassVar

import numpy as np

from longrecipe.positions.base import (
    PositionScheme,
    check_int,
    check_target_length,
    offsets_to_positions,
    sorted_subset,
)


@dataclass(frozen=True)
class PoSE(PositionScheme):
    target_length: int
    num_chunks: int = 2
    name: ClassVar[str] = "pose"

    def __post_init__(self) -> None:
        object.__setattr__(self, "target_length", check_target_length(self.target_length))
        object.__setattr__(
            self, "num_chunks",
            check_int("num_chunks", self.num_chunks, minimum=1, fix="use num_chunks=2 as in PoSE (1 = no skipping)"),
        )

    def _positions(self, input_ids: np.ndarray, rng: np.random.Generator, segment_starts: np.ndarray | None) -> np.ndarray:
        n = input_ids.shape[0]
        chunks = min(self.num_chunks, n)
        if chunks == 1:
            return np.arange(n, dtype=np.int64)
        starts = np.empty(chunks, dtype=np.int64)
        starts[0] = 0
        starts[1:] = sorted_subset(rng, n - 1, chunks - 1) + 1
        offsets = np.zeros(chunks, dtype=np.int64)
        offsets[1:] = np.sort(rng.integers(0, self.target_length - n + 1, size=chunks - 1, dtype=np.int64))
        return offsets_to_positions(n, starts, offsets)
