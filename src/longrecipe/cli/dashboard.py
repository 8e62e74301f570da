"""``longrecipe-dashboard``: build the comparison workspace (conf/dashboard.yaml), check it against offline runs,
optionally save it to wandb. The definition lives in :mod:`longrecipe.tracking.dashboard`."""

from __future__ import annotations

from pathlib import Path

import hydra
from omegaconf import DictConfig, OmegaConf

from longrecipe.config import CONF_DIR
from longrecipe.tracking.dashboard import build_workspace, check_spec, dashboard_spec, referenced
from longrecipe.tracking.offline import find_offline_runs
from longrecipe.utils.io import write_json_atomic
from longrecipe.utils.logging import get_logger

log = get_logger(__name__)


def run_dashboard(cfg: DictConfig) -> dict:
    """Build (and check / save) the workspace; writes ``dashboard.json`` (spec + workspace model) to output_dir."""
    spec = dashboard_spec(list(cfg.evals), list(cfg.sections))
    filters = OmegaConf.to_container(cfg.filters, resolve=True) if cfg.get("filters") else {}
    if cfg.save and not cfg.entity:
        raise ValueError("save=true needs entity=<your wandb user or team> (and WANDB_API_KEY)")
    workspace = build_workspace(spec, entity=str(cfg.entity or "offline"), project=str(cfg.project),
                                name=str(cfg.name), filters=filters)
    missing: list[str] = []
    checked = 0
    for folder in cfg.check_runs or []:
        if not Path(str(folder)).exists():
            raise ValueError(f"check_runs: {folder} does not exist; give folders holding offline runs")
    if cfg.check_runs:
        runs = [r for folder in cfg.check_runs for r in find_offline_runs(str(folder))]
        if not runs:
            raise ValueError(f"check_runs={list(cfg.check_runs)} holds no offline-run-* folder; run with "
                             "wandb=offline (or logger=wandb) first")
        checked = len(runs)
        missing = [f"{r.kind}:{r.key}" for r in check_spec(spec, runs)]
    out = Path(str(cfg.output_dir))
    result = {"name": str(cfg.name), "project": str(cfg.project), "entity": cfg.entity, "filters": filters,
              "keys": [f"{r.kind}:{r.key}" for r in referenced(spec)], "checked_runs": checked, "missing": missing,
              "sections": [{"name": s.name, "panels": [p.title for p in s.panels]} for s in spec],
              "workspace": workspace._to_model().model_dump(mode="json")}
    write_json_atomic(out / "dashboard.json", result)
    if missing:
        raise ValueError(f"the dashboard reads keys no run under {list(cfg.check_runs)} logged: {missing}; log them "
                         "(see docs/wandb.md) or leave their sections/evals out")
    if cfg.save:
        workspace.save()
        log.info("workspace saved: %s", workspace.url)
    log.info("dashboard %r: %d sections, %d keys%s -> %s", cfg.name, len(spec), len(result["keys"]),
             f", all logged by {checked} runs" if checked else "", out / "dashboard.json")
    return result


@hydra.main(version_base="1.3", config_path=str(CONF_DIR), config_name="dashboard")
def main(cfg: DictConfig) -> None:
    run_dashboard(cfg)


if __name__ == "__main__":
    main()
