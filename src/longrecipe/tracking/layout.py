"""The run layout every command and pipeline stage uses in wandb, so that runs of a sweep are comparable.

* ``project``: one per study (``wandb.project``, default ``longrecipe``);
* ``group``: the experiment (``experiment_name``; ``wandb.group`` wins; ``default`` when neither is set);
* ``job_type``: the pipeline stage (``base`` ``extend`` ``replay`` ``merge`` ``evaluate`` ``report``) or the command
  (``train`` ``evaluate`` ``positions`` ``report``);
* ``tags``: method, ``len<target length>``, model name, then ``wandb.tags``;
* ``id``: ``<job_type>-<sha1 of the run folder>[:12]``, so re-running a stage in the same folder continues the same
  wandb run, and every sweep point (its own folder) is its own run;
* ``config``: the fully resolved Hydra config, plus ``longrecipe`` = the run's metadata (``run_meta.json`` keys:
  method, model_name, target_length, token_ratio, max_skip, merge_lambda, seed, experiment, stage, run_dir), the keys
  the dashboard groups and filters by.
"""

from __future__ import annotations

import hashlib
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from omegaconf import DictConfig, OmegaConf

DEFAULT_GROUP = "default"
MODES = ("offline", "online", "disabled")
METHODS = {"flt": "FLT", "rpes": "RPES", "pose": "PoSE", "longrecipe": "LongRecipe",
           "FullLength": "FLT", "RandomizedPositions": "RPES", "PoSE": "PoSE", "LongRecipePositions": "LongRecipe"}


def method_display(method: str | None) -> str | None:
    """``longrecipe`` / ``longrecipe.positions.LongRecipePositions`` -> ``LongRecipe``; others pass through."""
    if not method:
        return None
    key = str(method).rsplit(".", 1)[-1]
    return METHODS.get(key, key)


def tracking_settings(node: Any) -> dict[str, Any] | None:
    """The ``wandb`` config node as a dict when tracking is enabled, else ``None`` (also for a missing node).

    Checks ``mode`` (``offline`` | ``online`` | ``disabled``) and names the field and the fix when it is wrong.
    """
    if node is None:
        return None
    data = OmegaConf.to_container(node, resolve=True) if OmegaConf.is_config(node) else dict(node)
    if not data.get("enabled", False):
        return None
    mode = str(data.get("mode") or "offline")
    mode = {"dryrun": "offline", "run": "online"}.get(mode, mode)  # wandb's older names (WANDB_MODE=dryrun)
    if mode not in MODES:
        raise ValueError(f"wandb.mode must be one of {list(MODES)}, got {mode!r}; e.g. wandb.mode=offline "
                         "(sync later with `wandb sync <run folder>/wandb/offline-run-*`)")
    return {"project": "longrecipe", "entity": None, "group": None, "tags": [], **data, "mode": mode}


def stable_run_id(folder: str | Path, job_type: str) -> str:
    """``<job_type>-<12 hex>``: the wandb run id of the run folder ``folder`` (absolute path, resolved)."""
    digest = hashlib.sha1(str(Path(folder).expanduser().resolve()).encode("utf-8")).hexdigest()[:12]
    safe = "".join(c if c.isalnum() or c in "-_" else "-" for c in job_type)
    return f"{safe}-{digest}"


def run_name(meta: Mapping[str, Any], job_type: str) -> str:
    """Readable name: method, the swept knobs that are set, seed, stage (``LongRecipe M64 r0.3 seed0 extend``)."""
    parts = [method_display(meta.get("method")) or ""]
    if meta.get("max_skip") is not None:
        parts.append(f"M{meta['max_skip']}")
    if meta.get("token_ratio") is not None:
        parts.append(f"r{meta['token_ratio']}")
    if meta.get("merge_lambda") is not None:
        parts.append(f"λ{meta['merge_lambda']}")
    if meta.get("seed") is not None:
        parts.append(f"seed{meta['seed']}")
    parts.append(job_type)
    return " ".join(p for p in parts if p)


def layout_tags(meta: Mapping[str, Any], extra: Sequence[str] = ()) -> list[str]:
    """Method, ``len<target>``, model name, then ``extra``; de-duplicated in order."""
    target = meta.get("target_length")
    tags = [method_display(meta.get("method")), f"len{target}" if target else None, meta.get("model_name"),
            *[str(t) for t in extra or []]]
    return list(dict.fromkeys(str(t)[:64] for t in tags if t))


@dataclass(frozen=True)
class RunLayout:
    """Where and how one run lands in wandb (see the module docstring)."""

    project: str
    group: str
    job_type: str
    name: str
    run_id: str
    tags: tuple[str, ...]
    folder: str
    meta: dict[str, Any] = field(default_factory=dict)
    entity: str | None = None
    mode: str = "offline"

    @property
    def wandb_dir(self) -> str:
        """wandb writes ``<folder>/wandb/offline-run-*`` (synced later with ``wandb sync``)."""
        return str(Path(self.folder) / "wandb")

    def init_kwargs(self, config: Mapping[str, Any] | None = None) -> dict[str, Any]:
        """Keyword arguments of ``wandb.init`` for this run (``config`` gets the ``longrecipe`` metadata key)."""
        return {"project": self.project, "entity": self.entity, "group": self.group, "job_type": self.job_type,
                "name": self.name, "id": self.run_id, "tags": list(self.tags), "dir": self.folder,
                "mode": self.mode, "resume": "allow", "config": self.config(config)}

    def config(self, config: Mapping[str, Any] | None = None) -> dict[str, Any]:
        base = _plain(config) or {}
        return {**base, "longrecipe": {**self.meta, "stage": self.meta.get("stage") or self.job_type,
                                       "run_dir": self.folder}}


def _plain(node: Any) -> Any:
    if isinstance(node, DictConfig) or OmegaConf.is_config(node):
        return OmegaConf.to_container(node, resolve=True)
    return dict(node) if isinstance(node, Mapping) else node


def make_layout(settings: Mapping[str, Any], *, folder: str | Path, job_type: str,
                meta: Mapping[str, Any] | None = None) -> RunLayout:
    """The layout of the run kept in ``folder`` for ``job_type``; ``settings`` is :func:`tracking_settings`."""
    meta = {k: v for k, v in dict(meta or {}).items() if v is not None}
    if meta.get("method"):
        meta["method"] = method_display(meta["method"])
    folder = str(Path(folder).expanduser().resolve())
    group = settings.get("group") or meta.get("experiment") or DEFAULT_GROUP
    return RunLayout(project=str(settings.get("project") or "longrecipe"), group=str(group), job_type=job_type,
                     name=run_name(meta, job_type), run_id=stable_run_id(folder, job_type),
                     tags=tuple(layout_tags(meta, settings.get("tags") or ())), folder=folder, meta=meta,
                     entity=settings.get("entity"), mode=str(settings.get("mode") or "offline"))
