"""A small generated question set for short-context general ability, offline (``eval=general_probe``).

MMLU / GSM8K / HumanEval need the dataset hub; this probe needs nothing. It is a seeded multiple-choice set in three
families that a small instruct model answers well above chance and that context extension can damage:

* ``arithmetic``: ``What is 23 + 58?`` (sums and differences of two-digit numbers; distractors ±1, ±10, and a
  digit swap);
* ``compare``: ``Which number is larger: 347 or 374?``;
* ``sequence``: the next item of a weekday, month, letter or counting sequence (``Monday, Tuesday, Wednesday, ...``).

Each question has 4 choices and is scored by lm-eval's log-likelihood accuracy (chance 25 %), so generation
quirks do not matter. :func:`write_probe` writes, per family, the JSONL and the lm-eval task YAML
(``probe_<family>``) that ``eval.local_tasks`` reads; ``generated:general_probe`` in ``eval.local_tasks`` does it
inside the run's output folder.
"""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np

from longrecipe.utils.io import write_text_atomic

FAMILIES = ("arithmetic", "compare", "sequence")
GENERATED_PREFIX = "generated:"
PROBE_NAME = "general_probe"
_SEQUENCES = {
    "weekday": ["Monday", "Tuesday", "Wednesday", "Thursday", "Friday", "Saturday", "Sunday"],
    "month": ["January", "February", "March", "April", "May", "June", "July", "August", "September", "October",
              "November", "December"],
    "letter": [chr(c) for c in range(ord("A"), ord("Z") + 1)],
}


def _arithmetic(rng: np.random.Generator) -> dict:
    a, b = (int(x) for x in rng.integers(10, 100, size=2))
    op = "+" if rng.random() < 0.5 else "-"
    if op == "-" and b > a:
        a, b = b, a
    answer = a + b if op == "+" else a - b
    swapped = int(str(answer)[::-1]) if answer >= 10 else answer + 20
    wrong = [w for w in dict.fromkeys([answer + 1, answer - 1, answer + 10, answer - 10, swapped, answer + 2])
             if w != answer and w >= 0]
    return {"question": f"What is {a} {op} {b}?", "answer": str(answer), "wrong": [str(w) for w in wrong]}


def _compare(rng: np.random.Generator) -> dict:
    while True:
        a = int(rng.integers(100, 1000))
        digits = list(str(a))
        i, j = sorted(int(x) for x in rng.choice(3, size=2, replace=False))
        digits[i], digits[j] = digits[j], digits[i]
        b = int("".join(digits))
        if b != a and b >= 100:
            break
    first, second = (a, b) if rng.random() < 0.5 else (b, a)
    big, small = max(a, b), min(a, b)
    # the choices: both numbers, then two more near them (the question names only the first two)
    return {"question": f"Which number is larger: {first} or {second}?", "answer": str(big),
            "wrong": [str(small), str(big + 1), str(small - 1)]}


def _sequence(rng: np.random.Generator) -> dict:
    kind = str(rng.choice(["weekday", "month", "letter", "count"]))
    if kind == "count":
        step = int(rng.choice([2, 3, 5, 10]))
        start = int(rng.integers(1, 50))
        items = [str(start + step * k) for k in range(4)]
        answer = str(start + step * 4)
        wrong = [str(start + step * 4 + 1), str(start + step * 5), str(start + step * 3)]
    else:
        names = _SEQUENCES[kind]
        n = len(names)
        start = int(rng.integers(0, n))
        items = [names[(start + k) % n] for k in range(3)]
        answer = names[(start + 3) % n]
        others = [names[(start + k) % n] for k in (2, 4, 5, 1)]
        wrong = [w for w in dict.fromkeys(others) if w != answer]
    return {"question": "What comes next: " + ", ".join(items) + ", ...?", "answer": answer, "wrong": wrong}


_MAKERS = {"arithmetic": _arithmetic, "compare": _compare, "sequence": _sequence}


def probe_questions(n_per_family: int = 60, *, seed: int = 0) -> list[dict]:
    """``n_per_family`` questions of each family, seeded: ``{family, question, choices, answer}`` with the index
    of the correct one of 4 choices in ``answer`` (its place drawn uniformly)."""
    if n_per_family < 1:
        raise ValueError(f"n_per_family must be >= 1, got {n_per_family}")
    rows = []
    for f, family in enumerate(FAMILIES):
        rng = np.random.default_rng([seed, f])
        seen: set[str] = set()
        while len([r for r in rows if r["family"] == family]) < n_per_family:
            q = _MAKERS[family](rng)
            if q["question"] in seen or len(q["wrong"]) < 3:
                continue
            seen.add(q["question"])
            wrong = [q["wrong"][i] for i in rng.choice(len(q["wrong"]), size=3, replace=False)]
            at = int(rng.integers(0, 4))
            choices = wrong[:at] + [q["answer"]] + wrong[at:]
            rows.append({"family": family, "question": q["question"], "choices": choices, "answer": at})
    return rows


def write_probe(folder: str | Path, *, n_per_family: int = 60, seed: int = 0) -> list[Path]:
    """Write one JSONL and one lm-eval task YAML per family (``probe_<family>``) into ``folder``; returns the YAMLs
    (one score per family, so a loss in arithmetic is not hidden by the others)."""
    folder = Path(folder)
    folder.mkdir(parents=True, exist_ok=True)
    rows = probe_questions(n_per_family, seed=seed)
    paths = []
    for family in FAMILIES:
        name = f"probe_{family}"
        write_text_atomic(folder / f"{name}.jsonl",
                          "".join(json.dumps(r) + "\n" for r in rows if r["family"] == family))
        yaml_path = folder / f"{name}.yaml"
        write_text_atomic(yaml_path, "\n".join([
            f"# generated by longrecipe.evaluation.probe.write_probe(n_per_family={n_per_family}, seed={seed})",
            f"task: {name}",
            "dataset_path: json",
            "dataset_kwargs:",
            "  data_files:",
            f"    test: {name}.jsonl",
            "test_split: test",
            "output_type: multiple_choice",
            'doc_to_text: "Question: {{question}}\\nAnswer:"',
            'doc_to_choice: "{{choices}}"',
            'doc_to_target: "{{answer}}"',
            "metric_list:",
            "  - metric: acc",
            "    aggregation: mean",
            "    higher_is_better: true",
            "metadata:",
            "  version: 1.0",
            "",
        ]))
        paths.append(yaml_path)
    return paths


def resolve_local_tasks(entries: list[str], folder: str | Path, *, n_per_family: int = 60, seed: int = 0
                        ) -> list[str]:
    """``eval.local_tasks`` with ``generated:general_probe`` replaced by the YAML written into ``folder``."""
    out = []
    for entry in entries:
        entry = str(entry)
        if entry.startswith(GENERATED_PREFIX):
            name = entry[len(GENERATED_PREFIX):]
            if name != PROBE_NAME:
                raise ValueError(f"eval.local_tasks entry {entry!r}: the generated task is "
                                 f"{GENERATED_PREFIX}{PROBE_NAME}")
            out += [str(p) for p in write_probe(folder, n_per_family=n_per_family, seed=seed)]
        else:
            out.append(entry)
    return out
