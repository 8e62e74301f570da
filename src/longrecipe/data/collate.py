"""Per-sample position indices at load time, and the batch collate.

``PositionedSamples[(epoch, index)]`` applies the position scheme with
``sample_rng(seed, epoch, index)``: the positions of a sample depend only on the seed, the epoch and
the sample index -- never on the worker, batch composition or resume point. An ``int`` key means
epoch 0. Without a scheme (validation) positions are ``0..T-1`` (FLT).
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from typing import Any

import numpy as np
import torch
from torch.utils.data import Dataset

from longrecipe.utils.seeding import sample_rng

IGNORE_INDEX = -100

PositionScheme = Callable[..., np.ndarray]


def check_positions(positions: Any, n: int, *, target_length: int, scheme: Any) -> np.ndarray:
    """Enforce the scheme contract: ``n`` int64 indices, start 0, strictly increasing, ``< target_length``."""
    name = type(scheme).__name__
    pos = np.asarray(positions)
    if pos.shape != (n,) or not np.issubdtype(pos.dtype, np.integer):
        raise ValueError(f"position scheme {name} returned shape {pos.shape} dtype {pos.dtype}; "
                         f"the contract is {n} integer indices (one per token)")
    pos = pos.astype(np.int64, copy=False)
    if n and (pos[0] != 0 or (np.diff(pos) <= 0).any() or pos[-1] >= target_length):
        raise ValueError(f"position scheme {name} broke the contract (start 0, strictly increasing, "
                         f"max < target_length={target_length}); got first={pos[0]}, last={pos[-1]}, "
                         f"non-increasing steps={int((np.diff(pos) <= 0).sum())}")
    return pos


class PositionedSamples(Dataset):
    """A map-style dataset over prepared samples that adds ``position_ids``.

    ``samples``: a ``datasets.Dataset`` with ``input_ids`` (and ``segment_starts`` when
    ``use_segment_starts``). ``position``: a scheme ``f(input_ids, rng, *, segment_starts=None)`` or
    None for FLT positions.
    """

    def __init__(self, samples: Any, position: PositionScheme | None, *, seed: int, target_length: int,
                 use_segment_starts: bool = False) -> None:
        columns = ["input_ids", "segment_starts"] if use_segment_starts else ["input_ids"]
        self.samples = samples.with_format("numpy", columns=columns)
        self.position = position
        self.seed = int(seed)
        self.target_length = int(target_length)
        self.use_segment_starts = use_segment_starts

    def __len__(self) -> int:
        return len(self.samples)

    def __getitem__(self, key: int | tuple[int, int]) -> dict[str, np.ndarray]:
        epoch, index = (int(key[0]), int(key[1])) if isinstance(key, tuple) else (0, int(key))
        if not 0 <= index < len(self.samples):
            raise IndexError(f"sample index {index} out of range for {len(self.samples)} samples")
        row = self.samples[index]
        input_ids = np.asarray(row["input_ids"], dtype=np.int64)
        return {"input_ids": input_ids, "position_ids": self.positions(input_ids, epoch, index, row)}

    def positions(self, input_ids: np.ndarray, epoch: int, index: int, row: dict | None = None) -> np.ndarray:
        n = input_ids.shape[0]
        if self.position is None:
            if n > self.target_length:
                raise ValueError(f"a sample of {n} tokens does not fit target_length={self.target_length} with "
                                 "FLT positions; lower data.sample_length")
            return np.arange(n, dtype=np.int64)
        seg = None
        if self.use_segment_starts and row is not None and row.get("segment_starts") is not None:
            seg = np.asarray(row["segment_starts"], dtype=np.int64)
        out = self.position(input_ids, sample_rng(self.seed, epoch, index), segment_starts=seg)
        return check_positions(out, n, target_length=self.target_length, scheme=self.position)


class LongContextCollator:
    """Stack examples into the batch contract (CONTRIBUTING): ``input_ids``, ``labels`` (a copy),
    ``position_ids`` and an all-ones 2-D ``attention_mask``.

    Equal-length samples (the normal case) need no padding. Shorter rows of a prepared dataset are
    right-padded: ``pad_token_id`` in ``input_ids``, ``-100`` in ``labels``, 0 in the mask, and
    positions continuing past the last real one, capped at ``max_position`` (``target_length - 1``) when
    given: a pad position beyond the window would make ``dynamic`` RoPE (which reads the batch's largest
    position id) rescale the frequencies of every real token in the batch.
    """

    def __init__(self, pad_token_id: int = 0, max_position: int | None = None) -> None:
        self.pad_token_id = int(pad_token_id)
        self.max_position = None if max_position is None else int(max_position)

    def __call__(self, examples: Sequence[dict[str, np.ndarray]]) -> dict[str, torch.Tensor]:
        if not examples:
            raise ValueError("cannot collate an empty list of examples")
        lengths = np.array([ex["input_ids"].shape[0] for ex in examples])
        T = int(lengths.max())
        B = len(examples)
        input_ids = np.full((B, T), self.pad_token_id, dtype=np.int64)
        labels = np.full((B, T), IGNORE_INDEX, dtype=np.int64)
        mask = (np.arange(T)[None, :] < lengths[:, None]).astype(np.int64)
        positions = np.zeros((B, T), dtype=np.int64)
        for b, ex in enumerate(examples):
            n = lengths[b]
            input_ids[b, :n] = ex["input_ids"]
            labels[b, :n] = ex["input_ids"]
            positions[b, :n] = ex["position_ids"]
            if n < T:
                last = positions[b, n - 1] if n else -1
                positions[b, n:] = last + 1 + np.arange(T - n)
                if self.max_position is not None:
                    positions[b, n:] = np.minimum(positions[b, n:], max(self.max_position, last))
        return {
            "input_ids": torch.from_numpy(input_ids),
            "labels": torch.from_numpy(labels),
            "position_ids": torch.from_numpy(positions),
            "attention_mask": torch.from_numpy(mask),
        }
