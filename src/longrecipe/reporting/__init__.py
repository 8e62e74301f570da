"""Paper tables and figures regenerated from run folders (``longrecipe-report``)."""

from longrecipe.reporting.collect import collect_results, load_run_meta
from longrecipe.reporting.tables import (
    ablation_table,
    main_table,
    perplexity_table,
    stage_table,
    token_ratio_table,
)

__all__ = [
    "ablation_table",
    "collect_results",
    "load_run_meta",
    "main_table",
    "perplexity_table",
    "stage_table",
    "token_ratio_table",
]
