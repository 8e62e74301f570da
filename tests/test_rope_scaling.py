"""RoPE scaling presets (conf/rope): exact rope_parameters, forward up to target_length, bad input."""

from __future__ import annotations

import pytest
import torch

from longrecipe.config import compose
from longrecipe.models.loading import build_model
from longrecipe.models.rope import apply_rope_scaling, ntk_theta, scaled_config
from longrecipe.tiny import tiny_model_config

BASE, TARGET = 256, 1024


@pytest.fixture(scope="module")
def cfg():
    return tiny_model_config("llama", max_position_embeddings=BASE)  # head_dim 16, theta 1e4


def test_exact_parameters_per_type(cfg):
    orig = {"original_max_position_embeddings": BASE}
    assert apply_rope_scaling(cfg, {"type": "none"}, TARGET) == {"rope_type": "default", "rope_theta": 10000.0}
    assert apply_rope_scaling(cfg, {"type": "theta", "rope_theta": 5e5}, TARGET) == {
        "rope_type": "default", "rope_theta": 5e5}
    assert apply_rope_scaling(cfg, {"type": "linear", **orig}, TARGET) == {
        "rope_type": "linear", "factor": 4.0, "rope_theta": 10000.0}
    # NTK base: 1e4 * 4 ** (16 / 14) = 48760.546...
    dyn = apply_rope_scaling(cfg, {"type": "dynamic_ntk", "rope_theta": "ntk", **orig}, TARGET)
    assert dyn["rope_type"] == "dynamic" and dyn["factor"] == 4.0
    assert dyn["rope_theta"] == pytest.approx(10000.0 * 4 ** (16 / 14), rel=1e-12)
    assert dyn["rope_theta"] == pytest.approx(48760.546168, rel=1e-9)
    assert apply_rope_scaling(cfg, {"type": "yarn", "beta_fast": 32, **orig}, TARGET) == {
        "rope_type": "yarn", "factor": 4.0, "rope_theta": 10000.0, "original_max_position_embeddings": BASE,
        "beta_fast": 32.0}
    assert apply_rope_scaling(cfg, {"type": "llama3", **orig}, TARGET) == {
        "rope_type": "llama3", "factor": 4.0, "rope_theta": 10000.0, "original_max_position_embeddings": BASE,
        "low_freq_factor": 1.0, "high_freq_factor": 4.0}
    assert cfg.rope_parameters == {"rope_type": "default", "rope_theta": 10000.0}  # pure


def test_paper_table4_presets(cfg):
    """Paper Table 4 values land unchanged in rope_parameters (the real models are too big to build here)."""
    for name, theta, factor in [("paper_llama3_80k", 48.9e6, 10), ("paper_llama3_128k", 131.5e6, 16),
                                ("paper_qwen2", 13.5e6, 4)]:
        rope = compose("train", [f"rope={name}"]).rope
        params = apply_rope_scaling(cfg, rope, TARGET)
        assert params == {"rope_type": "dynamic", "factor": float(factor), "rope_theta": theta}


def test_ntk_theta_formula():
    assert ntk_theta(500_000.0, 10.0, 128) == pytest.approx(500_000.0 * 10 ** (128 / 126), rel=1e-12)


@pytest.mark.parametrize("preset", ["none", "theta", "linear", "dynamic_ntk", "yarn", "llama3"])
def test_each_preset_builds_a_model_that_runs_up_to_target(preset, tmp_path):
    composed = compose("train", [f"rope={preset}", f"base_length={BASE}", f"target_length={TARGET}"])
    torch.manual_seed(0)
    model = build_model(composed.model, composed.rope, TARGET)
    assert model.config.max_position_embeddings == TARGET
    pos = torch.tensor([[0, 1, 300, 700, TARGET - 1]])
    out = model(input_ids=torch.tensor([[5, 6, 7, 8, 9]]), position_ids=pos, attention_mask=torch.ones(1, 5))
    assert torch.isfinite(out.logits).all()
    from transformers import AutoModelForCausalLM

    model.save_pretrained(str(tmp_path / "m"))
    again = AutoModelForCausalLM.from_pretrained(str(tmp_path / "m"))
    assert again.config.rope_parameters == model.config.rope_parameters
    assert again.config.max_position_embeddings == TARGET
    torch.testing.assert_close(again(input_ids=torch.tensor([[5, 6, 7, 8, 9]]), position_ids=pos,
                                     attention_mask=torch.ones(1, 5)).logits, out.logits)


def test_scaling_changes_the_rotary_frequencies(cfg):
    from transformers.models.llama.modeling_llama import LlamaRotaryEmbedding

    base = LlamaRotaryEmbedding(cfg).inv_freq
    linear = LlamaRotaryEmbedding(scaled_config(cfg, {"type": "linear", "factor": 4}, TARGET)).inv_freq
    torch.testing.assert_close(linear, base / 4)
    theta = LlamaRotaryEmbedding(scaled_config(cfg, {"type": "theta", "rope_theta": 1e6}, TARGET)).inv_freq
    torch.testing.assert_close(theta, 1.0 / (1e6 ** (torch.arange(0, 16, 2).float() / 16)))


@pytest.mark.parametrize("rope, message", [
    ({"type": "alibi"}, "rope.type must be one of"),
    ({"type": "linear", "factor": 1.0}, "rope.factor must be > 1 for rope.type='linear', got 1"),
    ({"type": "dynamic", "factor": 0.5}, "rope.factor must be > 1"),
    ({"type": "yarn", "original_max_position_embeddings": 2048}, r"= target_length 1024 / original 2048"),
    ({"type": "theta"}, "rope.rope_theta is required for rope.type='theta'"),
    ({"type": "linear", "rope_theta": -1}, "rope.rope_theta must be > 0"),
    ({"type": "linear", "rope_theta": "big"}, "rope.rope_theta must be a number, null or 'ntk'"),
    ({"type": "llama3", "low_freq_factor": 4, "high_freq_factor": 1}, "rope.high_freq_factor must be >"),
])
def test_bad_rope_config(cfg, rope, message):
    with pytest.raises(ValueError, match=message):
        apply_rope_scaling(cfg, rope, TARGET)
