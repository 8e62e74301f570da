"""ALST-style long-sequence memory switches, built on DeepSpeed's ``ulysses_sp`` pieces.

* :func:`enable_tiled_mlp` -- every decoder MLP runs through DeepSpeed's ``TiledMLP``: the
  ``[T, intermediate]`` activations (3.5x hidden for Llama-3) exist for one tile at a time, and the
  MLP is recomputed tile by tile in backward. Costs one extra MLP forward per layer.
* :func:`tiled_token_loss_sum` -- logits and cross-entropy per sequence tile through DeepSpeed's
  ``sequence_tiled_compute`` (recomputed in backward): the ``[T, vocab]`` fp32 logits (128k x 128k
  vocab = 64 GiB at T = 128k) are never materialised. Exact: same sum as :func:`token_loss_sum`.
* :func:`activation_offload` -- saved activations (with gradient checkpointing: the per-layer
  checkpoint inputs, ``T x hidden`` each) move to CPU memory during forward and come back in
  backward (``torch.autograd.graph.save_on_cpu``). Frees ``layers x T x hidden`` of GPU memory for a
  host<->device copy per layer.

The modules' parameters and state-dict keys are unchanged (the MLP override is an instance
attribute, removed by :func:`disable_tiled_mlp`).
"""

from __future__ import annotations

import contextlib
import math
from collections.abc import Iterator

import torch

from longrecipe.parallel.sharding import IGNORE_INDEX

_TILED_ATTR = "_longrecipe_tiled_mlp"


def _mlp_modules(model: torch.nn.Module) -> list[torch.nn.Module]:
    found = []
    for name, module in model.named_modules():
        if name.split(".")[-1] == "mlp" and next(module.parameters(), None) is not None:
            found.append(module)
    return found


def _agree_on_max(value: int) -> int:
    """All ranks must run the same number of tiles (ZeRO-3 gathers parameters collectively per call)."""
    import torch.distributed as dist

    if dist.is_available() and dist.is_initialized() and dist.get_world_size() > 1:
        t = torch.tensor([value], dtype=torch.int64)
        if dist.get_backend() == "nccl":
            t = t.cuda()
        dist.all_reduce(t, op=dist.ReduceOp.MAX)
        return int(t.item())
    return value


def mlp_tile_count(seq_len: int, hidden_size: int, shards: int | None) -> int:
    """Tiles for an MLP input of ``seq_len`` tokens: ``shards`` if given, else ``ceil(seq_len / hidden)``."""
    if shards is not None:
        if shards < 1:
            raise ValueError(f"strategy.tiled_mlp_shards must be >= 1 or null (auto), got {shards}")
        return min(int(shards), max(seq_len, 1))
    return max(1, math.ceil(seq_len / hidden_size))


def enable_tiled_mlp(model: torch.nn.Module, shards: int | None = None) -> int:
    """Run every ``*.mlp`` module of ``model`` tiled along the sequence; returns how many were tiled."""
    from deepspeed.runtime.sequence_parallel.ulysses_sp import TiledMLP

    count = 0
    for module in _mlp_modules(model):
        if hasattr(module, _TILED_ATTR):
            continue
        original = module.forward

        def tiled_forward(x, *args, _module=module, _original=original, **kwargs):
            if args or kwargs or x.dim() < 2:
                return _original(x, *args, **kwargs)
            n = mlp_tile_count(int(x.shape[-2]), int(x.shape[-1]), shards)
            if shards is None:
                n = _agree_on_max(n)
            if n <= 1:
                return _original(x)
            return TiledMLP.apply(lambda _self, xs: _original(xs), _module, x, n, list(_module.parameters()))

        setattr(module, _TILED_ATTR, original)
        module.forward = tiled_forward
        count += 1
    return count


def disable_tiled_mlp(model: torch.nn.Module) -> int:
    """Restore the MLPs tiled by :func:`enable_tiled_mlp`."""
    count = 0
    for module in model.modules():
        if hasattr(module, _TILED_ATTR):
            del module.forward  # drop the instance attribute: the class forward is used again
            delattr(module, _TILED_ATTR)
            count += 1
    return count


def tiled_token_loss_sum(hidden_states: torch.Tensor, lm_head: torch.nn.Module, shift_labels: torch.Tensor,
                         shards: int, ignore_index: int = IGNORE_INDEX) -> tuple[torch.Tensor, torch.Tensor]:
    """``(loss_sum, n_tokens)`` of ``lm_head(hidden_states)`` against pre-shifted targets, ``shards`` tiles.

    Equal to ``token_loss_sum(lm_head(hidden_states), shift_labels)`` (and its gradients), without the
    full logits tensor.
    """
    from deepspeed.runtime.sequence_parallel.ulysses_sp import sequence_tiled_compute

    if shards < 1:
        raise ValueError(f"strategy.tiled_logits_shards must be >= 1, got {shards}")
    if hidden_states.shape[:2] != shift_labels.shape[:2]:
        raise ValueError(
            f"hidden_states {tuple(hidden_states.shape)} and shift_labels {tuple(shift_labels.shape)} must share "
            "[batch, seq]"
        )
    seq_len = int(hidden_states.shape[1])
    shards = min(int(shards), max(seq_len, 1))

    def loss_fn(hidden_states, shift_labels):
        logits = lm_head(hidden_states)
        return torch.nn.functional.cross_entropy(
            logits.reshape(-1, logits.shape[-1]).float() if logits.dtype in (torch.float16, torch.bfloat16)
            else logits.reshape(-1, logits.shape[-1]),
            shift_labels.reshape(-1), ignore_index=ignore_index, reduction="sum",
        ).to(hidden_states.dtype)

    loss_sum = sequence_tiled_compute(
        loss_fn, seq_len, shards,
        kwargs_to_shard={"hidden_states": hidden_states, "shift_labels": shift_labels},
        kwargs_to_pass={},
        grad_requiring_tensor_key="hidden_states",
        compute_params=list(lm_head.parameters()),
        output_unshard_dimension=0,
        output_reduction="sum",
    )
    return loss_sum, (shift_labels != ignore_index).sum()


@contextlib.contextmanager
def activation_offload(enabled: bool = True) -> Iterator[None]:
    """Keep tensors saved for backward in CPU memory while the block runs (pinned when CUDA is present)."""
    if not enabled:
        yield
        return
    with torch.autograd.graph.save_on_cpu(pin_memory=torch.cuda.is_available()):
        yield
