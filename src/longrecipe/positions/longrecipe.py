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
