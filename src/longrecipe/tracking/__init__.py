"""Experiment tracking in wandb: one run layout for every command and stage, safe logging that never stops the work,
structured evaluation / report / position-statistics logging, the comparison dashboard, and a reader of offline runs.

Modules: :mod:`~longrecipe.tracking.layout` (group / job type / tags / stable id of a run),
:mod:`~longrecipe.tracking.session` (open a run; every wandb failure becomes a warning),
:mod:`~longrecipe.tracking.logs` (what each command logs), :mod:`~longrecipe.tracking.dashboard` (the saved view),
:mod:`~longrecipe.tracking.offline` (read offline run files back).
"""

from longrecipe.tracking.layout import RunLayout, make_layout, stable_run_id, tracking_settings
from longrecipe.tracking.session import TrackedRun, start_run

__all__ = ["RunLayout", "TrackedRun", "make_layout", "stable_run_id", "start_run", "tracking_settings"]
