"""``longrecipe-positions``: statistics of the position schemes on real text (paper Fig. 3).

Launch: ``longrecipe-positions corpus=../shared/nltk_data/corpora/state_union`` (see conf/positions.yaml);
``wandb=offline`` also logs the table and figure to wandb (docs/wandb.md).
"""

from __future__ import annotations

from pathlib import Path

import hydra
from omegaconf import DictConfig

from longrecipe.config import CONF_DIR
from longrecipe.positions.report import run_position_stats
from longrecipe.tracking.logs import log_position_stats

__all__ = ["main", "run_position_stats", "run_positions"]


def _output_dir(cfg: DictConfig) -> Path:
    if cfg.get("output_dir"):
        return Path(str(cfg.output_dir))
    from hydra.core.hydra_config import HydraConfig

    return Path(HydraConfig.get().runtime.output_dir)


def run_positions(cfg: DictConfig) -> dict:
    """``run_position_stats`` and, with ``wandb`` on, its wandb run (table, figure, summaries)."""
    result = run_position_stats(cfg)
    log_position_stats(cfg, result, _output_dir(cfg))
    return result


@hydra.main(version_base="1.3", config_path=str(CONF_DIR), config_name="positions")
def main(cfg: DictConfig) -> None:
    run_positions(cfg)


if __name__ == "__main__":
    main()
