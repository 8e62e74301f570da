"""``longrecipe-run``: the whole recipe as named, resumable stages (see conf/run.yaml, docs/pipeline.md)."""

from __future__ import annotations

import hydra
from omegaconf import DictConfig

from longrecipe.config import CONF_DIR


@hydra.main(version_base="1.3", config_path=str(CONF_DIR), config_name="run")
def main(cfg: DictConfig) -> dict:
    from longrecipe.pipeline import run_pipeline

    return run_pipeline(cfg)


if __name__ == "__main__":
    main()
