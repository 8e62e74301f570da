"""Sentence/paragraph segments from the tokenizer's own delimiter tokens (LongRecipe, Algorithm 1).

Default = what the authors' released generator does (``preprocess_token_PI/FSProcessor.py``, ``split_sentences``):

* a token is a delimiter when its decoded text **is exactly** one of ``. \n ? ! .\n`` (``delimiter_match=exact``);
  for Llama-3's tokenizer that is exactly the released id set ``[13, 198, 30, 0, 627]``;
* **every** delimiter token closes a segment (``segmentation=each``), so a delimiter right after another forms a
  one-token segment of its own (``"end.\n\nNext"`` gives ``["end.", "\n", "\n", "Next"]`` when ``.``
  and ``\n`` are separate tokens).

Named alternatives (not the released code): ``delimiter_match=suffix`` counts any token whose decoded text *ends
with* a delimiter (``" ."``, ``"\n\n"``, SentencePiece ``"▁."``), and ``segmentation=run`` ends a segment only
after a run of delimiters, so runs never form segments of their own. Ids are resolved from the tokenizer, never
hard-coded.
"""

from __future__ import annotations

from collections.abc import Iterable, Sequence
from typing import Any

import numpy as np

DEFAULT_DELIMITERS: tuple[str, ...] = (".", "\n", "?", "!", ".\n")
DELIMITER_MATCHES = ("exact", "suffix")
SEGMENTATIONS = ("each", "run")


def _check_choice(field: str, value: str, allowed: tuple[str, ...]) -> str:
    if value not in allowed:
        raise ValueError(f"{field} must be one of {list(allowed)}, got {value!r} (the released code: "
                         f"{allowed[0]!r})")
    return value


def delimiter_token_ids(tokenizer: Any, delimiters: Sequence[str] = DEFAULT_DELIMITERS, *,
                        match: str = "exact") -> np.ndarray:
    """Sorted ids of every non-special token whose decoded text equals (``exact``) or ends with (``suffix``)
    one of ``delimiters``."""
    delims = tuple(str(d) for d in delimiters)
    if not delims or any(len(d) == 0 for d in delims):
        raise ValueError(f"delimiters must be a non-empty list of non-empty strings, got {list(delimiters)!r}; "
                         "use the released code's ['.', '\\n', '?', '!', '.\\n']")
    _check_choice("position.delimiter_match", match, DELIMITER_MATCHES)
    vocab_size = len(tokenizer)
    texts = tokenizer.batch_decode(
        [[i] for i in range(vocab_size)], skip_special_tokens=False, clean_up_tokenization_spaces=False
    )
    special = set(getattr(tokenizer, "all_special_ids", []) or [])
    wanted = set(delims)
    hit = (lambda t: t in wanted) if match == "exact" else (lambda t: t.endswith(delims))
    ids = [i for i, text in enumerate(texts) if i not in special and hit(text)]
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


def starts_from_table(input_ids: np.ndarray, table: np.ndarray, segmentation: str = "each") -> np.ndarray:
    """Segment starts (first is 0) given a delimiter lookup table from :func:`delimiter_table`.

    ``each``: a segment ends after every delimiter token (the released code); ``run``: after the last token of a
    run of delimiters.
    """
    ids = np.asarray(input_ids)
    is_delim = table[np.minimum(ids, table.shape[0] - 1)]
    if segmentation == "each":
        ends = np.flatnonzero(is_delim[:-1]) + 1
    elif segmentation == "run":
        ends = np.flatnonzero(is_delim[:-1] & ~is_delim[1:]) + 1
    else:
        _check_choice("position.segmentation", segmentation, SEGMENTATIONS)
    starts = np.empty(ends.size + 1, dtype=np.int64)
    starts[0] = 0
    starts[1:] = ends
    return starts


def segment_starts_from_delimiters(input_ids: Any, delimiter_ids: Iterable[int], segmentation: str = "each") -> np.ndarray:
    """Token offsets where segments start: 0, then the token after each delimiter (``each``) or after each run
    of delimiters (``run``).

    >>> segment_starts_from_delimiters([5, 9, 9, 7, 9, 3], delimiter_ids=[9]).tolist()
    [0, 2, 3, 5]
    >>> segment_starts_from_delimiters([5, 9, 9, 7, 9, 3], delimiter_ids=[9], segmentation="run").tolist()
    [0, 3, 5]
    """
    ids = np.asarray(input_ids)
    if ids.ndim != 1 or ids.size == 0:
        raise ValueError(f"input_ids must be a non-empty 1-D array of token ids, got shape {ids.shape}")
    return starts_from_table(ids, delimiter_table(delimiter_ids), segmentation)
