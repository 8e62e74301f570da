"""The generated general-ability probe (``eval=general_probe``): exact questions for a seed, correct answers by
construction, one lm-eval task per family, through the real `evaluate` config; and held-out perplexity text chosen
by a file pattern."""

from __future__ import annotations

import json

import pytest

from longrecipe.config import compose
from longrecipe.evaluation.haystack import resolve_essay
from longrecipe.evaluation.probe import FAMILIES, probe_questions, resolve_local_tasks, write_probe
from longrecipe.evaluation.runner import evaluate


def test_probe_questions_exact_for_seed_0():
    rows = probe_questions(2, seed=0)
    assert [r["family"] for r in rows] == ["arithmetic"] * 2 + ["compare"] * 2 + ["sequence"] * 2
    assert rows[0] == {"family": "arithmetic", "question": "What is 86 + 67?", "choices": ["154", "155", "152", "153"],
                       "answer": 3}
    assert rows[2]["question"] == "Which number is larger: 596 or 569?" and rows[2]["answer"] == 0
    assert rows[4] == {"family": "sequence", "question": "What comes next: 15, 17, 19, 21, ...?",
                       "choices": ["23", "24", "21", "25"], "answer": 0}
    assert probe_questions(2, seed=0) == rows and probe_questions(2, seed=1) != rows


def _reference_answer(row: dict) -> str:
    """An independent solution of each question from its text."""
    q = row["question"]
    if row["family"] == "arithmetic":
        a, op, b = q.removeprefix("What is ").removesuffix("?").split()
        return str(int(a) + int(b) if op == "+" else int(a) - int(b))
    if row["family"] == "compare":
        a, b = q.removeprefix("Which number is larger: ").removesuffix("?").split(" or ")
        return str(max(int(a), int(b)))
    items = q.removeprefix("What comes next: ").removesuffix(", ...?").split(", ")
    if items[0].isdigit():
        return str(int(items[-1]) + int(items[-1]) - int(items[-2]))
    cycles = [["Monday", "Tuesday", "Wednesday", "Thursday", "Friday", "Saturday", "Sunday"],
              ["January", "February", "March", "April", "May", "June", "July", "August", "September", "October",
               "November", "December"], [chr(c) for c in range(65, 91)]]
    cycle = next(c for c in cycles if items[-1] in c)
    return cycle[(cycle.index(items[-1]) + 1) % len(cycle)]


def test_probe_answers_are_correct_and_choices_distinct():
    rows = probe_questions(60, seed=3)
    assert len(rows) == 180 and len({r["question"] for r in rows}) == 180
    for r in rows:
        assert len(r["choices"]) == 4 and len(set(r["choices"])) == 4, r
        assert r["choices"][r["answer"]] == _reference_answer(r), r
    positions = [r["answer"] for r in rows]
    assert all(positions.count(k) > 25 for k in range(4))  # the answer's place is spread over the 4 choices


def test_write_probe_and_bad_generated_name(tmp_path):
    paths = write_probe(tmp_path, n_per_family=3)
    assert [p.name for p in paths] == [f"probe_{f}.yaml" for f in FAMILIES]
    lines = (tmp_path / "probe_compare.jsonl").read_text().splitlines()
    assert len(lines) == 3 and all(json.loads(x)["family"] == "compare" for x in lines)
    assert "task: probe_compare" in paths[1].read_text()
    assert resolve_local_tasks(["x.yaml", "generated:general_probe"], tmp_path / "p", n_per_family=1) == [
        "x.yaml", *(str(tmp_path / "p" / f"probe_{f}.yaml") for f in FAMILIES)]
    with pytest.raises(ValueError, match=r"eval.local_tasks entry 'generated:mmlu': the generated task is "
                                         r"generated:general_probe"):
        resolve_local_tasks(["generated:mmlu"], tmp_path)


def test_general_probe_end_to_end(tiny_model_dir, tmp_path):
    model = tiny_model_dir("llama", seed=0, max_position_embeddings=256)
    recs = evaluate(compose("evaluate", ["eval=general_probe", f"model_path={model}", f"output_dir={tmp_path / 'g'}",
                                         "eval.probe_per_family=4", "progress=false"]))
    acc = {r["task"]: r for r in recs if r["metric"] == "acc,none"}
    assert set(acc) == {f"probe_{f}" for f in FAMILIES}
    assert all(r["n"] == 4 and r["score"] in {0, 25, 50, 75, 100} and r["se"] is not None for r in acc.values())
    assert (tmp_path / "g" / "probe" / "probe_sequence.jsonl").is_file()


def test_ppl_text_by_file_pattern(tmp_path):
    for name, text in [("1999-a.txt", "old text."), ("2001-b.txt", "new one."), ("2005-c.txt", "newer one.")]:
        (tmp_path / name).write_text(text)
    essay = resolve_essay(tmp_path, field="eval.source", glob="2*.txt")
    assert essay.text == "new one.\n\nnewer one." and essay.label == f"{tmp_path}/2*.txt"
    with pytest.raises(ValueError, match=r"eval.source=.*1999-a.txt' is a file; a file pattern \(glob='2\*.txt'\) "
                                         r"needs a folder"):
        resolve_essay(tmp_path / "1999-a.txt", field="eval.source", glob="2*.txt")
