"""Positional skip-wise training (PoSE, Zhu et al. 2023), generalised to ``num_chunks`` chunks.

Per sample: ``c = min(num_chunks, n)`` contiguous chunks cut at ``c-1`` distinct cut points drawn
uniformly from ``[1, n-1]``; chunk ``j >= 1`` is shifted by a skip bias ``u_j``, where
``u_1 <= ... <= u_{c-1}`` are sorted i.i.d. uniform integers in ``[0, target_length - n]``. The first
chunk keeps ``0..len_0-1``; positions stay strictly increasing and the last is
``n - 1 + u_{c-1} <= target_length - 1``. For ``c = 2`` this is PoSE's recipe with the first chunk
unshifted (skip ``u ~ U{0..L'-n}``).

``variant="longrecipe_release"`` is instead the PoSE baseline of the LongRecipe authors' released code
(``utils/preprocess_data.py``, ``setting_choice == 'pose'``), the one behind the paper's PoSE rows (Table 1,
Fig. 3): with ``B = L' - n``, draw ``lt ~ U{0..B}`` and ``rt ~ U{lt..B}``; tokens ``< lt`` keep ``0..lt-1`` and the
rest are shifted by ``rt``. When ``lt >= n`` the released code builds ``lt`` contiguous positions and the sample is
cut to its ``n`` tokens, so there is **no skip at all** -- the case of most samples when ``B >> n`` (about 57 % at
128k / 38.4k). ``lt = 0`` (probability ``1/(B+1)``) would shift the whole sample by ``rt`` without any gap; we give
``0..n-1`` instead, so positions start at 0 (the contract), which under relative RoPE is the same sample.
``num_chunks`` does not apply to this variant. It is what reproduces the paper's "LongRecipe ~2x PoSE token
distance" (2.07x at 128k / 38.4k by the closed forms); Zhu et al.'s PoSE gives 1.54x.
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
    variant: str = "zhu2023"
    name: ClassVar[str] = "pose"
    VARIANTS: ClassVar[tuple[str, ...]] = ("zhu2023", "longrecipe_release")

    def __post_init__(self) -> None:
        object.__setattr__(self, "target_length", check_target_length(self.target_length))
        object.__setattr__(
            self, "num_chunks",
            check_int("num_chunks", self.num_chunks, minimum=1, fix="use num_chunks=2 as in PoSE (1 = no skipping)"),
        )
        if self.variant not in self.VARIANTS:
            raise ValueError(f"position.variant must be one of {list(self.VARIANTS)}, got {self.variant!r} "
                             "(zhu2023: PoSE as published; longrecipe_release: the LongRecipe code's PoSE baseline)")

    def _positions(self, input_ids: np.ndarray, rng: np.random.Generator, segment_starts: np.ndarray | None) -> np.ndarray:
        n = input_ids.shape[0]
        if self.variant == "longrecipe_release":
            return release_pose_positions(rng, n, self.target_length)
        chunks = min(self.num_chunks, n)
        if chunks == 1:
            return np.arange(n, dtype=np.int64)
        starts = np.empty(chunks, dtype=np.int64)
        starts[0] = 0
        starts[1:] = sorted_subset(rng, n - 1, chunks - 1) + 1
        offsets = np.zeros(chunks, dtype=np.int64)
        offsets[1:] = np.sort(rng.integers(0, self.target_length - n + 1, size=chunks - 1, dtype=np.int64))
        return offsets_to_positions(n, starts, offsets)


def release_pose_positions(rng: np.random.Generator, n: int, target_length: int) -> np.ndarray:
    """The LongRecipe release's PoSE baseline (see the module doc): one cut ``lt``, one skip ``rt >= lt``."""
    budget = target_length - n
    lt = int(rng.integers(0, budget + 1))
    rt = int(rng.integers(lt, budget + 1))
    positions = np.arange(n, dtype=np.int64)
    if 0 < lt < n:
        positions[lt:] += rt
    return positions


def release_pose_expected_distance(n: int, target_length: int) -> tuple[float, float]:
    """Closed forms for :func:`release_pose_positions`: (share of samples without a skip, mean average distance).

    A skip ``s`` after ``a`` tokens adds ``s * a * (n - a)`` to the pair-distance sum of ``0..n-1``, whose mean is
    ``(n + 1) / 3``; ``E[s | a] = (a + B) / 2``, ``a ~ U{0..B}``, and only ``0 < a < n`` skip.
    """
    budget = target_length - n
    pairs = n * (n - 1) / 2
    a = np.arange(1, min(n - 1, budget) + 1, dtype=np.float64)
    extra = float(np.sum(a * (n - a) * (a + budget) / 2)) / pairs / (budget + 1)
    no_skip = 1.0 - a.size / (budget + 1)
    return no_skip, (n + 1) / 3 + extra
