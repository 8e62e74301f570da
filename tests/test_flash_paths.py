"""The flash-attention code paths of transformers, run on CPU with the bundled pure-PyTorch reference kernel.

``longrecipe/flash-reference`` is loaded the way transformers loads any attention kernel (``kernels`` package,
``LOCAL_KERNELS``), so these tests exercise transformers' real ``flash_attention_forward`` /
``_flash_attention_forward`` (mask handling, varlen boundaries) -- what a GPU run with flash-attn executes --
through ``LongContextLM`` and through Ulysses. Each check carries a negative control showing it would fail if
attention were cut at position jumps or leaked across packed documents.
"""

from __future__ import annotations

import numpy as np
import pytest
import torch

from longrecipe.models.attention import (
    REFERENCE_FLASH,
    TORCH_FLASH,
    check_attn_usable,
    flash_inputs,
    is_flash,
    is_kernel_name,
    register_bundled_kernels,
)
from longrecipe.models.attention_checks import packed_replay_check, simulated_positions, simulated_positions_check


@pytest.fixture(autouse=True)
def _bundled_kernels(monkeypatch):
    monkeypatch.setenv("LOCAL_KERNELS", "")
    register_bundled_kernels()


def _reference_kernel():
    import importlib.util
    import sys
    from pathlib import Path

    from longrecipe.models.attention import BUNDLED_KERNELS

    path = Path(BUNDLED_KERNELS[REFERENCE_FLASH]) / "build" / "torch-universal" / "flash_reference" / "__init__.py"
    spec = importlib.util.spec_from_file_location("longrecipe_test_flash_reference", path)
    module = importlib.util.module_from_spec(spec)
    sys.modules[spec.name] = module
    spec.loader.exec_module(module)
    return module


def test_reference_kernel_matches_sdpa_dense_varlen_gqa():
    """The reference kernel itself: dense = sdpa (causal and not, GQA), varlen = each sequence alone."""
    ref = _reference_kernel()
    g = torch.Generator().manual_seed(0)
    q, k, v = (torch.randn(2, 7, h, 8, generator=g, dtype=torch.float64) for h in (4, 2, 2))
    for causal in (True, False):
        want = torch.nn.functional.scaled_dot_product_attention(
            q.transpose(1, 2), k.transpose(1, 2), v.transpose(1, 2), is_causal=causal, enable_gqa=True).transpose(1, 2)
        torch.testing.assert_close(ref.flash_attn_func(q, k, v, causal=causal), want, rtol=1e-12, atol=1e-12)
    cu = torch.tensor([0, 3, 7, 14], dtype=torch.int32)
    flat = [x.reshape(14, *x.shape[2:]) for x in (q, k, v)]
    out = ref.flash_attn_varlen_func(*flat, cu, cu, 7, 7, causal=True)
    for a, b in zip(cu[:-1].tolist(), cu[1:].tolist()):
        alone = ref.flash_attn_func(*(x[None, a:b] for x in flat), causal=True)[0]
        torch.testing.assert_close(out[a:b], alone, rtol=0, atol=0)
    with pytest.raises(ValueError, match="dropout_p"):
        ref.flash_attn_func(q, k, v, dropout_p=0.1)


def test_names_and_usability():
    assert is_flash("flash_attention_2") and is_flash(REFERENCE_FLASH) and is_flash(TORCH_FLASH)
    assert not is_flash("sdpa") and not is_flash("longrecipe_ulysses") and not is_flash(None)
    assert is_kernel_name(REFERENCE_FLASH) and not is_kernel_name("sdpa") and not is_kernel_name("a/b/c")
    check_attn_usable(REFERENCE_FLASH, "model.attn_implementation")  # loads through transformers + kernels
    with pytest.raises(ValueError, match=r"strategy.core_attn_implementation='flash_attention_2' cannot be used"):
        check_attn_usable("flash_attention_2", "strategy.core_attn_implementation")


def test_loader_accepts_bundled_kernel_and_refuses_unknown():
    from longrecipe.models.loading import resolve_attn_implementation

    assert resolve_attn_implementation(REFERENCE_FLASH, cuda=False) == REFERENCE_FLASH
    with pytest.raises(ValueError, match="model.attn_implementation must be one of"):
        resolve_attn_implementation("fast_attention", cuda=False)


@pytest.mark.parametrize("scheme,batch_size", [("longrecipe", 1), ("pose", 1), ("longrecipe", 3)])
def test_simulated_positions_flash_equals_eager_full_causal(scheme, batch_size):
    """(a) A PoSE / LongRecipe sample on the flash path = eager with an explicit full causal mask (fp32, 1e-4);
    attention cut at the jumps (the control) is far off, so the comparison would catch it."""
    out = simulated_positions_check(REFERENCE_FLASH, scheme=scheme, batch_size=batch_size)
    assert out["n_jumps"] >= batch_size
    assert out["max_diff"] < 1e-4, out
    assert out["cut_max_diff"] > 1e-2, out


def test_flash_inputs_pass_explicit_boundaries():
    """(fix 3) Unpacked rows: one flattened row, a boundary at each row start and none at the jumps."""
    pos = torch.tensor(np.stack([simulated_positions("longrecipe", 12, 64, s) for s in range(2)]))
    ids = torch.arange(24).reshape(2, 12)
    out = flash_inputs({"input_ids": ids, "attention_mask": torch.ones_like(ids)}, ids, pos)
    assert out["attention_mask"] is None and out["input_ids"].shape == (1, 24)
    assert out["cu_seq_lens_q"].tolist() == [0, 12, 24] and out["max_length_q"] == 12
    assert torch.equal(out["position_ids"], pos.reshape(1, 24))
    padded = torch.tensor([[1] * 10 + [0, 0], [1] * 12])
    kept = flash_inputs({"input_ids": ids, "attention_mask": padded}, ids, pos)  # padding: transformers unpads
    assert kept["attention_mask"] is padded and "cu_seq_lens_q" not in kept
    with pytest.raises(ValueError, match=r"cu_seqlens'\] must rise from 0 to batch\*seq=24"):
        flash_inputs({"input_ids": ids, "cu_seqlens": torch.tensor([0, 5, 20])}, ids, pos)


@pytest.mark.parametrize("batch_size", [1, 4])
def test_packed_replay_flash_documents_isolated(batch_size):
    """(b) Packed replay on the flash path: each document's logits = the document alone, at batch 1 and 4.
    The control (rows without boundaries, the old behaviour) leaks across documents at batch 4."""
    out = packed_replay_check(REFERENCE_FLASH, batch_size=batch_size)
    assert out["batch_size"] == batch_size and out["mask_format"] == "none"
    assert out["max_diff"] < 1e-4, out
    if batch_size > 1:
        assert out["leak_max_diff"] > 1e-2, out


def test_packed_replay_flash_loss_equals_per_document():
    """Same loss as unpacked: the packed batch's token-mean loss on the flash path = the mean over documents alone."""
    from longrecipe.data.replay import Example, collate_packed, pack_examples
    from longrecipe.models.attention_checks import _module, _tiny_model

    model = _tiny_model("llama", 0, "cpu", torch.float64, 1024)
    rng = np.random.default_rng(3)
    docs = [rng.integers(3, 500, size=int(n)).astype(np.int64) for n in (9, 14, 6, 11, 8, 13)]
    packs = pack_examples([Example(d, d) for d in docs], 24)
    batch = collate_packed(packs, pad_token_id=0, max_length=24, mask_format="none")
    loss, n_tokens = _module(model, REFERENCE_FLASH).compute_loss(batch)
    total, count = 0.0, 0
    for d in docs:
        with torch.no_grad():
            out = model(input_ids=torch.as_tensor(d)[None], labels=torch.as_tensor(d)[None], use_cache=False)
        total += float(out.loss) * (len(d) - 1)
        count += len(d) - 1
    assert int(n_tokens) == count
    assert float(loss.detach()) == pytest.approx(total / count, rel=1e-6)  # the chunked loss runs in float32


@pytest.mark.distributed
def test_ulysses_flash_core_matches_single_process():
    """(c) Ulysses sp=2 with a flash core (2 gloo processes): loss and every gradient = sp=1 (explicit causal mask).
    Before the fix the first forward raised "Could not find the currently requested flash attention
    implementation" (the kernel was looked up under the name longrecipe_ulysses)."""
    from longrecipe.parallel.parity import run_parity

    specs = [{"name": f"{arch}-{scheme}-flash", "arch": arch, "dtype": "float64",
              "core_attn_implementation": REFERENCE_FLASH, "config": {"max_position_embeddings": 1024},
              "position_ids": [[int(p) for p in simulated_positions(scheme, 64, 1024, seed)]]}
             for seed, (arch, scheme) in enumerate([("llama", "longrecipe"), ("qwen2", "pose")])]
    for res in run_parity(specs, sp_size=2):
        assert res["loss_rel_diff"] < 1e-10, res
        assert res["max_grad_rel_diff"] < 1e-8, res
        assert not res["missing_grads"], res
        assert abs(res["naive_loss"] - res["reference_loss"]) > 1e-4, res  # jumps read as boundaries: other loss


def test_enable_ulysses_checks_core_up_front():
    import torch.distributed as dist

    from longrecipe.parallel.ulysses import check_core_attn_implementation

    check_core_attn_implementation("sdpa")
    check_core_attn_implementation(REFERENCE_FLASH)
    with pytest.raises(ValueError, match=r"strategy.core_attn_implementation='flash_attention_2' cannot be used on"):
        check_core_attn_implementation("flash_attention_2")
    with pytest.raises(ValueError, match=r"strategy.core_attn_implementation='eager' is not supported under Ulysses"):
        check_core_attn_implementation("eager")
    assert not dist.is_initialized()
