"""``longrecipe-eval``: evaluate a model folder on one group of ``conf/eval/`` (results under Hydra's run dir)."""

from __future__ import annotations

import hydra
from omegaconf import DictConfig, open_dict

from longrecipe.config import CONF_DIR


@hydra.main(config_path=str(CONF_DIR), config_name="evaluate", version_base="1.3")
def main(cfg: DictConfig) -> None:
    from hydra.core.hydra_config import HydraConfig

    from longrecipe.evaluation import evaluate

    if not cfg.get("output_dir"):
        with open_dict(cfg):
            cfg.output_dir = HydraConfig.get().runtime.output_dir
    evaluate(cfg)


if __name__ == "__main__":
    main()
