"""Open a wandb run for a layout and log to it without ever stopping the work it describes.

wandb is off the critical path: when it is not installed, cannot start (no account for ``online``, a full disk, a
dead service) or fails while logging, :class:`TrackedRun` logs one warning and turns into a no-op; training keeps its
CSV logger and checkpoints, evaluations keep their ``results.json``.
"""

from __future__ import annotations

import math
from collections.abc import Callable, Iterable, Mapping, Sequence
from pathlib import Path
from typing import Any

from longrecipe.tracking.layout import RunLayout
from longrecipe.utils.logging import get_logger

log = get_logger(__name__)


def _cell(value: Any) -> Any:
    """A table cell: scalars as they are (NaN -> None), anything else as a string."""
    if value is None or isinstance(value, (bool, int, str)):
        return value
    if isinstance(value, float):
        return None if math.isnan(value) or math.isinf(value) else value
    if hasattr(value, "item"):  # numpy / torch scalars
        return _cell(value.item())
    return str(value)


def table_columns(rows: Sequence[Mapping[str, Any]], first: Sequence[str] = ()) -> list[str]:
    """``first`` (always present, in order), then every other flat key of ``rows`` in first-seen order.

    A key is flat when no row holds a dict or list under it (per-sample lists such as ``answers`` stay out)."""
    nested = {k for r in rows for k, v in r.items() if isinstance(v, (dict, list, tuple))}
    seen = dict.fromkeys(first)
    for r in rows:
        for k in r:
            if k not in nested:
                seen.setdefault(k)
    return list(seen)


class TrackedRun:
    """A started wandb run; every call is safe (a failure warns once and disables the run)."""

    def __init__(self, run: Any, layout: RunLayout) -> None:
        self.run = run
        self.layout = layout
        self.failed: str | None = None

    @property
    def active(self) -> bool:
        return self.run is not None and self.failed is None

    def _guard(self, what: str, fn, *args, **kwargs) -> Any:
        if not self.active:
            return None
        try:
            return fn(*args, **kwargs)
        except Exception as err:  # wandb must never stop the run it tracks
            self.failed = f"{what}: {type(err).__name__}: {err}"
            log.warning("wandb %s failed (%s); continuing without wandb for run %s", what, self.failed,
                        self.layout.run_id)
            return None

    def log(self, data: Mapping[str, Any]) -> None:
        self._guard("log", self.run.log, dict(data))

    def define_step(self, step_metric: str, metrics: Iterable[str]) -> None:
        """Plot ``metrics`` (names or globs such as ``eval/*``) against ``step_metric`` instead of ``_step``."""
        def define():
            self.run.define_metric(step_metric)
            for m in metrics:
                self.run.define_metric(m, step_metric=step_metric)
        self._guard("define_metric", define)

    def log_table(self, key: str, rows: Sequence[Mapping[str, Any]], first: Sequence[str] = ()) -> list[str]:
        """Log ``rows`` as a ``wandb.Table`` under ``key``; returns its columns. A column mixing numbers and text
        is logged as text (wandb types each column); a table wandb still refuses is skipped with a warning."""
        columns = table_columns(rows, first)
        data = [[_cell(r.get(c)) for c in columns] for r in rows]
        for j in range(len(columns)):
            kinds = {type(row[j]) for row in data if row[j] is not None}
            if str in kinds and len(kinds) > 1:
                for row in data:
                    row[j] = None if row[j] is None else str(row[j])
        if not self.active:
            return columns
        try:
            import wandb

            table = wandb.Table(columns=columns, data=data)
        except Exception as err:  # a malformed table is skipped, the run goes on
            log.warning("wandb table %s skipped (%s: %s)", key, type(err).__name__, err)
            return columns
        self._guard(f"table {key}", self.run.log, {key: table})
        return columns

    def log_image(self, key: str, image: str | Path | Any, caption: str | None = None) -> None:
        """Log a PNG file or a matplotlib figure under ``key`` (a figure is closed afterwards)."""
        def log_it():
            import wandb

            src = str(image) if isinstance(image, (str, Path)) else image
            self.run.log({key: wandb.Image(src, caption=caption)})
        self._guard(f"image {key}", log_it)
        if not isinstance(image, (str, Path)):
            import matplotlib.pyplot as plt

            plt.close(image)

    def log_chart(self, key: str, build: Callable[[], Any]) -> None:
        """Log the chart ``build()`` makes (e.g. ``wandb.plot.line_series``); building happens only when active."""
        if not self.active:
            return
        chart = self._guard(f"chart {key}", build)
        if chart is not None:
            self._guard(f"chart {key}", self.run.log, {key: chart})

    def summary(self, values: Mapping[str, Any]) -> None:
        self._guard("summary", self.run.summary.update, dict(values))

    def finish(self, exit_code: int = 0) -> None:
        if self.run is None:
            return
        try:
            self.run.finish(exit_code=exit_code)
        except Exception as err:
            log.warning("wandb finish failed (%s: %s); the offline files may be incomplete", type(err).__name__, err)
        self.run = None

    def __enter__(self) -> TrackedRun:
        return self

    def __exit__(self, exc_type, exc, tb) -> None:
        self.finish(1 if exc_type is not None else 0)


def start_run(layout: RunLayout, config: Mapping[str, Any] | None = None) -> TrackedRun:
    """``wandb.init`` for ``layout`` (``config``: the resolved Hydra config). On any failure a warning and an
    inactive :class:`TrackedRun` (so callers never branch on it)."""
    try:
        import wandb

        Path(layout.folder).mkdir(parents=True, exist_ok=True)
        run = wandb.init(**layout.init_kwargs(config), reinit="finish_previous",
                         settings=wandb.Settings(console="off", silent=True, x_disable_stats=True,
                                                 save_code=False, disable_git=True))
    except Exception as err:  # wandb must never stop the work it tracks
        log.warning("wandb could not start run %s (%s: %s); continuing without wandb (files and CSV are kept)",
                    layout.run_id, type(err).__name__, err)
        tracked = TrackedRun(None, layout)
        tracked.failed = f"init: {err}"
        return tracked
    log.info("wandb run %s (%s, group %s, job %s) -> %s", layout.run_id, layout.mode, layout.group, layout.job_type,
             layout.wandb_dir)
    return TrackedRun(run, layout)
