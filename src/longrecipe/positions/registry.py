"""Scheme names -> classes, and ``build_scheme(name, target_length, **kw)``."""

from __future__ import annotations

from typing import Any

from longrecipe.positions.base import PositionScheme
from longrecipe.positions.flt import FullLength
from longrecipe.positions.longrecipe import LongRecipePositions
from longrecipe.positions.pose import PoSE
from longrecipe.positions.rpes import RandomizedPositions

SCHEMES: dict[str, type[PositionScheme]] = {
    "flt": FullLength,
    "rpes": RandomizedPositions,
    "pose": PoSE,
    "longrecipe": LongRecipePositions,
}


def build_scheme(name: str, target_length: int, **kwargs: Any) -> PositionScheme:
    """Build a scheme by its config name (``flt``, ``rpes``, ``pose``, ``longrecipe``)."""
    if name not in SCHEMES:
        raise ValueError(f"position scheme must be one of {sorted(SCHEMES)}, got {name!r}; "
                         "choose one of conf/position/*.yaml")
    return SCHEMES[name](target_length=target_length, **kwargs)
