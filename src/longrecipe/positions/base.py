"""Shared pieces of the position schemes: input checks, the sorted-subset sampler, the base class.

Every scheme is a callable ``scheme(input_ids, rng, *, segment_starts=None) -> np.ndarray[int64]``
whose output has the length of ``input_ids``, is strictly increasing, starts at 0 and stays
``< target_length`` (see CONTRIBUTING.md, "Position scheme").
"""

from __future__ import annotations

import numbers
from typing import Any, ClassVar

import numpy as np


def check_int(field: str, value: Any, *, minimum: int, fix: str) -> int:
    """Return ``value`` as ``int`` or raise a ``ValueError`` naming ``field``, the allowed range and ``fix``."""
    if isinstance(value, bool) or not isinstance(value, numbers.Integral):
        raise ValueError(f"{field} must be an integer >= {minimum}, got {value!r} ({type(value).__name__}); {fix}")
    if int(value) < minimum:
        raise ValueError(f"{field} must be an integer >= {minimum}, got {int(value)}; {fix}")
    return int(value)


def as_input_ids(input_ids: Any) -> np.ndarray:
    """``input_ids`` as a non-empty 1-D integer array (lists, numpy arrays and CPU tensors accepted)."""
    ids = np.asarray(input_ids)
    if ids.ndim != 1 or ids.size == 0:
        raise ValueError(
            f"input_ids must be a non-empty 1-D array of token ids (one sample), got shape {ids.shape}; "
            "call the scheme once per sample"
        )
    if not np.issubdtype(ids.dtype, np.integer):
        raise ValueError(f"input_ids must hold integer token ids, got dtype {ids.dtype}")
    return ids


def check_rng(rng: Any) -> np.random.Generator:
    if not isinstance(rng, np.random.Generator):
        raise ValueError(
            f"rng must be a numpy.random.Generator, got {type(rng).__name__}; "
            "use longrecipe.utils.seeding.sample_rng(seed, epoch, index)"
        )
    return rng


def check_segment_starts(segment_starts: Any, n: int) -> np.ndarray:
    """Validate explicit segment starts: 1-D ints, first 0, strictly increasing, all ``< n``."""
    starts = np.asarray(segment_starts)
    if starts.ndim != 1 or starts.size == 0 or not np.issubdtype(starts.dtype, np.integer):
        raise ValueError(
            f"segment_starts must be a non-empty 1-D integer array of token offsets, got shape {starts.shape} "
            f"and dtype {starts.dtype}; pass e.g. [0, 12, 40]"
        )
    starts = starts.astype(np.int64, copy=False)
    if starts[0] != 0:
        raise ValueError(f"segment_starts must begin with 0 (the first segment starts the sample), got {int(starts[0])}")
    if starts.size > 1 and not bool(np.all(starts[1:] > starts[:-1])):
        raise ValueError("segment_starts must be strictly increasing token offsets; sort them and drop duplicates")
    if starts[-1] >= n:
        raise ValueError(
            f"segment_starts must lie in [0, {n}) for a sample of {n} tokens, got {int(starts[-1])}; "
            "recompute the starts after truncating the sample"
        )
    return starts


def sorted_subset(rng: np.random.Generator, population: int, k: int) -> np.ndarray:
    """``k`` distinct integers drawn uniformly from ``[0, population)``, returned sorted (int64).

    Every ``k``-subset is equally likely. numpy's ``choice(replace=False, shuffle=False)`` is a
    partial Fisher-Yates (or Floyd's algorithm for small ``k``) in C, then sorted: by an O(k log k) sort for sparse
    draws, by marking a boolean mask and reading it back (O(population), same result) for dense ones.
    """
    if not 0 <= k <= population:
        raise ValueError(f"k must be in [0, population={population}], got {k}")
    if k == 0:
        return np.zeros(0, dtype=np.int64)
    if k == population:
        return np.arange(population, dtype=np.int64)
    out = rng.choice(population, size=k, replace=False, shuffle=False).astype(np.int64, copy=False)
    if population <= 64 * k:  # dense draws (RPES: 30 % of the window): an O(population) mask beats the sort ~4x
        mask = np.zeros(population, dtype=bool)
        mask[out] = True
        return np.flatnonzero(mask).astype(np.int64, copy=False)
    out.sort()
    return out


def offsets_to_positions(n: int, starts: np.ndarray, offsets: np.ndarray) -> np.ndarray:
    """``arange(n)`` shifted by ``offsets[j]`` on the tokens of segment ``j`` (segments begin at ``starts``).

    Vectorised as a cumulative sum of offset increments placed at the segment starts (O(n)).
    """
    delta = np.zeros(n, dtype=np.int64)
    delta[0] = offsets[0]
    if starts.size > 1:
        delta[starts[1:]] = np.diff(offsets)
    positions = np.cumsum(delta)
    positions += np.arange(n, dtype=np.int64)
    return positions


class PositionScheme:
    """Base class: checks the inputs, then calls ``_positions`` (implemented by each scheme)."""

    name: ClassVar[str] = ""
    target_length: int

    def __call__(
        self, input_ids: Any, rng: np.random.Generator, *, segment_starts: Any | None = None
    ) -> np.ndarray:
        ids = as_input_ids(input_ids)
        n = int(ids.shape[0])
        if n > self.target_length:
            raise ValueError(
                f"target_length must be >= the sample length: got a sample of {n} tokens for "
                f"target_length={self.target_length}; use samples of at most target_length tokens "
                "(data.token_ratio <= 1) or raise target_length"
            )
        check_rng(rng)
        starts = None if segment_starts is None else check_segment_starts(segment_starts, n)
        return self._positions(ids, rng, starts)

    def _positions(self, input_ids: np.ndarray, rng: np.random.Generator, segment_starts: np.ndarray | None) -> np.ndarray:
        raise NotImplementedError

    def bind_tokenizer(self, tokenizer: Any) -> PositionScheme:
        """Schemes that do not read the text need nothing from the tokenizer: returns ``self``."""
        return self


def check_target_length(target_length: Any) -> int:
    return check_int(
        "target_length", target_length, minimum=1,
        fix="set target_length to the extended context window L' (e.g. target_length=81920)",
    )
