"""LongContextLM: attention safety with gapped positions, batch handling, NaN stop, bad input."""

from __future__ import annotations

import copy

import numpy as np
import pytest
import torch
import torch.nn.functional as F

from longrecipe.models.loading import build_model, check_vocab, load_tokenizer, resolve_attn_implementation
from longrecipe.models.module import LongContextLM, NonFiniteLossError, model_inputs
from longrecipe.positions import LongRecipePositions, PoSE
from longrecipe.utils.seeding import sample_rng

TARGET = 1024
TINY = {"config": {"_target_": "longrecipe.tiny.tiny_model_config", "arch": "llama"}, "attn_implementation": "sdpa",
        "loss_chunk_size": 16}
ROPE = {"type": "dynamic", "rope_theta": "ntk", "original_max_position_embeddings": 256}


@pytest.fixture(scope="module")
def base_model():
    torch.manual_seed(0)
    return build_model(TINY, ROPE, TARGET)


def _batch(tokenizer, synthetic_docs, scheme_name: str, seq: int = 48):
    ids = np.stack([np.asarray(tokenizer(d)["input_ids"][:seq], dtype=np.int64) for d in synthetic_docs[:2]])
    if scheme_name == "pose":
        scheme = PoSE(target_length=TARGET, num_chunks=3)
    else:
        scheme = LongRecipePositions(target_length=TARGET).bind_tokenizer(tokenizer)
    pos = np.stack([scheme(row, sample_rng(7, 0, i)) for i, row in enumerate(ids)])
    assert (np.diff(pos, axis=1) > 1).any(), "the batch must contain position gaps"
    t = torch.from_numpy(ids)
    return {"input_ids": t, "labels": t.clone(), "position_ids": torch.from_numpy(pos),
            "attention_mask": torch.ones_like(t)}


def _reference_loss(model, batch):
    """Eager attention with an explicit full causal 4-D mask: one sequence regardless of position gaps."""
    ref = copy.deepcopy(model)
    ref.set_attn_implementation("eager")
    ids = batch["input_ids"]
    b, t = ids.shape
    allowed = torch.tril(torch.ones(t, t, dtype=torch.bool))
    mask = torch.zeros(b, 1, t, t).masked_fill(~allowed, torch.finfo(torch.float32).min)
    hidden = ref.model(input_ids=ids, position_ids=batch["position_ids"], attention_mask=mask).last_hidden_state
    logits = ref.lm_head(hidden).float()
    return F.cross_entropy(logits[:, :-1].reshape(-1, logits.shape[-1]), ids[:, 1:].reshape(-1))


@pytest.mark.parametrize("scheme", ["pose", "longrecipe"])
@pytest.mark.parametrize("attn", ["sdpa", "eager"])
@pytest.mark.parametrize("ckpt", [False, True])
def test_loss_matches_eager_reference_with_full_causal_mask(base_model, tiny_tokenizer, synthetic_docs, scheme,
                                                             attn, ckpt):
    batch = _batch(tiny_tokenizer, synthetic_docs, scheme)
    expected = _reference_loss(base_model, batch)
    model = copy.deepcopy(base_model)
    model.set_attn_implementation(attn)
    lm = LongContextLM({**TINY, "attn_implementation": attn, "gradient_checkpointing": ckpt}, ROPE, TARGET,
                       hf_model=model)
    lm.train()
    loss, n = lm.compute_loss(batch)
    assert int(n) == 2 * 47
    torch.testing.assert_close(loss, expected, rtol=1e-5, atol=0)
    loss.backward()  # the checkpointed backward runs with the same mask
    assert all(p.grad is not None for p in lm.parameters() if p.requires_grad)


def test_without_mask_gaps_are_read_as_boundaries(base_model, tiny_tokenizer, synthetic_docs):
    """Negative control: the reference differs from what transformers computes with no mask at all."""
    batch = _batch(tiny_tokenizer, synthetic_docs, "pose")
    expected = _reference_loss(base_model, batch)
    hidden = base_model.model(input_ids=batch["input_ids"], position_ids=batch["position_ids"]).last_hidden_state
    logits = base_model.lm_head(hidden)
    ids = batch["input_ids"]
    no_mask = F.cross_entropy(logits[:, :-1].reshape(-1, logits.shape[-1]), ids[:, 1:].reshape(-1))
    assert abs(no_mask.item() - expected.item()) > 1e-4


def test_module_loss_equals_hf_loss_and_ignores_labels(base_model):
    lm = LongContextLM(TINY, ROPE, TARGET, hf_model=copy.deepcopy(base_model))
    g = torch.Generator().manual_seed(1)
    ids = torch.randint(0, 512, (2, 40), generator=g)
    labels = ids.clone()
    labels[:, :10] = -100
    batch = {"input_ids": ids, "labels": labels, "position_ids": torch.arange(40).expand(2, 40),
             "attention_mask": torch.ones_like(ids)}
    loss, n = lm.compute_loss(batch)
    hf = lm.hf_model(input_ids=ids, labels=labels, attention_mask=torch.ones_like(ids)).loss
    assert int(n) == 2 * 30
    torch.testing.assert_close(loss, hf, rtol=1e-5, atol=0)


def test_model_inputs_fills_mask_and_positions_and_filters_keys():
    ids = torch.tensor([[3, 4, 5]])
    out = model_inputs({"input_ids": ids, "labels": ids, "doc_ids": ["a"], "cu_seq_lens_q": torch.tensor([0, 3]),
                        "unknown_key": 1})
    assert out["attention_mask"].tolist() == [[1, 1, 1]]
    assert out["position_ids"].tolist() == [[0, 1, 2]]
    assert set(out) == {"input_ids", "attention_mask", "position_ids", "cu_seq_lens_q"}
    mask4d = torch.zeros(1, 1, 3, 3)
    assert model_inputs({"input_ids": ids, "attention_mask": mask4d})["attention_mask"] is mask4d
    # packed replay for flash-attn (cu_seqlens, no mask): no all-ones mask that would join the documents
    packed = model_inputs({"input_ids": ids, "position_ids": torch.tensor([[0, 1, 0]]),
                           "cu_seqlens": torch.tensor([0, 2, 3], dtype=torch.int32)})
    assert packed["attention_mask"] is None and "cu_seqlens" not in packed
    with pytest.raises(ValueError, match=r"batch\['position_ids'\] must match input_ids"):
        model_inputs({"input_ids": ids, "position_ids": torch.tensor([[0, 1]])})
    with pytest.raises(ValueError, match="batch must contain input_ids"):
        model_inputs({"labels": ids})


def test_non_finite_loss_raises_naming_the_batch(base_model):
    model = copy.deepcopy(base_model)
    with torch.no_grad():
        model.lm_head.weight[0, 0] = float("nan")
    lm = LongContextLM(TINY, ROPE, TARGET, hf_model=model)
    ids = torch.randint(0, 512, (1, 12))
    with pytest.raises(NonFiniteLossError, match="non-finite loss nan at batch 3"):
        lm.training_step({"input_ids": ids, "labels": ids}, 3)


def test_tied_embeddings_use_the_shared_head():
    torch.manual_seed(0)
    cfg = {"config": {**TINY["config"], "tie_word_embeddings": True}, "attn_implementation": "sdpa"}
    lm = LongContextLM(cfg, ROPE, TARGET)
    lm.configure_model()
    head = lm.hf_model.get_output_embeddings()
    assert head.weight.data_ptr() == lm.hf_model.get_input_embeddings().weight.data_ptr()
    ids = torch.randint(0, 512, (1, 20))
    loss, _ = lm.compute_loss({"input_ids": ids})
    ref = lm.hf_model(input_ids=ids, labels=ids, attention_mask=torch.ones_like(ids)).loss
    torch.testing.assert_close(loss, ref, rtol=1e-5, atol=0)


@pytest.mark.parametrize("arch", ["llama", "mistral", "qwen2"])
def test_pretrained_folder_is_loaded_with_scaled_rope(tiny_model_dir, arch):
    folder = tiny_model_dir(arch)
    cfg = {"pretrained": str(folder), "attn_implementation": "sdpa"}
    tok = load_tokenizer(cfg)
    model = build_model(cfg, ROPE, TARGET, tokenizer=tok)
    assert model.config.model_type == arch
    assert model.config.max_position_embeddings == TARGET
    assert model.config.rope_parameters["rope_type"] == "dynamic"
    pos = torch.tensor([[0, 5, 400, TARGET - 1]])
    out = model(input_ids=torch.tensor([[1, 2, 3, 4]]), position_ids=pos, attention_mask=torch.ones(1, 4))
    assert torch.isfinite(out.logits).all()


def test_bad_model_inputs(tiny_model_dir, tiny_tokenizer):
    with pytest.raises(ValueError, match=r"model.pretrained='/no/such/model' does not exist"):
        build_model({"pretrained": "/no/such/model"}, ROPE, TARGET)
    with pytest.raises(ValueError, match="model.pretrained and model.config are both null"):
        build_model({"pretrained": None, "config": None}, ROPE, TARGET)
    small = tiny_model_dir("llama", vocab_size=300)
    from transformers import AutoConfig

    with pytest.raises(ValueError, match="tokenizer has 512 tokens but model vocab_size is 300"):
        check_vocab(tiny_tokenizer, AutoConfig.from_pretrained(str(small)))
    with pytest.raises(ValueError, match="model.attn_implementation must be one of"):
        resolve_attn_implementation("flash")
    with pytest.raises(ValueError, match="needs a CUDA GPU and the flash-attn package"):
        resolve_attn_implementation("flash_attention_2", cuda=False)
    assert resolve_attn_implementation("auto", cuda=False) == "sdpa"


def test_shift_labels_batches_and_tiled_logits_strategy(base_model):
    from longrecipe.models.loss import shift_labels

    lm = LongContextLM(TINY, ROPE, TARGET, hf_model=copy.deepcopy(base_model))
    ids = torch.randint(0, 512, (1, 24), generator=torch.Generator().manual_seed(2))
    plain, n = lm.compute_loss({"input_ids": ids, "labels": ids})
    pre, n_pre = lm.compute_loss({"input_ids": ids, "shift_labels": shift_labels(ids)})
    torch.testing.assert_close(pre, plain, rtol=1e-6, atol=0)
    assert int(n) == int(n_pre) == 23

    class _Strategy:
        tiled_logits_shards = 5

    class _Trainer:
        strategy = _Strategy()

    lm._trainer = _Trainer()
    assert lm._chunk_size(24) == 5
    lm._trainer = None
    assert lm._chunk_size(24) == 16
