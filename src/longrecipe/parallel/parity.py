"""Numerical parity of Ulysses sequence parallelism against a single-process reference.

:func:`run_parity` spawns ``sp`` gloo processes (CPU). Each builds the same seeded tiny model and
sample, then computes

* the **reference** (``sp = 1``): eager attention with an explicit ``[B, 1, T, T]`` full causal mask,
  so the simulated positions can only affect RoPE, never the mask -- the ground truth for one
  long sample;
* the **sequence-parallel** loss and gradients: the model switched to ``longrecipe_ulysses``
  attention, the batch sharded by :func:`~longrecipe.parallel.sharding.shard_batch`, the loss
  reduced token-weighted (:func:`~longrecipe.parallel.loss.sequence_parallel_loss`) and gradients
  averaged over the ranks as DeepSpeed / DDP would;
* a **naive** loss: sdpa attention *without* a mask, where transformers treats every position gap
  as a document boundary -- it must differ from the reference whenever the positions have gaps,
  which shows that the comparison can fail.

Rank 0 writes a JSON summary that :func:`run_parity` returns.
"""

from __future__ import annotations

import copy
import json
import os
import socket
import tempfile
from pathlib import Path
from typing import Any

import torch

from longrecipe.utils.io import write_json_atomic

_DTYPES = {"float64": torch.float64, "float32": torch.float32}


def free_port() -> int:
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def full_causal_mask(batch: int, seq: int, dtype: torch.dtype) -> torch.Tensor:
    """Additive ``[B, 1, T, T]`` causal mask (0 on and below the diagonal, dtype-min above)."""
    allowed = torch.ones(seq, seq, dtype=torch.bool).tril()
    mask = torch.zeros(seq, seq, dtype=dtype).masked_fill(~allowed, torch.finfo(dtype).min)
    return mask.expand(batch, 1, seq, seq)


def _build(spec: dict[str, Any]):
    from transformers import AutoModelForCausalLM

    from longrecipe.tiny import tiny_model_config

    dtype = _DTYPES[spec.get("dtype", "float64")]
    torch.manual_seed(int(spec.get("seed", 0)))
    config = tiny_model_config(spec.get("arch", "llama"), **spec.get("config", {}))
    model = AutoModelForCausalLM.from_config(config, attn_implementation="eager").to(dtype)
    gen = torch.Generator().manual_seed(int(spec.get("seed", 0)) + 1)
    position_ids = torch.tensor(spec["position_ids"], dtype=torch.int64)
    batch_size, seq = position_ids.shape
    input_ids = torch.randint(3, config.vocab_size, (batch_size, seq), generator=gen)
    labels = input_ids.clone()
    for b, t in spec.get("ignored_labels", []):
        labels[b, t] = -100
    batch = {"input_ids": input_ids, "labels": labels, "position_ids": position_ids,
             "attention_mask": torch.ones_like(input_ids)}
    return model, batch, dtype


def _loss_and_grads(model, loss: torch.Tensor) -> dict[str, torch.Tensor]:
    model.zero_grad(set_to_none=True)
    loss.backward()
    return {n: p.grad.detach().clone() for n, p in model.named_parameters() if p.grad is not None}


def _reference(model, batch, dtype) -> dict[str, Any]:
    from longrecipe.parallel.loss import token_loss_sum
    from longrecipe.parallel.sharding import shift_labels

    b, t = batch["input_ids"].shape
    targets = shift_labels(batch["labels"])
    results: dict[str, Any] = {}
    # sdpa with an explicit 4-D mask: exact in float64 (eager runs its softmax in float32)
    for impl in ("sdpa", "eager"):
        ref = copy.deepcopy(model)
        ref.set_attn_implementation(impl)
        out = ref(input_ids=batch["input_ids"], position_ids=batch["position_ids"],
                  attention_mask=full_causal_mask(b, t, dtype), use_cache=False)
        loss_sum, n = token_loss_sum(out.logits, targets)
        loss = loss_sum / n
        results[f"{impl}_loss"] = float(loss.detach())
        results[f"{impl}_grads"] = _loss_and_grads(ref, loss)
    naive = copy.deepcopy(model)
    naive.set_attn_implementation("sdpa")
    with torch.no_grad():
        logits = naive(input_ids=batch["input_ids"], position_ids=batch["position_ids"], use_cache=False).logits
        naive_sum, naive_n = token_loss_sum(logits, targets)
    results["naive_loss"] = float(naive_sum / naive_n)
    return results


def _max_rel(grads: dict[str, torch.Tensor], ref_grads: dict[str, torch.Tensor], dtype) -> dict[str, float]:
    rel = {}
    for name, ref in ref_grads.items():
        scale = ref.abs().max().clamp(min=torch.finfo(dtype).tiny)
        rel[name] = float(((grads[name] - ref).abs().max() / scale).item())
    return rel


def _run_case(spec: dict[str, Any], state, world_size: int) -> dict[str, Any]:
    import torch.distributed as dist

    from longrecipe.parallel.loss import sequence_parallel_loss, token_loss_sum
    from longrecipe.parallel.sharding import shard_batch
    from longrecipe.parallel.tiling import enable_tiled_mlp, tiled_token_loss_sum
    from longrecipe.parallel.ulysses import disable_ulysses, enable_ulysses

    model, batch, dtype = _build(spec)
    ref = _reference(model, batch, dtype)
    sp_model = copy.deepcopy(model)
    enable_ulysses(sp_model, core_attn_implementation=spec.get("core_attn_implementation", "sdpa"),
                   sync_dynamic_rope=spec.get("sync_dynamic_rope", True))
    try:
        if spec.get("tiled_mlp"):
            enable_tiled_mlp(sp_model, shards=spec.get("tiled_mlp_shards"))
        local = shard_batch(batch, state.sp_rank, state.sp_size)
        hidden = sp_model.model(input_ids=local["input_ids"], position_ids=local["position_ids"],
                                attention_mask=local["attention_mask"], use_cache=False).last_hidden_state
        if spec.get("tiled_logits_shards"):
            loss_sum, n_tokens = tiled_token_loss_sum(hidden, sp_model.lm_head, local["shift_labels"],
                                                      int(spec["tiled_logits_shards"]))
        else:
            loss_sum, n_tokens = token_loss_sum(sp_model.lm_head(hidden), local["shift_labels"])
        objective, sp_loss = sequence_parallel_loss(loss_sum, n_tokens)
        grads = _loss_and_grads(sp_model, objective)
    finally:
        disable_ulysses(sp_model)
    for name in sorted(grads):  # the data-parallel average DeepSpeed / DDP apply
        dist.all_reduce(grads[name], op=dist.ReduceOp.SUM)
        grads[name] /= world_size
    rel = _max_rel(grads, ref["sdpa_grads"], dtype)
    eager_rel = _max_rel(grads, ref["eager_grads"], dtype)
    return {
        "name": spec.get("name", ""),
        "sp_size": world_size,
        "dtype": str(dtype).removeprefix("torch."),
        "reference_loss": ref["sdpa_loss"],
        "eager_reference_loss": ref["eager_loss"],
        "sp_loss": float(sp_loss),
        "naive_loss": ref["naive_loss"],
        "loss_rel_diff": abs(float(sp_loss) - ref["sdpa_loss"]) / abs(ref["sdpa_loss"]),
        "eager_loss_rel_diff": abs(float(sp_loss) - ref["eager_loss"]) / abs(ref["eager_loss"]),
        "max_grad_rel_diff": max(rel.values()),
        "max_eager_grad_rel_diff": max(eager_rel.values()),
        "n_params_compared": len(rel),
        "missing_grads": sorted(set(ref["sdpa_grads"]) - set(grads)),
    }


def parity_worker(rank: int, world_size: int, port: int, specs: list[dict[str, Any]], out_path: str) -> None:
    """One process of :func:`run_parity` (module-level so ``torch.multiprocessing.spawn`` can import it)."""
    import torch.distributed as dist

    from longrecipe.parallel.groups import init_sequence_parallel, reset_sequence_parallel

    os.environ.update(MASTER_ADDR="127.0.0.1", MASTER_PORT=str(port), RANK=str(rank), WORLD_SIZE=str(world_size),
                      LOCAL_RANK=str(rank))
    torch.set_num_threads(1)
    dist.init_process_group("gloo", rank=rank, world_size=world_size)
    try:
        state = init_sequence_parallel(world_size)
        results = [_run_case(spec, state, world_size) for spec in specs]
        if rank == 0:
            write_json_atomic(out_path, results)
    finally:
        reset_sequence_parallel()
        dist.destroy_process_group()


def run_parity(specs: list[dict[str, Any]], sp_size: int = 2) -> list[dict[str, Any]]:
    """Run every case of ``specs`` on ``sp_size`` gloo processes (one spawn) and return rank 0's summaries.

    A spec holds ``name``, ``arch`` (llama / mistral / qwen2), ``config`` (overrides of
    ``tiny_model_config``), ``position_ids`` (``[B, T]`` nested list), ``dtype`` (float64 / float32),
    ``seed``, ``ignored_labels`` (``[(b, t), ...]`` set to -100) and the memory switches
    ``tiled_mlp`` / ``tiled_mlp_shards`` / ``tiled_logits_shards``; ``sync_dynamic_rope: false`` turns
    off the RoPE hooks of :func:`~longrecipe.parallel.ulysses.enable_ulysses` (negative control);
    ``core_attn_implementation`` picks the core attention (default ``sdpa``; e.g. ``longrecipe/flash-reference``).
    """
    import torch.multiprocessing as mp

    for spec in specs:
        if spec.get("dtype", "float64") not in _DTYPES:
            raise ValueError(f"dtype must be one of {sorted(_DTYPES)}, got {spec.get('dtype')!r}")
        if "position_ids" not in spec:
            raise ValueError("each parity spec needs position_ids ([batch, seq] nested list)")
    with tempfile.TemporaryDirectory(prefix="longrecipe-parity-") as tmp:
        out = Path(tmp) / "parity.json"
        mp.spawn(parity_worker, args=(sp_size, free_port(), list(specs), str(out)), nprocs=sp_size, join=True)
        return json.loads(out.read_text())
