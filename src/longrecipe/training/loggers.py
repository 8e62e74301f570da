"""Logger factories (``conf/logger``): CSV, and a wandb logger with the project's run layout that never stops
training (:class:`SafeWandbLogger`)."""

from __future__ import annotations

import functools
import os
from collections.abc import Mapping, Sequence
from typing import Any

from lightning.pytorch.loggers import WandbLogger

from longrecipe.tracking.layout import layout_tags, make_layout, method_display, tracking_settings
from longrecipe.utils.logging import get_logger

log = get_logger(__name__)


def method_name(position_target: str | None) -> str | None:
    """``longrecipe.positions.PoSE`` -> ``PoSE`` (the paper's method names); unknown targets pass through."""
    return method_display(position_target)


def wandb_tags(tags: Sequence[str] | None, method: str | None, target_length: int | None,
               model_name: str | None) -> list[str]:
    """Method, ``len<target>`` and the model name, then the user's tags; de-duplicated in order."""
    return layout_tags({"method": method_display(method), "target_length": target_length, "model_name": model_name},
                       tags or ())


def _safe(name: str):
    """Wrap ``WandbLogger.<name>``: the first failure warns and disables wandb for the rest of the run."""
    def wrap(fn):
        @functools.wraps(fn)
        def guarded(self, *args, **kwargs):
            if self.disabled is not None:
                return None
            try:
                return fn(self, *args, **kwargs)
            except Exception as err:  # wandb must never kill training or lose its checkpoints
                self.disable(f"{name}: {type(err).__name__}: {err}")
                return None
        return guarded
    return wrap


class SafeWandbLogger(WandbLogger):
    """``WandbLogger`` whose failures (start-up, logging, finishing) warn once and turn it into a no-op: the run
    continues with its other loggers (CSV) and its checkpoints. ``finalize`` finishes the wandb run, so the next
    stage of a pipeline in the same process starts its own run instead of reusing this one."""

    def __init__(self, *args: Any, **kwargs: Any) -> None:
        super().__init__(*args, **kwargs)
        self.disabled: str | None = None

    def disable(self, reason: str) -> None:
        if self.disabled is None:
            log.warning("wandb failed (%s); training continues without wandb, with the CSV logger and checkpoints",
                        reason)
        self.disabled = reason

    def start(self) -> bool:
        """Start the wandb run now (not at the first metric); False (with a warning) when it cannot start. A run left
        open in this process (Lightning would silently reuse it) is finished first, so this run keeps its layout."""
        try:
            import wandb

            if wandb.run is not None and self._experiment is None:
                log.warning("finishing the wandb run %s left open in this process before starting %s",
                            wandb.run.id, self._id)
                wandb.run.finish()
            _ = self.experiment
        except Exception as err:  # wandb must never kill training
            self.disable(f"init: {type(err).__name__}: {err}")
        return self.disabled is None

    @_safe("log_hyperparams")
    def log_hyperparams(self, params: Any) -> None:
        super().log_hyperparams(params)

    @_safe("log_metrics")
    def log_metrics(self, metrics: Mapping[str, float], step: int | None = None) -> None:
        super().log_metrics(metrics, step)

    @_safe("log_table")
    def log_table(self, *args: Any, **kwargs: Any) -> None:
        super().log_table(*args, **kwargs)

    @_safe("log_image")
    def log_image(self, *args: Any, **kwargs: Any) -> None:
        super().log_image(*args, **kwargs)

    @_safe("after_save_checkpoint")
    def after_save_checkpoint(self, checkpoint_callback: Any) -> None:
        super().after_save_checkpoint(checkpoint_callback)

    def finalize(self, status: str) -> None:
        if self.disabled is None:
            try:
                super().finalize(status)
            except Exception as err:  # wandb must never kill training
                self.disable(f"finalize: {type(err).__name__}: {err}")
        run, self._experiment = self._experiment, None
        if run is not None and hasattr(run, "finish"):
            try:
                run.finish(exit_code=0 if status == "success" else 1)
            except Exception as err:  # the checkpoints are written already; only the wandb files may be short
                log.warning("wandb finish failed (%s: %s)", type(err).__name__, err)


def wandb_logger(project: str = "longrecipe", name: str | None = None, group: str | None = None,
                 tags: Sequence[str] | None = None, folder: str = ".", mode: str = "offline",
                 entity: str | None = None, job_type: str = "train", run_id: str | None = None,
                 method: str | None = None, target_length: int | None = None, model_name: str | None = None,
                 meta: Mapping[str, Any] | None = None, log_model: bool = False) -> SafeWandbLogger | None:
    """A started :class:`SafeWandbLogger` with the run layout of :mod:`longrecipe.tracking.layout`, or ``None``
    (with a warning) when wandb cannot start: training then runs with its other loggers.

    ``folder`` is the run folder (its identity: the stable run id; wandb files go to ``<folder>/wandb``);
    ``method`` may be a position-scheme ``_target_``; ``meta`` (run metadata, e.g. from ``longrecipe-run``) wins
    over ``method`` / ``target_length`` / ``model_name``.
    """
    settings = tracking_settings({"enabled": True, "project": project, "entity": entity, "group": group,
                                  "tags": list(tags or []), "mode": mode})
    run_meta = {"method": method, "target_length": target_length, "model_name": model_name, **dict(meta or {})}
    layout = make_layout(settings, folder=folder, job_type=job_type, meta=run_meta)
    kwargs = layout.init_kwargs()
    kwargs.pop("dir")
    try:
        logger = SafeWandbLogger(name=name or layout.name, save_dir=layout.folder, id=run_id or layout.run_id,
                                 project=kwargs.pop("project"), log_model=log_model,
                                 **{k: v for k, v in kwargs.items() if k not in ("name", "id")},
                                 settings=_settings())
    except Exception as err:  # e.g. wandb not installed: train with the CSV logger
        log.warning("wandb logger unavailable (%s: %s); training continues with the CSV logger",
                    type(err).__name__, err)
        return None
    os.makedirs(layout.folder, exist_ok=True)
    return logger if logger.start() else None


def _settings() -> Any:
    import wandb

    return wandb.Settings(console="off", silent=True, x_disable_stats=True, save_code=False, disable_git=True)
