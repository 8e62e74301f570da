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
