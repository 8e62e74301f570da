"""LongRecipe position index transformation (Hu et al., ACL 2025, §4.2, eq. (6) and Algorithm 1).

The sample is cut into ``N`` segments (sentences/paragraphs, see :mod:`longrecipe.positions.segments`,
or explicit ``segment_starts`` from the selection stage). Inside a segment positions step by 1; the
first segment starts at 0 and segment ``i`` starts after a gap ``g_i >= 0`` of skipped indices:

    pos(s_i) = pos(s_{i-1}) + |s_{i-1}| + g_i                       (eq. 6, text convention)

Two ways to draw the gaps (re-drawn for every sample):

* ``max_skip=None`` — Algorithm 1, exactly: a list of ``K = L' - n + N`` slots; segment 1 goes in
  slot 0, segments 2..N in ``N-1`` distinct slots drawn uniformly among slots ``1..K-1``; flattening
  the list (each segment slot expands to ``|s_i|`` tokens, empty slots are skipped indices) puts
  segment ``i`` (0-based, slot ``k_i``) at ``pos(s_i) = k_i + sum_{j<i}(|s_j| - 1) = k_i + start_i - i``.
  The gaps ``g_i = k_i - k_{i-1} - 1`` then form a uniformly random composition of at most
  ``L' - n`` skipped indices into ``N`` parts (the last part is the unused tail), and the last
  position is ``k_{N-1} + n - N <= L' - 1``. ``K - 1 >= N - 1`` always holds when ``n <= L'``, so there
  are always enough slots, and ``n == L'`` gives all gaps 0.
* ``max_skip=M`` — eq. (6): ``g_i ~ U{0..M}`` i.i.d. When ``sum g_i`` exceeds the budget
  ``B = L' - n``, the gaps are rescaled to ``floor(g_i * B / sum g)`` (then trimmed from the largest
  if floating-point rounding ever overshoots), which keeps their relative sizes and fills at most
  the budget, so the last position stays ``< L'`` (the paper stops "until the last position does not
  exceed L"). ``M = 0`` keeps the segments contiguous.

Segments (``delimiter_match``, ``segmentation``): by default as the authors' released generator cuts them -- every
delimiter token (exactly ``. \n ? ! .\n``) closes a segment, see :mod:`longrecipe.positions.segments`.

``leading_block=True`` adds what the released *training* code does on top (``utils/preprocess_data.py``, not in the
paper): the first ``r ~ U{1..(n+1)//2}`` tokens of each sample get contiguous positions ``0..r-1``, the rest keep
their Algorithm 1 positions (which are ``>= r`` there, so the sequence stays strictly increasing). Off by default.

Note: eq. (6) as printed has an extra ``+1`` (``pos(s_{i-1}) + |s_{i-1}| + g(s_i) + 1``), which would
leave a hole even for ``M = 0`` and contradicts the sentence "when M = 0 the position indices of the
two segments will be continuous"; we follow the text.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass, field, replace
from typing import Any, ClassVar

import numpy as np

from longrecipe.positions.base import (
    PositionScheme,
    check_int,
    check_target_length,
    offsets_to_positions,
    sorted_subset,
)
from longrecipe.positions.segments import (
    DEFAULT_DELIMITERS,
    DELIMITER_MATCHES,
    SEGMENTATIONS,
    delimiter_table,
    delimiter_token_ids,
    starts_from_table,
)
from longrecipe.utils.logging import get_logger

log = get_logger(__name__)


def algorithm1_offsets(rng: np.random.Generator, n: int, num_segments: int, target_length: int) -> np.ndarray:
    """Per-segment offsets ``pos(s_i) - start_i = k_i - i`` of Algorithm 1 (slot ``k_0 = 0``)."""
    slots = np.zeros(num_segments, dtype=np.int64)
    slots[1:] = sorted_subset(rng, target_length - n + num_segments - 1, num_segments - 1) + 1
    return slots - np.arange(num_segments, dtype=np.int64)


def bounded_skip_offsets(
    rng: np.random.Generator, n: int, num_segments: int, target_length: int, max_skip: int
) -> np.ndarray:
    """Per-segment offsets (cumulative gaps) for eq. (6) with ``g_i ~ U{0..max_skip}``, capped to ``L' - n``."""
    budget = target_length - n
    gaps = rng.integers(0, max_skip + 1, size=num_segments - 1, dtype=np.int64)
    total = int(gaps.sum())
    if total > budget:
        gaps = np.floor(gaps * (budget / total)).astype(np.int64)
        excess = int(gaps.sum()) - budget
        while excess > 0:  # only on floating-point overshoot
            i = int(np.argmax(gaps))
            take = min(excess, int(gaps[i]))
            gaps[i] -= take
            excess -= take
    offsets = np.zeros(num_segments, dtype=np.int64)
    np.cumsum(gaps, out=offsets[1:])
    return offsets


@dataclass(frozen=True)
class LongRecipePositions(PositionScheme):
    """LongRecipe positions. Unbound (``delimiter_ids=None``) it needs ``segment_starts`` on each call;
    ``bind_tokenizer(tokenizer)`` returns a copy that finds segments from the tokenizer's delimiters."""

    target_length: int
    max_skip: int | None = None
    delimiter_ids: Sequence[int] | None = None
    delimiters: Sequence[str] = DEFAULT_DELIMITERS
    delimiter_match: str = "exact"
    segmentation: str = "each"
    leading_block: bool = False
    name: ClassVar[str] = "longrecipe"
    _table: np.ndarray | None = field(default=None, init=False, repr=False, compare=False)

    def __post_init__(self) -> None:
        object.__setattr__(self, "target_length", check_target_length(self.target_length))
        if self.max_skip is not None:
            object.__setattr__(self, "max_skip", check_int(
                "max_skip", self.max_skip, minimum=0,
                fix="set max_skip=M (eq. 6, gaps drawn from 0..M) or max_skip=null for Algorithm 1",
            ))
        delims = self.delimiters
        if isinstance(delims, str) or not all(isinstance(d, str) and d for d in delims) or not len(delims):
            raise ValueError(f"delimiters must be a non-empty list of non-empty strings, got {delims!r}; "
                             "use the released code's ['.', '\\n', '?', '!', '.\\n']")
        object.__setattr__(self, "delimiters", tuple(delims))
        for field_name, allowed in (("delimiter_match", DELIMITER_MATCHES), ("segmentation", SEGMENTATIONS)):
            if getattr(self, field_name) not in allowed:
                raise ValueError(f"position.{field_name} must be one of {list(allowed)}, got "
                                 f"{getattr(self, field_name)!r} ({allowed[0]!r} = the authors' released code)")
        if not isinstance(self.leading_block, bool):
            raise ValueError(f"position.leading_block must be true or false, got {self.leading_block!r}")
        if self.delimiter_ids is not None:
            ids = tuple(int(i) for i in self.delimiter_ids)
            object.__setattr__(self, "delimiter_ids", ids)
            object.__setattr__(self, "_table", delimiter_table(ids))

    def bind_tokenizer(self, tokenizer: Any) -> LongRecipePositions:
        """A copy whose delimiter ids are resolved from ``tokenizer``'s vocabulary; explicit
        ``delimiter_ids`` (config) take precedence and are kept as given."""
        if self.delimiter_ids is not None:
            return self
        ids = delimiter_token_ids(tokenizer, self.delimiters, match=self.delimiter_match)
        if ids.size == 0:
            log.warning("tokenizer has no delimiter token (%s match of %s): every sample is one segment",
                        self.delimiter_match, list(self.delimiters))
        return replace(self, delimiter_ids=tuple(ids.tolist()))

    def segment_starts(self, input_ids: Any) -> np.ndarray:
        """Segment starts found from the bound delimiter ids."""
        if self._table is None:
            raise ValueError(
                "LongRecipePositions has no delimiter_ids: call scheme.bind_tokenizer(tokenizer) first "
                "(the DataModule does), pass delimiter_ids=[...], or pass segment_starts=... per sample"
            )
        return starts_from_table(np.asarray(input_ids), self._table, self.segmentation)

    def _positions(self, input_ids: np.ndarray, rng: np.random.Generator, segment_starts: np.ndarray | None) -> np.ndarray:
        n = input_ids.shape[0]
        starts = self.segment_starts(input_ids) if segment_starts is None else segment_starts
        num_segments = starts.shape[0]
        if num_segments == 1:
            positions = np.arange(n, dtype=np.int64)
        elif self.max_skip is None:
            positions = offsets_to_positions(n, starts, algorithm1_offsets(rng, n, num_segments, self.target_length))
        else:
            positions = offsets_to_positions(
                n, starts, bounded_skip_offsets(rng, n, num_segments, self.target_length, self.max_skip))
        if self.leading_block:
            r = int(rng.integers(1, (n + 1) // 2 + 1))  # released code: randint(1, (n + 1) // 2), both ends included
            positions[:r] = np.arange(r, dtype=np.int64)
        return positions


SLOT_DRAWS = ("paper", "release")


def algorithm1_gap_means(num_segments: int, n: int, target_length: int, *, slots: str = "paper") -> np.ndarray:
    """Expected gap ``E[g_i]`` before each segment ``i = 2..N`` of Algorithm 1 (``N - 1`` values).

    ``slots="paper"`` (what :class:`LongRecipePositions` draws, Algorithm 1 as printed): ``N - 1`` distinct slots
    among ``1..K-1``, ``K = L' - n + N``, so the ``N`` parts of the budget ``B = L' - n`` (the ``N - 1`` gaps and the
    unused tail) are a uniform composition and each has mean ``B / N``.

    ``slots="release"`` (the released ``FSProcessor.generate_res_lists``): ``N`` distinct slots among ``0..K-1``, the
    smallest dropped and segment 1 put in slot 0. The ``N + 1`` spacings of those slots are a uniform composition of
    ``B`` with mean ``B / (N + 1)`` each, and the first gap is two of them: ``2B / (N + 1)``, the others
    ``B / (N + 1)``.
    """
    check_int("num_segments", num_segments, minimum=1, fix="pass the number of segments of the sample")
    if not 1 <= n <= target_length:
        raise ValueError(f"n must be in [1, target_length={target_length}], got {n}")
    if slots not in SLOT_DRAWS:
        raise ValueError(f"slots must be one of {list(SLOT_DRAWS)}, got {slots!r}")
    budget = float(target_length - n)
    if slots == "paper":
        return np.full(num_segments - 1, budget / num_segments)
    means = np.full(num_segments - 1, budget / (num_segments + 1))
    if means.size:
        means[0] *= 2
    return means


def expected_average_distance(segment_starts: Any, n: int, gap_means: Any) -> float:
    """Expected average distance among tokens when segment ``i`` is shifted by the gaps before it.

    ``p_j - p_i = (j - i) + sum of the gaps between their segments``, and a gap before the token at offset ``a``
    lies between ``a (n - a)`` of the ``n (n - 1) / 2`` pairs, so
    ``E = (n + 1) / 3 + sum_i E[g_i] a_i (n - a_i) / (n (n - 1) / 2)`` over the segment starts ``a_i > 0``.
    """
    starts = np.asarray(segment_starts, dtype=np.float64)[1:]
    gaps = np.asarray(gap_means, dtype=np.float64)
    if gaps.shape != starts.shape:
        raise ValueError(f"gap_means must have one entry per segment after the first ({starts.size}), "
                         f"got {gaps.size}")
    if n < 2:
        raise ValueError(f"n must be >= 2 for an average distance, got {n}")
    return (n + 1) / 3 + float(np.dot(gaps, starts * (n - starts))) / (n * (n - 1) / 2)


def algorithm1_expected_runs(num_segments: int, n: int, target_length: int) -> float:
    """Expected number of maximal runs of consecutive positions under Algorithm 1 (``slots="paper"``).

    Segments are contiguous inside; two neighbours merge when the gap between them is 0, which for a uniform
    composition of ``B`` into ``N`` parts has probability ``(N - 1) / (B + N - 1)``:
    ``E[runs] = 1 + (N - 1) B / (B + N - 1)``. The average continuous segment length is ``n / runs``.
    """
    budget = target_length - n
    if num_segments == 1 or budget == 0:
        return 1.0
    return 1 + (num_segments - 1) * budget / (budget + num_segments - 1)
