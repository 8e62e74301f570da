"""Token-weighted loss over a sequence-parallel group.

Each SP rank holds ``loss_sum`` (summed cross-entropy of its shard) and ``n_tokens`` (its
non-ignored targets). The group's loss is ``sum(loss_sum) / sum(n_tokens)`` -- a mean of shard
means would over-weight shards with few targets. For backward every rank uses
``sp * loss_sum / sum(n_tokens)``: the all-to-all backward routes each rank's gradient contributions
to the ranks that own the activations, so the per-rank parameter gradients of these objectives sum
to ``sp x`` the true gradient of the group loss, and the data-parallel gradient average over
``dp x sp`` ranks (DeepSpeed/DDP) divides it back -- the update equals the one of ``sp = 1``.
"""

from __future__ import annotations

import torch

from longrecipe.parallel.groups import current_sequence_parallel
from longrecipe.parallel.sharding import IGNORE_INDEX


def token_loss_sum(logits: torch.Tensor, shift_labels: torch.Tensor,
                   ignore_index: int = IGNORE_INDEX) -> tuple[torch.Tensor, torch.Tensor]:
    """Summed cross-entropy of ``[B, T, V]`` logits against pre-shifted targets, and the target count."""
    loss_sum = torch.nn.functional.cross_entropy(
        logits.reshape(-1, logits.shape[-1]).float() if logits.dtype in (torch.float16, torch.bfloat16)
        else logits.reshape(-1, logits.shape[-1]),
        shift_labels.reshape(-1).to(logits.device),
        ignore_index=ignore_index,
        reduction="sum",
    )
    return loss_sum, (shift_labels != ignore_index).sum()


def sequence_parallel_loss(loss_sum: torch.Tensor, n_tokens: torch.Tensor | int,
                           group=None, sp_size: int | None = None) -> tuple[torch.Tensor, torch.Tensor]:
    """``(objective, loss)``: the tensor to backpropagate and the group's token-weighted mean (detached).

    Without sequence parallelism (no group given and none initialised, or ``sp_size == 1``) both are
    ``loss_sum / n_tokens``. ``n_tokens == 0`` on every rank gives a zero loss (no NaN).
    """
    n_tokens = torch.as_tensor(n_tokens, device=loss_sum.device)
    if group is None:
        state = current_sequence_parallel()
        if state is not None and state.sp_size > 1:
            group, sp_size = state.sp_group, state.sp_size
    if group is None or sp_size == 1:
        mean = loss_sum / n_tokens.clamp(min=1).to(loss_sum.dtype)
        return mean, mean.detach()
    import torch.distributed as dist

    if sp_size is None:
        sp_size = dist.get_world_size(group)
    totals = torch.stack([loss_sum.detach().to(torch.float64), n_tokens.to(torch.float64)])
    dist.all_reduce(totals, op=dist.ReduceOp.SUM, group=group)
    denominator = totals[1].clamp(min=1)
    objective = loss_sum * (sp_size / denominator.to(loss_sum.dtype))
    return objective, (totals[0] / denominator).to(loss_sum.dtype)
