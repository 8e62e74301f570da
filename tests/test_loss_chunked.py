"""Chunked next-token loss: equal to plain F.cross_entropy (loss and gradients), bounded memory."""

from __future__ import annotations

import math

import pytest
import torch
import torch.nn.functional as F

from longrecipe.models.loss import (
    causal_lm_loss,
    chunked_causal_lm_loss,
    full_causal_lm_loss,
    resolve_loss_impl,
    shift_labels,
)


def _inputs(b=2, t=37, d=16, v=50, seed=0, ignore_frac=0.2):
    g = torch.Generator().manual_seed(seed)
    hidden = torch.randn(b, t, d, generator=g, dtype=torch.float64).requires_grad_(True)
    weight = (torch.randn(v, d, generator=g, dtype=torch.float64) * 0.3).requires_grad_(True)
    labels = torch.randint(0, v, (b, t), generator=g)
    labels[torch.rand(b, t, generator=g) < ignore_frac] = -100
    return hidden, weight, labels


def _reference(hidden, weight, labels):
    logits = hidden[:, :-1] @ weight.T
    return F.cross_entropy(logits.reshape(-1, logits.shape[-1]), labels[:, 1:].reshape(-1), ignore_index=-100)


def test_shift_labels_exact():
    y = torch.tensor([[5, 6, -100, 8]])
    assert shift_labels(y).tolist() == [[6, -100, 8, -100]]


def test_hand_computed_value():
    # two positions, vocab 2, zero hidden state -> uniform logits -> loss ln 2 for the single target
    hidden = torch.zeros(1, 2, 3)
    weight = torch.ones(2, 3)
    labels = torch.tensor([[0, 1]])
    loss, n = chunked_causal_lm_loss(hidden, weight, labels, chunk_size=1)
    assert int(n) == 1
    assert loss.item() == pytest.approx(math.log(2.0), abs=1e-7)


@pytest.mark.parametrize("chunk_size", [1, 5, 16, 36, 37, 1000])
def test_chunked_equals_plain_cross_entropy_loss_and_grads(chunk_size):
    hidden, weight, labels = _inputs()
    ref = _reference(hidden, weight, labels)
    g_h, g_w = torch.autograd.grad(ref, (hidden, weight))
    loss, n = chunked_causal_lm_loss(hidden, weight, labels, chunk_size)
    c_h, c_w = torch.autograd.grad(loss, (hidden, weight))
    assert int(n) == int((labels[:, 1:] != -100).sum())
    torch.testing.assert_close(loss, ref, rtol=1e-5, atol=0)
    torch.testing.assert_close(c_h, g_h, rtol=1e-5, atol=1e-12)
    torch.testing.assert_close(c_w, g_w, rtol=1e-5, atol=1e-12)


def test_chunked_equals_full_fp32_and_module_head():
    hidden, weight, labels = _inputs(seed=3)
    hidden32 = hidden.detach().float().requires_grad_(True)
    head = torch.nn.Linear(16, 50, bias=True).double()
    with torch.no_grad():
        head.weight.copy_(weight)
    full, n_full = full_causal_lm_loss(hidden, head.weight, labels, lm_head_bias=head.bias)
    via_module, n_mod = chunked_causal_lm_loss(hidden, head, labels, chunk_size=8)
    torch.testing.assert_close(via_module, full, rtol=1e-5, atol=0)
    assert int(n_full) == int(n_mod)
    loss32, _ = chunked_causal_lm_loss(hidden32, weight.detach().float(), labels, chunk_size=7)
    torch.testing.assert_close(loss32.double(), _reference(hidden, weight, labels), rtol=1e-5, atol=0)


def test_softcap_matches_reference():
    hidden, weight, labels = _inputs(seed=5)
    cap = 3.0
    logits = torch.tanh((hidden[:, :-1] @ weight.T) / cap) * cap
    ref = F.cross_entropy(logits.reshape(-1, 50), labels[:, 1:].reshape(-1), ignore_index=-100)
    loss, _ = chunked_causal_lm_loss(hidden, weight, labels, chunk_size=4, softcap=cap)
    torch.testing.assert_close(loss, ref, rtol=1e-5, atol=0)


def test_all_ignored_gives_zero_loss_with_graph():
    hidden, weight, _ = _inputs()
    labels = torch.full((2, 37), -100)
    loss, n = chunked_causal_lm_loss(hidden, weight, labels, chunk_size=8)
    assert int(n) == 0 and loss.item() == 0.0
    loss.backward()
    assert hidden.grad is not None and float(hidden.grad.abs().sum()) == 0.0


def _saved_bytes(fn, *inputs):
    """Bytes of new storage autograd keeps for backward while ``fn`` runs.

    Tensors aliasing ``inputs`` (chunk views of the hidden states, the head weight) cost nothing and are
    skipped; each other storage is counted once.
    """
    known = {t.untyped_storage().data_ptr() for t in inputs}
    seen: dict[int, int] = {}

    def pack(t):
        ptr = t.untyped_storage().data_ptr()
        if ptr not in known:
            seen[ptr] = t.untyped_storage().nbytes()
        return t

    with torch.autograd.graph.saved_tensors_hooks(pack, lambda t: t):
        out = fn()
    return sum(seen.values()), out


class _RecordingHead(torch.nn.Module):
    """A linear head that records the largest logits tensor it ever produced (forward and recompute)."""

    def __init__(self, weight):
        super().__init__()
        self.weight = torch.nn.Parameter(weight)
        self.max_numel = 0

    def forward(self, h):
        out = F.linear(h, self.weight)
        self.max_numel = max(self.max_numel, out.numel())
        return out


@pytest.mark.parametrize("t,v", [(256, 512), (1024, 2048)])
def test_memory_of_loss_is_bounded_by_the_chunk(t, v):
    chunk = 64
    g = torch.Generator().manual_seed(0)
    hidden = torch.randn(1, t, 32, generator=g).requires_grad_(True)
    head = _RecordingHead(torch.randn(v, 32, generator=g) * 0.1)
    labels = torch.randint(0, v, (1, t), generator=g)
    saved, (loss, _) = _saved_bytes(lambda: chunked_causal_lm_loss(hidden, head, labels, chunk_size=chunk),
                                    hidden, head.weight)
    loss.backward()
    # only the shifted int64 targets (tokens x 8 bytes) are new; nothing of size tokens x vocab is kept for
    # backward, and the largest logits tensor ever built (forward or recompute) is one chunk's
    assert saved <= t * 8 + 64
    assert head.max_numel == chunk * v
    full_saved, _ = _saved_bytes(lambda: full_causal_lm_loss(hidden, head.weight, labels), hidden, head.weight)
    assert full_saved >= t * v * 4  # the plain path keeps the fp32 logits (grows with tokens x vocab)


def test_resolve_impl_and_bad_input():
    assert resolve_loss_impl("auto", torch.device("cpu")) == "chunked"
    with pytest.raises(ValueError, match="model.loss_impl must be one of"):
        resolve_loss_impl("fast", torch.device("cpu"))
    hidden, weight, labels = _inputs()
    with pytest.raises(ValueError, match="loss_chunk_size must be >= 1"):
        chunked_causal_lm_loss(hidden, weight, labels, chunk_size=0)
    with pytest.raises(ValueError, match="labels must be"):
        chunked_causal_lm_loss(hidden, weight, labels[:, :5], chunk_size=4)
    full, _ = causal_lm_loss(hidden, weight, labels, impl="full")
    chunked, _ = causal_lm_loss(hidden, weight, labels, impl="chunked", chunk_size=3)
    torch.testing.assert_close(full, chunked, rtol=1e-5, atol=0)


def test_preshifted_targets_equal_shifting_inside():
    """Sequence-parallel shards carry ``shift_labels`` (shifted before sharding); summing shard losses
    token-weighted gives the full-sequence loss."""
    hidden, weight, labels = _inputs(seed=9, t=40)
    full, n_full = chunked_causal_lm_loss(hidden, weight, labels, chunk_size=8)
    targets = shift_labels(labels)
    total, count = 0.0, 0
    for lo, hi in [(0, 20), (20, 40)]:
        part, n = chunked_causal_lm_loss(hidden[:, lo:hi], weight, targets[:, lo:hi], chunk_size=8, shifted=True)
        total, count = total + part * n, count + int(n)
    assert count == int(n_full)
    torch.testing.assert_close(total / count, full, rtol=1e-5, atol=0)
