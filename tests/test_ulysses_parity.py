"""Ulysses sequence parallelism (sp=2, 2 gloo processes) equals the single-process reference.

One spawn runs every case (process start-up dominates the cost). The reference is the full sample on
one process with an explicit ``[B, 1, T, T]`` causal mask, so position gaps can only change RoPE; the
"naive" loss (sdpa, no mask) is what transformers computes when it reads gaps as document boundaries.
"""

from __future__ import annotations

import numpy as np
import pytest

from longrecipe.positions import FullLength, LongRecipePositions, PoSE

pytestmark = pytest.mark.distributed

T = 96
TARGET = 1024


def _positions(scheme: str, seed: int = 0, length: int = T) -> list[int]:
    ids = np.arange(3, 3 + length)
    rng = np.random.default_rng(seed)
    if scheme == "flt":
        pos = FullLength(target_length=TARGET)(ids, rng)
    elif scheme == "pose":
        pos = PoSE(target_length=TARGET, num_chunks=2)(ids, rng)
    else:
        starts = np.array([0, 9, 23, 40, 47, 61, 80])
        starts = starts[starts < length]
        pos = LongRecipePositions(target_length=TARGET, delimiter_ids=[5])(ids, rng, segment_starts=starts)
    return [int(p) for p in pos]


def _specs() -> list[dict]:
    specs = []
    for arch in ("llama", "qwen2"):
        for scheme in ("flt", "pose", "longrecipe"):
            specs.append({"name": f"{arch}-{scheme}-float64", "arch": arch, "dtype": "float64",
                          "position_ids": [_positions(scheme)], "config": {"max_position_embeddings": TARGET}})
        specs.append({"name": f"{arch}-longrecipe-float32", "arch": arch, "dtype": "float32",
                      "position_ids": [_positions("longrecipe", seed=3)],
                      "config": {"max_position_embeddings": TARGET}})
    dynamic = {"max_position_embeddings": 256,
               "rope_parameters": {"rope_type": "dynamic", "factor": 4.0, "rope_theta": 10_000.0}}
    specs += [
        # memory switches: tiled MLP (3 tiles) + tiled logits/loss (4 tiles), batch of 2, some ignored labels
        {"name": "tiled", "arch": "llama", "dtype": "float64", "tiled_mlp": True, "tiled_mlp_shards": 3,
         "tiled_logits_shards": 4, "position_ids": [_positions("longrecipe"), _positions("pose", seed=5)],
         "ignored_labels": [[0, 5], [1, 47], [1, 48], [1, 95]], "config": {"max_position_embeddings": TARGET}},
        # MQA: 1 KV head replicated to both ranks
        {"name": "llama-mqa", "arch": "llama", "dtype": "float64", "position_ids": [_positions("longrecipe")],
         "config": {"num_key_value_heads": 1, "max_position_embeddings": TARGET}},
        # odd length: padded to a multiple of sp
        {"name": "odd-length", "arch": "llama", "dtype": "float64",
         "position_ids": [_positions("longrecipe", length=T - 3)], "config": {"max_position_embeddings": TARGET}},
        # dynamic NTK RoPE reads the maximum position: both shards must see the group's maximum
        {"name": "dynamic-rope", "arch": "llama", "dtype": "float64", "position_ids": [_positions("longrecipe")],
         "config": dynamic},
        {"name": "dynamic-rope-unsynced", "arch": "llama", "dtype": "float64", "sync_dynamic_rope": False,
         "position_ids": [_positions("longrecipe")], "config": dynamic},
    ]
    return specs


@pytest.fixture(scope="module")
def parity() -> dict[str, dict]:
    from longrecipe.parallel.parity import run_parity

    return {r["name"]: r for r in run_parity(_specs(), sp_size=2)}


def _n_params(arch: str, **config) -> int:
    from transformers import AutoModelForCausalLM

    from longrecipe.tiny import tiny_model_config

    return len(list(AutoModelForCausalLM.from_config(tiny_model_config(arch, **config)).parameters()))


@pytest.mark.parametrize("arch", ["llama", "qwen2"])
@pytest.mark.parametrize("scheme", ["flt", "pose", "longrecipe"])
def test_float64_loss_and_gradients_match_single_process(parity, arch, scheme):
    r = parity[f"{arch}-{scheme}-float64"]
    assert r["sp_size"] == 2 and r["dtype"] == "float64"
    assert r["missing_grads"] == []
    assert r["n_params_compared"] == _n_params(arch)
    assert r["loss_rel_diff"] <= 1e-12
    assert r["max_grad_rel_diff"] <= 1e-10
    # eager attention (float32 softmax) as the reference: within the 1e-5
    assert r["eager_loss_rel_diff"] <= 1e-6
    assert r["max_eager_grad_rel_diff"] <= 1e-5


@pytest.mark.parametrize("arch", ["llama", "qwen2"])
def test_float32_loss_and_gradients_match(parity, arch):
    r = parity[f"{arch}-longrecipe-float32"]
    assert r["loss_rel_diff"] <= 1e-5
    assert r["max_grad_rel_diff"] <= 1e-5


@pytest.mark.parametrize("scheme", ["pose", "longrecipe"])
@pytest.mark.parametrize("arch", ["llama", "qwen2"])
def test_position_gaps_are_not_document_boundaries(parity, arch, scheme):
    """With gaps, the masked-free sdpa loss differs (the test can fail); Ulysses matches the full-causal one."""
    r = parity[f"{arch}-{scheme}-float64"]
    assert abs(r["naive_loss"] - r["reference_loss"]) / r["reference_loss"] > 1e-4
    assert r["loss_rel_diff"] <= 1e-12


def test_flt_has_no_boundaries_to_confuse(parity):
    r = parity["llama-flt-float64"]
    assert abs(r["naive_loss"] - r["reference_loss"]) <= 1e-12 * r["reference_loss"]


@pytest.mark.parametrize("name", ["tiled", "llama-mqa", "odd-length", "dynamic-rope"])
def test_switches_replication_padding_and_dynamic_rope_match(parity, name):
    r = parity[name]
    assert r["missing_grads"] == []
    assert r["loss_rel_diff"] <= 1e-12
    assert r["max_grad_rel_diff"] <= 1e-10


def test_dynamic_rope_needs_the_group_maximum(parity):
    """Negative control: without the RoPE hook each shard scales by its own maximum and parity breaks."""
    assert parity["dynamic-rope-unsynced"]["loss_rel_diff"] > 1e-6
    assert parity["dynamic-rope"]["reference_loss"] == pytest.approx(parity["dynamic-rope-unsynced"]["reference_loss"],
                                                                     rel=1e-15)
