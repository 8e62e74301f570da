"""``longrecipe-train``: context-extension training (``conf/train.yaml``).

Launch: ``longrecipe-train`` (tiny CPU default) · ``longrecipe-train position=pose target_length=2048`` ·
``longrecipe-train model.pretrained=<hf folder>`` · ``longrecipe-train resume=true run_dir=<killed run>``.
The logic is ``longrecipe.training.train.train(cfg)``; this wrapper only pins the run folder to Hydra's.
"""

from __future__ import annotations

import hydra
from hydra.core.hydra_config import HydraConfig
from omegaconf import DictConfig, open_dict

from longrecipe.config import CONF_DIR
from longrecipe.training.train import main_env_defaults, train

__all__ = ["main", "train"]


@hydra.main(version_base="1.3", config_path=str(CONF_DIR), config_name="train")
def main(cfg: DictConfig) -> None:
    main_env_defaults()
    if HydraConfig.initialized():
        with open_dict(cfg):  # the run folder is exactly Hydra's output folder (same ${now:} stamp)
            cfg.run_dir = HydraConfig.get().runtime.output_dir
    train(cfg)


if __name__ == "__main__":
    main()
