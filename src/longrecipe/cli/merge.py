"""``longrecipe-merge``: merge a tuned model with the original (see conf/merge.yaml)."""

from __future__ import annotations

import hydra
from omegaconf import DictConfig

from longrecipe.config import CONF_DIR


@hydra.main(version_base="1.3", config_path=str(CONF_DIR), config_name="merge")
def main(cfg: DictConfig) -> dict:
    from hydra.core.hydra_config import HydraConfig

    from longrecipe.merging import merge_from_config
    from longrecipe.tracking.logs import command_run, log_stage_outputs

    with command_run(cfg, "merge", HydraConfig.get().runtime.output_dir) as run:  # wandb=offline: a merge run
        result = merge_from_config(cfg)
        log_stage_outputs(run, result)
    return result


if __name__ == "__main__":
    main()
