"""Scoring functions on hand-made predictions; every expected value is derived by hand in the comments."""

from __future__ import annotations

import pytest

from longrecipe.evaluation import metrics as M


def test_string_match_all_and_part():
    # 2 of 3 references appear in the prediction
    assert M.string_match_all("The values are 123 and 456.", ["123", "456", "789"]) == pytest.approx(2 / 3)
    assert M.string_match_all("ABC-def", ["abc-DEF"]) == 1.0  # case-insensitive
    assert M.string_match_part("answer: Lisbon city", ["Porto", "lisbon"]) == 1.0
    assert M.string_match_part("no idea", ["Porto", "Lisbon"]) == 0.0
    # RULER post-processing: control chars become newlines, whitespace stripped
    assert M.postprocess_prediction("  7\x00 8 ") == "7\n 8"
    assert M.score_ruler("string_match_all", " 1234567.\n", ["1234567"]) == 1.0


def test_empty_references_rejected():
    with pytest.raises(ValueError, match="references must be non-empty"):
        M.string_match_all("x", [])
    with pytest.raises(ValueError, match="RULER metric must be one of"):
        M.score_ruler("exact", "x", ["x"])
    with pytest.raises(ValueError, match="LongBench metric must be one of"):
        M.score_longbench("bleu", "x", ["x"])


def test_qa_f1_english():
    # pred -> [eiffel, tower, paris]; ref -> [eiffel, tower, in, paris]: P=1, R=3/4, F1=2*.75/1.75=6/7
    assert M.qa_f1("The Eiffel Tower, Paris", "Eiffel tower in Paris") == pytest.approx(6 / 7)
    assert M.normalize_answer("The  Cat's hat!") == "cats hat"
    assert M.qa_f1("nothing", "Paris") == 0.0
    # best over references
    assert M.score_longbench("qa_f1", "Paris", ["London", "paris"]) == 1.0


def test_qa_f1_chinese():
    # jieba: "是葡萄牙。" -> [是, 葡萄牙, 。] -> normalised [是, 葡萄牙]; ref [葡萄牙]: P=1/2, R=1, F1=2/3
    assert M.qa_f1_zh("是葡萄牙。", "葡萄牙") == pytest.approx(2 / 3)
    assert M.normalize_zh_answer("葡萄牙， 首都！") == "葡萄牙首都"


def test_rouge_l_summary_level():
    # one sentence each; unique ref words {the,cat,is,on,mat}=5, hyp {the,cat,sat,on,mat}=5;
    # LCS "the cat on the mat" -> unique words {the,cat,on,mat}=4; R=P=0.8, beta=1 -> F=0.8
    assert M.rouge_l("the cat sat on the mat", "the cat is on the mat") == pytest.approx(0.8, abs=1e-9)
    # hyp sentences ["a b c", "d e"], ref ["a c e"]: union LCS {a,c}+{e}=3, R=3/3, P=3/5, beta=0.6
    # F=(1+.36)*1*.6/(1+.36*.6)=0.816/1.216
    assert M.rouge_l("a b c. d e", "a c e") == pytest.approx(0.816 / 1.216, abs=1e-9)
    assert M.rouge_l("", "a c e") == 0.0
    assert M.rouge_l_zh("葡萄牙 的 首都", "葡萄牙 的 首都") == pytest.approx(1.0, abs=1e-9)


def test_classification_with_longbench_quirk():
    classes = ["Individual", "City", "Date", "Other number"]
    assert M.classification("City", "City", all_classes=classes) == 1.0
    assert M.classification("City or Date", "City", all_classes=classes) == 0.5
    assert M.classification("Date", "City", all_classes=classes) == 0.0
    # matches [num, number, Other number]; "num" is removed, which skips "number" (LongBench's loop):
    # [number, Other number] -> 1/2 (a clean filter would give 1.0)
    assert M.classification("Other number", "Other number", all_classes=["num", "number", "Other number"]) == 0.5
    with pytest.raises(ValueError, match="all_classes"):
        M.classification("City", "City")


def test_retrieval_count_code_sim():
    assert M.retrieval("Paragraph 2", "Paragraph 2") == 1.0
    assert M.retrieval("Paragraph 2 or Paragraph 3", "Paragraph 2") == 0.5
    assert M.retrieval("I do not know", "Paragraph 2") == 0.0
    assert M.retrieval_zh("段落3", "段落3") == 1.0
    assert M.count("There are 5 unique, maybe 5 or 6", "5") == pytest.approx(2 / 3)
    # first line without ` # // is "x = foo(1)"; vs "x = foo(2)": 2 indels over 20 chars -> ratio 90
    assert M.code_sim("```python\n# comment\nx = foo(1)\n", "x = foo(2)") == pytest.approx(0.9)
    with pytest.raises(ValueError, match="Paragraph N"):
        M.retrieval("1", "2")
