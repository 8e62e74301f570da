"""Logger factories (``conf/logger``)."""

from __future__ import annotations

import os
from collections.abc import Sequence


def wandb_logger(project: str = "longrecipe", name: str | None = None, group: str | None = None,
                 tags: Sequence[str] | None = None, save_dir: str = ".", offline: bool | None = None,
                 entity: str | None = None):
    """A ``WandbLogger``; ``offline=None`` means offline when ``WANDB_API_KEY`` is unset (no login prompt)."""
    from lightning.pytorch.loggers import WandbLogger

    if offline is None:
        offline = not os.environ.get("WANDB_API_KEY")
    os.makedirs(save_dir, exist_ok=True)
    return WandbLogger(project=project, name=name, group=group, tags=list(tags or []), save_dir=save_dir,
                       offline=bool(offline), entity=entity)
