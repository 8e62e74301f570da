"""Data selection (LongRecipe §4.1): anchor-sentence samples and the Random T / w/o T ablations."""

from longrecipe.selection.select import (
    AnchorSelection,
    PrefixSelection,
    RandomSelection,
    assemble,
    upsample_indices,
)

__all__ = ["AnchorSelection", "PrefixSelection", "RandomSelection", "assemble", "prepare_dataset",
           "upsample_indices"]


def __getattr__(name: str):
    if name == "prepare_dataset":
        from longrecipe.selection.prepare import prepare_dataset

        return prepare_dataset
    raise AttributeError(name)
