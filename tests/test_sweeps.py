"""Sweeps: conf/sweep/*.yaml compose (joblib launcher, sweeper params), and a real 2-point multirun of
`longrecipe-run` through the joblib launcher (2 jobs) writes both runs with their run_meta.json."""

from __future__ import annotations

import importlib.util
import json
import os
import subprocess
import sys
from pathlib import Path

import pytest
from safetensors.torch import load_file

from longrecipe.config import compose

REPO = Path(__file__).resolve().parents[1]


@pytest.mark.parametrize("name,key,values", [
    ("token_ratio", "train_common.config.token_ratio", "0.1,0.2,0.3,0.4,1.0"),
    ("max_skip", "extend.config.position.max_skip", "null,16,64,256,1024"),
    ("merge_lambda", "merge.lambda", "0.3,0.4,0.5,0.6,0.7"),
])
def test_sweep_configs_compose(name, key, values):
    from hydra import compose as hydra_compose
    from hydra import initialize_config_dir
    from hydra.core.global_hydra import GlobalHydra

    from longrecipe.config import CONF_DIR

    GlobalHydra.instance().clear()
    with initialize_config_dir(config_dir=str(CONF_DIR), version_base="1.3"):
        cfg = hydra_compose("run", [f"sweep={name}"], return_hydra_config=True)
    assert cfg.hydra.sweeper.params[key] == values
    assert cfg.hydra.launcher._target_.endswith("JoblibLauncher") and cfg.hydra.launcher.n_jobs == 2
    assert str(cfg.run_dir).startswith(f"outputs/sweep/{name}/")
    GlobalHydra.instance().clear()


def test_sweep_run_dir_follows_swept_value():
    cfg = compose("run", ["sweep=token_ratio", "train_common.config.token_ratio=0.2", "sweep_root=/r"])
    assert cfg.run_dir == "/r/token_ratio/ratio0.2" and cfg.meta.token_ratio == 0.2
    cfg = compose("run", ["sweep=max_skip", "extend.config.position.max_skip=64", "sweep_root=/r"])
    assert cfg.run_dir == "/r/max_skip/M64"


def test_slurm_preset_composes_when_submitit_installed():
    if importlib.util.find_spec("hydra_plugins.hydra_submitit_launcher") is None:
        pytest.skip("hydra-submitit-launcher is not installed (pip install hydra-submitit-launcher)")
    from hydra import compose as hydra_compose
    from hydra import initialize_config_dir

    from longrecipe.config import CONF_DIR

    with initialize_config_dir(config_dir=str(CONF_DIR), version_base="1.3"):
        cfg = hydra_compose("run", ["hydra/launcher=slurm"], return_hydra_config=True)
    assert "SlurmLauncher" in cfg.hydra.launcher._target_ and cfg.hydra.launcher.gpus_per_node == 1


def test_merge_lambda_multirun_joblib(tmp_path, tiny_model_dir):
    base, tuned = tiny_model_dir(seed=0), tiny_model_dir(seed=1)
    env = {**os.environ, "TOKENIZERS_PARALLELISM": "false"}
    cmd = [sys.executable, "-m", "longrecipe.cli.run", "-m", "sweep=merge_lambda", "merge.lambda=0.25,0.75",
           "stages=[merge]", f"base_model={base}", f"+inputs.merge={tuned}", f"sweep_root={tmp_path / 'sw'}",
           f"hydra.sweep.dir={tmp_path / 'multirun'}"]
    out = subprocess.run(cmd, cwd=REPO, env=env, capture_output=True, text=True, timeout=300)
    assert out.returncode == 0, out.stderr[-3000:]
    a, b = load_file(str(base / "model.safetensors")), load_file(str(tuned / "model.safetensors"))
    for lam in (0.25, 0.75):
        run = tmp_path / "sw" / "merge_lambda" / f"lambda{lam}"
        marker = json.loads((run / "merge" / ".longrecipe_stage.json").read_text())
        assert marker["status"] == "complete" and marker["outputs"]["weights"] == [1 - lam, lam]
        meta = json.loads((run / "run_meta.json").read_text())
        assert meta["merge_lambda"] == lam and meta["experiment"] is None
        merged = load_file(str(run / "merge" / "model" / "model.safetensors"))
        name = "model.embed_tokens.weight"
        assert (merged[name] - ((1 - lam) * a[name] + lam * b[name])).abs().max() < 1e-6


def _plan(overrides: list[str]) -> dict:
    from longrecipe.experiments.tiny_repro import tiny_repro_plan

    return {s.name: s for s in tiny_repro_plan(compose("run", ["experiment=tiny_repro_quick", *overrides,
                                                                "sweep_root=/r"]))}


def test_max_skip_reaches_only_longrecipe_and_the_rest_is_shared():
    """The documented `-m experiment=tiny_repro_quick sweep=max_skip` gave FLT a max_skip (TypeError in FullLength);
    now M reaches LongRecipe only, and what M does not change runs once for all points."""
    points = {m: _plan(["sweep=max_skip", f"extend.config.position.max_skip={m}"]) for m in (16, 64)}
    for name in ("pretrain", "base", "flt/seed0", "rpes/seed0", "pose/seed0"):
        assert points[16][name].run_dir == points[64][name].run_dir
        assert points[16][name].run_dir.startswith("/r/max_skip/shared/")
    for name in ("flt/seed0", "rpes/seed0", "pose/seed0"):
        assert "position" not in points[16][name].values["extend"]["config"]
    for m in (16, 64):
        lr = points[m]["longrecipe/seed0"]
        assert lr.values["extend"]["config"]["position"] == {"max_skip": m} and lr.values["stages"] == ["extend",
                                                                                                       "replay"]
        merge = points[m]["longrecipe/seed0/merge"]
        assert merge.values["inputs"] == {"merge": f"{lr.run_dir}/replay/model"}
        assert merge.values["stages"] == ["merge", "evaluate"]
    assert points[16]["longrecipe/seed0"].run_dir != points[64]["longrecipe/seed0"].run_dir


def test_token_ratio_and_merge_lambda_sweeps_share_what_they_do_not_change():
    ratio = {r: _plan(["sweep=token_ratio", f"train_common.config.token_ratio={r}"]) for r in (0.2, 0.4)}
    same = {n for n in ratio[0.2] if ratio[0.2][n].run_dir == ratio[0.4][n].run_dir}
    assert same == {"pretrain", "base", "flt/seed0"}  # FLT always trains on full-length samples
    lam = {x: _plan(["sweep=merge_lambda", f"merge.lambda={x}"]) for x in (0.3, 0.7)}
    same = {n for n in lam[0.3] if lam[0.3][n].run_dir == lam[0.7][n].run_dir}
    assert same == set(lam[0.3]) - {"longrecipe/seed0/merge"}  # extension + replay shared; merge per λ


def test_position_knob_unknown_to_every_method_still_fails():
    with pytest.raises(ValueError, match="no position scheme 'yarn'"):
        from longrecipe.experiments.tiny_repro import position_keys

        position_keys("yarn")
    plan = _plan(["tiny_repro.methods=[flt,longrecipe]", "+extend.config.position.max_skp=3"])
    assert plan["flt/seed0"].values["extend"]["config"]["position"] == {"max_skp": 3}  # a typo is not swallowed


def _documented_sweep_commands(name: str) -> list:
    from launch_lines import launch_lines

    return [x for x in launch_lines() if x.source == f"sweep/{name}.yaml" and "x" not in
            [v.split("=", 1)[-1] for v in x.overrides] and "hydra/launcher=slurm" not in x.overrides
            and not any(o.startswith("experiment=") and "tiny" not in o for o in x.overrides)]


@pytest.mark.slow
@pytest.mark.parametrize("name", ["max_skip", "token_ratio", "merge_lambda"])
def test_documented_sweep_commands_run(name, tmp_path):
    """Every runnable `# Launch:` line of conf/sweep/<name>.yaml as written (outputs redirected), then its report."""
    commands = _documented_sweep_commands(name)
    assert commands
    env = {**os.environ, "TOKENIZERS_PARALLELISM": "false", "WANDB_MODE": "offline"}
    for i, launch in enumerate(commands):
        module = {"run": "longrecipe.cli.run", "report": "longrecipe.cli.report"}[launch.config]
        args = [o.replace("outputs/sweep", str(tmp_path / "sw")) for o in launch.overrides]
        extra = [f"sweep_root={tmp_path / 'sw'}", f"hydra.sweep.dir={tmp_path / f'mr{i}'}"] if launch.multirun \
            else [f"hydra.run.dir={tmp_path / f'report{i}'}"]
        cmd = [sys.executable, "-m", module, *(["-m"] if launch.multirun else []), *args, *extra]
        out = subprocess.run(cmd, cwd=tmp_path, env=env, capture_output=True, text=True, timeout=3600)
        assert out.returncode == 0, f"{launch.line}\n{out.stderr[-3000:]}"
        if launch.config == "report":
            main = (tmp_path / f"report{i}" / "table1_main.csv").read_text()
            assert "LongRecipe" in main
