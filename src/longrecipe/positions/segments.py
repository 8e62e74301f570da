"""Sentence/paragraph segments from the tokenizer's own delimiter tokens (LongRecipe, Algorithm 1).

A token is a delimiter when its decoded text ends with one of ``. ! ? \\n`` — so byte-level BPE
pieces such as ``"Ġ."`` (decodes to ``" ."``), ``".\\n"`` or ``"Ċ"`` (``"\\n"``) and SentencePiece
pieces such as ``"▁."`` all count; ids are never hard-coded. A segment ends after a run of
delimiter tokens (``"end.\\n\\nNext"`` gives ``["end.\\n\\n", "Next"]``), so a sentence keeps its
punctuation and following newlines, and runs of delimiters never form segments of their own.
"""

from __future__ import annotations

from collections.abc import Iterable, Sequence
from typing import Any

import numpy as np

DEFAULT_DELIMITERS: tuple[str, ...] = (".", "!", "?", "\n")


def delimiter_token_ids(tokenizer: Any, delimiters: Sequence[str] = DEFAULT_DELIMITERS) -> np.ndarray:
    """Sorted ids of every non-special token whose decoded text ends with one of ``delimiters``."""
    delims = tuple(str(d) for d in delimiters)
    if not delims or any(len(d) == 0 for d in delims):
        raise ValueError(f"delimiters must be a non-empty list of non-empty strings, got {list(delimiters)!r}; "
                         "use the paper's ['.', '!', '?', '\\n']")
    vocab_size = len(tokenizer)
    texts = tokenizer.batch_decode(
        [[i] for i in range(vocab_size)], skip_special_tokens=False, clean_up_tokenization_spaces=False
    )
    special = set(getattr(tokenizer, "all_special_ids", []) or [])
    ids = [i for i, text in enumerate(texts) if i not in special and text.endswith(delims)]
    return np.asarray(ids, dtype=np.int64)


def delimiter_table(delimiter_ids: Iterable[int]) -> np.ndarray:
    """Boolean lookup table ``table[id]`` (one extra ``False`` slot at the end for larger ids)."""
    ids = np.asarray(list(delimiter_ids) if not isinstance(delimiter_ids, np.ndarray) else delimiter_ids,
                     dtype=np.int64)
    if ids.size and ids.min() < 0:
        raise ValueError(f"delimiter_ids must be non-negative token ids, got {int(ids.min())}")
    table = np.zeros(int(ids.max()) + 2 if ids.size else 1, dtype=bool)
    table[ids] = True
    return table


def starts_from_table(input_ids: np.ndarray, table: np.ndarray) -> np.ndarray:
    """Segment starts (first is 0) given a delimiter lookup table from :func:`delimiter_table`."""
    ids = np.asarray(input_ids)
    is_delim = table[np.minimum(ids, table.shape[0] - 1)]
    # a segment ends after a delimiter token whose successor is not a delimiter
    ends = np.flatnonzero(is_delim[:-1] & ~is_delim[1:]) + 1
    starts = np.empty(ends.size + 1, dtype=np.int64)
    starts[0] = 0
    starts[1:] = ends
    return starts


def segment_starts_from_delimiters(input_ids: Any, delimiter_ids: Iterable[int]) -> np.ndarray:
    """Token offsets where segments start: 0, then the token after each run of delimiter tokens.

    >>> segment_starts_from_delimiters([5, 9, 9, 7, 9, 3], delimiter_ids=[9]).tolist()
    [0, 3, 5]
    """
    ids = np.asarray(input_ids)
    if ids.ndim != 1 or ids.size == 0:
        raise ValueError(f"input_ids must be a non-empty 1-D array of token ids, got shape {ids.shape}")
    return starts_from_table(ids, delimiter_table(delimiter_ids))
