"""Sequence-parallel process groups: world = dp x sp, SP groups are blocks of consecutive ranks.

Ranks ``[k*sp, (k+1)*sp)`` form SP group ``k`` (they share one sample); the data-parallel rank of a
process is ``rank // sp``. Consecutive blocks keep an SP group inside one node when
``sp <= GPUs per node``, so the all-to-all runs over NVLink.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

from longrecipe.utils.logging import get_logger

log = get_logger(__name__)


@dataclass(frozen=True)
class SequenceParallelLayout:
    """Pure rank arithmetic for ``world_size`` processes split into SP groups of ``sp_size``."""

    world_size: int
    sp_size: int

    def __post_init__(self) -> None:
        if self.world_size < 1:
            raise ValueError(f"world_size must be >= 1, got {self.world_size}")
        if self.sp_size < 1 or self.world_size % self.sp_size != 0:
            divisors = [d for d in range(1, self.world_size + 1) if self.world_size % d == 0]
            raise ValueError(
                f"strategy.sequence_parallel_size={self.sp_size} must be >= 1 and divide the world size "
                f"{self.world_size} (devices x nodes); allowed values: {divisors}. Change "
                "strategy.sequence_parallel_size or the number of devices."
            )

    @property
    def dp_size(self) -> int:
        return self.world_size // self.sp_size

    def sp_rank(self, rank: int) -> int:
        return rank % self.sp_size

    def dp_rank(self, rank: int) -> int:
        return rank // self.sp_size

    def sp_groups(self) -> list[list[int]]:
        return [list(range(k * self.sp_size, (k + 1) * self.sp_size)) for k in range(self.dp_size)]

    def dp_groups(self) -> list[list[int]]:
        return [list(range(r, self.world_size, self.sp_size)) for r in range(self.sp_size)]


@dataclass
class SequenceParallelState:
    """The live groups of this process (set by :func:`init_sequence_parallel`)."""

    layout: SequenceParallelLayout
    rank: int
    sp_group: Any
    dp_group: Any

    @property
    def sp_size(self) -> int:
        return self.layout.sp_size

    @property
    def sp_rank(self) -> int:
        return self.layout.sp_rank(self.rank)

    @property
    def dp_size(self) -> int:
        return self.layout.dp_size

    @property
    def dp_rank(self) -> int:
        return self.layout.dp_rank(self.rank)


_STATE: SequenceParallelState | None = None


def init_sequence_parallel(sp_size: int) -> SequenceParallelState:
    """Create the SP and DP groups on every rank (collective: all ranks must call it).

    ``torch.distributed`` must already be initialised; DeepSpeed's communication layer is
    initialised on top of it when needed (``UlyssesSPAttentionHF`` talks through ``deepspeed.comm``).
    Calling it again with the same size returns the existing state.
    """
    global _STATE
    import deepspeed
    import deepspeed.comm as ds_dist
    import torch.distributed as dist

    if not dist.is_available() or not dist.is_initialized():
        raise RuntimeError("init_sequence_parallel needs torch.distributed initialised first (the strategy does it)")
    layout = SequenceParallelLayout(dist.get_world_size(), int(sp_size))
    if _STATE is not None:
        if _STATE.layout == layout:
            return _STATE
        raise RuntimeError(f"sequence parallelism already initialised with {_STATE.layout}; cannot switch to {layout}")
    if not ds_dist.is_initialized():
        deepspeed.init_distributed(dist_backend=dist.get_backend(), dist_init_required=False)
    rank = dist.get_rank()
    sp_group = dp_group = None
    for ranks in layout.sp_groups():  # every rank creates every group, in the same order
        group = dist.new_group(ranks)
        if rank in ranks:
            sp_group = group
    for ranks in layout.dp_groups():
        group = dist.new_group(ranks)
        if rank in ranks:
            dp_group = group
    _STATE = SequenceParallelState(layout=layout, rank=rank, sp_group=sp_group, dp_group=dp_group)
    log.info("sequence parallel: world=%d = dp %d x sp %d (rank %d: sp_rank %d, dp_rank %d)", layout.world_size,
             layout.dp_size, layout.sp_size, rank, _STATE.sp_rank, _STATE.dp_rank)
    return _STATE


def current_sequence_parallel() -> SequenceParallelState | None:
    """The state of this process, or ``None`` when sequence parallelism is off."""
    return _STATE


def reset_sequence_parallel() -> None:
    """Forget the groups (they are destroyed with the default process group)."""
    global _STATE
    _STATE = None
