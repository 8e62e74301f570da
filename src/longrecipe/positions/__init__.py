"""Position-index schemes (FLT, RPES, PoSE, LongRecipe) and their statistics (paper Fig. 3).

Each scheme is ``scheme(input_ids, rng, *, segment_starts=None) -> np.ndarray[int64]``; see
``docs/positions.md`` for the definitions and equations.
"""

from longrecipe.positions.base import PositionScheme, sorted_subset
from longrecipe.positions.flt import FullLength
from longrecipe.positions.longrecipe import LongRecipePositions
from longrecipe.positions.pose import PoSE
from longrecipe.positions.registry import SCHEMES, build_scheme
from longrecipe.positions.rpes import RandomizedPositions
from longrecipe.positions.segments import (
    DEFAULT_DELIMITERS,
    delimiter_token_ids,
    segment_starts_from_delimiters,
)
from longrecipe.positions.stats import PositionStats, position_stats

__all__ = [
    "DEFAULT_DELIMITERS",
    "SCHEMES",
    "FullLength",
    "LongRecipePositions",
    "PoSE",
    "PositionScheme",
    "PositionStats",
    "RandomizedPositions",
    "build_scheme",
    "delimiter_token_ids",
    "position_stats",
    "segment_starts_from_delimiters",
    "sorted_subset",
]
