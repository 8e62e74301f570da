"""Every conf/experiment/*.yaml composes through `longrecipe-run`'s config; each training stage's train config
(built by the pipeline's own code path) instantiates its position scheme, RoPE parameters, data module class and
strategy without weights or network. Plus the paper grid's Table 4 values and the run_meta derivation."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import hydra
import pytest
from omegaconf import OmegaConf

from longrecipe.config import CONF_DIR, compose
from longrecipe.experiments.paper import paper_experiments, render_yaml
from longrecipe.pipeline.stages import _train_cfg, _train_configure, run_meta

REPO = Path(__file__).resolve().parents[1]
EXPERIMENTS = sorted(p.stem for p in (CONF_DIR / "experiment").glob("*.yaml"))


def test_every_experiment_file_starts_with_header_and_launch():
    assert len(EXPERIMENTS) >= 33  # 24 Table-1 rows + 2 ablations + 5 token ratios + tiny_repro(+quick)
    for name in EXPERIMENTS:
        lines = (CONF_DIR / "experiment" / f"{name}.yaml").read_text().splitlines()
        assert lines[0] == "# @package _global_", name
        assert lines[1].startswith(f"# Launch: longrecipe-run experiment={name}"), name


def test_committed_paper_configs_match_generator():
    for name, exp in paper_experiments().items():
        assert (CONF_DIR / "experiment" / f"{name}.yaml").read_text() == render_yaml(exp), (
            f"{name}.yaml is stale: run .venv/bin/python experiments/paper/make_configs.py")
    out = subprocess.run([sys.executable, str(REPO / "experiments/paper/make_configs.py"), "--check"],
                         capture_output=True, text=True)
    assert out.returncode == 0, out.stderr


def _tiny_hf_config(base_length: int, theta: float):
    from longrecipe.tiny import tiny_model_config

    # stand-in for the hub model's config (no download): the real head_dim (128) and base window
    return tiny_model_config("llama", hidden_size=512, num_attention_heads=4, num_key_value_heads=2,
                             max_position_embeddings=base_length, rope_theta=theta)


@pytest.mark.parametrize("name", EXPERIMENTS)
def test_experiment_composes_and_instantiates(name, tmp_path):
    from longrecipe.models.rope import apply_rope_scaling

    run_cfg = compose("run", [f"experiment={name}"])
    OmegaConf.to_container(run_cfg, resolve=True)  # every interpolation resolves
    assert run_cfg.experiment_name == name
    meta = run_meta(run_cfg)
    assert meta["experiment"] == name and meta["method"] in {"FLT", "RPES", "PoSE", "LongRecipe"}
    stages = [s for s in ("extend", "replay") if s in run_cfg.stages or run_cfg.get("driver")]
    assert "extend" in stages
    for stage in stages:
        stage_cfg = _train_configure(run_cfg, stage)
        cfg = _train_cfg(stage_cfg, tmp_path / stage, {"model": {"tokenizer": None}})
        OmegaConf.to_container(cfg, resolve=True)
        assert hydra.utils.get_class(cfg.data._target_).__name__.endswith("DataModule")
        if "position" in cfg and stage == "extend":
            scheme = hydra.utils.instantiate(cfg.position)
            assert scheme.target_length == cfg.target_length
        rope = apply_rope_scaling(_tiny_hf_config(int(cfg.base_length), 5e5), OmegaConf.to_container(cfg.rope, resolve=True),
                                  int(cfg.target_length))
        assert rope["rope_theta"] > 0
        strategy = hydra.utils.instantiate(cfg.strategy)
        assert strategy is not None


@pytest.mark.parametrize("model,length,theta,factor,target,sample,strategy,devices", [
    ("llama3_8b", "80k", 48.9e6, 10, 81920, 24000, "deepspeed_zero3_offload", 1),
    ("llama3_8b", "128k", 131.5e6, 16, 131072, 38400, "deepspeed_ulysses", 2),
    ("qwen2_7b", "80k", 13.5e6, 4, 81920, 24000, "deepspeed_zero3_offload", 1),
    ("qwen2_7b", "128k", 13.5e6, 4, 131072, 38400, "deepspeed_zero3_offload", 1),
    ("mistral_7b", "128k", 13.5e6, 4, 131072, 38400, "deepspeed_ulysses", 2),
])
def test_table4_values(model, length, theta, factor, target, sample, strategy, devices, tmp_path):
    from longrecipe.data.datamodule import resolve_sample_length

    run_cfg = compose("run", [f"experiment={model}_{length}_longrecipe"])
    cfg = _train_cfg(_train_configure(run_cfg, "extend"), tmp_path, {})
    assert float(cfg.rope.rope_theta) == theta and int(cfg.rope.factor) == factor
    assert cfg.rope.type == "dynamic" and int(cfg.target_length) == target
    assert resolve_sample_length(cfg.data.sample_length, cfg.data.token_ratio, target) == sample
    # Table 4: batch 96 = 1 per device x 96 accumulation, 104 steps, lr 5e-5 -> 240M / 384M tokens
    assert cfg.data.batch_size * cfg.trainer.accumulate_grad_batches == 96
    assert cfg.trainer.max_steps == 104 and cfg.optim.lr == 5e-5
    assert 96 * 104 * sample in (239_616_000, 383_385_600)
    assert run_cfg.train_common.groups.strategy == strategy and cfg.trainer.devices == devices
    replay = _train_cfg(_train_configure(run_cfg, "replay"), tmp_path / "r", {})
    assert replay.optim.lr == 5e-6 and replay.optim.weight_decay == 0.1
    assert run_cfg.merge["lambda"] == 0.5 and run_cfg.merge.method == "linear"
    assert list(run_cfg.stages) == ["prepare", "extend", "replay", "merge", "evaluate", "report"]
    assert list(run_cfg.prepare.config.selection.anchors) == ["NUM", "PRON", "AUX"]


def test_flt_uses_full_length_and_ablations_and_ratios(tmp_path):
    from longrecipe.data.datamodule import resolve_sample_length

    flt = compose("run", ["experiment=llama3_8b_80k_flt"])
    cfg = _train_cfg(_train_configure(flt, "extend"), tmp_path, {})
    assert resolve_sample_length(cfg.data.sample_length, cfg.data.token_ratio, 81920) == 81920
    assert list(flt.stages) == ["extend", "evaluate", "report"] and run_meta(flt)["token_ratio"] == 1.0
    none = compose("run", ["experiment=llama3_8b_80k_longrecipe_sel_none"])
    assert "prepare" not in none.stages and run_meta(none)["selection"] == "none"
    rnd = compose("run", ["experiment=llama3_8b_80k_longrecipe_sel_random"])
    assert rnd.prepare.groups.selection == "random" and run_meta(rnd)["selection"] == "random"
    for pct, tokens in ((10, 8192), (20, 16384), (30, 24576), (40, 32768), (100, 81920)):
        run_cfg = compose("run", [f"experiment=llama3_8b_80k_longrecipe_ratio{pct}"])
        cfg = _train_cfg(_train_configure(run_cfg, "extend"), tmp_path / str(pct), {})
        assert resolve_sample_length(cfg.data.sample_length, cfg.data.token_ratio, 81920) == tokens
        assert run_meta(run_cfg)["token_ratio"] == pct / 100


def test_run_meta_derivation_and_wandb_layout():
    from longrecipe.pipeline.stages import tracking_context

    cfg = compose("run", ["experiment=qwen2_7b_80k_pose", "wandb=offline"])
    assert run_meta(cfg) == {"model_name": "qwen2_7b", "method": "PoSE", "target_length": 81920,
                             "token_ratio": 0.3, "selection": "none", "seed": 42, "max_skip": None,
                             "merge_lambda": None, "experiment": "qwen2_7b_80k_pose"}
    stage_cfg = _train_configure(cfg, "extend")
    assert "wandb" not in stage_cfg and "tracking" not in stage_cfg  # tracking never enters the config hash
    tracking = tracking_context(cfg, "extend")
    assert tracking["wandb"]["mode"] == "offline" and tracking["meta"] == run_meta(cfg)
    train_cfg = _train_cfg({**stage_cfg, "tracking": tracking}, Path("/tmp/x"), {})
    node = train_cfg.logger.wandb  # wandb=offline on the run turns on the wandb logger (+ CSV) of training stages
    assert set(train_cfg.logger) == {"csv", "wandb"}
    assert node.group == "qwen2_7b_80k_pose" and node.job_type == "extend" and node.mode == "offline"
    assert node.meta.method == "PoSE" and node.meta.target_length == 81920 and node.folder == "/tmp/x/run"
    assert compose("run", ["experiment=qwen2_7b_80k_pose"]).wandb.enabled is False  # off unless asked
    plain = compose("run", [])  # no experiment: derived from the default run
    assert run_meta(plain)["method"] == "LongRecipe" and run_meta(plain)["merge_lambda"] == 0.5


def test_unknown_driver_is_refused():
    from longrecipe.pipeline.stages import run_pipeline

    cfg = compose("run", ["driver=longrecipe.nope.run"])
    with pytest.raises(ValueError, match=r"driver='longrecipe.nope.run': module 'longrecipe.nope' not found"):
        run_pipeline(cfg)


def test_qwen2_paper_ruler_leaves_out_vt():
    """Paper (Appendix D): RULER is 13 subsets, 12 without variable tracking for Qwen2."""
    from longrecipe.pipeline.stages import _cmd_configure, compose_stage_config

    for name, want in (("qwen2_7b_80k_longrecipe", ["vt"]), ("llama3_8b_80k_longrecipe", [])):
        run_cfg = compose("run", [f"experiment={name}"])
        stage = _cmd_configure(run_cfg, "evaluate")
        cfg = compose_stage_config("evaluate", {**stage["groups"], "eval": "ruler"}, stage["config"])
        assert list(cfg.eval.get("exclude") or []) == want, name


def test_extension_tokens_count_samples_once_under_sequence_parallelism(tmp_path):
    """Table 4: Llama3 128k = 96 x 104 x 38400 tokens on 2 GPUs with Ulysses sp=2 (one sample split over both
    GPUs), not twice that — the replay budget (10% of it) depends on this count."""
    from longrecipe.pipeline.stages import _tokens_trained

    run_cfg = compose("run", ["experiment=llama3_8b_128k_longrecipe"])
    cfg = _train_cfg(_train_configure(run_cfg, "extend"), tmp_path, {})
    assert cfg.trainer.devices == 2 and cfg.strategy.sequence_parallel_size == 2
    assert _tokens_trained(cfg, 104) == 96 * 104 * 38400
    run_cfg = compose("run", ["experiment=llama3_8b_80k_longrecipe"])  # one GPU, no SP
    cfg = _train_cfg(_train_configure(run_cfg, "extend"), tmp_path / "b", {})
    assert _tokens_trained(cfg, 104) == 96 * 104 * 24000
