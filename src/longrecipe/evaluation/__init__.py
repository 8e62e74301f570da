"""Evaluation: NIAH(M) / RULER synthetic tasks, LongBench, general abilities (lm-eval), positional perplexity.

Entry point ``evaluate(cfg)`` (``longrecipe-eval``); see docs/evaluation.md for every task, source and metric.
"""

from longrecipe.evaluation.generation import generate_batched, load_eval_model
from longrecipe.evaluation.runner import evaluate

__all__ = ["evaluate", "generate_batched", "load_eval_model"]
