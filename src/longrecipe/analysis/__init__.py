"""Impactful token analysis (LongRecipe §4.1): logit shifts between a base and a long-context model, POS tags."""

from longrecipe.analysis.aggregate import aggregate_shifts, top_fraction_weights
from longrecipe.analysis.pos import NLTK_INSTALL_HINT, UD_TAGS, load_tagger, token_pos_tags, word_spans
from longrecipe.analysis.vocab import check_same_tokenizer

__all__ = ["NLTK_INSTALL_HINT", "UD_TAGS", "aggregate_shifts", "check_same_tokenizer", "load_tagger",
           "run_analysis", "token_pos_tags", "top_fraction_weights", "word_spans"]


def __getattr__(name: str):
    if name == "run_analysis":
        from longrecipe.analysis.run import run_analysis

        return run_analysis
    raise AttributeError(name)
