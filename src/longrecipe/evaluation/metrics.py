"""Scoring functions: RULER string matching and LongBench's official metrics (our own implementation).

Per-sample scores are in ``[0, 1]``; task scores are their mean x 100 (RULER and LongBench both report 0-100).
LongBench definitions follow THUDM/LongBench ``metrics.py``: English answers are normalised (lower-case,
punctuation and articles removed), Chinese answers are segmented with ``jieba``; ROUGE-L is the
summary-level LCS F-score of the ``rouge`` package (sentences split on ``.``, unique-word union LCS,
``beta = P / R``); ``code_sim`` is ``rapidfuzz.fuzz.ratio`` on the first generated line that is not a
comment or code fence.
"""

from __future__ import annotations

import re
import string
from collections import Counter
from collections.abc import Callable, Sequence

_CONTROL = re.compile(r"[\x00-\x1f]")


def postprocess_prediction(text: str) -> str:
    """RULER's clean-up: control characters become newlines, surrounding whitespace is stripped."""
    return _CONTROL.sub("\n", text.strip()).strip()


def string_match_all(prediction: str, references: Sequence[str]) -> float:
    """Fraction of ``references`` found (case-insensitive substring) in ``prediction`` (RULER niah/vt/cwe/fwe)."""
    if not references:
        raise ValueError("references must be non-empty for string_match_all")
    pred = prediction.lower()
    return sum(r.lower() in pred for r in references) / len(references)


def string_match_part(prediction: str, references: Sequence[str]) -> float:
    """1 if any reference occurs (case-insensitive) in ``prediction`` else 0 (RULER qa)."""
    if not references:
        raise ValueError("references must be non-empty for string_match_part")
    pred = prediction.lower()
    return float(max(r.lower() in pred for r in references))


# --- LongBench ------------------------------------------------------------------------------------------

_ZH_PUNCT = "！？｡。＂＃＄％＆＇（）＊＋，－／：；＜＝＞＠［＼］＾＿｀｛｜｝～｟｠｢｣､、〃》「」『』【】〔〕〖〗〘〙〚〛〜〝〞〟〰〾〿–—‘’‛“”„‟…‧﹏."
_EN_PUNCT = set(string.punctuation)
_ALL_PUNCT = set(string.punctuation + _ZH_PUNCT)
_ARTICLES = re.compile(r"\b(a|an|the)\b")


def normalize_answer(text: str) -> str:
    """Lower-case, drop punctuation, drop articles, collapse whitespace (SQuAD / LongBench English)."""
    text = "".join(ch for ch in text.lower() if ch not in _EN_PUNCT)
    return " ".join(_ARTICLES.sub(" ", text).split())


def normalize_zh_answer(text: str) -> str:
    """Lower-case, drop English and Chinese punctuation, remove all whitespace."""
    return "".join("".join(ch for ch in text.lower() if ch not in _ALL_PUNCT).split())


def token_f1(prediction: Sequence[str], reference: Sequence[str]) -> float:
    common = Counter(prediction) & Counter(reference)
    same = sum(common.values())
    if same == 0:
        return 0.0
    precision, recall = same / len(prediction), same / len(reference)
    return 2 * precision * recall / (precision + recall)


def qa_f1(prediction: str, reference: str, **_) -> float:
    return token_f1(normalize_answer(prediction).split(), normalize_answer(reference).split())


def _jieba_cut(text: str) -> list[str]:
    import jieba

    jieba.setLogLevel(60)
    return list(jieba.cut(text, cut_all=False))


def qa_f1_zh(prediction: str, reference: str, **_) -> float:
    pred = [t for t in (normalize_zh_answer(w) for w in _jieba_cut(prediction)) if t]
    ref = [t for t in (normalize_zh_answer(w) for w in _jieba_cut(reference)) if t]
    return token_f1(pred, ref)


def _lcs_words(x: list[str], y: list[str]) -> set[str]:
    """Words of one longest common subsequence of ``x`` and ``y`` (the ``rouge`` package's tie-breaking)."""
    n, m = len(x), len(y)
    table = [[0] * (m + 1) for _ in range(n + 1)]
    for i in range(1, n + 1):
        xi, row, prev = x[i - 1], table[i], table[i - 1]
        for j in range(1, m + 1):
            row[j] = prev[j - 1] + 1 if xi == y[j - 1] else max(prev[j], row[j - 1])
    out: set[str] = set()
    i, j = n, m
    while i > 0 and j > 0:
        if x[i - 1] == y[j - 1]:
            out.add(x[i - 1])
            i, j = i - 1, j - 1
        elif table[i - 1][j] > table[i][j - 1]:
            i -= 1
        else:
            j -= 1
    return out


def rouge_l(prediction: str, reference: str, **_) -> float:
    """Summary-level ROUGE-L F of the ``rouge`` package as LongBench calls it; 0 when either side is empty."""
    hyp = [" ".join(s.split()) for s in prediction.split(".") if len(s) > 0]
    ref = [" ".join(s.split()) for s in reference.split(".") if len(s) > 0]
    if not hyp or not ref:
        return 0.0
    ref_words = [w for s in ref for w in s.split(" ")]
    hyp_words = [w for s in hyp for w in s.split(" ")]
    m, n = len(set(ref_words)), len(set(hyp_words))
    union: set[str] = set()
    llcs = 0
    for r in ref:
        before = len(union)
        r_words = r.split(" ")
        for h in hyp:
            union |= _lcs_words(r_words, h.split(" "))
        llcs += len(union) - before
    r_lcs, p_lcs = llcs / m, llcs / n
    beta = p_lcs / (r_lcs + 1e-12)
    num = (1 + beta**2) * r_lcs * p_lcs
    den = r_lcs + beta**2 * p_lcs
    return num / (den + 1e-12)


def rouge_l_zh(prediction: str, reference: str, **_) -> float:
    return rouge_l(" ".join(_jieba_cut(prediction)), " ".join(_jieba_cut(reference)))


def classification(prediction: str, reference: str, *, all_classes: Sequence[str] | None = None, **_) -> float:
    """1/k if the reference class is among the k class names in the prediction (LongBench trec / lsht).

    Class names contained in the reference (but not equal to it) are dropped as LongBench does, including its
    quirk of skipping the element right after each removal.
    """
    if not all_classes:
        raise ValueError("classification needs all_classes (the sample's 'all_classes' field)")
    matches = [c for c in all_classes if c in prediction]
    i = 0
    while i < len(matches):
        if matches[i] in reference and matches[i] != reference:
            del matches[i]
            i += 1  # list.remove inside a for-loop skips the next element
        else:
            i += 1
    return 1.0 / len(matches) if reference in matches else 0.0


def _numbers_match(prediction: str, target: str) -> float:
    numbers = re.findall(r"\d+", prediction)
    return sum(n == target for n in numbers) / len(numbers) if numbers else 0.0


def retrieval(prediction: str, reference: str, **_) -> float:
    found = re.findall(r"Paragraph (\d+)", reference)
    if not found:
        raise ValueError(f"retrieval reference must look like 'Paragraph N', got {reference!r}")
    return _numbers_match(prediction, found[0])


def retrieval_zh(prediction: str, reference: str, **_) -> float:
    found = re.findall(r"段落(\d+)", reference)
    if not found:
        raise ValueError(f"retrieval_zh reference must look like '段落N', got {reference!r}")
    return _numbers_match(prediction, found[0])


def count(prediction: str, reference: str, **_) -> float:
    return _numbers_match(prediction, str(reference))


def code_sim(prediction: str, reference: str, **_) -> float:
    from rapidfuzz import fuzz

    line = ""
    for candidate in prediction.lstrip("\n").split("\n"):
        if "`" not in candidate and "#" not in candidate and "//" not in candidate:
            line = candidate
            break
    return fuzz.ratio(line, reference) / 100


LONGBENCH_METRICS: dict[str, Callable[..., float]] = {
    "qa_f1": qa_f1,
    "qa_f1_zh": qa_f1_zh,
    "rouge": rouge_l,
    "rouge_zh": rouge_l_zh,
    "classification": classification,
    "retrieval": retrieval,
    "retrieval_zh": retrieval_zh,
    "count": count,
    "code_sim": code_sim,
}
RULER_METRICS: dict[str, Callable[[str, Sequence[str]], float]] = {
    "string_match_all": string_match_all,
    "string_match_part": string_match_part,
}


def score_ruler(metric: str, prediction: str, references: Sequence[str]) -> float:
    if metric not in RULER_METRICS:
        raise ValueError(f"RULER metric must be one of {sorted(RULER_METRICS)}, got {metric!r}")
    return RULER_METRICS[metric](postprocess_prediction(prediction), references)


def score_longbench(metric: str, prediction: str, references: Sequence[str],
                    all_classes: Sequence[str] | None = None) -> float:
    """Best score over the references, as LongBench's ``scorer``."""
    if metric not in LONGBENCH_METRICS:
        raise ValueError(f"LongBench metric must be one of {sorted(LONGBENCH_METRICS)}, got {metric!r}")
    fn = LONGBENCH_METRICS[metric]
    return max((fn(prediction, r, all_classes=all_classes) for r in references), default=0.0)
