"""``longrecipe-report``: gather results.json of many runs into the paper's tables and figures
(``wandb=offline``: also a summary run with the tables, figures and per-method charts, docs/wandb.md)."""

from __future__ import annotations

import hydra
from omegaconf import DictConfig

from longrecipe.config import CONF_DIR


def run_report(cfg: DictConfig) -> dict:
    from longrecipe.reporting.report import build_report
    from longrecipe.tracking.layout import tracking_settings
    from longrecipe.tracking.logs import log_report
    from longrecipe.utils.logging import get_logger

    if not cfg.runs:
        raise ValueError("runs: give at least one folder holding results.json files, e.g. runs=[outputs/run]")
    result = build_report(list(cfg.runs), cfg.output_dir, position_stats=list(cfg.position_stats or []),
                          analyses=list(cfg.analyses or []))
    get_logger(__name__).info("\n%s", result["markdown"])
    settings = tracking_settings(cfg.get("wandb"))
    if settings is not None:
        log_report(settings, result, list(cfg.runs), cfg.output_dir, config=cfg)
    return result


@hydra.main(config_path=str(CONF_DIR), config_name="report", version_base="1.3")
def main(cfg: DictConfig) -> None:
    run_report(cfg)


if __name__ == "__main__":
    main()
