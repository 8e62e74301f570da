"""The named-stage pipeline ``longrecipe-run``: analyze → prepare → extend → replay → merge → evaluate → report,
each stage writing ``${run_dir}/<stage>/`` with a completion marker holding its config hash."""

from longrecipe.pipeline.registry import STAGE_ORDER, Stage, StageInput, StageRegistry
from longrecipe.pipeline.runner import MARKER, StageConfigChangedError, read_marker, run_stages
from longrecipe.pipeline.stages import default_registry, run_pipeline

__all__ = ["MARKER", "STAGE_ORDER", "Stage", "StageConfigChangedError", "StageInput", "StageRegistry",
           "default_registry", "read_marker", "run_pipeline", "run_stages"]
