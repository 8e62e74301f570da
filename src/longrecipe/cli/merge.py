"""``longrecipe-merge``: merge a tuned model with the original (see conf/merge.yaml)."""

from __future__ import annotations

import hydra
from omegaconf import DictConfig

from longrecipe.config import CONF_DIR


@hydra.main(version_base="1.3", config_path=str(CONF_DIR), config_name="merge")
def main(cfg: DictConfig) -> dict:
    from longrecipe.merging import merge_from_config

    return merge_from_config(cfg)


if __name__ == "__main__":
    main()
