"""RULER's 13 synthetic tasks (Hsieh et al., 2024), generated locally at an exact token length.

Our own implementation of the task definitions of NVIDIA/RULER ``scripts/synthetic.yaml`` and
``scripts/data/synthetic/constants.py`` (templates, answer prefixes, tokens to generate): needle-in-a-haystack
(single / multi-key / multi-value / multi-query), variable tracking (vt), common / frequent word extraction
(cwe / fwe) and long-document QA over SQuAD (qa_1) / HotpotQA (qa_2) read from local files.

A sample's prompt (template + context + question + answer prefix) is fitted to ``length - max_new_tokens``
tokens of the evaluated model's tokenizer, as RULER does. Sample ``i`` puts its (first) needle at depth
``linspace(0, 1, num_depths)[i % num_depths]``; everything else is drawn from a per-sample seeded generator.
"""

from __future__ import annotations

import json
import uuid
import zlib
from collections.abc import Iterator
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

import numpy as np

from longrecipe.evaluation.haystack import (
    NOISE_TEXT,
    PromptCodec,
    fit_units,
    insert_at_depths,
    load_essay_text,
    word_pool,
)
from longrecipe.evaluation.words import single_words, word_keys
from longrecipe.utils.seeding import sample_rng

TEMPLATES: dict[str, dict[str, Any]] = {
    "niah": {
        "tokens_to_generate": 128,
        "template": "Some special magic {type_v} are hidden within the following text. Make sure to memorize it. "
        "I will quiz you about the {type_v} afterwards.\n{context}\nWhat are all the special magic {type_v} for "
        "{query} mentioned in the provided text?",
        "answer_prefix": " The special magic {type_v} for {query} mentioned in the provided text are",
    },
    "vt": {
        "tokens_to_generate": 30,
        "template": "Memorize and track the chain(s) of variable assignment hidden in the following text.\n\n{context}\n"
        "Question: Find all variables that are assigned the value {query} in the text above.",
        "answer_prefix": " Answer: According to the chain(s) of variable assignment in the text above, {num_v} variables "
        "are assgined the value {query}, they are: ",
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

# The 13 RULER tasks: (family, arguments, metric).
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
    extra: dict[str, Any] = field(default_factory=dict)

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)


class MissingData(Exception):
    """A task needs a local data file that was not configured (reported as "not run (no data)")."""


@dataclass
class RulerOptions:
    """Knobs shared by all tasks (the defaults are RULER's)."""

    essay_source: str | None = None
    num_depths: int = 10
    value_digits: int = 7
    max_new_tokens: int | None = None
    squad_path: str | None = None
    hotpotqa_path: str | None = None
    seed: int = 42
    _essay: str | None = field(default=None, repr=False)

    def essay(self) -> str:
        if self._essay is None:
            self._essay = load_essay_text(self.essay_source, seed=self.seed)
        return self._essay


def depth_grid(num_depths: int) -> np.ndarray:
    if num_depths < 1:
        raise ValueError(f"num_depths must be >= 1, got {num_depths}; use e.g. eval.num_depths=10")
    return np.linspace(0.0, 1.0, num_depths) if num_depths > 1 else np.array([0.5])


def task_rng(seed: int, task: str, length: int, index: int) -> np.random.Generator:
    return sample_rng(seed, 0, index, stream=zlib.crc32(f"{task}:{length}".encode()))


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


def _finish(task, length, index, codec, build, budget, max_units, *, answers, metric, max_new, depth, extra,
            topup=None) -> Sample:
    """Fit whole units, then (for coarse units: needles, documents) top up word by word with ``topup(n, m)``."""
    n, prompt, ntok = fit_units(build, codec.count, budget, max_units=max_units)
    extra = {**extra, "units": n}
    if topup is not None:
        m, prompt, ntok = fit_units(lambda m: topup(n, m), codec.count, budget, max_units=budget)
        extra["topup_words"] = m
    return Sample(task=task, length=length, index=index, prompt=prompt, answers=answers, metric=metric,
                  max_new_tokens=max_new, prompt_tokens=ntok, budget=budget, depth=depth, extra=extra)


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
    depth = float(depth_grid(opts.num_depths)[index % opts.num_depths])
    common = dict(answers=None, metric=METRICS[family], max_new=max_new)
    if family == "niah":
        return _niah(task, spec, length, index, codec, opts, rng, depth, budget, common)
    if family == "vt":
        return _vt(task, spec, length, index, codec, opts, rng, depth, budget, common)
    if family == "cwe":
        return _cwe(task, spec, length, index, codec, rng, budget, common)
    if family == "fwe":
        return _fwe(task, spec, length, index, codec, rng, budget, common)
    return _qa(task, spec, length, index, codec, opts, rng, depth, budget, common)


def _niah(task, spec, length, index, codec, opts, rng, depth, budget, common) -> Sample:
    num_k, num_v, num_q = spec.get("num_k", 1), spec.get("num_v", 1), spec.get("num_q", 1)
    n_keys = max(num_k, num_q)
    keys = _values(rng, spec["key"], n_keys, opts.value_digits)
    values = [_values(rng, spec["value"], num_v, opts.value_digits) for _ in keys]
    type_v = spec["value"]
    needles = [_needle(k, v, type_v) for k, vs in zip(keys, values) for v in vs]
    # the first queried needle goes to this sample's grid depth; the others to random grid depths
    grid = depth_grid(opts.num_depths)
    others = [float(x) for x in rng.choice(grid, size=len(needles) - 1, replace=len(needles) - 1 > len(grid))]
    depths = [depth, *others]
    order = rng.permutation(len(needles))  # shuffle which needle gets which depth, keeping needle 0 at `depth`
    order = np.concatenate([[0], order[order != 0]])
    needles = [needles[i] for i in order]
    query_keys = keys[:num_q]
    query = query_keys[0] if num_q == 1 else ", ".join(query_keys[:-1]) + ", and " + query_keys[-1]
    answers = [v for k, vs in zip(keys, values) if k in query_keys for v in vs]
    offset = int(rng.integers(0, 10**9))
    if spec["haystack"] == "needle":
        pool_size = budget // 8 + 16
        d_keys = _values(rng, spec["key"], pool_size, opts.value_digits, exclude=set(keys))
        d_vals = _values(rng, spec["value"], pool_size, opts.value_digits, exclude={v for vs in values for v in vs})
        distractors = [_needle(k, v, type_v) for k, v in zip(d_keys, d_vals)]

        filler = word_pool(NOISE_TEXT, budget)

        def context(n: int, m: int = 0) -> str:
            pieces = list(distractors[:n])
            cuts = np.round(np.asarray(depths) * n).astype(int)
            for j in sorted(range(len(needles)), key=lambda j: (-cuts[j], -j)):
                pieces.insert(int(cuts[j]), needles[j])
            if m:  # word-level top-up after the last distractor, so the length is exact
                pieces.append(" ".join(filler[:m]))
            return "\n".join(pieces)

        max_units = pool_size
    else:
        text = NOISE_TEXT if spec["haystack"] == "noise" else opts.essay()
        pool = word_pool(text, budget, offset=0 if spec["haystack"] == "noise" else offset, sentence_start=True)

        def context(n: int) -> str:
            return insert_at_depths(pool[:n], needles, depths)

        max_units = budget

    def build(n: int, m: int = 0) -> str:
        body, prefix = _format("niah", context(n, m) if m else context(n), type_v=type_v, query=query)
        return codec.format(body, prefix)

    common["answers"] = answers
    return _finish(task, length, index, codec, build, budget, max_units, depth=depth,
                   extra={"depths": depths, "needles": needles, "query": query},
                   topup=build if spec["haystack"] == "needle" else None, **common)


def _vt(task, spec, length, index, codec, opts, rng, depth, budget, common) -> Sample:
    hops, chains = spec["num_hops"], spec["num_chains"]
    letters = np.array(list("ABCDEFGHIJKLMNOPQRSTUVWXYZ"))
    names: list[str] = []
    while len(names) < chains * (hops + 1):
        name = "".join(rng.choice(letters, size=5))
        if name not in names:
            names.append(name)
    value = str(int(rng.integers(10000, 100000)))
    statements: list[str] = []
    depths: list[float] = []
    answers: list[str] = []
    for c in range(chains):
        var = names[c * (hops + 1) : (c + 1) * (hops + 1)]
        val = value if c == 0 else str(int(rng.integers(10000, 100000)))
        chain = [f"VAR {var[0]} = {val}."] + [f"VAR {var[i + 1]} = VAR {var[i]}." for i in range(hops)]
        start = depth if c == 0 else float(rng.uniform(0, 1))
        depths += [start, *sorted(float(x) for x in rng.uniform(start, 1.0, size=hops))]
        statements += chain
        if c == 0:
            answers = var
    pool = word_pool(NOISE_TEXT, budget)

    def build(n: int) -> str:
        body, prefix = _format("vt", insert_at_depths(pool[:n], statements, depths), query=value, num_v=hops + 1)
        return codec.format(body, prefix)

    common["answers"] = answers
    return _finish(task, length, index, codec, build, budget, budget, depth=depth,
                   extra={"depths": depths, "query": value}, **common)


def _cwe(task, spec, length, index, codec, rng, budget, common) -> Sample:
    num_cw = spec["num_cw"]
    pool_size = budget // 2 + 64
    words = single_words(rng, num_cw + pool_size)
    common_words, rare = words[:num_cw], words[num_cw:]
    shuffle_seed = int(rng.integers(0, 2**32))

    def make_build(freq_cw: int, freq_ucw: int):
        def build(n: int) -> str:
            bag = common_words * freq_cw + rare[:n] * freq_ucw
            perm = np.random.default_rng([shuffle_seed, n]).permutation(len(bag))
            listing = " ".join(f"{i + 1}. {bag[j]}" for i, j in enumerate(perm))
            body, prefix = _format("cwe", listing, num_cw=num_cw)
            return codec.format(body, prefix)

        return build

    freq_cw, freq_ucw = spec["freq_cw"], spec["freq_ucw"]
    if codec.count(make_build(freq_cw, freq_ucw)(0)) > budget:
        freq_cw, freq_ucw = 2, 1  # RULER's short-context setting: common words still twice as frequent
    common["answers"] = common_words
    sample = _finish(task, length, index, codec, make_build(freq_cw, freq_ucw), budget, pool_size // max(freq_ucw, 1),
                     depth=None, extra={"freq_cw": freq_cw, "freq_ucw": freq_ucw}, **common)
    return sample


def _fwe(task, spec, length, index, codec, rng, budget, common) -> Sample:
    alpha = float(spec["alpha"])
    letters = np.array(list("abcdefghijklmnopqrstuvwxyz"))
    shuffle_seed = int(rng.integers(0, 2**32))
    vocab_cap = max(16, budget // 8)
    vocab: list[str] = []
    seen: set[str] = set()
    while len(vocab) < vocab_cap:
        w = "".join(rng.choice(letters, size=int(rng.integers(3, 7))))
        if w not in seen:
            seen.add(w)
            vocab.append(w)
    vocab = ["...."] + vocab  # rank 1 is the noise token the question tells the model to ignore

    def counts_for(n: int) -> np.ndarray:
        size = min(len(vocab), max(8, n // 10))
        p = np.arange(1, size + 1, dtype=float) ** -alpha
        c = np.floor(n * p / p.sum()).astype(int)
        for r in range(4, 0, -1):  # ranks 2..4 must be strictly more frequent than everything after them
            c[r] = max(c[r], c[r + 1] + 1)
        return c

    def build(n: int) -> str:
        c = counts_for(n)
        bag = np.repeat(np.arange(len(c)), c)
        bag = bag[np.random.default_rng([shuffle_seed, n]).permutation(len(bag))]
        body, prefix = _format("fwe", " ".join(vocab[i] for i in bag))
        return codec.format(body, prefix)

    common["answers"] = vocab[1:4]
    return _finish(task, length, index, codec, build, budget, budget, depth=None, extra={"alpha": alpha}, **common)


# --- QA over local SQuAD / HotpotQA files ---------------------------------------------------------------


def read_squad(path: str | Path) -> list[dict[str, Any]]:
    """SQuAD v1/v2 JSON -> ``[{question, answers, gold_docs}]`` (unanswerable questions skipped)."""
    data = json.loads(Path(path).read_text(encoding="utf-8"))
    out = []
    for article in data["data"]:
        for para in article["paragraphs"]:
            for qa in para["qas"]:
                if qa.get("is_impossible") or not qa["answers"]:
                    continue
                out.append({"question": qa["question"], "answers": sorted({a["text"] for a in qa["answers"]}),
                            "gold_docs": [para["context"]]})
    return out


def read_hotpotqa(path: str | Path) -> list[dict[str, Any]]:
    """HotpotQA JSON (distractor setting) -> ``[{question, answers, gold_docs}]`` with each paragraph as a doc."""
    data = json.loads(Path(path).read_text(encoding="utf-8"))
    return [{"question": d["question"], "answers": [d["answer"]],
             "gold_docs": [f"{title}\n{''.join(sents)}" for title, sents in d["context"]]} for d in data]


def _qa(task, spec, length, index, codec, opts, rng, depth, budget, common) -> Sample:
    path = opts.squad_path if spec["dataset"] == "squad" else opts.hotpotqa_path
    if not path:
        raise MissingData(f"{task} needs eval.{spec['dataset'] if spec['dataset'] == 'squad' else 'hotpotqa'}_path")
    items = (read_squad if spec["dataset"] == "squad" else read_hotpotqa)(path)
    if not items:
        raise ValueError(f"{path} holds no answerable questions; check eval.{spec['dataset']}_path")
    item = items[index % len(items)]
    gold = list(item["gold_docs"])
    all_docs = list(dict.fromkeys(d for it in items for d in it["gold_docs"]))
    pool = [all_docs[i] for i in rng.permutation(len(all_docs)) if all_docs[i] not in gold]
    if not pool:
        raise ValueError(f"{path} has no distractor documents (one question only); give eval.{spec['dataset']}_path "
                         "a full dev set")
    # a small dataset cannot fill a long context: distractors are then reused (flagged in extra.pool_cycled)
    cycles = max(1, -(-budget // max(1, sum(len(d) for d in pool) // 8)))
    pool_cycled = cycles > 1
    pool = pool * cycles

    def build(n: int, m: int = 0) -> str:
        docs = list(pool[:n])
        cut = int(round(depth * n))
        docs[cut:cut] = gold
        if m and n < len(pool):  # word-level top-up: the head of the next distractor document
            docs.append(" ".join(pool[n].split()[:m]))
        context = "\n\n".join(f"Document {i + 1}:\n{d}" for i, d in enumerate(docs))
        body, prefix = _format("qa", context, query=item["question"])
        return codec.format(body, prefix)

    common["answers"] = item["answers"]
    return _finish(task, length, index, codec, build, budget, len(pool), depth=depth,
                   extra={"question": item["question"], "distractor_docs": len(pool) // cycles,
                          "pool_cycled": pool_cycled}, topup=build, **common)


def generate_task(task: str, length: int, num_samples: int, codec: PromptCodec, opts: RulerOptions) -> Iterator[Sample]:
    """``num_samples`` samples of ``task`` at ``length`` (raises :class:`MissingData` for unconfigured QA)."""
    if num_samples < 1:
        raise ValueError(f"num_samples must be >= 1, got {num_samples}")
    for i in range(num_samples):
        yield generate_sample(task, length, i, codec, opts)
