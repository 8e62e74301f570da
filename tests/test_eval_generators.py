"""RULER generators against NVIDIA RULER's prompt structure: templates, singular/plural wording, one-shot examples,
separators, answer prefixes, depth draws, QA distractors, word sources, haystack choice, exact lengths, bad input."""

from __future__ import annotations

import json
import logging
import math
import re
from collections import Counter
from pathlib import Path

import numpy as np
import pytest

from longrecipe.evaluation import haystack as haystack_mod
from longrecipe.evaluation.haystack import (
    NOISE_TEXT,
    Essay,
    PromptCodec,
    fit_units,
    resolve_chat_template,
    resolve_essay,
)
from longrecipe.evaluation.ruler import (
    RULER_TASKS,
    MissingData,
    RulerOptions,
    _CweWords,
    generate_sample,
    generate_task,
)
from longrecipe.evaluation.words import corpus_vocabulary, word_source

DATA = Path(__file__).parent / "data" / "eval"
RULER_DEPTHS = {d / 100 for d in np.round(np.linspace(0, 100, 40)).astype(int)}  # RULER's 40-point grid


@pytest.fixture(scope="module")
def codec(tiny_tokenizer):
    return PromptCodec(tiny_tokenizer)


@pytest.fixture(scope="module")
def opts():
    return RulerOptions(squad_path=str(DATA / "squad_tiny.json"), hotpotqa_path=str(DATA / "hotpotqa_tiny.json"),
                        max_new_tokens=16)


@pytest.fixture()
def chat_tokenizer(tiny_tokenizer_dir):
    from transformers import AutoTokenizer

    tok = AutoTokenizer.from_pretrained(str(tiny_tokenizer_dir))
    tok.chat_template = ("{% for m in messages %}<|{{ m['role'] }}|>{{ m['content'] }}</s>{% endfor %}"
                         "{% if add_generation_prompt %}<|assistant|>{% endif %}")
    return tok


def _between(text: str, start: str, end: str) -> str:
    return (text.split(start, 1)[1] if start else text).rsplit(end, 1)[0]


def _listing(text: str) -> list[str]:
    """``1. a 2. b c 3. d`` -> ``[a, b c, d]`` (wonderwords has words with spaces), checking the numbering."""
    items = re.findall(r"(\d+)\. (.+?)(?= \d+\. |$)", text)
    assert [int(i) for i, _ in items] == list(range(1, len(items) + 1))
    return [w for _, w in items]


@pytest.mark.parametrize("task", sorted(RULER_TASKS))
@pytest.mark.parametrize("length", [2048, 6144])
def test_prompt_fills_the_budget(codec, opts, task, length):
    s = generate_sample(task, length, 2, codec, opts)
    assert s.budget == length - 16
    assert codec.count(s.prompt) == s.prompt_tokens <= s.budget  # counted as generation will see it
    assert s.prompt_tokens >= 0.95 * s.budget  # whole haystack units, up to one unit short (RULER: the same)
    assert s.metric == ("string_match_part" if task.startswith("qa") else "string_match_all")


def test_fit_units_takes_the_most_units_that_fit():
    count = lambda text: len(text.split()) + 3  # noqa: E731
    n, text, tokens = fit_units(lambda k: "w " * k, count, 1000, max_units=5000)
    assert (n, tokens) == (997, 1000) and count("w " * (n + 1)) > 1000


@pytest.mark.parametrize("task", ["niah_single_1", "niah_single_2", "niah_single_3", "niah_multikey_1",
                                  "niah_multikey_2", "niah_multikey_3"])
def test_one_key_one_value_uses_rulers_singular_wording(codec, opts, task):
    s = generate_sample(task, 2048, 0, codec, opts)
    t = "uuid" if task in ("niah_single_3", "niah_multikey_3") else "number"
    key = s.extra["query"]
    assert s.extra["singular"] and len(s.answers) == 1
    assert s.prompt.startswith(f"A special magic {t} is hidden within the following text. Make sure to memorize "
                               f"it. I will quiz you about the {t} afterwards.\n")
    assert s.prompt.endswith(f"\nWhat is the special magic {t} for {key} mentioned in the provided text? The special "
                             f"magic {t} for {key} mentioned in the provided text is")
    assert f"One of the special magic {t}s for {key} is: {s.answers[0]}." in s.prompt  # needles keep the plural


@pytest.mark.parametrize("task", ["niah_multivalue", "niah_multiquery"])
def test_several_values_use_the_plural_wording(codec, opts, task):
    s = generate_sample(task, 2048, 0, codec, opts)
    q = s.extra["query"]
    assert not s.extra["singular"] and len(s.answers) == 4
    assert s.prompt.startswith("Some special magic numbers are hidden within the following text. Make sure to "
                               "memorize it. I will quiz you about the numbers afterwards.\n")
    assert s.prompt.endswith(f"\nWhat are all the special magic numbers for {q} mentioned in the provided text? The "
                             f"special magic numbers for {q} mentioned in the provided text are")
    if task == "niah_multiquery":
        keys = q.replace(", and ", ", ").split(", ")
        assert len(keys) == 4 and q.count(", and ") == 1
        assert all(f"for {k} is: {v}." in s.prompt for k, v in zip(keys, s.answers))
    else:
        assert all(f"for {q} is: {v}." in s.prompt for v in s.answers)


def test_noise_and_needle_haystacks_are_one_line_per_copy(codec, opts):
    s = generate_sample("niah_single_1", 2048, 0, codec, opts)
    lines = _between(s.prompt, "afterwards.\n", "\nWhat is").split("\n")
    needle = f"One of the special magic numbers for {s.extra['query']} is: {s.answers[0]}."
    assert len(lines) == s.extra["units"] + 1 and lines.count(needle) == 1
    assert all(x == NOISE_TEXT for x in lines if x != needle)
    assert s.depth == lines.index(needle) / s.extra["units"] and s.haystack == "noise"
    mk = generate_sample("niah_multikey_2", 2048, 0, codec, opts)
    lines = _between(mk.prompt, "afterwards.\n", "\nWhat is").split("\n")
    assert len(lines) == mk.extra["units"] + 1 and mk.haystack == "needle"
    assert all(re.fullmatch(r"One of the special magic numbers for .+ is: \d{7}\.", x) for x in lines)
    assert len({x.split(" is: ")[0] for x in lines}) == len(lines)  # every distractor has its own key


def test_noise_needle_positions_are_drawn_uniformly_not_cycled(codec, opts):
    depths = [generate_sample("niah_single_1", 1024, i, codec, opts).depth for i in range(16)]
    assert all(0 <= d < 1 for d in depths) and len(set(depths)) >= 10  # a fixed grid by index would repeat


def _essay_context(prompt: str, singular: bool) -> str:
    return _between(prompt, "afterwards.\n", "\nWhat is" if singular else "\nWhat are all")


@pytest.mark.parametrize("task", ["niah_single_2", "niah_multikey_1", "niah_multivalue"])
def test_essay_needles_go_before_the_sentence_at_rulers_depths(codec, opts, task):
    for index in range(3):
        s = generate_sample(task, 3000, index, codec, opts)
        depths = s.extra["depths"]
        assert depths == sorted(depths) and len(set(depths)) == len(depths) and set(depths) <= RULER_DEPTHS
        context = _essay_context(s.prompt, s.extra["singular"])
        assert "\n" not in context  # essay words joined by spaces, needles between sentences
        words = context.split()
        hay, offsets = [], []
        needles = s.extra["needles"]
        i = 0
        while i < len(words):  # remove the needles, remembering how many haystack words precede each
            for text in needles:
                n_words = len(text.split())
                if words[i:i + n_words] == text.split():
                    offsets.append(len(hay))
                    i += n_words
                    break
            else:
                hay.append(words[i])
                i += 1
        # independent sentence starts: after every word ending in . ! ?
        starts = [0] + [j + 1 for j, w in enumerate(hay[:-1]) if w.endswith((".", "!", "?"))]
        expect = [starts[k] if k < len(starts) else len(hay) for k in (int(len(starts) * d) for d in depths)]
        assert offsets == expect
        assert len(hay) == s.extra["units"]


def test_essay_haystack_starts_at_the_corpus_start_and_is_recorded(codec, opts, state_union_dir):
    s = generate_sample("niah_single_2", 2048, 1, codec, opts)
    essay = opts.essay()
    assert s.haystack == essay.label and essay.label.startswith("state_union+inaugural (")
    context = _essay_context(s.prompt, True).replace(s.extra["needles"][0], "").split()
    assert context[:8] == essay.text.split()[:8] == "PRESIDENT HARRY S. TRUMAN'S ADDRESS BEFORE A JOINT".split()


def test_vt_prepends_a_worked_example_and_uses_rulers_statements(codec, opts):
    s = generate_sample("vt", 3000, 1, codec, opts)
    head = "Memorize and track the chain(s) of variable assignment hidden in the following text.\n\n"
    assert s.prompt.startswith(head) and s.prompt.count(head) == 2
    shot, question = s.prompt.split("\n\n" + head)
    shot_vars = re.search(r"5 variables are assigned the value (\d{5}), they are:  ((?:[A-Z]{3} ?){5})\n$",
                          shot + "\n")
    assert shot_vars, shot[-200:]
    value, names = shot_vars.group(1), shot_vars.group(2).split()
    assert f"\nVAR {names[0]} = {value}\n" in shot
    assert all(f"\nVAR {b} = VAR {a} \n" in shot for a, b in zip(names, names[1:]))
    shot_prompt = shot[: shot.rindex(" " + " ".join(names))]
    assert len(codec.tokenizer(shot_prompt, add_special_tokens=False)["input_ids"]) <= 500
    value = s.extra["query"]
    assert question.endswith(f"\nQuestion: Find all variables that are assigned the value {value} in the text "
                             "above. Answer: According to the chain(s) of variable assignment in the text above, "
                             f"5 variables are assigned the value {value}, they are: ")
    lines = _between(question, "", "\nQuestion: Find all").split("\n")
    statements = [x for x in lines if x != NOISE_TEXT]
    a = s.answers
    assert statements == [f"VAR {a[0]} = {value}"] + [f"VAR {a[i + 1]} = VAR {a[i]} " for i in range(4)]
    assert len(lines) == s.extra["units"] + 5 and all(re.fullmatch(r"[A-Z]{5}", v) for v in a)


@pytest.mark.parametrize("length,shot_counts,counts", [(2048, (20, 3, 1), (6, 1)), (6144, (40, 10, 3), (30, 3))])
def test_cwe_one_shot_and_rulers_frequencies(codec, opts, length, shot_counts, counts):
    s = generate_sample("cwe", length, 0, codec, opts)
    head = ("Below is a numbered list of words. In these words, some appear more often than others. Memorize the "
            "ones that appear most often.\n")
    prefix = " Answer: The top 10 words that appear most often in the list are:"
    question = "\nQuestion: What are the 10 most common words in the above list?"
    assert s.prompt.startswith(head) and s.prompt.count(head) == 2 and s.prompt.endswith(question + prefix)
    shot, task = s.prompt.split("\n" + head)
    shot_list, shot_answer = shot[len(head):].split(question + prefix + " ")
    shot_words = Counter(_listing(shot_list))
    n_words, cw, ucw = shot_counts
    assert len(shot_words) == n_words and sorted(set(shot_words.values())) == [ucw, cw]
    assert _listing(shot_answer) and set(_listing(shot_answer)) == {w for w, c in shot_words.items() if c == cw}
    words = Counter(_listing(_between(task, "", question)))
    assert {w for w, c in words.items() if c == counts[0]} == set(s.answers) and len(s.answers) == 10
    assert {c for w, c in words.items() if w not in s.answers} == {counts[1]}
    assert set(words) <= set(word_source().words) and s.extra["word_source"] == word_source().name


def test_cwe_long_lists_use_real_words(opts, state_union_dir):
    draw = _CweWords(np.random.default_rng(0), opts)
    small = len(word_source().words)
    words, name = draw.take(small + 500)
    assert name == f"{word_source().name}+essay vocabulary" and len(set(words)) == small + 500
    assert set(words) <= set(word_source().words) | set(corpus_vocabulary(opts.essay().text))
    fallback = RulerOptions(_essay=Essay("few words here.", "synthetic (fallback: no essay corpus found)", True))
    words, name = _CweWords(np.random.default_rng(0), fallback).take(small + 5)
    assert name == f"{word_source().name}+compounds" and len(set(words)) == small + 5


def test_fwe_follows_rulers_zipf_counts(codec, opts):
    s = generate_sample("fwe", 3000, 0, codec, opts)
    assert s.prompt.endswith("three most frequently appeared words in the above coded text? Answer: According to "
                             "the coded text above, the three most frequently appeared words are:")
    text = _between(s.prompt, "Find the three most frequently appeared coded words. ", "\nQuestion: Do not").split(" ")
    counts = Counter(text)
    ranked = [w for w, _ in counts.most_common()]
    assert ranked[0] == "..." and ranked[1:4] == s.answers
    assert all(re.fullmatch(r"[a-z]{6}", w) for w in counts if w != "...")
    n, vocab = s.extra["units"], s.extra["vocab_size"]
    assert vocab == (3000 - 16) // 50
    expect = [int(n * k**-2.0 / (math.pi**2 / 6)) for k in range(1, vocab + 1)]  # zeta(2) = pi^2 / 6
    assert sorted(counts.values(), reverse=True) == [c for c in expect if c > 0]


def _squad(path: Path) -> Path:
    data = {"version": "v2.0", "data": [
        {"title": f"Article{a}", "paragraphs": [
            {"context": f"Article {a} paragraph {p} says the {a}{p} code word is kelp{a}{p}.",
             "qas": [{"id": f"q{a}{p}", "question": f"What is the {a}{p} code word?", "is_impossible": False,
                      "answers": [{"text": f"kelp{a}{p}", "answer_start": 0}]}]} for p in range(4)]}
        for a in range(6)]}
    path.write_text(json.dumps(data))
    return path


def test_qa_1_takes_distractors_from_the_same_article_first(codec, tmp_path):
    opts = RulerOptions(squad_path=str(_squad(tmp_path / "squad.json")), max_new_tokens=16)
    for index in (0, 5, 9):
        gold_article = index // 4
        for length, expect_all_same in [(420, False), (700, True)]:
            s = generate_sample("qa_1", length, index, codec, opts)
            docs = re.findall(r"Document \d+:\nArticle (\d) paragraph (\d)", s.prompt)
            assert s.answers == [f"kelp{gold_article}{index % 4}"]
            assert (str(gold_article), str(index % 4)) in docs
            same = sum(a == str(gold_article) for a, _ in docs)
            if expect_all_same:  # room for more than the article: all 4 of its paragraphs are there
                assert same == 4 and len(docs) > 4
            else:  # fewer documents than the article has: only its paragraphs
                assert same == len(docs) <= 4
    assert s.prompt.endswith("\n\nQuestion: What is the 21 code word? Answer:")


def test_qa_2_gold_paragraphs_are_shuffled_among_distractors(codec, tmp_path):
    data = [{"_id": f"h{i}", "question": f"Which pair is number {i}?", "answer": f"pair{i}",
             "context": [[f"Gold{i}A", [f"Gold {i} A is half of pair{i}."]], [f"Gold{i}B", [f"Gold {i} B too."]]]}
            for i in range(20)]
    (tmp_path / "hotpot.json").write_text(json.dumps(data))
    opts = RulerOptions(hotpotqa_path=str(tmp_path / "hotpot.json"), max_new_tokens=16)
    adjacent = 0
    for index in range(8):
        s = generate_sample("qa_2", 1024, index, codec, opts)
        titles = re.findall(r"Document \d+:\n(\S+)\n", s.prompt)
        a, b = titles.index(f"Gold{index}A"), titles.index(f"Gold{index}B")
        assert sorted([a, b]) == s.extra["gold_positions"] and len(titles) > 10
        assert s.prompt.startswith("Answer the question based on the given documents. Only give me the answer and do "
                                   "not output any other words.\n\nThe following are given documents.\n\nDocument 1:\n")
        assert s.prompt.endswith(f"\n\nQuestion: Which pair is number {index}? Answer:")
        adjacent += abs(a - b) == 1
    assert adjacent <= 2  # together in one block every time before (RULER shuffles them among the others)


def test_chat_template_wraps_shots_as_earlier_turns(chat_tokenizer, opts):
    assert resolve_chat_template("auto", chat_tokenizer) is True
    codec = PromptCodec(chat_tokenizer, chat_template=True)
    cwe = generate_sample("cwe", 2048, 0, codec, opts)
    assert cwe.prompt.startswith("<|user|>Below is a numbered list of words.")
    assert cwe.prompt.count("<|user|>") == 2 and cwe.prompt.count("<|assistant|>") == 2
    assert "</s><|assistant|>Answer: The top 10 words that appear most often in the list are: 1. " in cwe.prompt
    assert cwe.prompt.endswith("<|assistant|> Answer: The top 10 words that appear most often in the list are:")
    assert codec.count(cwe.prompt) == cwe.prompt_tokens <= cwe.budget
    vt = generate_sample("vt", 2048, 0, codec, opts)  # RULER puts vt's example inside the user turn
    assert vt.prompt.startswith("<|user|>Memorize and track") and vt.prompt.count("<|user|>") == 1


def test_chat_template_setting(tiny_tokenizer, chat_tokenizer):
    assert resolve_chat_template("auto", tiny_tokenizer) is False  # no template: RULER's base prompt
    assert resolve_chat_template(False, chat_tokenizer) is False and resolve_chat_template("true", chat_tokenizer)
    with pytest.raises(ValueError, match="chat_template must be one of auto, true, false, got 'maybe'"):
        resolve_chat_template("maybe", tiny_tokenizer)
    with pytest.raises(ValueError, match="tokenizer has no chat template; set chat_template=false"):
        PromptCodec(tiny_tokenizer, chat_template=True)


def test_essay_source_auto_finds_nltk_data_and_falls_back_loudly(tmp_path, monkeypatch, caplog):
    corpus = tmp_path / "nltk" / "corpora" / "state_union"
    corpus.mkdir(parents=True)
    (corpus / "1900-A.txt").write_text("A real address. It has sentences.")
    monkeypatch.setenv("NLTK_DATA", str(tmp_path / "nltk"))
    essay = resolve_essay("auto")
    assert essay.text == "A real address. It has sentences." and essay.label == f"state_union ({corpus.parent})"
    monkeypatch.setattr(haystack_mod, "shared_corpora_dirs", lambda: [])
    logger = logging.getLogger("longrecipe")
    logger.addHandler(caplog.handler)  # the package logger does not propagate to the root
    try:
        essay = resolve_essay("auto", min_words=500)
    finally:
        logger.removeHandler(caplog.handler)
    assert essay.fallback and essay.label == "synthetic (fallback: no essay corpus found)"
    assert "falling back to the generated toy corpus" in caplog.text
    assert not resolve_essay("synthetic", min_words=500).fallback


def test_deterministic_per_seed(codec, opts):
    a = generate_sample("niah_multikey_1", 1024, 3, codec, opts)
    b = generate_sample("niah_multikey_1", 1024, 3, codec, opts)
    c = generate_sample("niah_multikey_1", 1024, 3, codec, RulerOptions(seed=7, max_new_tokens=16))
    assert a.prompt == b.prompt and a.answers == b.answers
    assert c.prompt != a.prompt
    assert generate_sample("niah_multikey_1", 1024, 4, codec, opts).prompt != a.prompt


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
    with pytest.raises(ValueError, match="eval.essay_source must be 'auto', 'synthetic'"):
        generate_sample("niah_single_2", 1024, 0, codec, RulerOptions(essay_source="/no/such/dir"))
    with pytest.raises(ValueError, match="num_depths=3 gives 3 depths for 4 needles; raise eval.num_depths"):
        generate_sample("niah_multivalue", 1024, 0, codec, RulerOptions(num_depths=3))


def test_needle_keys_are_wonderwords_adjective_noun_pairs(codec, opts, monkeypatch):
    from longrecipe.evaluation import words

    src = word_source()
    s = generate_sample("niah_multikey_1", 2048, 0, codec, opts)
    keys = [re.search(r"numbers for (.+) is: ", n).group(1) for n in s.extra["needles"]]
    assert all(any(k[:i] in src.adjectives and k[i + 1:] in src.nouns for i in range(len(k)) if k[i] == "-")
               for k in keys)
    assert src.name == "wonderwords" and len(src.words) > 8000  # the eval extra installs RULER's word lists
    monkeypatch.setattr(words, "_package_list", lambda name: (_ for _ in ()).throw(ModuleNotFoundError(name)))
    words.word_source.cache_clear()
    try:
        assert words.word_source().name == "builtin"  # without wonderwords: the small built-in lists, recorded
    finally:
        words.word_source.cache_clear()
