"""RULER's 13 synthetic tasks (Hsieh et al., 2024), generated locally at the evaluated model's token length.

Our own implementation of what NVIDIA/RULER's generators produce (``scripts/synthetic.yaml``, the templates of
``scripts/data/synthetic/constants.py`` and the task scripts): needle-in-a-haystack (single / multi-key /
multi-value / multi-query), variable tracking (vt), common / frequent word extraction (cwe / fwe) and long-document
QA over SQuAD (qa_1) / HotpotQA (qa_2) read from local files. docs/evaluation.md compares every task with RULER.

A prompt (template + context + question + answer prefix) holds the largest whole number of haystack units (essay
words, noise lines, distractor needles, words, documents) that fits ``length - max_new_tokens`` tokens of the
evaluated model's tokenizer, as RULER's search does. Everything random is drawn from one seeded generator per
(seed, task, length, sample).
"""

from __future__ import annotations

import json
import uuid
import zlib
from collections.abc import Callable, Iterator
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

import numpy as np

from longrecipe.evaluation.haystack import (
    NOISE_TEXT,
    Essay,
    LengthTooShort,
    PromptCodec,
    fit_units,
    resolve_essay,
    sentence_boundaries,
)
from longrecipe.evaluation.words import compound_words, corpus_vocabulary, word_keys, word_source
from longrecipe.utils.logging import get_logger
from longrecipe.utils.seeding import sample_rng

log = get_logger(__name__)

_NIAH_PLURAL = (
    "Some special magic {type_v} are hidden within the following text. Make sure to memorize it. I will quiz you "
    "about the {type_v} afterwards.\n{context}\nWhat are all the special magic {type_v} for {query} mentioned in the "
    "provided text?",
    " The special magic {type_v} for {query} mentioned in the provided text are",
)
# RULER's wording when exactly one value is asked for (one query key, one value per key), with the singular noun
_NIAH_SINGULAR = (
    "A special magic {type_v} is hidden within the following text. Make sure to memorize it. I will quiz you "
    "about the {type_v} afterwards.\n{context}\nWhat is the special magic {type_v} for {query} mentioned in the "
    "provided text?",
    " The special magic {type_v} for {query} mentioned in the provided text is",
)

TEMPLATES: dict[str, dict[str, Any]] = {
    "niah": {"tokens_to_generate": 128, "template": _NIAH_PLURAL[0], "answer_prefix": _NIAH_PLURAL[1]},
    "niah_singular": {"tokens_to_generate": 128, "template": _NIAH_SINGULAR[0], "answer_prefix": _NIAH_SINGULAR[1]},
    "vt": {
        "tokens_to_generate": 30,
        "template": "Memorize and track the chain(s) of variable assignment hidden in the following text.\n\n{context}\n"
        "Question: Find all variables that are assigned the value {query} in the text above.",
        "answer_prefix": " Answer: According to the chain(s) of variable assignment in the text above, {num_v} variables "
        "are assigned the value {query}, they are: ",
    },
    "cwe": {
        "tokens_to_generate": 120,
        "template": "Below is a numbered list of words. In these words, some appear more often than others. Memorize "
        "the ones that appear most often.\n{context}\nQuestion: What are the {num_cw} most common words in the above "
        "list?",
        "answer_prefix": " Answer: The top {num_cw} words that appear most often in the list are:",
    },
    "fwe": {
        "tokens_to_generate": 50,
        "template": "Read the following coded text and track the frequency of each coded word. Find the three most "
        "frequently appeared coded words. {context}\nQuestion: Do not provide any explanation. Please ignore the "
        "dots '....'. What are the three most frequently appeared words in the above coded text?",
        "answer_prefix": " Answer: According to the coded text above, the three most frequently appeared words are:",
    },
    "qa": {
        "tokens_to_generate": 32,
        "template": "Answer the question based on the given documents. Only give me the answer and do not output any "
        "other words.\n\nThe following are given documents.\n\n{context}\n\nAnswer the question based on the given "
        "documents. Only give me the answer and do not output any other words.\n\nQuestion: {query}",
        "answer_prefix": " Answer:",
    },
}

# The 13 RULER tasks (scripts/synthetic.yaml): family and arguments.
RULER_TASKS: dict[str, dict[str, Any]] = {
    "niah_single_1": {"family": "niah", "haystack": "noise", "key": "words", "value": "numbers"},
    "niah_single_2": {"family": "niah", "haystack": "essay", "key": "words", "value": "numbers"},
    "niah_single_3": {"family": "niah", "haystack": "essay", "key": "words", "value": "uuids"},
    "niah_multikey_1": {"family": "niah", "haystack": "essay", "key": "words", "value": "numbers", "num_k": 4},
    "niah_multikey_2": {"family": "niah", "haystack": "needle", "key": "words", "value": "numbers"},
    "niah_multikey_3": {"family": "niah", "haystack": "needle", "key": "uuids", "value": "uuids"},
    "niah_multivalue": {"family": "niah", "haystack": "essay", "key": "words", "value": "numbers", "num_v": 4},
    "niah_multiquery": {"family": "niah", "haystack": "essay", "key": "words", "value": "numbers", "num_q": 4},
    "vt": {"family": "vt", "num_chains": 1, "num_hops": 4},
    "cwe": {"family": "cwe", "freq_cw": 30, "freq_ucw": 3, "num_cw": 10},
    "fwe": {"family": "fwe", "alpha": 2.0},
    "qa_1": {"family": "qa", "dataset": "squad"},
    "qa_2": {"family": "qa", "dataset": "hotpotqa"},
}
METRICS = {"niah": "string_match_all", "vt": "string_match_all", "cwe": "string_match_all",
           "fwe": "string_match_all", "qa": "string_match_part"}
NIAH_M_TASKS = ("niah_multikey_1", "niah_multikey_2", "niah_multikey_3", "niah_multivalue", "niah_multiquery")

VT_SHOT_TOKENS = 500  # RULER builds vt's worked example at 500 tokens
CWE_SHORT_LENGTH = 4096  # below this RULER uses 6x / 1x repeats and a 20-word example instead of 30x / 3x and 40
FWE_WORD_LENGTH = 6
FWE_NOISE = "..."


@dataclass
class Sample:
    """One generated prompt with its references; ``prompt`` is the full model input (answer prefix included)."""

    task: str
    length: int
    index: int
    prompt: str
    answers: list[str]
    metric: str
    max_new_tokens: int
    prompt_tokens: int
    budget: int
    depth: float | None = None
    haystack: str | None = None
    extra: dict[str, Any] = field(default_factory=dict)

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)


class MissingData(Exception):
    """A task needs a local data file that was not configured (reported as "not run (no data)")."""


@dataclass
class RulerOptions:
    """Knobs shared by all tasks (the defaults are RULER's)."""

    essay_source: str | None = "auto"
    num_depths: int = 40
    value_digits: int = 7
    max_new_tokens: int | None = None
    squad_path: str | None = None
    hotpotqa_path: str | None = None
    seed: int = 42
    _essay: Essay | None = field(default=None, repr=False)
    _words: list[str] | None = field(default=None, repr=False)
    _qa: dict[str, tuple[list[dict[str, Any]], list[str]]] = field(default_factory=dict, repr=False)

    def essay(self) -> Essay:
        if self._essay is None:
            self._essay = resolve_essay(self.essay_source, seed=self.seed)
            log.info("essay haystack: %s (%d words)", self._essay.label, len(self.essay_words()))
        return self._essay

    def essay_words(self) -> list[str]:
        if self._words is None:
            self._words = self.essay().text.split()
            if not self._words:
                raise ValueError("essay haystack text is empty; give eval.essay_source a non-empty corpus")
        return self._words


def depth_grid(num_depths: int) -> np.ndarray:
    """RULER's needle depths in percent: ``round(linspace(0, 100, num_depths))`` (40 points)."""
    if num_depths < 1:
        raise ValueError(f"num_depths must be >= 1, got {num_depths}; use e.g. eval.num_depths=40")
    return np.unique(np.round(np.linspace(0, 100, num_depths)).astype(int))


def task_rng(seed: int, task: str, length: int, index: int) -> np.random.Generator:
    return sample_rng(seed, 0, index, stream=zlib.crc32(f"{task}:{length}".encode()))


def _sub_rng(seed: int, n: int) -> np.random.Generator:
    """A generator for one candidate size ``n`` of a sample (shuffles that depend on the unit count)."""
    return np.random.default_rng([seed, n])


def _values(rng: np.random.Generator, kind: str, n: int, digits: int, exclude: set[str] | None = None) -> list[str]:
    if kind == "numbers":
        lo, hi = 10 ** (digits - 1), 10**digits
        out: list[str] = []
        seen = set(exclude or ())
        while len(out) < n:
            for v in rng.integers(lo, hi, size=n - len(out) + 2):
                s = str(int(v))
                if s not in seen:
                    seen.add(s)
                    out.append(s)
                    if len(out) == n:
                        break
        return out
    if kind == "uuids":
        return [str(uuid.UUID(int=int.from_bytes(rng.bytes(16), "big"), version=4)) for _ in range(n)]
    if kind == "words":
        return word_keys(rng, n, exclude=exclude)
    raise ValueError(f"needle key/value type must be one of ['numbers', 'uuids', 'words'], got {kind!r}")


def _needle(key: str, value: str, type_v: str) -> str:
    return f"One of the special magic {type_v} for {key} is: {value}."


def _format(family: str, context: str, **kw: Any) -> tuple[str, str]:
    spec = TEMPLATES[family]
    return spec["template"].format(context=context, **kw), spec["answer_prefix"].format(**kw)


def _fit(build: Callable[[int], str], codec: PromptCodec, budget: int, max_units: int) -> tuple[int, str, int]:
    """The most whole units whose prompt fits ``budget`` tokens."""
    return fit_units(build, codec.count, budget, max_units=max_units)


def generate_sample(task: str, length: int, index: int, codec: PromptCodec, opts: RulerOptions) -> Sample:
    """Sample ``index`` of ``task`` at ``length`` tokens (deterministic in ``opts.seed``)."""
    if task not in RULER_TASKS:
        raise ValueError(f"task must be one of {sorted(RULER_TASKS)}, got {task!r}")
    spec = RULER_TASKS[task]
    family = spec["family"]
    max_new = int(opts.max_new_tokens or TEMPLATES[family]["tokens_to_generate"])
    budget = int(length) - max_new
    if budget <= 0:
        raise ValueError(f"length {length} must exceed max_new_tokens={max_new}; raise eval.lengths")
    rng = task_rng(opts.seed, task, length, index)
    gen = {"niah": _niah, "vt": _vt, "cwe": _cwe, "fwe": _fwe, "qa": _qa}[family]
    out = gen(spec, int(length), index, codec, opts, rng, budget)
    return Sample(task=task, length=int(length), index=index, metric=METRICS[family], max_new_tokens=max_new,
                  budget=budget, **out)


# --- needle in a haystack -------------------------------------------------------------------------------


def insert_at_sentences(sentences: list[str], inserts: list[str], positions: list[int]) -> str:
    """Join ``sentences`` with spaces, putting ``inserts[j]`` before sentence ``positions[j]`` (positions sorted
    ascending; a position equal to ``len(sentences)`` appends)."""
    pieces: list[str] = []
    start = 0
    for text, pos in zip(inserts, positions):
        if pos > start:
            pieces.append(" ".join(sentences[start:pos]))
            start = pos
        pieces.append(text)
    if start < len(sentences):
        pieces.append(" ".join(sentences[start:]))
    return " ".join(pieces)


def split_sentences(words: list[str]) -> list[str]:
    """Words -> sentences (a sentence ends with a word ending in ``. ! ?``)."""
    bounds = sentence_boundaries(words)
    return [" ".join(words[a:b]) for a, b in zip(bounds[:-1], bounds[1:])]


def insert_lines(lines: list[str], inserts: list[str], positions: list[int]) -> list[str]:
    """``inserts[j]`` goes before line ``positions[j]`` of the original ``lines`` (RULER's noise/needle haystack)."""
    out = list(lines)
    for pos, text in sorted(zip(positions, inserts), key=lambda x: -x[0]):
        out.insert(pos, text)
    return out


def _line_positions(rng: np.random.Generator, n_lines: int, k: int) -> list[int]:
    """``k`` sorted distinct line indices drawn uniformly from ``range(n_lines)`` (RULER's ``random.sample``);
    with fewer lines than inserts, indices repeat (only for the too-short check)."""
    if n_lines >= k:
        return sorted(int(p) for p in rng.choice(n_lines, size=k, replace=False))
    return sorted(int(p) for p in rng.integers(0, n_lines + 1, size=k))


def _cycled(words: list[str], n: int) -> list[str]:
    """The first ``n`` words of ``words`` repeated as often as needed (RULER repeats a short essay)."""
    if n <= len(words):
        return words[:n]
    return (words * (n // len(words) + 1))[:n]


def _niah(spec, length, index, codec, opts, rng, budget) -> dict[str, Any]:
    num_q, num_v = spec.get("num_q", 1), spec.get("num_v", 1)
    num_k = max(spec.get("num_k", 1), num_q)
    keys = _values(rng, spec["key"], num_k, opts.value_digits)
    used: set[str] = set(keys)
    values: list[list[str]] = []
    for _ in keys:
        values.append(_values(rng, spec["value"], num_v, opts.value_digits, exclude=used))
        used.update(values[-1])
    type_v = spec["value"]
    needles = [(k, v, _needle(k, v, type_v)) for k, vs in zip(keys, values) for v in vs]
    needles = [needles[i] for i in rng.permutation(len(needles))]  # RULER shuffles the needle order
    query_keys = [keys[i] for i in rng.choice(num_k, size=num_q, replace=False)]
    answers = [v for k in query_keys for v in values[keys.index(k)]]
    query = ", ".join(query_keys[:-1]) + ", and " + query_keys[-1] if num_q > 1 else query_keys[0]
    singular = num_q * num_v == 1
    family = "niah_singular" if singular else "niah"
    shown_type = type_v[:-1] if singular else type_v
    texts = [t for _, _, t in needles]
    haystack = spec["haystack"]
    if haystack == "essay":
        grid = depth_grid(opts.num_depths)
        if len(grid) < len(texts):
            raise ValueError(f"num_depths={opts.num_depths} gives {len(grid)} depths for {len(texts)} needles; "
                             "raise eval.num_depths (RULER: 40)")
        depths_pct = sorted(int(d) for d in rng.choice(grid, size=len(texts), replace=False))
        words = opts.essay_words()
        label = opts.essay().label

        def place(n: int) -> tuple[str, list[float]]:
            sentences = split_sentences(_cycled(words, n))
            positions = [int(len(sentences) * d / 100) for d in depths_pct]
            return insert_at_sentences(sentences, texts, positions), [d / 100 for d in depths_pct]

        max_units = budget
    else:
        pos_seed = int(rng.integers(0, 2**32))
        if haystack == "noise":
            label = "noise"
            max_units = budget // 8 + 16

            def lines_for(n: int) -> list[str]:
                return [NOISE_TEXT] * n
        else:
            label = "needle"
            max_units = budget // 8 + 16
            d_keys = _values(rng, spec["key"], max_units, opts.value_digits, exclude=used)
            d_vals = _values(rng, spec["value"], max_units, opts.value_digits, exclude=used | set(d_keys))
            distractors = [_needle(k, v, type_v) for k, v in zip(d_keys, d_vals)]

            def lines_for(n: int) -> list[str]:
                return distractors[:n]

        def place(n: int) -> tuple[str, list[float]]:
            positions = _line_positions(_sub_rng(pos_seed, n), n, len(texts))
            return "\n".join(insert_lines(lines_for(n), texts, positions)), [p / max(n, 1) for p in positions]

    def build(n: int) -> str:
        body, prefix = _format(family, place(n)[0], type_v=shown_type, query=query)
        return codec.format(body, prefix)

    n, prompt, ntok = _fit(build, codec, budget, max_units)
    depths = place(n)[1]
    first = next(j for j, (k, _, _) in enumerate(needles) if k == query_keys[0])
    return {"prompt": prompt, "answers": answers, "prompt_tokens": ntok, "depth": depths[first], "haystack": label,
            "extra": {"depths": depths, "needles": texts, "query": query, "units": n, "singular": singular}}


# --- variable tracking ----------------------------------------------------------------------------------


def _vt_chains(rng: np.random.Generator, num_chains: int, num_hops: int, name_len: int) -> tuple[list, list, str]:
    """Chains of ``VAR X = value`` / ``VAR Y = VAR X `` statements (RULER's text, trailing space included)."""
    letters = np.array(list("ABCDEFGHIJKLMNOPQRSTUVWXYZ"))
    names: list[str] = []
    while len(names) < num_chains * (num_hops + 1):
        name = "".join(rng.choice(letters, size=name_len))
        if name not in names:
            names.append(name)
    chains, variables = [], []
    for c in range(num_chains):
        var = names[c * (num_hops + 1): (c + 1) * (num_hops + 1)]
        value = str(int(rng.integers(10000, 99999)))
        chains.append([f"VAR {var[0]} = {value}"] + [f"VAR {var[i + 1]} = VAR {var[i]} " for i in range(num_hops)])
        variables.append(var)
    return chains, variables, chains[0][0].split("=")[-1].strip()


def _vt_context(chains: list[list[str]], n: int, pos_seed: int) -> tuple[str, float]:
    """``n`` noise lines with each chain's statements, in order, at sorted random lines; returns the text and the
    relative position of the first statement."""
    lines = [NOISE_TEXT] * n
    sub = _sub_rng(pos_seed, n)
    first = 0.0
    for c, chain in enumerate(chains):
        positions = _line_positions(sub, len(lines), len(chain))
        if c == 0:
            first = positions[0] / max(len(lines), 1)
        for j, (pos, stmt) in enumerate(zip(positions, chain)):
            lines.insert(pos + j, stmt)
    return "\n".join(lines), first


def _vt(spec, length, index, codec, opts, rng, budget) -> dict[str, Any]:
    hops, num_chains = spec["num_hops"], spec["num_chains"]
    # the worked example: 3-letter variables, its own value and noise, built at VT_SHOT_TOKENS tokens with the
    # plain task template (RULER builds it without the model template and puts it inside the user turn)
    shot_chains, shot_vars, shot_value = _vt_chains(rng, num_chains, min(10, hops), 3)
    shot_seed = int(rng.integers(0, 2**32))

    def shot_text(n: int) -> str:
        body, prefix = _format("vt", _vt_context(shot_chains, n, shot_seed)[0], query=shot_value,
                               num_v=min(10, hops) + 1)
        return body + prefix

    plain = lambda text: len(codec.tokenizer(text, add_special_tokens=False)["input_ids"])  # noqa: E731
    try:
        _, shot_prompt, _ = fit_units(shot_text, plain, VT_SHOT_TOKENS, max_units=VT_SHOT_TOKENS)
    except LengthTooShort as err:
        raise LengthTooShort(f"vt's worked example does not fit {VT_SHOT_TOKENS} tokens: {err}") from err
    shot = f"{shot_prompt} {' '.join(shot_vars[0])}\n"
    chains, variables, value = _vt_chains(rng, num_chains, hops, 5)
    pos_seed = int(rng.integers(0, 2**32))

    def build(n: int) -> str:
        body, prefix = _format("vt", _vt_context(chains, n, pos_seed)[0], query=value, num_v=hops + 1)
        return codec.format(shot + "\n" + body, prefix)

    n, prompt, ntok = _fit(build, codec, budget, budget // 8 + 16)
    return {"prompt": prompt, "answers": list(variables[0]), "prompt_tokens": ntok,
            "depth": _vt_context(chains, n, pos_seed)[1], "haystack": "noise",
            "extra": {"query": value, "units": n, "shot": shot}}


# --- common / frequent words ----------------------------------------------------------------------------


def _listing(words: list[str]) -> str:
    return " ".join(f"{i + 1}. {w}" for i, w in enumerate(words))


class _CweWords:
    """RULER's CWE word draw for one sample: a random order of ``wonderwords``' list while it holds enough words,
    else of a larger list of real words (RULER: an English dictionary; ours: wonderwords + the vocabulary of the
    real essay haystack). Made-up compounds only when even that runs out (logged, recorded in ``name``)."""

    def __init__(self, rng: np.random.Generator, opts: RulerOptions):
        self.src = word_source()
        small = list(self.src.words)
        self.small = [small[i] for i in rng.permutation(len(small))]
        self.seed = int(rng.integers(0, 2**32))
        self.opts = opts
        self._large: list[str] | None = None
        self.large_name = self.src.name

    def _large_words(self) -> list[str]:
        if self._large is None:
            large = set(self.small)
            essay = self.opts.essay()
            if not essay.fallback and essay.label != "synthetic":
                large |= set(corpus_vocabulary(essay.text))
                self.large_name += "+essay vocabulary"
            ordered = sorted(large)
            self._large = [ordered[i] for i in np.random.default_rng(self.seed).permutation(len(ordered))]
        return self._large

    def take(self, count: int) -> tuple[list[str], str]:
        if count <= len(self.small):
            return self.small[:count], self.src.name
        large = self._large_words()
        if count <= len(large):
            return large[:count], self.large_name
        extra = compound_words(np.random.default_rng([self.seed, count]), count - len(large), exclude=set(large))
        return large + extra, self.large_name + "+compounds"


def _cwe(spec, length, index, codec, opts, rng, budget) -> dict[str, Any]:
    num_cw = spec["num_cw"]
    if length < CWE_SHORT_LENGTH:
        shot_words, shot_cw, shot_ucw, freq_cw, freq_ucw = 20, 3, 1, 6, 1
    else:
        shot_words, shot_cw, shot_ucw, freq_cw, freq_ucw = 40, 10, 3, spec["freq_cw"], spec["freq_ucw"]
    small = list(word_source().words)
    ex = [small[i] for i in rng.choice(len(small), size=shot_words, replace=False)]
    ex_bag = ex[:num_cw] * shot_cw + ex[num_cw:] * shot_ucw
    ex_bag = [ex_bag[i] for i in rng.permutation(len(ex_bag))]
    shot_body, shot_prefix = _format("cwe", _listing(ex_bag), num_cw=num_cw)
    shots = [(shot_body, shot_prefix, _listing(ex[:num_cw]))]
    draw = _CweWords(rng, opts)
    shuffle_seed = int(rng.integers(0, 2**32))

    def build(n: int) -> str:
        words, _ = draw.take(num_cw + n)
        bag = words[:num_cw] * freq_cw + words[num_cw:] * freq_ucw
        bag = [bag[i] for i in _sub_rng(shuffle_seed, n).permutation(len(bag))]
        body, prefix = _format("cwe", _listing(bag), num_cw=num_cw)
        return codec.format(body, prefix, shots)

    n, prompt, ntok = _fit(build, codec, budget, budget // (2 * freq_ucw) + 16)
    words, word_src = draw.take(num_cw + n)
    if "compounds" in word_src:
        log.warning("cwe at %d tokens needs %d distinct words; real words ran out, the rest are made-up compounds "
                    "(point eval.essay_source at a larger corpus)", length, num_cw + n)
    return {"prompt": prompt, "answers": words[:num_cw], "prompt_tokens": ntok, "depth": None, "haystack": None,
            "extra": {"freq_cw": freq_cw, "freq_ucw": freq_ucw, "units": n, "word_source": word_src,
                      "shot_answers": ex[:num_cw]}}


def zeta(alpha: float) -> float:
    """Riemann zeta for ``alpha > 1`` (Euler-Maclaurin after 64 terms; RULER uses scipy.special.zeta)."""
    if alpha <= 1:
        raise ValueError(f"fwe alpha must be > 1, got {alpha}")
    n = 64
    head = float(np.sum(np.arange(1, n, dtype=float) ** -alpha))
    tail = n ** (1 - alpha) / (alpha - 1) + 0.5 * n**-alpha + alpha * n ** (-alpha - 1) / 12
    tail -= alpha * (alpha + 1) * (alpha + 2) * n ** (-alpha - 3) / 720
    return head + tail


def fwe_counts(num_words: int, vocab_size: int, alpha: float) -> np.ndarray:
    """Words per rank: ``int(num_words * k**-alpha / zeta(alpha))`` for ranks ``k = 1..vocab_size`` (RULER)."""
    k = np.arange(1, vocab_size + 1, dtype=float)
    return np.floor(num_words * k**-alpha / zeta(alpha) + 1e-9).astype(int)


def _fwe(spec, length, index, codec, opts, rng, budget) -> dict[str, Any]:
    alpha = float(spec["alpha"])
    vocab_size = max(budget // 50, 8)
    letters = np.array(list("abcdefghijklmnopqrstuvwxyz"))
    seen: set[str] = set()
    vocab: list[str] = []
    while len(vocab) < vocab_size:
        word = "".join(rng.choice(letters, size=FWE_WORD_LENGTH))
        if word not in seen:
            seen.add(word)
            vocab.append(word)
    vocab[0] = FWE_NOISE  # the most frequent "word" is noise the question says to ignore
    shuffle_seed = int(rng.integers(0, 2**32))

    def build(n: int) -> str:
        counts = fwe_counts(n, vocab_size, alpha)
        bag = np.repeat(np.arange(vocab_size), counts)
        bag = bag[_sub_rng(shuffle_seed, n).permutation(len(bag))]
        body, prefix = _format("fwe", " ".join(vocab[i] for i in bag))
        return codec.format(body, prefix)

    n, prompt, ntok = _fit(build, codec, budget, 2 * budget)
    return {"prompt": prompt, "answers": vocab[1:4], "prompt_tokens": ntok, "depth": None, "haystack": None,
            "extra": {"alpha": alpha, "units": n, "vocab_size": vocab_size,
                      "counts": fwe_counts(n, vocab_size, alpha)[:5].tolist()}}


# --- QA over local SQuAD / HotpotQA files ---------------------------------------------------------------


def read_squad(path: str | Path) -> tuple[list[dict[str, Any]], list[str]]:
    """SQuAD v1/v2 JSON -> ``(questions, documents)``: documents are the distinct paragraphs (sorted); a question
    holds its ``gold`` paragraph and ``more``, the other paragraphs of its article (unanswerable ones skipped)."""
    data = json.loads(Path(path).read_text(encoding="utf-8"))
    docs = sorted({p["context"] for a in data["data"] for p in a["paragraphs"]})
    index = {d: i for i, d in enumerate(docs)}
    out = []
    for article in data["data"]:
        article_docs = [index[p["context"]] for p in article["paragraphs"]]
        for para in article["paragraphs"]:
            gold = index[para["context"]]
            for qa in para["qas"]:
                if qa.get("is_impossible") or not qa["answers"]:
                    continue
                out.append({"question": qa["question"], "answers": list(dict.fromkeys(a["text"] for a in qa["answers"])),
                            "gold": [gold], "more": list(dict.fromkeys(i for i in article_docs if i != gold))})
    return out, docs


def read_hotpotqa(path: str | Path) -> tuple[list[dict[str, Any]], list[str]]:
    """HotpotQA JSON (distractor setting) -> ``(questions, documents)``; a question's ``gold`` are all its context
    paragraphs (``title\\ntext``), as RULER takes them."""
    data = json.loads(Path(path).read_text(encoding="utf-8"))
    texts = [[f"{title}\n{''.join(sents)}" for title, sents in d["context"]] for d in data]
    docs = sorted({t for ts in texts for t in ts})
    index = {d: i for i, d in enumerate(docs)}
    return [{"question": d["question"], "answers": [d["answer"]], "gold": list(dict.fromkeys(index[t] for t in ts)),
             "more": []} for d, ts in zip(data, texts)], docs


def _qa(spec, length, index, codec, opts, rng, budget) -> dict[str, Any]:
    dataset = spec["dataset"]
    path = opts.squad_path if dataset == "squad" else opts.hotpotqa_path
    if not path:
        raise MissingData(f"qa over {dataset} needs eval.{dataset}_path")
    if dataset not in opts._qa:
        opts._qa[dataset] = (read_squad if dataset == "squad" else read_hotpotqa)(path)
    items, docs = opts._qa[dataset]
    if not items:
        raise ValueError(f"{path} holds no answerable questions; check eval.{dataset}_path")
    item = items[index % len(items)]  # questions in file order, as RULER
    gold = list(item["gold"])
    more = [i for i in item["more"] if i not in gold]
    rest = sorted(set(range(len(docs))) - set(gold) - set(more))
    # RULER's distractors: paragraphs of the same article first, then random other paragraphs
    pool = [more[i] for i in rng.permutation(len(more))] + [rest[i] for i in rng.permutation(len(rest))]
    if not pool:
        raise ValueError(f"{path} has no distractor documents (one question only); give eval.{dataset}_path a full "
                         "dev set")
    cycles = 1
    doc_tokens = max(1, sum(len(docs[i]) for i in pool) // 8)
    if doc_tokens < budget:  # a small file cannot fill a long context: its paragraphs are reused (flagged)
        cycles = -(-budget // doc_tokens) + 1
    pool = pool * cycles
    shuffle_seed = int(rng.integers(0, 2**32))

    def order(n: int) -> list[int]:
        chosen = gold + pool[:n]
        return [chosen[i] for i in _sub_rng(shuffle_seed, n).permutation(len(chosen))]

    def build(n: int) -> str:
        context = "\n\n".join(f"Document {i + 1}:\n{docs[d]}" for i, d in enumerate(order(n)))
        body, prefix = _format("qa", context, query=item["question"])
        return codec.format(body, prefix)

    n, prompt, ntok = _fit(build, codec, budget, len(pool))
    final = order(n)
    gold_pos = sorted(final.index(g) for g in gold)
    return {"prompt": prompt, "answers": item["answers"], "prompt_tokens": ntok,
            "depth": gold_pos[0] / max(len(final) - 1, 1), "haystack": f"{dataset}:{Path(path).name}",
            "extra": {"question": item["question"], "units": n, "gold_positions": gold_pos,
                      "distractor_docs": len(pool) // cycles, "pool_cycled": cycles > 1}}


def generate_task(task: str, length: int, num_samples: int, codec: PromptCodec, opts: RulerOptions) -> Iterator[Sample]:
    """``num_samples`` samples of ``task`` at ``length`` (raises :class:`MissingData` for unconfigured QA)."""
    if num_samples < 1:
        raise ValueError(f"num_samples must be >= 1, got {num_samples}")
    for i in range(num_samples):
        yield generate_sample(task, length, i, codec, opts)
