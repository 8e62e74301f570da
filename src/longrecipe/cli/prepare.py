"""``longrecipe-prepare``: build the selected training set (conf/prepare.yaml); logic in ``longrecipe.selection``."""

from __future__ import annotations

import hydra
from omegaconf import DictConfig

from longrecipe.config import CONF_DIR
from longrecipe.selection.prepare import prepare_dataset


@hydra.main(version_base="1.3", config_path=str(CONF_DIR), config_name="prepare")
def main(cfg: DictConfig) -> None:
    prepare_dataset(cfg)


if __name__ == "__main__":
    main()
