"""``longrecipe-analyze``: impactful token analysis (conf/analyze.yaml); logic in ``longrecipe.analysis.run``."""

from __future__ import annotations

import hydra
from omegaconf import DictConfig, open_dict

from longrecipe.analysis.run import run_analysis
from longrecipe.config import CONF_DIR
from longrecipe.tracking.logs import command_run


@hydra.main(version_base="1.3", config_path=str(CONF_DIR), config_name="analyze")
def main(cfg: DictConfig) -> None:
    if not cfg.get("output_dir"):
        from hydra.core.hydra_config import HydraConfig

        with open_dict(cfg):
            cfg.output_dir = HydraConfig.get().runtime.output_dir
    with command_run(cfg, "analyze", cfg.output_dir):  # wandb=offline: an analyze run
        run_analysis(cfg)


if __name__ == "__main__":
    main()
