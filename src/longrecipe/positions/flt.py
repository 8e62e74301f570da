"""Full-length text training (FLT): the sample's own positions ``0, 1, ..., n-1``."""

from __future__ import annotations

from dataclasses import dataclass
from typing import ClassVar

import numpy as np

from longrecipe.positions.base import PositionScheme, check_target_length


@dataclass(frozen=True)
class FullLength(PositionScheme):
    """``positions = arange(n)``; ``target_length`` only bounds the sample length."""

    target_length: int
    name: ClassVar[str] = "flt"

    def __post_init__(self) -> None:
        object.__setattr__(self, "target_length", check_target_length(self.target_length))

    def _positions(self, input_ids: np.ndarray, rng: np.random.Generator, segment_starts: np.ndarray | None) -> np.ndarray:
        return np.arange(input_ids.shape[0], dtype=np.int64)
