"""Haystack text sources and exact-length fitting in the model's own tokens.

Every synthetic prompt is grown unit by unit (a word, a distractor needle, a document) and the
largest unit count whose *whole* prompt (template + context + question + answer prefix) fits the
token budget is found by bisection on real tokenizer counts, so lengths are exact up to one unit.
"""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path

import numpy as np

# RULER's "repeat"/noise haystack: the same five sentences over and over.
NOISE_TEXT = "The grass is green. The sky is blue. The sun is yellow. Here we go. There and back again."
HAYSTACKS = ("noise", "needle", "essay")
_SENTENCE_END = (".", "!", "?")


class PromptCodec:
    """Counts and encodes prompts exactly as generation will see them (special tokens included once)."""

    def __init__(self, tokenizer, *, chat_template: bool = False):
        if chat_template and not getattr(tokenizer, "chat_template", None):
            raise ValueError(
                "chat_template=true but the tokenizer has no chat template; set eval.chat_template=false "
                "for base models"
            )
        self.tokenizer = tokenizer
        self.chat_template = chat_template

    def format(self, body: str, answer_prefix: str) -> str:
        """The final prompt text: ``body`` (+ chat wrapping) followed by the answer prefix."""
        if not self.chat_template:
            return body + answer_prefix
        wrapped = self.tokenizer.apply_chat_template(
            [{"role": "user", "content": body}], add_generation_prompt=True, tokenize=False
        )
        return wrapped + answer_prefix.lstrip(" ")

    def encode(self, text: str) -> list[int]:
        # a chat template already writes BOS as text; do not add a second one
        return list(self.tokenizer(text, add_special_tokens=not self.chat_template)["input_ids"])

    def count(self, text: str) -> int:
        return len(self.encode(text))


def load_essay_text(source: str | Path | None = None, *, seed: int = 0, min_words: int = 20_000) -> str:
    """Long natural text for the ``essay`` haystack.

    ``source``: ``None``/``"synthetic"`` (the built-in generated corpus, :mod:`longrecipe.tiny`), a text file, or a
    folder whose .txt files (sorted by name, e.g. nltk's ``corpora/state_union``) are concatenated.
    """
    if source is None or str(source) == "synthetic":
        from longrecipe.tiny import synthetic_documents

        docs: list[str] = []
        n_words = 0
        batch = 0
        while n_words < min_words:
            new = synthetic_documents(20, seed=seed + batch)
            docs.extend(new)
            n_words += sum(len(d.split()) for d in new)
            batch += 1
        return "\n\n".join(docs)
    path = Path(source)
    if not path.exists():
        raise ValueError(
            f"essay_source must be 'synthetic', a text file or a folder of text files, got {str(source)!r} "
            "(not found); e.g. ../shared/nltk_data/corpora/state_union"
        )
    from longrecipe.data.readers import iter_documents

    # the project's reader: .txt files in name order, invalid UTF-8 bytes (ISO-8859 corpora) read as latin-1
    try:
        docs = [d.text for d in iter_documents(path, fmt="txt", encoding_errors="latin1", progress=False)]
    except ValueError as err:
        raise ValueError(f"essay_source {path}: {err}; point eval.essay_source at a corpus of text files") from err
    if not docs:
        raise ValueError(f"essay_source {path} holds no non-empty text; point eval.essay_source at a corpus")
    return "\n\n".join(docs)


class LengthTooShort(ValueError):
    """The evaluated length cannot hold the task's template, needles and question."""


def fit_units(build: Callable[[int], str], count: Callable[[str], int], budget: int, *, max_units: int) -> tuple[int, str, int]:
    """Largest ``n`` in ``[0, max_units]`` with ``count(build(n)) <= budget``; returns ``(n, text, tokens)``.

    Assumes token count grows with ``n`` (true for appended filler units). Raises if even ``n=0`` is too long.
    """
    text0 = build(0)
    tok0 = count(text0)
    if tok0 > budget:
        raise LengthTooShort(
            f"length too short: the template, needles and question alone take {tok0} tokens but the budget "
            f"(length - max_new_tokens) is {budget}; raise eval.lengths or lower max_new_tokens"
        )
    best = (0, text0, tok0)
    lo, hi = 0, max_units

    def try_n(n: int) -> tuple[bool, str, int]:
        text = build(n)
        tok = count(text)
        return tok <= budget, text, tok

    # probe the tokens-per-unit rate, gallop from the estimate to a bracket, then bisect
    probe = min(max_units, 64)
    if probe > 0:
        ok, text_p, tok_p = try_n(probe)
        if not ok:
            hi = probe - 1
        else:
            best, lo = (probe, text_p, tok_p), probe
            rate = max((tok_p - tok0) / probe, 1e-3)
            guess = min(hi, probe + int((budget - tok_p) / rate))
            step = max(4, guess // 200)
            if guess > lo:
                ok, text_g, tok_g = try_n(guess)
                if ok:
                    best, lo = (guess, text_g, tok_g), guess
                    while lo < hi:
                        cand = min(hi, lo + step)
                        ok, text_c, tok_c = try_n(cand)
                        if not ok:
                            hi = cand - 1
                            break
                        best, lo = (cand, text_c, tok_c), cand
                        step *= 2
                else:
                    hi = guess - 1
                    while lo < hi:
                        cand = hi + 1 - step
                        if cand <= lo:
                            break
                        ok, text_c, tok_c = try_n(cand)
                        if ok:
                            best, lo = (cand, text_c, tok_c), cand
                            break
                        hi = cand - 1
                        step *= 2
    while lo < hi:
        mid = (lo + hi + 1) // 2
        text = build(mid)
        tok = count(text)
        if tok <= budget:
            best, lo = (mid, text, tok), mid
        else:
            hi = mid - 1
    return best


def sentence_boundaries(words: list[str] | np.ndarray) -> np.ndarray:
    """Word indices where a new sentence starts (0, after each ``. ! ?``-ending word, and ``len(words)``)."""
    ends = np.fromiter((w.endswith(_SENTENCE_END) for w in words), dtype=bool, count=len(words))
    return np.unique(np.concatenate([[0], np.flatnonzero(ends) + 1, [len(words)]]))


def insert_at_depths(words: list[str], inserts: list[str], depths: list[float], *, snap: bool = True) -> str:
    """Join ``words`` with spaces and insert each ``inserts[i]`` at fraction ``depths[i]`` of the words.

    With ``snap`` an insert lands on the sentence boundary nearest its depth, so it never splits a sentence.
    Inserts at the same point keep their given order.
    """
    n = len(words)
    targets = np.round(np.asarray(depths, dtype=float) * n).astype(int)
    if snap and n:
        bounds = sentence_boundaries(words)
        pos = np.searchsorted(bounds, targets)
        left = bounds[np.clip(pos - 1, 0, len(bounds) - 1)]
        right = bounds[np.clip(pos, 0, len(bounds) - 1)]
        targets = np.where(np.abs(targets - left) <= np.abs(right - targets), left, right)
    order = np.argsort(targets, kind="stable")
    pieces: list[str] = []
    start = 0
    for i in order:
        cut = int(targets[i])
        if cut > start:
            pieces.append(" ".join(words[start:cut]))
        pieces.append(inserts[i])
        start = max(start, cut)
    if start < n:
        pieces.append(" ".join(words[start:]))
    return " ".join(pieces)


def word_pool(text: str, n_words: int, *, offset: int = 0, sentence_start: bool = False) -> list[str]:
    """``n_words`` whitespace words of ``text`` from ``offset`` (moved to the next sentence start with
    ``sentence_start``), cycling through the text as needed."""
    words = text.split()
    if not words:
        raise ValueError("haystack text is empty; give eval.essay_source a non-empty corpus")
    offset %= len(words)
    if sentence_start:
        starts = sentence_boundaries(words)[:-1]
        later = starts[starts >= offset]
        offset = int(later[0]) if len(later) else 0
    reps = (offset + n_words) // len(words) + 1
    return (words * reps)[offset : offset + n_words]
