"""``longrecipe-positions``: statistics of the position schemes on real text (paper Fig. 3).

Launch: ``longrecipe-positions corpus=../shared/nltk_data/corpora/state_union`` (see conf/positions.yaml).
"""

from __future__ import annotations

import hydra
from omegaconf import DictConfig

from longrecipe.config import CONF_DIR
from longrecipe.positions.report import run_position_stats

__all__ = ["main", "run_position_stats"]


@hydra.main(version_base="1.3", config_path=str(CONF_DIR), config_name="positions")
def main(cfg: DictConfig) -> None:
    run_position_stats(cfg)


if __name__ == "__main__":
    main()
