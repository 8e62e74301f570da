"""English word lists for needle keys and CWE words.

RULER draws needle keys (``adjective-noun``) and CWE's words from the ``wonderwords`` package's noun, adjective and
verb lists; past that list's size CWE switches to a much larger list of real English words. We read the same
``wonderwords`` lists (package data, no download; ``pip install longrecipe[eval]``) and, for the large list, add the
vocabulary of the real-text essay haystack (see :mod:`longrecipe.evaluation.haystack`). Without ``wonderwords`` the
small built-in lists below are used and the source is recorded (``WordSource.name``).
"""

from __future__ import annotations

import re
from dataclasses import dataclass
from functools import lru_cache
from importlib import resources

import numpy as np

from longrecipe.utils.logging import get_logger

log = get_logger(__name__)

ADJECTIVES: tuple[str, ...] = tuple("""
able absent acid active actual afraid agile alert alive amber ample ancient angry annual anxious arctic
ashamed asleep awake aware bad bare basic bitter black bland blank blind blond blue bold boring brave brief
bright brisk broad broken brown busy calm careful casual cheap chief civil clean clear clever close cloudy
coarse cold common cool correct cosmic costly crazy crisp cruel curly curved cute damp dark dear deep dense
direct dirty dizzy double dry dull dusty eager early eastern easy elastic electric elegant empty endless equal
even exact exotic faint fair false famous fancy fast fat fertile few fierce final fine firm flat fluffy fond
formal fragile free fresh frozen full funny fuzzy gentle giant glad global golden good graceful grand gray
great green grumpy happy hard harsh heavy hidden high hollow honest hot huge humble hungry icy idle immense
inner jolly juicy keen kind large last late lazy lean legal level light little live lively local lonely long
loose loud lovely loyal lucky mad magic major mellow mental mild minor misty modern moist narrow nasty native
neat nervous new nice noble noisy normal numb odd old open orange outer pale patient plain plastic pleasant
plump polite poor popular potent precise pretty prime proud public pure purple quick quiet rapid rare raw
ready real red regular rich rigid ripe rough round royal rude rural rusty sacred sad safe salty sandy scary
secret serious shallow sharp shiny short shy silent silly simple slim slow small smart smooth soft solid
sour spare spicy square stale steady steep sticky stiff still strange strict strong sturdy subtle sudden
sunny super sweet swift tall tame tender thick thin tidy tight tiny tired tough tropical true ugly unique
upper urban useful vague valid vast velvet violet vital vivid warm weak wealthy weary wet white whole wide
wild windy wise witty wooden young zealous
""".split())

NOUNS: tuple[str, ...] = tuple("""
account acorn actor airport album anchor angle animal ankle answer apple apron arch area army arrow artist
autumn avenue bakery balloon banana band bank barn basket battery beach bean bear bed bell belt bench berry
bicycle bird blanket blossom boat bone book boot bottle bowl box branch bread brick bridge brush bucket
bubble butter button cabin cable cactus cake camel camera canal candle canoe canyon captain car carpet
carrot castle cat cave ceiling cellar chain chair chalk cheese cherry chess chicken chimney circle city
clock cloud coast coat coffee coin comet compass cookie copper corn cottage cotton country cousin cow crab
crayon creek crow crown cup curtain cushion dagger daisy dance desert desk diamond dinner dish doctor dog
doll dolphin door dragon drawer dream dress drum duck eagle earth egg elbow engine envelope falcon farm
feather fence fern field finger fire fish flag flame flute fog forest fork fountain fox frog fruit garden
gate ghost gift giraffe glass glove goat gold grape grass guitar hammer harbor hat hawk heart hill honey
horse hotel house island jacket jar jelly jewel kettle key kitten kite knife ladder lake lamp lantern lemon
letter library lily lion lizard lobster lock magnet mango map marble market meadow melon mirror monkey moon
mountain mouse mug museum nail needle nest net novel oak ocean olive onion orchard otter owl paddle palace
panda paper parrot peach pear pebble pencil pepper piano pillow pilot planet plate pocket pond potato
pumpkin puzzle quilt rabbit radio rainbow raven ribbon ring river road robot rocket roof rose saddle sail
salad salmon sand scarf school seal shadow shark sheep shell ship shoe shovel silver singer sky sled snail
snake soap sock sofa spider spoon square squirrel stamp star stone storm stove street sugar sun swan sword
table tail teapot tent thread tiger timber toast tomato tooth towel tower tractor train tray tree truck
trumpet tulip tunnel turtle umbrella valley vase violin wagon wall walnut wand watch water whale wheel
whistle window wing wizard wolf yacht zebra
""".split())

_CORPUS_WORD = re.compile(r"[a-z]{3,}")


@dataclass(frozen=True)
class WordSource:
    """The word lists a run draws from: ``name`` is recorded with every sample."""

    name: str
    nouns: tuple[str, ...]
    adjectives: tuple[str, ...]
    verbs: tuple[str, ...]

    @property
    def words(self) -> tuple[str, ...]:
        """Nouns, adjectives and verbs, de-duplicated and sorted (RULER's CWE list at short lengths)."""
        return tuple(sorted(set(self.nouns) | set(self.adjectives) | set(self.verbs)))


def _package_list(name: str) -> tuple[str, ...]:
    text = resources.files("wonderwords.assets").joinpath(name).read_text(encoding="utf-8")
    return tuple(w.strip() for w in text.splitlines() if w.strip())


@lru_cache(maxsize=1)
def word_source() -> WordSource:
    """``wonderwords``' lists when the package is installed (RULER's source), else the built-in lists."""
    try:
        return WordSource("wonderwords", _package_list("nounlist.txt"), _package_list("adjectivelist.txt"),
                          _package_list("verblist.txt"))
    except ModuleNotFoundError:
        log.warning("wonderwords is not installed (pip install longrecipe[eval]); needle keys and CWE words come "
                    "from the small built-in lists, which RULER does not use")
        return WordSource("builtin", NOUNS, ADJECTIVES, ())


def word_keys(rng: np.random.Generator, n: int, *, exclude: set[str] | None = None,
              source: WordSource | None = None) -> list[str]:
    """``n`` distinct ``adjective-noun`` keys (RULER's word keys), seeded by ``rng``."""
    src = source or word_source()
    adjs, nouns = src.adjectives, src.nouns
    exclude = exclude or set()
    capacity = len(adjs) * len(nouns) - len(exclude)
    if n > capacity:
        raise ValueError(f"n must be <= {capacity} distinct word keys, got n={n}; use number or uuid keys instead")
    out: list[str] = []
    seen = set(exclude)
    while len(out) < n:
        draw = rng.integers(0, len(adjs) * len(nouns), size=2 * (n - len(out)) + 4)
        for code in draw:
            word = f"{adjs[code // len(nouns)]}-{nouns[code % len(nouns)]}"
            if word not in seen:
                seen.add(word)
                out.append(word)
                if len(out) == n:
                    break
    return out


def corpus_vocabulary(text: str) -> tuple[str, ...]:
    """Sorted distinct lower-case alphabetic words (3+ letters) written in lower case in ``text``."""
    return tuple(sorted(set(_CORPUS_WORD.findall(" ".join(w for w in text.split() if w.islower())))))


def compound_words(rng: np.random.Generator, n: int, *, exclude: set[str]) -> list[str]:
    """``n`` distinct made-up two-word compounds (``oakriver``): the last resort when real words run out."""
    out: list[str] = []
    seen = set(exclude)
    base = word_source()
    while len(out) < n:
        for key in word_keys(rng, n - len(out), exclude=seen, source=base):
            seen.add(key)
            word = key.replace("-", "")
            if word not in seen:
                seen.add(word)
                out.append(word)
    return out
