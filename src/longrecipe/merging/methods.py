"""Per-tensor merge rules. Pure functions on fp32 tensors; the caller casts back to the output dtype.

- ``linear``: ``Σ_i w_i θ_i`` over (original, tuned_1, ...) — the paper's ``λ1 θ_orig + λ2 θ_tuned``.
- ``slerp``: spherical interpolation between the flattened original and tuned tensors at ``t``,
  falling back to linear interpolation when they are (anti-)colinear or one is zero.
- ``task_arithmetic``: ``θ_orig + Σ_i λ_i (θ_i − θ_orig)``.
- ``ties`` (Yadav et al., 2023): trim each weighted task vector to its top ``density`` fraction by
  magnitude, elect a sign per entry (sign of the summed trimmed vectors), average the entries that
  agree with the elected sign, add ``scale`` times that to the original. With a single tuned model it
  reduces to task arithmetic on the trimmed task vector.
"""

from __future__ import annotations

import math
from collections.abc import Sequence

import torch

METHODS = ("linear", "slerp", "task_arithmetic", "ties")


def linear(tensors: Sequence[torch.Tensor], weights: Sequence[float]) -> torch.Tensor:
    """``Σ w_i t_i`` (fp32 in, fp32 out)."""
    out: torch.Tensor | None = None
    for t, w in zip(tensors, weights, strict=True):
        term = float(w) * t.float()
        out = term if out is None else out + term
    return out


def slerp(a: torch.Tensor, b: torch.Tensor, t: float, *, eps: float = 1e-7) -> torch.Tensor:
    """Spherical interpolation from ``a`` (t=0) to ``b`` (t=1) of the flattened tensors.

    The interpolation angle is that between the directions of ``a`` and ``b``; the magnitudes are
    interpolated along with them (the usual model-merging SLERP). Falls back to ``(1-t) a + t b``
    when ``|cos| > 1 - eps`` or either tensor is zero.
    """
    a32, b32 = a.float().reshape(-1), b.float().reshape(-1)
    na, nb = a32.norm(), b32.norm()
    if na.item() == 0.0 or nb.item() == 0.0:
        return linear([a, b], [1.0 - t, t]).reshape(a.shape)
    cos = torch.dot(a32 / na, b32 / nb).clamp(-1.0, 1.0).item()
    if abs(cos) > 1.0 - eps:
        return linear([a, b], [1.0 - t, t]).reshape(a.shape)
    theta = math.acos(cos)
    sin_theta = math.sin(theta)
    wa = math.sin((1.0 - t) * theta) / sin_theta
    wb = math.sin(t * theta) / sin_theta
    return linear([a32, b32], [wa, wb]).reshape(a.shape)


def task_arithmetic(original: torch.Tensor, tuned: Sequence[torch.Tensor], weights: Sequence[float]) -> torch.Tensor:
    """``θ_orig + Σ λ_i (θ_i − θ_orig)``."""
    base = original.float()
    out = base
    for t, w in zip(tuned, weights, strict=True):
        out = out + float(w) * (t.float() - base)
    return out


def trim_to_density(delta: torch.Tensor, density: float) -> torch.Tensor:
    """Zero all but the ``ceil(density * n)`` largest-magnitude entries (ties at the threshold kept by index)."""
    n = delta.numel()
    k = min(n, max(0, math.ceil(density * n)))
    if k >= n:
        return delta
    if k == 0:
        return torch.zeros_like(delta)
    flat = delta.reshape(-1)
    keep = torch.zeros(n, dtype=torch.bool)
    keep[torch.topk(flat.abs(), k, sorted=False).indices] = True
    return torch.where(keep, flat, torch.zeros_like(flat)).reshape(delta.shape)


def ties(
    original: torch.Tensor,
    tuned: Sequence[torch.Tensor],
    weights: Sequence[float],
    *,
    density: float,
    scale: float = 1.0,
) -> torch.Tensor:
    """TIES merge: trim (top-``density``), elect sign, disjoint mean; ``θ_orig + scale · τ_merged``."""
    base = original.float()
    deltas = torch.stack([trim_to_density((t.float() - base) * float(w), density) for t, w in zip(tuned, weights, strict=True)])
    elected = torch.sign(deltas.sum(dim=0))
    agree = (torch.sign(deltas) == elected) & (deltas != 0)
    count = agree.sum(dim=0)
    merged = torch.where(agree, deltas, torch.zeros_like(deltas)).sum(dim=0) / count.clamp(min=1)
    return base + scale * merged
