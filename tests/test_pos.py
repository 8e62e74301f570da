"""POS tagging: word splitting, PTB -> UD mapping, token alignment, the reduced fallback and its message."""

from __future__ import annotations

import logging

import numpy as np
import pytest

from longrecipe.analysis.pos import (
    NLTK_INSTALL_HINT,
    UD_TAGS,
    LexiconTagger,
    load_tagger,
    ptb_to_ud,
    token_pos_tags,
    token_word_index,
    word_spans,
)


def test_word_spans_exact():
    words, spans = word_spans("In 1945, Alice didn't pay $3.50 - it's fine.")
    assert words == ["In", "1945", ",", "Alice", "did", "n't", "pay", "$", "3.50", "-", "it", "'s", "fine", "."]
    assert spans[:5].tolist() == [[0, 2], [3, 7], [7, 8], [9, 14], [15, 18]]
    assert spans[-1].tolist() == [43, 44]


def test_ptb_to_ud_mapping_table():
    words = ["I", "have", "not", "seen", "it", "and", "she", "has", "3", "dogs", "because", "Bob", "will", "be",
             "up", '"', "$", "wow", "to", "do"]
    ptb = ["PRP", "VBP", "RB", "VBN", "PRP", "CC", "PRP", "VBZ", "CD", "NNS", "IN", "NNP", "MD", "VB", "RP", "NN",
           "$", "UH", "TO", "VB"]
    uni = ["PRON", "VERB", "ADV", "VERB", "PRON", "CONJ", "PRON", "VERB", "NUM", "NOUN", "ADP", "NOUN", "VERB", "VERB",
           "PRT", "NOUN", ".", "X", "PRT", "VERB"]
    assert ptb_to_ud(words, ptb, uni) == [
        "PRON", "AUX", "PART", "VERB", "PRON", "CCONJ", "PRON",
        "VERB",  # "has" followed by a noun phrase is the main verb
        "NUM", "NOUN", "SCONJ", "PROPN", "AUX", "AUX", "PART", "PUNCT", "SYM", "INTJ", "PART",
        "VERB",  # "do" at the end (no verb follows) stays VERB
    ]


def test_lexicon_tagger_exact():
    words, _ = word_spans("They were 12 and twenty, but the cat didn't sit on 3.5 mats!")
    assert LexiconTagger().tag(words) == ["PRON", "AUX", "NUM", "CCONJ", "NUM", "PUNCT", "CCONJ", "DET", "X", "AUX",
                                          "PART", "X", "ADP", "NUM", "X", "PUNCT"]


def test_token_word_index_whitespace_and_special_tokens():
    text = "ab  cd\n"
    _, spans = word_spans(text)  # "ab" [0,2], "cd" [4,6]
    offsets = np.array([[0, 0], [0, 1], [1, 2], [2, 4], [3, 6], [6, 7]])
    assert token_word_index(text, offsets, spans).tolist() == [-1, 0, 0, -1, 1, -1]


def test_alignment_with_a_real_tokenizer(tiny_tokenizer):
    text = "In 1945, Alice had 3,000 boxes.\nShe has been to Oslo!"
    enc = tiny_tokenizer(text, add_special_tokens=False, return_offsets_mapping=True)
    tags, words = token_pos_tags(text, enc["offset_mapping"], LexiconTagger())
    pieces = [tiny_tokenizer.decode([i]) for i in enc["input_ids"]]
    assert len(tags) == len(pieces) and all(t in UD_TAGS for t in tags)
    by_word = {}
    for piece, tag, word in zip(pieces, tags, words):
        if piece.strip():
            assert piece.strip() in word  # a token gets the tag of the word it is part of
        by_word.setdefault(word, set()).add(tag)
    assert by_word["1945"] == {"NUM"} and by_word["3,000"] == {"NUM"} and by_word[""] == {"SPACE"}
    assert by_word["She"] == {"PRON"} and by_word["has"] == {"AUX"} and by_word["!"] == {"PUNCT"}


def test_nltk_tagger_on_state_union(state_union_dir, tiny_tokenizer):
    tagger = load_tagger("nltk")  # the shared nltk_data holds the tagger and the universal tagset
    assert tagger.reduced is False
    text = (state_union_dir / "1946-Truman.txt").read_text(encoding="utf-8", errors="replace")[:20000]
    enc = tiny_tokenizer(text, add_special_tokens=False, return_offsets_mapping=True)
    tags, words = token_pos_tags(text, enc["offset_mapping"], tagger)
    assert len(tags) == len(enc["input_ids"]) and all(t in UD_TAGS for t in tags)
    digits = np.array([w.replace(",", "").replace(".", "").isdigit() for w in words])
    assert digits.sum() > 20 and (tags[digits] == "NUM").mean() > 0.95
    space = np.array([not tiny_tokenizer.decode([i]).strip() for i in enc["input_ids"]])
    assert (tags[space] == "SPACE").all() and not (tags[~space] == "SPACE").any()
    used = set(tags.tolist())
    assert {"NUM", "PRON", "AUX", "CCONJ", "ADP", "DET", "NOUN", "VERB", "PUNCT"} <= used and "CONJ" not in used
    words_, _ = word_spans("We have 2 plans and they will work because we must act .")
    assert tagger.tag(words_) == ["PRON", "VERB", "NUM", "NOUN", "CCONJ", "PRON", "AUX", "VERB", "SCONJ", "PRON",
                                  "AUX", "VERB", "PUNCT"]


@pytest.fixture()
def no_nltk_data(monkeypatch, tmp_path):
    import nltk.data

    monkeypatch.setattr(nltk.data, "path", [str(tmp_path / "empty")])


def test_missing_nltk_resources_fall_back_with_the_install_command(no_nltk_data, caplog):
    assert NLTK_INSTALL_HINT == "python -m nltk.downloader averaged_perceptron_tagger_eng universal_tagset"
    logger = logging.getLogger("longrecipe")
    logger.addHandler(caplog.handler)  # the package logger does not propagate to the root
    try:
        with caplog.at_level(logging.WARNING, logger="longrecipe"):
            tagger = load_tagger("auto")
    finally:
        logger.removeHandler(caplog.handler)
    assert isinstance(tagger, LexiconTagger) and tagger.reduced and tagger.name == "lexicon"
    assert NLTK_INSTALL_HINT in caplog.text and "reduced" in caplog.text
    with pytest.raises(ValueError, match="pos_tagger=nltk but the nltk resources are missing; install them with "
                                         "`python -m nltk.downloader averaged_perceptron_tagger_eng universal_tagset`"):
        load_tagger("nltk")
