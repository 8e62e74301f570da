"""RULER generators: exact token lengths, needle depths, determinism, task structure, bad input."""

from __future__ import annotations

from collections import Counter
from pathlib import Path

import pytest

from longrecipe.evaluation.haystack import PromptCodec, insert_at_depths, word_pool
from longrecipe.evaluation.ruler import RULER_TASKS, MissingData, RulerOptions, generate_sample, generate_task

DATA = Path(__file__).parent / "data" / "eval"


@pytest.fixture(scope="module")
def codec(tiny_tokenizer):
    return PromptCodec(tiny_tokenizer)


@pytest.fixture(scope="module")
def opts():
    return RulerOptions(squad_path=str(DATA / "squad_tiny.json"), hotpotqa_path=str(DATA / "hotpotqa_tiny.json"),
                        max_new_tokens=16, num_depths=5)


@pytest.mark.parametrize("task", sorted(RULER_TASKS))
@pytest.mark.parametrize("length", [1024, 3000])
def test_exact_token_length(codec, opts, task, length):
    s = generate_sample(task, length, 2, codec, opts)
    budget = length - 16
    assert s.budget == budget
    assert codec.count(s.prompt) == s.prompt_tokens  # counted as generation will see it
    assert budget * 0.99 <= s.prompt_tokens <= budget
    assert s.metric == ("string_match_part" if task.startswith("qa") else "string_match_all")


def test_essay_from_state_union(codec, state_union_dir):
    o = RulerOptions(essay_source=str(state_union_dir), max_new_tokens=16)
    s = generate_sample("niah_single_2", 4096, 0, codec, o)
    assert 0.99 * 4080 <= s.prompt_tokens <= 4080
    assert "\ufffd" not in s.prompt  # latin-1 files decoded, not replaced


@pytest.mark.parametrize("task", ["niah_single_1", "niah_single_2", "niah_multikey_2"])
def test_needle_at_requested_depth(codec, opts, task):
    depths = []
    for i in range(5):  # num_depths=5: sample i at depth i/4
        s = generate_sample(task, 2048, i, codec, opts)
        needle = s.extra["needles"][0]
        head, _, rest = s.prompt.partition("afterwards.\n")
        context = rest.rpartition("\nWhat are all")[0]
        before = codec.count(head + "afterwards.\n" + context[: context.index(needle)])
        start, end = codec.count(head + "afterwards.\n"), codec.count(head + "afterwards.\n" + context)
        measured = (before - start) / (end - start - codec.count(needle))
        assert s.depth == pytest.approx(i / 4)
        depths.append(measured)
    assert depths == pytest.approx([0, 0.25, 0.5, 0.75, 1.0], abs=0.04)


def test_deterministic_per_seed(codec, opts):
    a = generate_sample("niah_multikey_1", 1024, 3, codec, opts)
    b = generate_sample("niah_multikey_1", 1024, 3, codec, opts)
    c = generate_sample("niah_multikey_1", 1024, 3, codec, RulerOptions(seed=7, max_new_tokens=16, num_depths=5))
    assert a.prompt == b.prompt and a.answers == b.answers
    assert c.prompt != a.prompt
    assert generate_sample("niah_multikey_1", 1024, 4, codec, opts).prompt != a.prompt


def test_multi_needle_structure(codec, opts):
    mk = generate_sample("niah_multikey_1", 2048, 0, codec, opts)
    assert mk.prompt.count("One of the special magic numbers for") == 4 and len(mk.answers) == 1
    assert f"for {mk.extra['query']} is: {mk.answers[0]}." in mk.prompt
    mv = generate_sample("niah_multivalue", 2048, 0, codec, opts)
    assert len(mv.answers) == 4 and all(f"for {mv.extra['query']} is: {v}." in mv.prompt for v in mv.answers)
    mq = generate_sample("niah_multiquery", 2048, 0, codec, opts)
    assert len(mq.answers) == 4 and mq.extra["query"].count(",") == 3
    mk3 = generate_sample("niah_multikey_3", 2048, 0, codec, opts)
    assert mk3.prompt.count("One of the special magic uuids for") > 10  # the haystack is distractor needles
    assert len(mk3.answers[0]) == 36 and mk3.answers[0].count("-") == 4


def test_vt_cwe_fwe_structure(codec, opts):
    vt = generate_sample("vt", 2048, 1, codec, opts)
    assert len(vt.answers) == 5
    pos = [vt.prompt.index(f"VAR {v} =") for v in vt.answers]
    assert pos == sorted(pos)  # the chain is in order
    assert f"VAR {vt.answers[0]} = {vt.extra['query']}." in vt.prompt
    cwe = generate_sample("cwe", 3000, 0, codec, opts)
    listing = cwe.prompt.split("most often.\n")[1].split("\nQuestion:")[0].split()
    words = Counter(w for i, w in enumerate(listing) if i % 2 == 1)
    assert {w for w, _ in words.most_common(10)} == set(cwe.answers)
    assert min(words[w] for w in cwe.answers) == 30 and max(c for w, c in words.items() if w not in cwe.answers) == 3
    fwe = generate_sample("fwe", 3000, 0, codec, opts)
    text = fwe.prompt.split("coded words. ")[1].split("\nQuestion:")[0].split()
    ranked = [w for w, _ in Counter(text).most_common()]
    assert ranked[0] == "...." and ranked[1:4] == fwe.answers


def test_qa_and_missing_data(codec, opts):
    s = generate_sample("qa_2", 1024, 1, codec, opts)
    assert s.answers == ["2008"] and "The Oslo Opera House opened in 2008." in s.prompt
    with pytest.raises(MissingData, match="squad_path"):
        generate_sample("qa_1", 1024, 0, codec, RulerOptions())


def test_bad_input_messages(codec, opts):
    with pytest.raises(ValueError, match=r"task must be one of .*niah_single_1"):
        generate_sample("niah_single_9", 1024, 0, codec, opts)
    with pytest.raises(ValueError, match="length too short.*raise eval.lengths"):
        generate_sample("niah_multiquery", 200, 0, codec, opts)
    with pytest.raises(ValueError, match="num_samples must be >= 1"):
        list(generate_task("vt", 1024, 0, codec, opts))
    with pytest.raises(ValueError, match="essay_source must be"):
        generate_sample("niah_single_2", 1024, 0, codec, RulerOptions(essay_source="/no/such/dir"))


def test_insert_at_depths_snaps_to_sentences():
    words = "A b. C d. E f.".split()
    assert insert_at_depths(words, ["X"], [0.5]) == "A b. X C d. E f."  # 0.5*6=3 -> boundary 2 (tie -> left)
    assert insert_at_depths(words, ["X", "Y"], [1.0, 0.0]) == "Y A b. C d. E f. X"
    assert word_pool("a b. c", 5, offset=1, sentence_start=True) == ["c", "a", "b.", "c", "a"]
