"""A seeded generator of long English-like documents with sentences, numerals and paragraphs.

The text is not meant to be meaningful; it has the surface statistics the pipeline relies on:
sentence delimiters (``. ! ? \\n``), numerals (so the NUM part of speech exists), pronouns,
auxiliaries, conjunctions and adpositions, and long-range repetitions (entities introduced
early and referred to again much later) so that longer context actually helps prediction.
"""

from __future__ import annotations

import numpy as np

_NAMES = ["Alice", "Bob", "Carol", "Dmitri", "Eva", "Farid", "Grace", "Hiro", "Ines", "Jonas",
          "Kemal", "Lena", "Marco", "Nadia", "Oscar", "Priya", "Quentin", "Rosa", "Sven", "Tariq"]
_PLACES = ["Lisbon", "Oslo", "Nairobi", "Kyoto", "Lima", "Quebec", "Tallinn", "Hanoi", "Porto", "Denver"]
_OBJECTS = ["report", "bridge", "garden", "engine", "letter", "budget", "river", "harbor", "library",
            "factory", "market", "school", "tower", "museum", "railway", "orchard"]
_VERBS = ["built", "visited", "painted", "measured", "repaired", "described", "counted", "sold",
          "opened", "studied", "planned", "moved"]
_ADJS = ["old", "new", "quiet", "large", "narrow", "bright", "distant", "famous", "small", "green"]
_UNITS = ["meters", "people", "days", "boxes", "dollars", "pages", "years", "tons"]


def _sentence(rng: np.random.Generator, cast: list[str], facts: dict[str, int]) -> str:
    kind = rng.integers(0, 7)
    name = cast[rng.integers(len(cast))]
    obj = _OBJECTS[rng.integers(len(_OBJECTS))]
    if kind == 0:
        n = int(rng.integers(2, 5000))
        facts[f"{name}:{obj}"] = n
        return f"{name} {_VERBS[rng.integers(len(_VERBS))]} the {obj} in {_PLACES[rng.integers(len(_PLACES))]} with {n} {_UNITS[rng.integers(len(_UNITS))]}."
    if kind == 1 and facts:
        key = list(facts)[rng.integers(len(facts))]
        who, what = key.split(":")
        return f"As noted before, {who} had the {what} with {facts[key]} of them, and she was right."
    if kind == 2:
        return f"It was {_ADJS[rng.integers(len(_ADJS))]} and they could see it from the {obj}!"
    if kind == 3:
        return f"Did {name} know that the {obj} was {_ADJS[rng.integers(len(_ADJS))]}?"
    if kind == 4:
        year = int(rng.integers(1900, 2030))
        return f"In {year}, {name} and {cast[rng.integers(len(cast))]} would walk to the {obj} at {int(rng.integers(1, 12))} o'clock."
    if kind == 5:
        return f"He said that the {_ADJS[rng.integers(len(_ADJS))]} {obj} is on the road to {_PLACES[rng.integers(len(_PLACES))]}."
    return f"We have been near the {obj} for {int(rng.integers(2, 90))} {_UNITS[rng.integers(len(_UNITS))]} but it is not {_ADJS[rng.integers(len(_ADJS))]}."


def synthetic_document(rng: np.random.Generator, n_sentences: int) -> str:
    """One document of ``n_sentences`` sentences in paragraphs of 3-8 sentences."""
    cast = [str(x) for x in rng.choice(_NAMES, size=4, replace=False)]
    facts: dict[str, int] = {}
    paragraphs: list[str] = []
    current: list[str] = []
    target = int(rng.integers(3, 9))
    for _ in range(n_sentences):
        current.append(_sentence(rng, cast, facts))
        if len(current) >= target:
            paragraphs.append(" ".join(current))
            current, target = [], int(rng.integers(3, 9))
    if current:
        paragraphs.append(" ".join(current))
    return "\n".join(paragraphs)


def synthetic_documents(n_docs: int, *, seed: int = 0, min_sentences: int = 40,
                        max_sentences: int = 200) -> list[str]:
    """``n_docs`` documents, deterministic for a seed."""
    if n_docs < 0 or min_sentences < 1 or max_sentences < min_sentences:
        raise ValueError(
            f"need n_docs >= 0 and 1 <= min_sentences <= max_sentences, got "
            f"n_docs={n_docs}, min_sentences={min_sentences}, max_sentences={max_sentences}"
        )
    rng = np.random.default_rng(seed)
    return [synthetic_document(rng, int(rng.integers(min_sentences, max_sentences + 1))) for _ in range(n_docs)]
