"""Every documented command (the ``# Launch:`` lines of conf/) composes with Hydra as written; the cheap ones run.

Placeholders ``<...>`` become ``x``; a multirun's sweep (``a=1,2``) is composed at each of its values; commands that
need a plugin that is not installed are skipped with the reason. The sweep commands run (as documented, outputs
redirected) in tests/test_sweeps.py.
"""

from __future__ import annotations

import importlib.util
import itertools

import pytest
from launch_lines import launch_lines

LAUNCHES = launch_lines()


def _expand(overrides: tuple[str, ...], multirun: bool) -> list[list[str]]:
    """Each combination of a multirun's sweep values (Hydra's own override parser), else the overrides as is."""
    if not multirun:
        return [list(overrides)]
    from hydra.core.override_parser.overrides_parser import OverridesParser

    parsed = OverridesParser.create().parse_overrides(list(overrides))
    choices = []
    for text, o in zip(overrides, parsed):
        if o.is_sweep_override():
            choices.append([f"{o.get_key_element()}={v}" for v in o.sweep_string_iterator()])
        else:
            choices.append([text])
    return [list(c) for c in itertools.product(*choices)]


def compose_launch(config: str, overrides: list[str]):
    from hydra import compose as hydra_compose
    from hydra import initialize_config_dir
    from hydra.core.global_hydra import GlobalHydra

    from longrecipe.config import CONF_DIR

    GlobalHydra.instance().clear()
    try:
        with initialize_config_dir(config_dir=str(CONF_DIR), version_base="1.3"):
            return hydra_compose(config, overrides, return_hydra_config=True)
    finally:
        GlobalHydra.instance().clear()


def test_every_conf_file_with_commands_is_found():
    sources = {x.source for x in LAUNCHES}
    assert {"sweep/max_skip.yaml", "sweep/token_ratio.yaml", "sweep/merge_lambda.yaml", "run.yaml",
            "wandb/offline.yaml", "dashboard.yaml"} <= sources
    assert len(LAUNCHES) > 100
    assert any(x.line.startswith("longrecipe-run -m experiment=tiny_repro_quick sweep=max_skip") for x in LAUNCHES)


@pytest.mark.parametrize("launch", LAUNCHES, ids=[f"{x.source}:{x.line[:70]}" for x in LAUNCHES])
def test_launch_line_composes(launch):
    if "hydra/launcher=slurm" in launch.overrides and \
            importlib.util.find_spec("hydra_plugins.hydra_submitit_launcher") is None:
        pytest.skip("hydra-submitit-launcher is not installed (pip install 'longrecipe[slurm]')")
    for overrides in _expand(launch.overrides, launch.multirun):
        cfg = compose_launch(launch.config, overrides)
        if launch.config == "run":  # the values every stage reads resolve (run_dir, sweep folders, run_meta)
            from longrecipe.pipeline.stages import run_meta

            assert cfg.run_dir and run_meta(cfg)["method"]


def test_launch_line_refused_when_wrong():
    """The check is real: a misspelt key or a missing ``+`` fails to compose."""
    from hydra.errors import ConfigCompositionException

    with pytest.raises(ConfigCompositionException):
        compose_launch("run", ["inputs.replay=/x"])  # `inputs: {}`: new keys need a leading +
    with pytest.raises(ConfigCompositionException):
        compose_launch("report", ["report.runs=[a]"])  # the form documented before (there is no `report` node)


CHEAP = {  # documented commands that run in seconds on the tiny defaults (outputs redirected to tmp_path)
    "longrecipe-train debug=fast_dev_run      # 2 batches, no checkpoints/loggers (Lightning fast_dev_run)",
    "longrecipe-dashboard                                          # build offline -> dashboard.json (no account)",
}


@pytest.mark.parametrize("line", sorted(CHEAP))
def test_cheap_launch_lines_run(line, tmp_path):
    """Run in-process through the function the entry point calls (``train`` / ``run_dashboard``)."""
    launch = next(x for x in LAUNCHES if line.startswith(x.line))
    if launch.config == "train":
        from longrecipe.config import compose
        from longrecipe.training.train import train

        result = train(compose("train", [*launch.overrides, f"run_dir={tmp_path}"]))
        assert result["global_step"] == 2 and (tmp_path / "summary.json").is_file()  # fast_dev_run: 2 batches
    else:
        from longrecipe.cli.dashboard import run_dashboard

        result = run_dashboard(compose_launch("dashboard", [*launch.overrides, f"output_dir={tmp_path}"]))
        assert (tmp_path / "dashboard.json").is_file() and result["missing"] == []
