"""``longrecipe-prepare``: build the selected training set (conf/prepare.yaml); logic in ``longrecipe.selection``."""

from __future__ import annotations

import hydra
from omegaconf import DictConfig

from longrecipe.config import CONF_DIR
from longrecipe.selection.prepare import prepare_dataset
from longrecipe.tracking.logs import command_run, log_stage_outputs


@hydra.main(version_base="1.3", config_path=str(CONF_DIR), config_name="prepare")
def main(cfg: DictConfig) -> None:
    from hydra.core.hydra_config import HydraConfig

    with command_run(cfg, "prepare", HydraConfig.get().runtime.output_dir) as run:  # wandb=offline: a prepare run
        log_stage_outputs(run, prepare_dataset(cfg))


if __name__ == "__main__":
    main()
