"""The batch's all-ones 2-D attention mask keeps a gapped-position sample ONE sequence.

transformers (5.x) reads any jump in ``position_ids`` as a packed-document boundary when no
attention mask is given and no KV cache exists (``use_cache=False``: the training setting, which
``LongContextLM`` uses), and then blocks attention across the jump. These tests prove the hazard
exists in the installed version (no mask == block-diagonal attention) and that the DataModule's
batch avoids it (all-ones mask == full causal attention, checked against an eager-attention
reference with an explicit 4-D causal mask).
"""

from __future__ import annotations

import copy

import numpy as np
import pytest
import torch

from longrecipe.data import LongContextDataModule

ATOL = 1e-5


class Gapped:
    def __call__(self, input_ids, rng, *, segment_starts=None):
        gaps = rng.integers(1, 4, size=len(input_ids)) * (rng.random(len(input_ids)) < 0.1)
        gaps[0] = 0
        return np.arange(len(input_ids)) + np.cumsum(gaps)


@pytest.fixture(scope="module")
def models():
    from transformers import AutoModelForCausalLM

    from longrecipe.tiny import tiny_model_config

    torch.manual_seed(0)
    sdpa = AutoModelForCausalLM.from_config(tiny_model_config("llama"), attn_implementation="sdpa").eval()
    eager = copy.deepcopy(sdpa)
    eager.set_attn_implementation("eager")
    return sdpa, eager


def _additive(allowed: torch.Tensor) -> torch.Tensor:
    """bool ``[B, T, T]`` (True = may attend) -> the additive float mask ``[B, 1, T, T]`` eager expects."""
    return torch.zeros(allowed.shape, dtype=torch.float32).masked_fill(~allowed, torch.finfo(torch.float32).min)[:, None]


def _causal(B: int, T: int) -> torch.Tensor:
    return torch.ones(T, T, dtype=torch.bool).tril().expand(B, T, T)


def _block_causal(position_ids: torch.Tensor) -> torch.Tensor:
    """What transformers infers without a mask: a new "document" at every position jump != 1."""
    seg = torch.cat([torch.zeros_like(position_ids[:, :1]), (position_ids.diff(dim=1) != 1).long()], dim=1).cumsum(1)
    same = seg[:, :, None] == seg[:, None, :]
    return same & _causal(*position_ids.shape)


@pytest.fixture(scope="module")
def batch(tiny_tokenizer, tmp_path_factory):
    dm = LongContextDataModule(tiny_tokenizer, Gapped(), target_length=256, sample_length=96, n_docs=8, seed=3,
                               batch_size=2, cache_dir=tmp_path_factory.mktemp("mask-cache"))
    return next(iter(dm.train_dataloader()))


@torch.no_grad()
def test_all_ones_mask_equals_full_causal_reference(models, batch):
    sdpa, eager = models
    ids, pos, mask = batch["input_ids"], batch["position_ids"], batch["attention_mask"]
    assert torch.equal(mask, torch.ones_like(ids))
    assert ((pos.diff(dim=1) > 1).sum(dim=1) >= 2).all()  # several jumps in every row
    ours = sdpa(input_ids=ids, position_ids=pos, attention_mask=mask, use_cache=False).logits
    reference = eager(input_ids=ids, position_ids=pos, attention_mask=_additive(_causal(*ids.shape)), use_cache=False).logits
    torch.testing.assert_close(ours, reference, atol=ATOL, rtol=0)
    eager_2d = eager(input_ids=ids, position_ids=pos, attention_mask=mask, use_cache=False).logits
    torch.testing.assert_close(eager_2d, reference, atol=ATOL, rtol=0)
    cached = sdpa(input_ids=ids, position_ids=pos, attention_mask=mask, use_cache=True).logits
    torch.testing.assert_close(cached, reference, atol=ATOL, rtol=0)  # and in the inference setting


@torch.no_grad()
def test_without_mask_transformers_splits_at_position_jumps(models, batch):
    sdpa, eager = models
    ids, pos = batch["input_ids"], batch["position_ids"]
    reference = eager(input_ids=ids, position_ids=pos, attention_mask=_additive(_causal(*ids.shape)), use_cache=False).logits
    no_mask = sdpa(input_ids=ids, position_ids=pos, use_cache=False).logits
    # the hazard: logits after the first jump differ from full causal attention ...
    first_jump = int((pos[0].diff() != 1).nonzero()[0]) + 1
    assert (no_mask - reference).abs()[0, first_jump:].max() > 1e-2
    torch.testing.assert_close(no_mask[0, :first_jump], reference[0, :first_jump], atol=ATOL, rtol=0)
    # ... because it is exactly block-diagonal attention over the gap-delimited pieces
    block = eager(input_ids=ids, position_ids=pos, attention_mask=_additive(_block_causal(pos)),
                  use_cache=False).logits
    torch.testing.assert_close(no_mask, block, atol=ATOL, rtol=0)


@torch.no_grad()
def test_gap_free_positions_need_no_mask(models, batch):
    sdpa, eager = models
    ids = batch["input_ids"]
    flt = torch.arange(ids.shape[1]).expand_as(ids)
    reference = eager(input_ids=ids, position_ids=flt, attention_mask=_additive(_causal(*ids.shape)),
                      use_cache=False).logits
    torch.testing.assert_close(sdpa(input_ids=ids, position_ids=flt, use_cache=False).logits, reference, atol=ATOL, rtol=0)
