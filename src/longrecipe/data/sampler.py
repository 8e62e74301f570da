"""A seeded, DDP-aware, resumable sampler that hands out ``(epoch, index)`` keys.

The key carries the epoch to the dataset, so positions drawn with ``sample_rng(seed, epoch, index)``
are right even in persistent DataLoader workers (which never see a ``set_epoch`` call).

Order of epoch ``e``: a permutation of ``range(n)`` seeded by ``(seed, e)`` (identity without
shuffle), cut to a multiple of the world size (``drop_last=True``) or padded by wrapping around
(``drop_last=False``); rank ``r`` takes global positions ``r, r + W, r + 2W, ...``. ``consumed`` counts
global samples already delivered to the model in the current epoch (advanced by the DataModule as
batches reach the model, so prefetching does not count); a restored state resumes at exactly the next
sample, also with a different world size.
"""

from __future__ import annotations

import math
from collections.abc import Iterator
from typing import Any

import numpy as np
import torch.distributed as dist
from torch.utils.data import DataLoader, DistributedSampler

from longrecipe.utils.logging import get_logger

log = get_logger(__name__)

_SHUFFLE_STREAM = 1  # RNG stream for the epoch permutation (positions use stream 0)


def epoch_order(n: int, *, seed: int, epoch: int, shuffle: bool = True) -> np.ndarray:
    """The global sample order of one epoch (pure)."""
    if not shuffle:
        return np.arange(n, dtype=np.int64)
    rng = np.random.default_rng(np.random.SeedSequence([seed, epoch, _SHUFFLE_STREAM]))
    return rng.permutation(n).astype(np.int64)


class ResumableDistributedSampler(DistributedSampler):
    """Seeded shuffling sampler for single process or DDP with ``state_dict`` / ``load_state_dict``.

    It subclasses ``DistributedSampler`` so Lightning keeps it as is instead of wrapping it.
    Yields ``(epoch, index)`` tuples (see the module docstring).
    """

    def __init__(self, dataset: Any, *, seed: int = 0, shuffle: bool = True, num_replicas: int | None = None,
                 rank: int | None = None, drop_last: bool = False) -> None:
        if num_replicas is None:
            num_replicas = dist.get_world_size() if dist.is_available() and dist.is_initialized() else 1
        if rank is None:
            rank = dist.get_rank() if dist.is_available() and dist.is_initialized() else 0
        if num_replicas < 1 or not 0 <= rank < num_replicas:
            raise ValueError(f"rank must be in [0, num_replicas) with num_replicas >= 1, got rank={rank}, "
                             f"num_replicas={num_replicas}")
        if seed < 0:
            raise ValueError(f"data.seed must be >= 0, got {seed}")
        super().__init__(dataset, num_replicas=num_replicas, rank=rank, shuffle=shuffle, seed=seed,
                         drop_last=drop_last)
        self.n = len(dataset)
        self.consumed = 0
        self._resume_from = 0
        if drop_last and self.n < num_replicas:
            raise ValueError(f"{self.n} samples cannot be split over {num_replicas} ranks with drop_last=true; "
                             "add data or set data.drop_last=false (pads by repeating samples)")

    # --- order ---------------------------------------------------------------------------------
    @property
    def global_size(self) -> int:
        """Samples per epoch over all ranks (after drop / pad)."""
        w = self.num_replicas
        return (self.n // w) * w if self.drop_last else math.ceil(self.n / w) * w

    def global_order(self) -> np.ndarray:
        order = epoch_order(self.n, seed=self.seed, epoch=self.epoch, shuffle=self.shuffle)
        size = self.global_size
        if size > self.n:
            order = np.resize(order, size)  # wrap around: pad with the first samples again
        return order[:size]

    def _local_range(self, start: int) -> range:
        return range(start + self.rank, self.global_size, self.num_replicas)

    def __iter__(self) -> Iterator[tuple[int, int]]:
        start, self._resume_from = self._resume_from, 0
        order = self.global_order()
        epoch = int(self.epoch)
        for pos in self._local_range(start):
            yield epoch, int(order[pos])

    def __len__(self) -> int:
        """Samples of this rank in a whole epoch (stable, so Lightning's batches-per-epoch is too)."""
        return len(self._local_range(0))

    # --- progress --------------------------------------------------------------------------------
    def set_epoch(self, epoch: int) -> None:
        """Start ``epoch``; a different epoch than the current one resets the consumed counter."""
        if epoch < 0:
            raise ValueError(f"epoch must be >= 0, got {epoch}")
        log.debug("set_epoch(%d) at epoch %d, consumed %d", epoch, self.epoch, self.consumed)
        if epoch != self.epoch:
            self.epoch = int(epoch)
            self.consumed = 0
            self._resume_from = 0

    def mark_consumed(self, n_global: int) -> None:
        """Record that ``n_global`` more samples (summed over ranks) reached the model this epoch."""
        self.consumed = min(self.consumed + int(n_global), self.global_size)

    def state_dict(self) -> dict[str, int | bool]:
        return {"epoch": int(self.epoch), "consumed": int(self.consumed), "seed": int(self.seed),
                "num_samples": int(self.n), "shuffle": bool(self.shuffle), "num_replicas": int(self.num_replicas)}

    def load_state_dict(self, state: dict[str, Any]) -> None:
        """Resume: the next ``__iter__`` starts right after the ``consumed`` samples of ``state['epoch']``."""
        for key in ("seed", "num_samples", "shuffle"):
            if key in state and state[key] != getattr(self, "n" if key == "num_samples" else key):
                ours = getattr(self, "n" if key == "num_samples" else key)
                raise ValueError(
                    f"cannot resume the data order: checkpoint has {key}={state[key]!r} but this run has {ours!r}; "
                    "resume with the same data config (data.seed, data.source, data.sample_length, data.max_samples) "
                    "or start a new run"
                )
        consumed = int(state["consumed"])
        if consumed % self.num_replicas:
            rounded = consumed - consumed % self.num_replicas
            log.warning("resume: %d consumed samples is not a multiple of %d ranks; repeating %d samples",
                        consumed, self.num_replicas, consumed - rounded)
            consumed = rounded
        self.epoch = int(state["epoch"])
        self.consumed = min(consumed, self.global_size)
        self._resume_from = self.consumed


class ResumableDataLoader(DataLoader):
    """A ``DataLoader`` whose ``state_dict`` / ``load_state_dict`` are its sampler's.

    Lightning treats loaders with these methods as resumable: it stores their state in the
    checkpoint's loop state and restores it before iterating (and does not warn about mid-epoch
    resumption). The sampler must be a :class:`ResumableDistributedSampler`.
    """

    def state_dict(self) -> dict[str, Any]:
        return self.sampler.state_dict()

    def load_state_dict(self, state: dict[str, Any]) -> None:
        self.sampler.load_state_dict(state)
