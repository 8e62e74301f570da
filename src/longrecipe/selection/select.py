"""Sentence selection for one long window (LongRecipe §4.1, last paragraph) and its two ablations.

Every selector maps ``(sentence lengths, has_anchor, budget, rng)`` to the sorted indices of the chosen sentences;
their concatenation, in document order, is cut to exactly ``budget`` tokens by the caller. All draws come from
the per-window ``rng``, so a seed fixes the output.

* ``AnchorSelection`` (LongRecipe): keep every sentence containing an anchor type, keep each other sentence with
  probability ``keep_other`` (one uniform draw per sentence, always drawn, so the stream does not depend on the
  tags); when the kept sentences hold fewer than ``budget`` tokens, the dropped ones are added back earliest
  first; then the kept sentences fill the budget in document order.
* ``RandomSelection`` ("Random T"): a uniformly random order of all sentences is taken until the budget is
  reached; the chosen sentences are returned in document order.
* ``PrefixSelection`` ("w/o T"): the contiguous prefix of the window (sentences in order up to the budget).
"""

from __future__ import annotations

from collections.abc import Sequence

import numpy as np

from longrecipe.analysis.pos import UD_TAGS


def _fill(order: np.ndarray, lengths: np.ndarray, budget: int) -> np.ndarray:
    """The shortest prefix of ``order`` whose lengths sum to >= ``budget`` (all of it if they never do)."""
    if len(order) == 0:
        return order
    csum = np.cumsum(lengths[order])
    n = int(np.searchsorted(csum, budget, side="left")) + 1
    return order[:n]


def _check(lengths: np.ndarray, budget: int) -> np.ndarray:
    lengths = np.asarray(lengths, dtype=np.int64)
    if budget < 1:
        raise ValueError(f"budget must be >= 1 token, got {budget}; raise token_ratio or target_length")
    if (lengths < 1).any():
        raise ValueError("sentence lengths must be >= 1 token")
    return lengths


class AnchorSelection:
    """Keep anchor sentences, others with probability ``keep_other``, fill the budget in document order."""

    mode = "anchors"
    uses_anchors = True

    def __init__(self, anchors: Sequence[str] | None = None, analysis_json: str | None = None,
                 keep_other: float = 0.4) -> None:
        if not 0.0 <= float(keep_other) <= 1.0:
            raise ValueError(f"selection.keep_other must be in [0, 1], got {keep_other}; the released code uses ~0.4")
        if anchors is None and not analysis_json:
            raise ValueError("selection=anchors needs anchor types: set selection.anchors (e.g. [NUM], the authors' "
                             "released rule) or selection.analysis_json=<analyze run>/analysis.json")
        if anchors is not None:
            anchors = [str(a) for a in anchors]
            bad = [a for a in anchors if a not in UD_TAGS]
            if bad or not anchors:
                raise ValueError(f"selection.anchors={anchors} has unknown or no part-of-speech tags {bad}; "
                                 f"allowed: {list(UD_TAGS)}")
        self.anchors = anchors
        self.analysis_json = analysis_json
        self.keep_other = float(keep_other)

    def select(self, lengths: np.ndarray, has_anchor: np.ndarray, budget: int, rng: np.random.Generator) -> np.ndarray:
        lengths = _check(lengths, budget)
        keep = np.asarray(has_anchor, dtype=bool) | (rng.random(len(lengths)) < self.keep_other)
        deficit = budget - int(lengths[keep].sum())
        if deficit > 0:
            dropped = np.flatnonzero(~keep)
            keep[_fill(dropped, lengths, deficit)] = True
        return _fill(np.flatnonzero(keep), lengths, budget)


class RandomSelection:
    """"Random T": random sentences of the window up to the same budget, in document order."""

    mode = "random"
    uses_anchors = False

    def select(self, lengths: np.ndarray, has_anchor: np.ndarray, budget: int, rng: np.random.Generator) -> np.ndarray:
        lengths = _check(lengths, budget)
        return np.sort(_fill(rng.permutation(len(lengths)), lengths, budget))


class PrefixSelection:
    """"w/o T": the contiguous prefix of the window (PoSE-style short sample)."""

    mode = "none"
    uses_anchors = False

    def select(self, lengths: np.ndarray, has_anchor: np.ndarray, budget: int, rng: np.random.Generator) -> np.ndarray:
        lengths = _check(lengths, budget)
        return _fill(np.arange(len(lengths)), lengths, budget)


def assemble(token_ids: np.ndarray, sentence_starts: np.ndarray, chosen: np.ndarray, budget: int
             ) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Concatenate the ``chosen`` sentences of ``token_ids`` and cut to ``budget`` tokens.

    ``sentence_starts``: start offsets of the window's sentences (first 0). Returns ``(input_ids, segment_starts,
    source_starts)``: the sample, the offset of each kept sentence inside it, and where that sentence starts in
    ``token_ids``. Raises ``ValueError`` when the chosen sentences hold fewer than ``budget`` tokens.
    """
    token_ids = np.asarray(token_ids)
    starts = np.asarray(sentence_starts, dtype=np.int64)
    ends = np.append(starts[1:], len(token_ids))
    chosen = np.asarray(chosen, dtype=np.int64)
    lengths = ends[chosen] - starts[chosen]
    if lengths.sum() < budget:
        raise ValueError(f"the chosen sentences hold {int(lengths.sum())} tokens, fewer than the budget {budget}")
    seg = np.concatenate([[0], np.cumsum(lengths)[:-1]])
    keep = seg < budget
    idx = np.concatenate([np.arange(s, e) for s, e in zip(starts[chosen], ends[chosen])])[:budget]
    return token_ids[idx], seg[keep], starts[chosen][keep]


def upsample_indices(n: int, n_samples: int | None, weights: np.ndarray | None, rng: np.random.Generator) -> np.ndarray:
    """Indices of the output samples: ``0..n-1`` (first ``n_samples`` when fewer are asked), plus
    ``n_samples - n`` extra copies drawn with probability proportional to ``weights`` (uniform when None or all
    zero), sorted so copies sit beside their original and document order is kept."""
    if n_samples is None:
        return np.arange(n)
    if n_samples < 1:
        raise ValueError(f"n_samples must be >= 1 or null, got {n_samples}")
    if n_samples <= n:
        return np.arange(n_samples)
    w = np.ones(n) if weights is None else np.asarray(weights, dtype=np.float64)
    w = np.ones(n) if w.sum() <= 0 else w
    extra = rng.choice(n, size=n_samples - n, replace=True, p=w / w.sum())
    return np.sort(np.concatenate([np.arange(n), extra]), kind="stable")
