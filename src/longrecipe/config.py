"""Where the Hydra configs live and how to compose them from Python (tests, notebooks)."""

from __future__ import annotations

from pathlib import Path

from omegaconf import DictConfig

CONF_DIR = (Path(__file__).resolve().parent / "conf").resolve()


def compose(config_name: str, overrides: list[str] | None = None) -> DictConfig:
    """Compose ``conf/<config_name>.yaml`` with Hydra overrides, outside ``@hydra.main``."""
    from hydra import compose as hydra_compose
    from hydra import initialize_config_dir
    from hydra.core.global_hydra import GlobalHydra

    if GlobalHydra.instance().is_initialized():
        GlobalHydra.instance().clear()
    with initialize_config_dir(config_dir=str(CONF_DIR), version_base="1.3"):
        return hydra_compose(config_name=config_name, overrides=list(overrides or []), return_hydra_config=False)
