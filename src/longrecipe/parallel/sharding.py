"""Split one batch along the sequence into ``sp`` contiguous shards (pure tensor functions).

Labels are shifted *before* sharding (``shift_labels[t] = labels[t + 1]``, last = -100), so the
token that predicts across a shard boundary keeps its target; the loss must then not shift again
(transformers' loss functions take the same ``shift_labels`` key). A sequence whose length is not a
multiple of ``sp`` is padded at the end: the pad repeats the last token and the last position
(so neither the maximum position, which dynamic RoPE reads, nor any real token's causal context
changes) and carries label -100, so loss and gradients are exactly those of the unpadded sample.
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

import torch

IGNORE_INDEX = -100
# keys of packed replay batches: several documents per row need varlen attention, not Ulysses
_PACKED_KEYS = ("seq_lens", "cu_seqlens", "cu_seq_lens_q", "cu_seq_lens_k")


def shift_labels(labels: torch.Tensor, ignore_index: int = IGNORE_INDEX) -> torch.Tensor:
    """``[B, T]`` HF-aligned labels -> targets of each position (``labels[:, 1:]`` + one ``ignore_index``)."""
    if labels.dim() != 2:
        raise ValueError(f"labels must be [batch, seq] (2-D), got shape {tuple(labels.shape)}")
    return torch.nn.functional.pad(labels[:, 1:], (0, 1), value=ignore_index)


def pad_to_multiple(batch: Mapping[str, Any], multiple: int) -> dict[str, Any]:
    """Pad every ``[B, T, ...]`` tensor of ``batch`` to a length divisible by ``multiple`` (see module doc)."""
    out = dict(batch)
    seq_len = int(batch["input_ids"].shape[1])
    extra = (-seq_len) % multiple
    if extra == 0:
        return out
    for key, value in batch.items():
        if not _is_seq_tensor(value, batch["input_ids"]):
            continue
        if key in ("labels", "shift_labels"):
            fill = torch.full((*value.shape[:1], extra, *value.shape[2:]), IGNORE_INDEX, dtype=value.dtype,
                              device=value.device)
        else:  # repeat the last column: same token, same (max) position, mask 1
            fill = value[:, -1:].expand(-1, extra, *value.shape[2:])
        out[key] = torch.cat([value, fill], dim=1)
    return out


def shard_batch(batch: Mapping[str, Any], sp_rank: int, sp_size: int) -> dict[str, Any]:
    """This rank's contiguous shard of a (collated) batch for sequence parallelism.

    ``labels`` (or ``input_ids`` when absent) is replaced by ``shift_labels`` (shifted on the full sequence,
    then sharded); every other tensor shaped ``[B, T, ...]`` like ``input_ids`` is padded (see
    :func:`pad_to_multiple`) and sliced to ``[B, T_pad / sp, ...]``; anything else passes through unchanged.
    """
    if sp_size < 1 or not 0 <= sp_rank < sp_size:
        raise ValueError(f"need 0 <= sp_rank < sp_size, got sp_rank={sp_rank}, sp_size={sp_size}")
    if "input_ids" not in batch or not torch.is_tensor(batch["input_ids"]) or batch["input_ids"].dim() != 2:
        raise ValueError("sequence-parallel batches need an `input_ids` tensor of shape [batch, seq]")
    if "position_ids" not in batch:
        raise ValueError(
            "sequence-parallel batches need `position_ids` (each shard keeps its true positions; without them "
            "every rank would restart at 0); the LongContextDataModule always provides them"
        )
    packed = [k for k in _PACKED_KEYS if k in batch]
    if packed:
        raise ValueError(
            f"packed batches ({packed}) are not supported with strategy.sequence_parallel_size > 1: Ulysses runs "
            "plain causal attention over one sample per row. Disable replay packing or use sequence_parallel_size=1."
        )
    mask = batch.get("attention_mask")
    if torch.is_tensor(mask) and mask.dim() == 2 and bool((mask[:, 1:] > mask[:, :-1]).any()):
        raise ValueError(
            "attention_mask must be all ones (optionally with trailing padding) under sequence parallelism; "
            "left padding or block masks cannot be expressed by the causal Ulysses attention"
        )
    out = dict(batch)
    if "shift_labels" in out:
        out.pop("labels", None)
    else:  # no labels: next-token targets from input_ids (the LightningModule's fallback too)
        out["shift_labels"] = shift_labels(out.pop("labels", out["input_ids"]))
    if sp_size == 1:
        return out
    out = pad_to_multiple(out, sp_size)
    chunk = int(out["input_ids"].shape[1]) // sp_size
    reference = out["input_ids"]
    for key, value in list(out.items()):
        if _is_seq_tensor(value, reference):
            out[key] = value[:, sp_rank * chunk:(sp_rank + 1) * chunk].contiguous()
    return out


def _is_seq_tensor(value: Any, input_ids: torch.Tensor) -> bool:
    return torch.is_tensor(value) and value.dim() >= 2 and tuple(value.shape[:2]) == tuple(input_ids.shape[:2])
