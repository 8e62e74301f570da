"""Next-token loss that never materialises the full ``(tokens x vocab)`` fp32 logits.

Llama-3's 128k vocabulary at a 24k-token sample is ~12 GB of fp32 logits (plus as much again for the
gradient). ``chunked_causal_lm_loss`` walks the sequence in chunks of ``chunk_size`` positions; each chunk's
projection + cross-entropy runs under ``torch.utils.checkpoint`` (non-reentrant), so forward keeps only
the chunk's hidden states and backward recomputes one chunk's logits at a time. Peak extra memory is
``O(batch * chunk_size * vocab)`` instead of ``O(batch * seq * vocab)``.

With Liger installed and the tensors on GPU, ``causal_lm_loss(..., impl="auto")`` uses Liger's fused
linear cross-entropy instead (same reduction); on CPU, or without Liger, the chunked path.
"""

from __future__ import annotations

import importlib.util
from collections.abc import Callable

import torch
import torch.nn.functional as F
from torch.utils.checkpoint import checkpoint

LOSS_IMPLS = ("auto", "chunked", "liger", "full")

Head = torch.Tensor | torch.nn.Module | Callable[[torch.Tensor], torch.Tensor]


def _project(hidden: torch.Tensor, head: Head, bias: torch.Tensor | None) -> torch.Tensor:
    if isinstance(head, torch.Tensor):
        return F.linear(hidden, head, bias)
    return head(hidden)


def _chunk_ce_sum(
    hidden: torch.Tensor,
    labels: torch.Tensor,
    head: Head,
    bias: torch.Tensor | None,
    ignore_index: int,
    softcap: float | None,
) -> torch.Tensor:
    logits = _project(hidden, head, bias)
    if logits.dtype != torch.float64:
        logits = logits.float()
    if softcap is not None:
        logits = torch.tanh(logits / softcap) * softcap
    return F.cross_entropy(logits.reshape(-1, logits.shape[-1]), labels.reshape(-1),
                           ignore_index=ignore_index, reduction="sum")


def shift_labels(labels: torch.Tensor, ignore_index: int = -100) -> torch.Tensor:
    """HF convention: position ``t`` predicts ``labels[t + 1]``; the last position gets ``ignore_index``."""
    pad = torch.full_like(labels[..., :1], ignore_index)
    return torch.cat([labels[..., 1:], pad], dim=-1)


def _check(hidden_states: torch.Tensor, labels: torch.Tensor, chunk_size: int) -> None:
    if hidden_states.dim() != 3:
        raise ValueError(f"hidden_states must be [batch, seq, hidden], got shape {tuple(hidden_states.shape)}")
    if tuple(labels.shape) != tuple(hidden_states.shape[:2]):
        raise ValueError(
            f"labels must be [batch, seq] = {tuple(hidden_states.shape[:2])} (aligned with input_ids; the loss "
            f"shifts), got {tuple(labels.shape)}"
        )
    if int(chunk_size) < 1:
        raise ValueError(f"loss_chunk_size must be >= 1, got {chunk_size}; try 1024-4096")


def chunked_causal_lm_loss(
    hidden_states: torch.Tensor,
    lm_head_weight: Head,
    labels: torch.Tensor,
    chunk_size: int = 1024,
    ignore_index: int = -100,
    *,
    lm_head_bias: torch.Tensor | None = None,
    softcap: float | None = None,
    shifted: bool = False,
) -> tuple[torch.Tensor, torch.Tensor]:
    """Mean shifted next-token cross-entropy and the number of tokens it averages over.

    ``hidden_states`` ``[B, T, D]`` are the final (normed) hidden states, ``labels`` ``[B, T]`` aligned with
    ``input_ids`` (``ignore_index`` = ignored). ``lm_head_weight`` is the ``[V, D]`` output-embedding weight,
    or the head module itself (needed under ZeRO-3, where only the module's forward gathers the weight).
    Reduction: sum over valid tokens / number of valid tokens (0 tokens → loss 0 with a graph).
    Returns ``(loss, n_tokens)`` so sequence-parallel ranks can reduce token-weighted.
    ``shifted=True``: ``labels`` are already the per-position targets (``shift_labels`` of a sequence-parallel
    shard, shifted on the full sequence before sharding) and are used as they are.
    """
    _check(hidden_states, labels, chunk_size)
    targets = labels if shifted else shift_labels(labels, ignore_index)
    n_tokens = (targets != ignore_index).sum()
    total = hidden_states.new_zeros((), dtype=torch.promote_types(hidden_states.dtype, torch.float32))
    seq = hidden_states.shape[1]
    needs_grad = torch.is_grad_enabled() and (
        hidden_states.requires_grad or (isinstance(lm_head_weight, torch.Tensor) and lm_head_weight.requires_grad)
        or isinstance(lm_head_weight, torch.nn.Module)
    )
    for start in range(0, seq, int(chunk_size)):
        h = hidden_states[:, start:start + int(chunk_size)]
        y = targets[:, start:start + int(chunk_size)]
        if needs_grad:
            part = checkpoint(_chunk_ce_sum, h, y, lm_head_weight, lm_head_bias, ignore_index, softcap,
                              use_reentrant=False)
        else:
            part = _chunk_ce_sum(h, y, lm_head_weight, lm_head_bias, ignore_index, softcap)
        total = total + part
    return total / n_tokens.clamp(min=1).to(total.dtype), n_tokens


def full_causal_lm_loss(
    hidden_states: torch.Tensor,
    lm_head_weight: Head,
    labels: torch.Tensor,
    ignore_index: int = -100,
    *,
    lm_head_bias: torch.Tensor | None = None,
    softcap: float | None = None,
    shifted: bool = False,
) -> tuple[torch.Tensor, torch.Tensor]:
    """Reference: the same loss computed from the full fp32 logits (memory ``O(B*T*V)``)."""
    _check(hidden_states, labels, 1)
    targets = labels if shifted else shift_labels(labels, ignore_index)
    n_tokens = (targets != ignore_index).sum()
    total = _chunk_ce_sum(hidden_states, targets, lm_head_weight, lm_head_bias, ignore_index, softcap)
    return total / n_tokens.clamp(min=1).to(total.dtype), n_tokens


def liger_available() -> bool:
    """True when ``liger_kernel`` is importable (it needs a GPU with Triton to run)."""
    return importlib.util.find_spec("liger_kernel") is not None


def liger_causal_lm_loss(
    hidden_states: torch.Tensor,
    lm_head_weight: torch.Tensor,
    labels: torch.Tensor,
    ignore_index: int = -100,
    *,
    lm_head_bias: torch.Tensor | None = None,
    softcap: float | None = None,
    shifted: bool = False,
) -> tuple[torch.Tensor, torch.Tensor]:
    """Liger's fused linear cross-entropy (GPU), same reduction as ``chunked_causal_lm_loss``."""
    from liger_kernel.transformers import LigerFusedLinearCrossEntropyLoss

    _check(hidden_states, labels, 1)
    if not isinstance(lm_head_weight, torch.Tensor):
        raise ValueError("loss_impl='liger' needs the lm_head weight tensor, not a module; use loss_impl=chunked")
    targets = labels if shifted else shift_labels(labels, ignore_index)
    n_tokens = (targets != ignore_index).sum()
    fn = LigerFusedLinearCrossEntropyLoss(ignore_index=ignore_index, reduction="sum", softcap=softcap)
    total = fn(lm_head_weight, hidden_states.reshape(-1, hidden_states.shape[-1]), targets.reshape(-1),
               lm_head_bias)
    total = total.float()
    return total / n_tokens.clamp(min=1).to(total.dtype), n_tokens


def resolve_loss_impl(impl: str, device: torch.device) -> str:
    """``auto`` → ``liger`` on CUDA with Liger installed, else ``chunked``. Validates ``impl``."""
    if impl not in LOSS_IMPLS:
        raise ValueError(f"model.loss_impl must be one of {list(LOSS_IMPLS)}, got {impl!r}")
    if impl == "auto":
        return "liger" if device.type == "cuda" and liger_available() else "chunked"
    if impl == "liger" and not liger_available():
        raise ValueError("model.loss_impl='liger' but liger_kernel is not installed; pip install liger-kernel "
                         "(GPU) or use model.loss_impl=chunked")
    return impl


def causal_lm_loss(
    hidden_states: torch.Tensor,
    lm_head_weight: Head,
    labels: torch.Tensor,
    *,
    impl: str = "auto",
    chunk_size: int = 1024,
    ignore_index: int = -100,
    lm_head_bias: torch.Tensor | None = None,
    softcap: float | None = None,
    shifted: bool = False,
) -> tuple[torch.Tensor, torch.Tensor]:
    """Dispatch to the chunked / Liger / full-logits implementation (``impl`` as in ``LOSS_IMPLS``)."""
    impl = resolve_loss_impl(impl, hidden_states.device)
    if impl == "liger":
        return liger_causal_lm_loss(hidden_states, lm_head_weight, labels, ignore_index,
                                    lm_head_bias=lm_head_bias, softcap=softcap, shifted=shifted)
    if impl == "full":
        return full_causal_lm_loss(hidden_states, lm_head_weight, labels, ignore_index,
                                   lm_head_bias=lm_head_bias, softcap=softcap, shifted=shifted)
    return chunked_causal_lm_loss(hidden_states, lm_head_weight, labels, chunk_size, ignore_index,
                                  lm_head_bias=lm_head_bias, softcap=softcap, shifted=shifted)
