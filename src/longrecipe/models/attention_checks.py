"""Correctness checks of the flash attention paths, run by the tests (CPU, reference kernel) and by
``benchmarks/gpu_check.sh`` (CUDA, real kernels). Each returns plain numbers; the caller sets the tolerance.

* :func:`simulated_positions_check` -- one PoSE / LongRecipe sample through ``LongContextLM`` on a flash kernel vs
  eager attention with an explicit full causal mask: position jumps may change RoPE only. The same sample with
  attention cut at its jumps is measured too (``cut_max_diff``), so a check that passes cannot be blind to it.
* :func:`packed_replay_check` -- a packed replay batch (any batch size) through ``LongContextLM`` on a flash kernel:
  every document's logits vs the document run alone; ``leak_max_diff`` is the old behaviour (rows passed without
  boundaries), which lets documents of a row attend to each other.
"""

from __future__ import annotations

import copy
from typing import Any

import numpy as np
import torch

from longrecipe.models.attention import flash_inputs
from longrecipe.models.module import LongContextLM


def _tiny_model(arch: str, seed: int, device: str, dtype: torch.dtype, target: int, **config: Any):
    from transformers import AutoModelForCausalLM

    from longrecipe.tiny import tiny_model_config

    torch.manual_seed(seed)
    cfg = tiny_model_config(arch, max_position_embeddings=target, **config)
    return AutoModelForCausalLM.from_config(cfg, attn_implementation="eager").to(device=device, dtype=dtype).eval()


def _module(model, attn_implementation: str) -> LongContextLM:
    flash = copy.deepcopy(model)
    flash.set_attn_implementation(attn_implementation)
    return LongContextLM({"loss_chunk_size": 64}, hf_model=flash)


def _logits(module: LongContextLM, batch: dict[str, torch.Tensor]) -> torch.Tensor:
    with torch.no_grad():
        return module.hf_model.lm_head(module.hidden_states(batch)).float()


def _full_causal_mask(batch: int, seq: int, dtype: torch.dtype, device: str) -> torch.Tensor:
    allowed = torch.ones(seq, seq, dtype=torch.bool, device=device).tril()
    mask = torch.zeros(seq, seq, dtype=dtype, device=device).masked_fill(~allowed, torch.finfo(dtype).min)
    return mask.expand(batch, 1, seq, seq)


def simulated_positions(scheme: str, length: int, target: int, seed: int = 0) -> np.ndarray:
    """Positions of one ``length``-token sample under ``scheme`` (``pose`` / ``longrecipe``) in a ``target`` window."""
    from longrecipe.positions import LongRecipePositions, PoSE

    ids = np.arange(3, 3 + length)
    rng = np.random.default_rng(seed)
    if scheme == "pose":
        return PoSE(target_length=target, num_chunks=2)(ids, rng)
    if scheme == "longrecipe":
        starts = np.unique(np.concatenate([[0], np.random.default_rng(seed + 1).integers(1, length, size=length // 8)]))
        return LongRecipePositions(target_length=target, delimiter_ids=[5])(ids, rng, segment_starts=starts)
    raise ValueError(f"scheme must be 'pose' or 'longrecipe', got {scheme!r}")


def simulated_positions_check(attn_implementation: str, *, scheme: str = "longrecipe", arch: str = "llama",
                              length: int = 96, target: int = 1024, batch_size: int = 1, device: str = "cpu",
                              dtype: torch.dtype = torch.float32, seed: int = 0) -> dict[str, float]:
    """Max |logit| difference of the flash path against eager + explicit causal mask (and of a jump-cut control)."""
    model = _tiny_model(arch, seed, device, dtype, target)
    pos = torch.tensor(np.stack([simulated_positions(scheme, length, target, seed + b) for b in range(batch_size)]),
                       device=device)
    gen = torch.Generator().manual_seed(seed)
    ids = torch.randint(3, model.config.vocab_size, (batch_size, length), generator=gen).to(device)
    batch = {"input_ids": ids, "labels": ids, "position_ids": pos, "attention_mask": torch.ones_like(ids)}
    flash = _logits(_module(model, attn_implementation), batch)
    with torch.no_grad():
        ref = model(input_ids=ids, position_ids=pos, use_cache=False,
                    attention_mask=_full_causal_mask(batch_size, length, dtype, device)).logits.float()
    # negative control: the same flash call with a boundary at every jump (what the position heuristic would do)
    starts = [b * length + int(t) for b in range(batch_size) for t in range(length)
              if t == 0 or int(pos[b, t]) != int(pos[b, t - 1]) + 1]
    cut = torch.tensor([*starts, batch_size * length], dtype=torch.int32, device=device)
    module = _module(model, attn_implementation)
    kwargs = flash_inputs({**batch, "cu_seqlens": cut}, ids, pos)
    with torch.no_grad():
        hidden = module.hf_model.base_model(**kwargs, use_cache=False).last_hidden_state.reshape(batch_size, length, -1)
        cut_logits = module.hf_model.lm_head(hidden).float()
    return {"max_diff": float((flash - ref).abs().max()), "cut_max_diff": float((cut_logits - ref).abs().max()),
            "n_jumps": len(starts) - batch_size, "scale": float(ref.abs().max())}


def packed_replay_check(attn_implementation: str, *, batch_size: int = 4, arch: str = "llama", max_length: int = 48,
                        device: str = "cpu", dtype: torch.dtype = torch.float32, seed: int = 0) -> dict[str, float]:
    """Max |logit| difference between packed documents (flash path) and each document alone (eager)."""
    from longrecipe.data.replay import Example, collate_packed, pack_examples, resolve_mask_format

    model = _tiny_model(arch, seed, device, dtype, 1024)
    rng = np.random.default_rng(seed)
    docs = [rng.integers(3, model.config.vocab_size, size=int(n)) for n in rng.integers(5, 20, size=4 * batch_size)]
    examples = [Example(d.astype(np.int64), d.astype(np.int64)) for d in docs]
    packs = pack_examples(examples, max_length)[:batch_size]
    mask_format = resolve_mask_format("auto", attn_implementation)
    batch = collate_packed(packs, pad_token_id=0, max_length=max_length, mask_format=mask_format)
    batch = {k: v.to(device) for k, v in batch.items()}
    module = _module(model, attn_implementation)
    packed = _logits(module, batch)
    with torch.no_grad():  # the old path: rows without boundaries (transformers reads none for batch > 1)
        leak_hidden = module.hf_model.base_model(input_ids=batch["input_ids"], position_ids=batch["position_ids"],
                                                 attention_mask=None, use_cache=False).last_hidden_state
        leak = module.hf_model.lm_head(leak_hidden).float()
    worst, leak_worst, n_docs = 0.0, 0.0, 0
    for row, pack in enumerate(packs):
        off = 0
        for ex in pack:
            n = len(ex.input_ids)
            with torch.no_grad():
                alone = model(input_ids=torch.as_tensor(ex.input_ids, device=device)[None],
                              use_cache=False).logits[0].float()
            worst = max(worst, float((packed[row, off:off + n] - alone).abs().max()))
            leak_worst = max(leak_worst, float((leak[row, off:off + n] - alone).abs().max()))
            off += n
            n_docs += 1
    return {"max_diff": worst, "leak_max_diff": leak_worst, "n_docs": n_docs, "batch_size": len(packs),
            "mask_format": mask_format}
