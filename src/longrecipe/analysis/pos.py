"""Part-of-speech tags for every sub-word token, in the paper's (Universal Dependencies) tag names.

Pipeline: ``word_spans`` splits a text into words (character spans) -> a tagger tags the words ->
``token_pos_tags`` gives every token the tag of the word holding its first non-space character.

Taggers
-------
``NltkTagger``: nltk's averaged perceptron tagger (Penn Treebank tags) mapped to nltk's universal tagset
(``nltk.tag.map_tag("en-ptb", "universal", tag)``), then refined to the UD names used by the paper's Fig. 4:

==============================  =========  ==========================================================
nltk universal / PTB tag        UD tag     rule
==============================  =========  ==========================================================
CONJ                            CCONJ      rename (UD splits CONJ into CCONJ / SCONJ)
ADP with a subordinator word    SCONJ      word in ``SUBORDINATORS`` (because, although, if, ...)
VERB with PTB ``MD``            AUX        modals (will, can, must, ...)
VERB, a form of *be*            AUX        always (UD tags the copula as AUX)
VERB, a form of *have* / *do*   AUX        when the next word, skipping adverbs/"not", is a verb
NOUN with PTB ``NNP``/``NNPS``  PROPN      proper nouns
PRT                             PART       rename
X with PTB ``UH``               INTJ       interjections
X with PTB ``SYM``              SYM
a word without letters/digits   PUNCT/SYM  SYM for ``$ % # & + = < > @ ^ ~ |``, else PUNCT (e.g. ASCII ``"``)
*not* / *n't*                   PART       UD negation particle (PTB tags it RB)
NUM, PRON, DET, ADJ, ADV, X     same
==============================  =========  ==========================================================

``LexiconTagger`` (fallback when the nltk resources are missing; flagged ``reduced=True`` in every output):
closed-class words from the small lexicon below (PRON, DET, AUX, CCONJ, SCONJ, ADP, PART), numerals
(digits, ``1,000``/``3.5``, number words one..twenty, tens, hundred, thousand, million, billion) as NUM,
punctuation as PUNCT, symbols (``$ % # & + = < > @ ^ ~ |``) as SYM; every open-class word is ``X``.
Tokens that are only whitespace (e.g. ``"\\n"``) or have an empty span get ``SPACE`` (texts are tokenised without
special tokens, so an empty span is whitespace trimmed by the tokenizer's offsets).
"""

from __future__ import annotations

import re
from collections.abc import Sequence

import numpy as np

from longrecipe.utils.logging import get_logger

log = get_logger(__name__)

NLTK_INSTALL_HINT = "python -m nltk.downloader averaged_perceptron_tagger_eng universal_tagset"

UD_TAGS = ("NUM", "PRON", "AUX", "VERB", "CCONJ", "SCONJ", "ADP", "DET", "ADJ", "ADV", "PART", "NOUN",
           "PROPN", "PUNCT", "SYM", "INTJ", "X", "SPACE")

BE_FORMS = frozenset({"be", "am", "is", "are", "was", "were", "been", "being", "'m", "'re", "'s"})
HAVE_FORMS = frozenset({"have", "has", "had", "having", "'ve", "'d"})
DO_FORMS = frozenset({"do", "does", "did", "doing"})
MODALS = frozenset({"will", "would", "can", "could", "shall", "should", "may", "might", "must", "'ll", "wo", "ca"})
SUBORDINATORS = frozenset({"because", "although", "though", "unless", "whether", "if", "whereas"})

_NUMBER_WORDS = frozenset(
    "zero one two three four five six seven eight nine ten eleven twelve thirteen fourteen fifteen sixteen "
    "seventeen eighteen nineteen twenty thirty forty fifty sixty seventy eighty ninety hundred thousand million "
    "billion trillion dozen".split()
)
LEXICON: dict[str, str] = {}
for _tag, _words in {
    "PRON": "i me my mine myself you your yours yourself yourselves he him his himself she her hers herself it its "
            "itself we us our ours ourselves they them their theirs themselves who whom whose what which "
            "someone anyone everyone nobody something anything everything nothing",
    "DET": "the a an this that these those every each some any no another either neither all both",
    "AUX": " ".join(sorted(BE_FORMS | HAVE_FORMS | DO_FORMS | MODALS)),
    "CCONJ": "and or but nor yet",
    "SCONJ": " ".join(sorted(SUBORDINATORS)),
    "ADP": "in on at of for with by from to into onto over under about after before between through during "
           "without within near across against among around behind below above beside beyond toward towards "
           "upon via since until",
    "PART": "not n't 's",
}.items():
    for _w in _words.split():
        LEXICON.setdefault(_w, _tag)
for _w in _NUMBER_WORDS:
    LEXICON[_w] = "NUM"

# Words: numerals with separators, "do|n't" splits, clitics, hyphenated words, other word chars, single symbols.
_WORD_RE = re.compile(
    r"\d+(?:[.,:]\d+)*"
    r"|[^\W\d_]+(?=n't)|n't"
    r"|'(?:s|re|ve|ll|d|m)(?![^\W\d_])"
    r"|[^\W\d_]+(?:-[^\W\d_]+)*"
    r"|\w+"
    r"|[^\w\s]"
)
_NUMERAL_RE = re.compile(r"\d+(?:[.,:]\d+)*")
_SYMBOLS = frozenset("$%#&+=<>@^~|")


def word_spans(text: str) -> tuple[list[str], np.ndarray]:
    """Split ``text`` into words; returns the words and their ``[n, 2]`` int64 character spans."""
    words, spans = [], []
    for m in _WORD_RE.finditer(text):
        words.append(m.group())
        spans.append(m.span())
    return words, np.asarray(spans, dtype=np.int64).reshape(-1, 2)


def _lexicon_tag(word: str) -> str:
    low = word.lower()
    if _NUMERAL_RE.fullmatch(word) or low in _NUMBER_WORDS:
        return "NUM"
    if low in LEXICON:
        return LEXICON[low]
    if len(word) == 1 and not word.isalnum():
        return "SYM" if word in _SYMBOLS else "PUNCT"
    return "X"


def ptb_to_ud(words: Sequence[str], ptb_tags: Sequence[str], universal_tags: Sequence[str]) -> list[str]:
    """Refine nltk universal tags to UD names using the PTB tags and the words (table in the module doc)."""
    out: list[str] = []
    lows = [w.lower() for w in words]
    for i, (low, ptb, uni) in enumerate(zip(lows, ptb_tags, universal_tags)):
        tag = uni
        if not any(c.isalnum() for c in low):
            tag = "SYM" if low in _SYMBOLS else "PUNCT"
        elif low in ("not", "n't"):
            tag = "PART"
        elif uni == "CONJ":
            tag = "CCONJ"
        elif uni == "ADP" and low in SUBORDINATORS:
            tag = "SCONJ"
        elif uni == "VERB":
            if ptb == "MD" or low in MODALS or low in BE_FORMS:
                tag = "AUX"
            elif low in HAVE_FORMS or low in DO_FORMS:
                j = i + 1
                while j < len(lows) and (universal_tags[j] == "ADV" or lows[j] in ("not", "n't")):
                    j += 1
                if j < len(lows) and universal_tags[j] == "VERB":
                    tag = "AUX"
        elif uni == "NOUN" and ptb in ("NNP", "NNPS"):
            tag = "PROPN"
        elif uni == "PRT":
            tag = "PART"
        elif uni == "X" and ptb == "UH":
            tag = "INTJ"
        elif uni == "X" and ptb == "SYM":
            tag = "SYM"
        out.append(tag)
    return out


class LexiconTagger:
    """The reduced fallback tagger: closed classes + numerals + punctuation; open-class words are ``X``."""

    name = "lexicon"
    reduced = True

    def tag(self, words: Sequence[str]) -> list[str]:
        return [_lexicon_tag(w) for w in words]


class NltkTagger:
    """nltk averaged perceptron (PTB) -> nltk universal tagset -> UD names (see the module doc)."""

    name = "nltk-perceptron+universal"
    reduced = False

    def __init__(self) -> None:
        from nltk.tag import map_tag
        from nltk.tag.perceptron import PerceptronTagger

        self._tagger = PerceptronTagger(lang="eng")
        self._map = {}
        self._map_tag = map_tag
        map_tag("en-ptb", "universal", "NN")  # raises LookupError now when universal_tagset is missing

    def _universal(self, ptb: str) -> str:
        if ptb not in self._map:
            self._map[ptb] = self._map_tag("en-ptb", "universal", ptb)
        return self._map[ptb]

    def tag(self, words: Sequence[str]) -> list[str]:
        if not words:
            return []
        ptb = [t for _, t in self._tagger.tag(list(words))]
        return ptb_to_ud(words, ptb, [self._universal(t) for t in ptb])


def load_tagger(kind: str = "auto") -> NltkTagger | LexiconTagger:
    """``kind``: ``auto`` (nltk, else the lexicon fallback with a warning), ``nltk`` (required) or ``lexicon``."""
    if kind not in ("auto", "nltk", "lexicon"):
        raise ValueError(f"pos_tagger must be one of auto, nltk, lexicon; got {kind!r}")
    if kind == "lexicon":
        return LexiconTagger()
    try:
        return NltkTagger()
    except LookupError as exc:
        if kind == "nltk":
            raise ValueError(
                f"pos_tagger=nltk but the nltk resources are missing; install them with `{NLTK_INSTALL_HINT}` "
                "(or set NLTK_DATA to a folder holding them), or use pos_tagger=auto/lexicon"
            ) from exc
        log.warning(
            "nltk POS resources not found; install them with: %s  -- falling back to the reduced "
            "closed-class + numeral lexicon tagger (outputs are flagged pos_tagger_reduced=true)",
            NLTK_INSTALL_HINT,
        )
        return LexiconTagger()


def token_word_index(text: str, offsets: np.ndarray, spans: np.ndarray) -> np.ndarray:
    """For each token ``(start, end)`` character offset, the index of the word holding its first non-space char.

    ``-1`` for tokens whose span is only whitespace or empty (tokenizers that trim offsets give whitespace tokens
    empty spans). Vectorised.
    """
    offsets = np.asarray(offsets, dtype=np.int64).reshape(-1, 2)
    n_chars = len(text)
    is_space = np.frombuffer(text.encode("utf-32-le"), dtype=np.uint32) if n_chars else np.zeros(0, np.uint32)
    space = np.isin(is_space, np.frombuffer(" \t\n\r\x0b\x0c\u00a0\u2028\u2029".encode("utf-32-le"), np.uint32))
    # next_nonspace[i] = first index >= i that is not whitespace (n_chars when none)
    idx = np.where(space, n_chars, np.arange(n_chars))
    next_nonspace = np.minimum.accumulate(np.append(idx, n_chars)[::-1])[::-1]
    start, end = offsets[:, 0], offsets[:, 1]
    first = next_nonspace[np.clip(start, 0, n_chars)]
    out = np.full(len(offsets), -1, dtype=np.int64)
    has_char = (first < end) & (end > start)
    if len(spans):
        w = np.searchsorted(spans[:, 0], first, side="right") - 1
        inside = has_char & (w >= 0) & (first < spans[np.clip(w, 0, None), 1])
        out[inside] = w[inside]
    return out


def token_pos_tags(text: str, offsets: np.ndarray, tagger: NltkTagger | LexiconTagger) -> tuple[np.ndarray, np.ndarray]:
    """Tag every token of ``text``: returns ``(tags, words)`` object arrays, one entry per token."""
    words, spans = word_spans(text)
    word_tags = np.asarray(tagger.tag(words) + ["SPACE"], dtype=object)
    word_text = np.asarray(words + [""], dtype=object)
    widx = token_word_index(text, offsets, spans)
    sel = np.where(widx >= 0, widx, len(words))  # -1 -> the SPACE slot
    return word_tags[sel], word_text[sel]
