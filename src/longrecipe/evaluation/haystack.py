"""Haystack text sources and exact-length fitting in the model's own tokens.

Every synthetic prompt is grown unit by unit (a word, a distractor needle, a document) and the
largest unit count whose *whole* prompt (template + context + question + answer prefix) fits the
token budget is found by bisection on real tokenizer counts, so lengths are exact up to one unit.
"""

from __future__ import annotations

import os
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from longrecipe.config import CONF_DIR
from longrecipe.utils.logging import get_logger

log = get_logger(__name__)

# RULER's "repeat"/noise haystack: the same five sentences over and over.
NOISE_TEXT = "The grass is green. The sky is blue. The sun is yellow. Here we go. There and back again."
HAYSTACKS = ("noise", "needle", "essay")
_SENTENCE_END = (".", "!", "?")


class PromptCodec:
    """Counts and encodes prompts exactly as generation will see them (special tokens included once)."""

    def __init__(self, tokenizer, *, chat_template: bool = False):
        if chat_template and not getattr(tokenizer, "chat_template", None):
            raise ValueError(
                "chat_template=true but the tokenizer has no chat template; set chat_template=false (or auto) "
                "for base models"
            )
        self.tokenizer = tokenizer
        self.chat_template = bool(chat_template)

    def format(self, body: str, answer_prefix: str, shots: Sequence[tuple[str, str, str]] = ()) -> str:
        """The final prompt text: ``body`` (+ chat wrapping) followed by the answer prefix.

        ``shots`` are worked examples ``(body, answer_prefix, answer)`` placed before the question as RULER places
        them: each one a whole templated prompt followed by its answer, one per line (with a chat template: earlier
        user / assistant turns). The answer prefix keeps its leading space, as RULER appends it after the model
        template.
        """
        if not self.chat_template:
            head = "".join(f"{b}{p} {a}\n" for b, p, a in shots)
            return head + body + answer_prefix
        messages: list[dict[str, str]] = []
        for b, p, a in shots:
            messages += [{"role": "user", "content": b}, {"role": "assistant", "content": f"{p} {a}".strip()}]
        messages.append({"role": "user", "content": body})
        wrapped = self.tokenizer.apply_chat_template(messages, add_generation_prompt=True, tokenize=False)
        return wrapped + answer_prefix

    def encode(self, text: str) -> list[int]:
        # a chat template already writes BOS as text; do not add a second one
        return list(self.tokenizer(text, add_special_tokens=not self.chat_template)["input_ids"])

    def count(self, text: str) -> int:
        return len(self.encode(text))


CHAT_TEMPLATE_SETTINGS = ("auto", True, False)


def resolve_chat_template(setting, tokenizer) -> bool:
    """``chat_template`` setting -> whether prompts are wrapped: ``auto`` = on when the tokenizer has a template
    (instruct models, as RULER uses each model's own template), ``true`` / ``false`` force it."""
    if isinstance(setting, str) and setting.lower() in ("true", "false"):
        setting = setting.lower() == "true"
    if setting is None or (isinstance(setting, str) and setting.lower() == "auto"):
        return bool(getattr(tokenizer, "chat_template", None))
    if isinstance(setting, bool):
        return setting
    raise ValueError(f"chat_template must be one of auto, true, false, got {setting!r}; e.g. chat_template=auto")


@dataclass(frozen=True)
class Essay:
    """The essay haystack: its text and a label recorded with every result (``haystack``)."""

    text: str
    label: str
    fallback: bool = False


ESSAY_CORPORA = ("state_union", "inaugural")


def shared_corpora_dirs() -> list[Path]:
    """Folders of the public-domain NLTK corpora used as the default essay haystack (``state_union`` then
    ``inaugural``), from the first of ``$NLTK_DATA``, ``<repo>/../shared/nltk_data`` or ``../shared/nltk_data``
    (from the working directory) that holds any of them."""
    roots = [Path(p) for p in os.environ.get("NLTK_DATA", "").split(os.pathsep) if p]
    roots += [CONF_DIR.parent.parent / "shared" / "nltk_data", Path.cwd().parent / "shared" / "nltk_data"]
    for root in roots:
        found = [root / "corpora" / name for name in ESSAY_CORPORA if (root / "corpora" / name).is_dir()]
        if found:
            return found
    return []


def _read_folder_or_file(path: Path, field: str, glob: str | None = None) -> str:
    from longrecipe.data.readers import iter_documents

    # the project's reader: .txt files in name order, invalid UTF-8 bytes (ISO-8859 corpora) read as latin-1
    try:
        docs = [d.text for d in iter_documents(path, fmt="txt", encoding_errors="latin1", glob=glob,
                                               progress=False)]
    except ValueError as err:
        raise ValueError(f"{field} {path}: {err}; point {field} at a corpus of text files") from err
    if not docs:
        raise ValueError(f"{field} {path} holds no non-empty text; point {field} at a corpus of text files")
    return "\n\n".join(docs)


def _synthetic_text(seed: int, min_words: int) -> str:
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


def resolve_essay(source: str | Path | None = "auto", *, seed: int = 0, min_words: int = 20_000,
                  field: str = "eval.essay_source", glob: str | None = None) -> Essay:
    """Long natural text for the ``essay`` haystack (RULER: Paul Graham's essays, not redistributable offline).

    ``source``: ``auto`` (default; also ``None``) = the shared public-domain corpora (:func:`shared_corpora_dirs`,
    State of the Union addresses then inaugural addresses), falling back to the generated toy corpus with a
    warning when they are absent; ``synthetic`` = the toy corpus of :mod:`longrecipe.tiny`; or a text file / a
    folder whose .txt files are read in name order (only those matching ``glob``, e.g. ``2*.txt``, when given).
    """
    if source is None or str(source) == "auto":
        dirs = shared_corpora_dirs()
        if dirs:
            text = "\n\n".join(_read_folder_or_file(d, field) for d in dirs)
            return Essay(text, "+".join(d.name for d in dirs) + f" ({dirs[0].parent})")
        log.warning("essay haystack: no real text found (looked for corpora/%s under $NLTK_DATA and "
                    "../shared/nltk_data); falling back to the generated toy corpus, which repeats at long lengths. "
                    "Set NLTK_DATA or %s=<folder of .txt files> for scores comparable with RULER",
                    "+".join(ESSAY_CORPORA), field)
        return Essay(_synthetic_text(seed, min_words), "synthetic (fallback: no essay corpus found)", fallback=True)
    if str(source) == "synthetic":
        return Essay(_synthetic_text(seed, min_words), "synthetic")
    path = Path(source)
    if not path.exists():
        raise ValueError(
            f"{field} must be 'auto', 'synthetic', a text file or a folder of text files, got {str(source)!r} "
            "(not found); e.g. ../shared/nltk_data/corpora/state_union"
        )
    if glob and not path.is_dir():
        raise ValueError(f"{field}={str(source)!r} is a file; a file pattern (glob={glob!r}) needs a folder")
    return Essay(_read_folder_or_file(path, field, glob), str(path) + (f"/{glob}" if glob else ""))


def load_essay_text(source: str | Path | None = "auto", *, seed: int = 0, min_words: int = 20_000,
                    field: str = "eval.essay_source") -> str:
    """The text of :func:`resolve_essay` (``ppl`` uses it for its documents)."""
    return resolve_essay(source, seed=seed, min_words=min_words, field=field).text


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
