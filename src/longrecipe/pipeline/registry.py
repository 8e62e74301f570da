"""The stage registry: named steps of the recipe, their inputs and how they run.

A stage is ``run(cfg, inputs, out_dir) -> outputs``: ``cfg`` is the stage's own resolved config
(a plain dict, hashed into its completion marker), ``inputs`` maps input names to paths, ``out_dir``
is ``${run_dir}/<stage>/`` (empty, created by the runner). ``outputs`` is a JSON-able dict with at
least ``path`` — the stage's primary output, the default input of later stages that consume its
``produces`` kind.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

# canonical order of the recipe; `base` (materialise the model before extension) runs first when needed
STAGE_ORDER = ("base", "analyze", "prepare", "extend", "replay", "merge", "evaluate", "report")

StageRun = Callable[[dict, dict[str, Path], Path], dict]
StageConfigure = Callable[[Any, str], dict]


@dataclass(frozen=True)
class StageInput:
    """One input of a stage: filled from the nearest earlier stage producing ``kind`` (or ``stage`` exactly)."""

    name: str
    kind: str | None = None
    stage: str | None = None
    required: bool = True


@dataclass(frozen=True)
class Stage:
    """A named pipeline step. ``inputs[0]`` is the primary input, overridable with ``inputs.<stage>=<path>``.

    ``resumable``: an interrupted run of this stage (same config and inputs) continues from what it left in its
    folder -- the runner passes ``resume: true`` in ``cfg`` instead of clearing the folder (training stages: their
    last checkpoint)."""

    name: str
    run: StageRun
    configure: StageConfigure
    produces: str | None = None
    inputs: tuple[StageInput, ...] = ()
    description: str = ""
    extra: dict[str, Any] = field(default_factory=dict)
    resumable: bool = False


def default_configure(run_cfg: Any, name: str) -> dict:
    """The stage's block of the run config (``cfg.<name>``), resolved to plain containers."""
    from omegaconf import OmegaConf

    node = run_cfg.get(name) if hasattr(run_cfg, "get") else None
    if node is None:
        return {}
    return OmegaConf.to_container(node, resolve=True) if OmegaConf.is_config(node) else dict(node)


class StageRegistry:
    """Name -> :class:`Stage`. ``longrecipe.pipeline.stages.default_registry()`` holds the recipe's stages."""

    def __init__(self) -> None:
        self._stages: dict[str, Stage] = {}

    def register(self, stage: Stage) -> Stage:
        if stage.name not in STAGE_ORDER:
            raise ValueError(f"stage name must be one of {list(STAGE_ORDER)}, got {stage.name!r}")
        self._stages[stage.name] = stage
        return stage

    def get(self, name: str) -> Stage:
        if name not in self._stages:
            raise ValueError(
                f"stage {name!r} is not available in this codebase (available: {self.names()}); "
                f"choose stages from {self.names()}"
            )
        return self._stages[name]

    def __contains__(self, name: str) -> bool:
        return name in self._stages

    def names(self) -> list[str]:
        return [n for n in STAGE_ORDER if n in self._stages]
