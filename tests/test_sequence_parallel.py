"""Single-process tests of the sequence-parallel pieces: layout, sharding, head checks, loss, tiling."""

from __future__ import annotations

import copy

import pytest
import torch

from longrecipe.parallel import (
    SequenceParallelLayout,
    check_sequence_parallel_heads,
    pad_to_multiple,
    sequence_parallel_loss,
    shard_batch,
    shift_labels,
    token_loss_sum,
)
from longrecipe.tiny import tiny_model_config

# ---------------------------------------------------------------- layout


def test_layout_groups_are_consecutive_blocks():
    layout = SequenceParallelLayout(world_size=8, sp_size=4)
    assert layout.dp_size == 2
    assert layout.sp_groups() == [[0, 1, 2, 3], [4, 5, 6, 7]]
    assert layout.dp_groups() == [[0, 4], [1, 5], [2, 6], [3, 7]]
    assert [layout.sp_rank(r) for r in range(8)] == [0, 1, 2, 3, 0, 1, 2, 3]
    assert [layout.dp_rank(r) for r in range(8)] == [0, 0, 0, 0, 1, 1, 1, 1]


def test_layout_rejects_sp_not_dividing_world():
    with pytest.raises(ValueError, match=r"sequence_parallel_size=3 must be >= 1 and divide the world size 4 .*\[1, 2, 4\]"):
        SequenceParallelLayout(world_size=4, sp_size=3)


# ---------------------------------------------------------------- sharding


def _batch():
    return {
        "input_ids": torch.tensor([[10, 11, 12, 13, 14]]),
        "labels": torch.tensor([[10, 11, -100, 13, 14]]),
        "position_ids": torch.tensor([[0, 1, 7, 8, 20]]),
        "attention_mask": torch.ones(1, 5, dtype=torch.int64),
        "doc_ids": ["a"],
    }


def test_shift_labels_exact():
    assert shift_labels(torch.tensor([[10, 11, -100, 13, 14]])).tolist() == [[11, -100, 13, 14, -100]]


def test_shard_batch_pads_shifts_then_splits():
    b = _batch()
    r0, r1 = shard_batch(b, 0, 2), shard_batch(b, 1, 2)
    # T=5 padded to 6 by repeating the last token/position; labels shifted on the full sequence first
    assert r0["input_ids"].tolist() == [[10, 11, 12]] and r1["input_ids"].tolist() == [[13, 14, 14]]
    assert r0["position_ids"].tolist() == [[0, 1, 7]] and r1["position_ids"].tolist() == [[8, 20, 20]]
    assert r0["shift_labels"].tolist() == [[11, -100, 13]] and r1["shift_labels"].tolist() == [[14, -100, -100]]
    assert r0["attention_mask"].tolist() == [[1, 1, 1]] and r1["attention_mask"].tolist() == [[1, 1, 1]]
    assert "labels" not in r0 and r0["doc_ids"] == ["a"]
    # the input batch is not modified
    assert b["input_ids"].shape == (1, 5) and "labels" in b


def test_shard_batch_sp1_only_shifts():
    out = shard_batch(_batch(), 0, 1)
    assert out["input_ids"].tolist() == [[10, 11, 12, 13, 14]]
    assert out["shift_labels"].tolist() == [[11, -100, 13, 14, -100]]
    no_labels = {k: v for k, v in _batch().items() if k != "labels"}
    assert shard_batch(no_labels, 1, 2)["shift_labels"].tolist() == [[14, -100, -100]]
    pre = {**_batch(), "shift_labels": torch.tensor([[1, 2, 3, 4, 5]])}
    assert shard_batch(pre, 0, 2)["shift_labels"].tolist() == [[1, 2, 3]]


def test_pad_to_multiple_exact():
    out = pad_to_multiple({"input_ids": torch.tensor([[1, 2, 3]]), "labels": torch.tensor([[1, 2, 3]]),
                           "position_ids": torch.tensor([[0, 4, 9]])}, 4)
    assert out["input_ids"].tolist() == [[1, 2, 3, 3]]
    assert out["labels"].tolist() == [[1, 2, 3, -100]]
    assert out["position_ids"].tolist() == [[0, 4, 9, 9]]


def test_shard_batch_bad_inputs():
    b = _batch()
    with pytest.raises(ValueError, match="need 0 <= sp_rank < sp_size, got sp_rank=2, sp_size=2"):
        shard_batch(b, 2, 2)
    no_pos = {k: v for k, v in b.items() if k != "position_ids"}
    with pytest.raises(ValueError, match="sequence-parallel batches need `position_ids`"):
        shard_batch(no_pos, 0, 2)
    with pytest.raises(ValueError, match=r"packed batches \(\['seq_lens'\]\) are not supported"):
        shard_batch({**b, "seq_lens": torch.tensor([[2, 3]])}, 0, 2)
    left_pad = {**b, "attention_mask": torch.tensor([[0, 1, 1, 1, 1]])}
    with pytest.raises(ValueError, match="attention_mask must be all ones"):
        shard_batch(left_pad, 0, 2)
    # trailing padding is fine (causal attention never looks ahead)
    shard_batch({**b, "attention_mask": torch.tensor([[1, 1, 1, 0, 0]])}, 0, 2)


# ---------------------------------------------------------------- heads


def test_head_checks_accept_even_and_replicated_kv():
    check_sequence_parallel_heads(tiny_model_config("llama"), 2)  # 4 q / 2 kv
    check_sequence_parallel_heads(tiny_model_config("qwen2"), 4)  # 2 kv heads replicated over 4 ranks
    check_sequence_parallel_heads(tiny_model_config("llama", num_key_value_heads=1), 4)  # MQA


def test_head_checks_name_both_numbers():
    with pytest.raises(ValueError, match=r"sequence_parallel_size=3 does not divide the model's "
                                         r"num_attention_heads=4.*\[1, 2, 4\]"):
        check_sequence_parallel_heads(tiny_model_config("llama"), 3)
    cfg = tiny_model_config("llama", hidden_size=96, num_attention_heads=6, num_key_value_heads=3)
    with pytest.raises(ValueError, match=r"sequence_parallel_size=2 and the model's num_key_value_heads=3 are "
                                         r"incompatible.*\[1, 3, 6\]"):
        check_sequence_parallel_heads(cfg, 2)


def test_enable_ulysses_rejects_eager_core():
    from longrecipe.parallel import enable_ulysses

    with pytest.raises(ValueError, match=r"core_attn_implementation='eager' is not supported under Ulysses"):
        enable_ulysses(torch.nn.Linear(2, 2), core_attn_implementation="eager")


def test_ulysses_attention_without_enable_raises():
    from longrecipe.parallel.ulysses import ulysses_attention_forward

    q = torch.zeros(1, 2, 4, 8)
    with pytest.raises(RuntimeError, match="only valid after longrecipe.parallel.enable_ulysses"):
        ulysses_attention_forward(None, q, q, q, None, position_ids=torch.arange(4)[None])


# ---------------------------------------------------------------- loss


def test_token_loss_sum_and_single_process_reduction():
    logits = torch.zeros(1, 3, 4)
    logits[0, 0, 1] = 2.0
    targets = torch.tensor([[1, -100, 3]])
    loss_sum, n = token_loss_sum(logits, targets)
    expected = -(2.0 - torch.log(torch.exp(torch.tensor(2.0)) + 3)) + torch.log(torch.tensor(4.0))
    assert int(n) == 2
    assert float(loss_sum) == pytest.approx(float(expected), rel=1e-6)
    objective, logged = sequence_parallel_loss(loss_sum, n)
    assert float(objective) == pytest.approx(float(expected) / 2, rel=1e-6)
    assert not logged.requires_grad
    zero, _ = sequence_parallel_loss(torch.tensor(0.0), 0)
    assert float(zero) == 0.0


# ---------------------------------------------------------------- tiling


def _tiny(dtype=torch.float64):
    from transformers import AutoModelForCausalLM

    torch.manual_seed(0)
    return AutoModelForCausalLM.from_config(tiny_model_config("llama"), attn_implementation="sdpa").to(dtype)


def _grads(model, loss):
    model.zero_grad(set_to_none=True)
    loss.backward()
    return {n: p.grad.clone() for n, p in model.named_parameters()}


def test_mlp_tile_count():
    from longrecipe.parallel.tiling import mlp_tile_count

    assert mlp_tile_count(1000, 64, None) == 16
    assert mlp_tile_count(64, 64, None) == 1
    assert mlp_tile_count(10, 64, 4) == 4
    assert mlp_tile_count(3, 64, 8) == 3
    with pytest.raises(ValueError, match="strategy.tiled_mlp_shards must be >= 1 or null"):
        mlp_tile_count(10, 64, 0)


def test_tiled_mlp_and_tiled_logits_are_exact():
    from longrecipe.parallel.tiling import disable_tiled_mlp, enable_tiled_mlp, tiled_token_loss_sum

    model = _tiny()
    gen = torch.Generator().manual_seed(1)
    ids = torch.randint(3, 512, (2, 40), generator=gen)
    pos = torch.arange(40).expand(2, 40)
    targets = shift_labels(ids)

    def loss_of(m, tiles=None):
        hidden = m.model(input_ids=ids, position_ids=pos, attention_mask=torch.ones_like(ids),
                         use_cache=False).last_hidden_state
        if tiles:
            s, n = tiled_token_loss_sum(hidden, m.lm_head, targets, tiles)
        else:
            s, n = token_loss_sum(m.lm_head(hidden), targets)
        return s / n

    ref_loss = loss_of(model)
    ref = _grads(model, ref_loss)
    tiled = copy.deepcopy(model)
    assert enable_tiled_mlp(tiled, shards=3) == 2
    loss = loss_of(tiled, tiles=5)
    grads = _grads(tiled, loss)
    assert float(loss.detach()) == pytest.approx(float(ref_loss.detach()), rel=1e-13)
    for name in ref:
        torch.testing.assert_close(grads[name], ref[name], rtol=1e-11, atol=1e-13)
    assert disable_tiled_mlp(tiled) == 2
    assert "forward" not in vars(tiled.model.layers[0].mlp)
    assert set(tiled.state_dict()) == set(model.state_dict())


def test_tiled_logits_rejects_bad_shapes():
    from longrecipe.parallel.tiling import tiled_token_loss_sum

    with pytest.raises(ValueError, match="strategy.tiled_logits_shards must be >= 1"):
        tiled_token_loss_sum(torch.zeros(1, 4, 8), torch.nn.Linear(8, 5), torch.zeros(1, 4, dtype=torch.long), 0)
    with pytest.raises(ValueError, match=r"must share \[batch, seq\]"):
        tiled_token_loss_sum(torch.zeros(1, 4, 8), torch.nn.Linear(8, 5), torch.zeros(1, 3, dtype=torch.long), 2)


def test_activation_offload_keeps_gradients_and_catches_checkpoint_inputs():
    from longrecipe.parallel.tiling import activation_offload

    model = _tiny()
    model.activation_checkpointing_enable(activation_checkpointing_kwargs={"use_reentrant": False})
    model.train()
    ids = torch.randint(3, 512, (1, 24), generator=torch.Generator().manual_seed(2))

    def loss():
        return model(input_ids=ids, labels=ids, use_cache=False).loss

    ref = _grads(model, loss())
    with activation_offload(True):
        out = loss()
    got = _grads(model, out)
    for name in ref:
        torch.testing.assert_close(got[name], ref[name], rtol=0, atol=0)
    # what save_on_cpu moves: every tensor saved for backward, which under gradient checkpointing includes each
    # decoder layer's [B, T, hidden] input
    shapes = []
    with torch.autograd.graph.saved_tensors_hooks(lambda t: shapes.append(tuple(t.shape)) or t, lambda t: t):
        model(input_ids=ids, use_cache=False)
    assert shapes.count((1, 24, 64)) >= model.config.num_hidden_layers
