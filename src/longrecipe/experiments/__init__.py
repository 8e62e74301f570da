"""Experiment drivers run by ``longrecipe-run`` (``driver=...`` in ``conf/experiment/*.yaml``): fan-outs over
methods and seeds on top of the named-stage pipeline. See docs/experiments.md."""

from longrecipe.experiments.tiny_repro import SubRun, run_tiny_repro, tiny_repro_plan

__all__ = ["SubRun", "run_tiny_repro", "tiny_repro_plan"]
