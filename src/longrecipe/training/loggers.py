"""Logger factories (``conf/logger``)."""

from __future__ import annotations

import os
from collections.abc import Sequence

_METHODS = {"FullLength": "flt", "RandomizedPositions": "rpes", "PoSE": "pose", "LongRecipePositions": "longrecipe"}


def method_name(position_target: str | None) -> str | None:
    """``longrecipe.positions.PoSE`` -> ``pose`` (the paper's method names); unknown targets pass through."""
    if not position_target:
        return None
    cls = str(position_target).rsplit(".", 1)[-1]
    return _METHODS.get(cls, cls)


def wandb_tags(tags: Sequence[str] | None, method: str | None, target_length: int | None,
               model_name: str | None) -> list[str]:
    """User tags plus ``method``, ``len<target>`` and the model name, de-duplicated in order."""
    extra = [method, f"len{target_length}" if target_length else None, model_name]
    return list(dict.fromkeys([*map(str, tags or []), *(str(t) for t in extra if t)]))


def wandb_logger(project: str = "longrecipe", name: str | None = None, group: str | None = None,
                 tags: Sequence[str] | None = None, save_dir: str = ".", offline: bool | None = None,
                 entity: str | None = None, method: str | None = None, target_length: int | None = None,
                 model_name: str | None = None):
    """A ``WandbLogger`` that one dashboard can slice by method / length / model.

    ``offline=None`` means offline when ``WANDB_API_KEY`` is unset (no login prompt, no network hang);
    ``method`` may be a position-scheme ``_target_``; ``group`` defaults to the method.
    """
    from lightning.pytorch.loggers import WandbLogger

    if offline is None:
        offline = not os.environ.get("WANDB_API_KEY")
    method = method_name(method)
    os.makedirs(save_dir, exist_ok=True)
    return WandbLogger(project=project, name=name, group=group or method,
                       tags=wandb_tags(tags, method, target_length, model_name), save_dir=save_dir,
                       offline=bool(offline), entity=entity)
