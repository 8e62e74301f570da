"""Optimizers and learning-rate schedules.

``build_optimizer`` looks the optimizer up by name in a registry. ``optim.name: auto`` picks, through
``select_optimizer``: a strategy's own choice when it sets ``longrecipe_optimizer`` (the DeepSpeed factories
in ``training/deepspeed.py`` may), else under Lightning's ``DeepSpeedStrategy`` ``deepspeed_cpu_adam`` when
the optimizer state is offloaded to CPU and ``fused_adam`` on GPU, else ``torch.optim.AdamW``.
New optimizers plug in with ``@register_optimizer("name")``.

Schedules (``lr_multiplier``): linear warmup over ``warmup_steps`` (or ``warmup_ratio`` of the run), then
``constant``, ``cosine`` or ``linear`` decay to ``min_lr_ratio * lr`` at the last step.
"""

from __future__ import annotations

import math
from collections.abc import Callable, Iterable, Mapping
from typing import Any

import torch

from longrecipe.utils.logging import get_logger

log = get_logger(__name__)

SCHEDULES = ("constant", "cosine", "linear")

OptimizerFactory = Callable[..., torch.optim.Optimizer]
OPTIMIZERS: dict[str, OptimizerFactory] = {}


def register_optimizer(name: str) -> Callable[[OptimizerFactory], OptimizerFactory]:
    """Register ``factory(param_groups, *, lr, betas, eps, weight_decay) -> Optimizer`` under ``name``."""

    def deco(factory: OptimizerFactory) -> OptimizerFactory:
        OPTIMIZERS[name] = factory
        return factory

    return deco


@register_optimizer("adamw")
def _adamw(params, *, lr, betas, eps, weight_decay):
    return torch.optim.AdamW(params, lr=lr, betas=betas, eps=eps, weight_decay=weight_decay)


@register_optimizer("deepspeed_cpu_adam")
def _ds_cpu_adam(params, *, lr, betas, eps, weight_decay):
    from deepspeed.ops.adam import DeepSpeedCPUAdam

    return DeepSpeedCPUAdam(params, lr=lr, betas=betas, eps=eps, weight_decay=weight_decay, adamw_mode=True)


@register_optimizer("fused_adam")
def _ds_fused_adam(params, *, lr, betas, eps, weight_decay):
    from deepspeed.ops.adam import FusedAdam

    return FusedAdam(params, lr=lr, betas=betas, eps=eps, weight_decay=weight_decay, adam_w_mode=True)


def _deepspeed_offloads_optimizer(strategy: Any) -> bool:
    config = getattr(strategy, "config", None) or {}
    offload = (config.get("zero_optimization") or {}).get("offload_optimizer") or {}
    return str(offload.get("device", "none")).lower() in ("cpu", "nvme")


def select_optimizer(name: str, strategy: Any | None = None) -> str:
    """Resolve ``optim.name`` (``auto`` included) to a registered optimizer for ``strategy``."""
    if name != "auto":
        if name not in OPTIMIZERS:
            raise ValueError(f"optim.name must be 'auto' or one of {sorted(OPTIMIZERS)}, got {name!r}")
        return name
    chosen = getattr(strategy, "longrecipe_optimizer", None)
    if chosen:
        return select_optimizer(str(chosen), None)
    try:
        from lightning.pytorch.strategies import DeepSpeedStrategy
    except ImportError:  # pragma: no cover
        DeepSpeedStrategy = ()  # noqa: N806
    if DeepSpeedStrategy and isinstance(strategy, DeepSpeedStrategy):
        if _deepspeed_offloads_optimizer(strategy):
            return "deepspeed_cpu_adam"
        if torch.cuda.is_available():
            return "fused_adam"
    return "adamw"


def param_groups(named_params: Iterable[tuple[str, torch.nn.Parameter]], weight_decay: float) -> list[dict]:
    """Two groups: decayed matrices, and undecayed biases / norm weights / 1-D parameters."""
    decay, no_decay = [], []
    for name, p in named_params:
        if not p.requires_grad:
            continue
        (no_decay if p.dim() < 2 or name.endswith(".bias") or "norm" in name.lower() else decay).append(p)
    groups = [{"params": decay, "weight_decay": float(weight_decay)}]
    if no_decay:
        groups.append({"params": no_decay, "weight_decay": 0.0})
    return groups


def _check_optim(cfg: Mapping[str, Any]) -> None:
    lr = float(cfg.get("lr", 5e-5))
    if not lr > 0:
        raise ValueError(f"optim.lr must be > 0, got {lr:g} (paper: 5e-5)")
    wd = float(cfg.get("weight_decay", 0.0))
    if wd < 0:
        raise ValueError(f"optim.weight_decay must be >= 0, got {wd:g}")
    betas = tuple(cfg.get("betas", (0.9, 0.95)))
    if len(betas) != 2 or not all(0 <= b < 1 for b in betas):
        raise ValueError(f"optim.betas must be two numbers in [0, 1), got {list(betas)}")


def build_optimizer(module: torch.nn.Module, cfg: Mapping[str, Any], strategy: Any | None = None):
    """The optimizer for ``module``'s trainable parameters from ``conf/optim`` (``name``, ``lr``, ...)."""
    cfg = dict(cfg or {})
    _check_optim(cfg)
    name = select_optimizer(str(cfg.get("name", "auto")), strategy)
    groups = param_groups(module.named_parameters(), float(cfg.get("weight_decay", 0.0)))
    log.info("optimizer %s (lr=%g)", name, float(cfg.get("lr", 5e-5)))
    return OPTIMIZERS[name](groups, lr=float(cfg.get("lr", 5e-5)), betas=tuple(float(b) for b in cfg.get("betas", (0.9, 0.95))),
                            eps=float(cfg.get("eps", 1e-8)), weight_decay=float(cfg.get("weight_decay", 0.0)))


def warmup_steps_for(cfg: Mapping[str, Any], total_steps: int) -> int:
    """``warmup_steps`` when set, else ``round(warmup_ratio * total_steps)``."""
    steps = cfg.get("warmup_steps")
    if steps is None:
        ratio = float(cfg.get("warmup_ratio", 0.0) or 0.0)
        if not 0 <= ratio < 1:
            raise ValueError(f"optim.warmup_ratio must be in [0, 1), got {ratio:g}")
        steps = round(ratio * total_steps)
    if int(steps) < 0:
        raise ValueError(f"optim.warmup_steps must be >= 0, got {steps}")
    return int(steps)


def lr_multiplier(step: int, *, schedule: str, warmup_steps: int, total_steps: int, min_lr_ratio: float = 0.0) -> float:
    """LR factor for the optimizer step with 0-based index ``step``.

    Warmup: ``(step + 1) / warmup_steps`` for ``step < warmup_steps``. Then with progress
    ``p = (step - warmup_steps) / max(1, total_steps - warmup_steps - 1)`` clipped to [0, 1]:
    constant → 1; linear → ``1 - (1 - m) p``; cosine → ``m + (1 - m)(1 + cos(pi p)) / 2``.
    The last step (``total_steps - 1``) runs at ``min_lr_ratio``.
    """
    if schedule not in SCHEDULES:
        raise ValueError(f"optim.schedule must be one of {list(SCHEDULES)}, got {schedule!r}")
    if not 0 <= min_lr_ratio <= 1:
        raise ValueError(f"optim.min_lr_ratio must be in [0, 1], got {min_lr_ratio:g}")
    if step < warmup_steps:
        return (step + 1) / warmup_steps
    if schedule == "constant":
        return 1.0
    p = min(1.0, max(0.0, (step - warmup_steps) / max(1, total_steps - warmup_steps - 1)))
    if schedule == "linear":
        return 1.0 - (1.0 - min_lr_ratio) * p
    return min_lr_ratio + (1.0 - min_lr_ratio) * 0.5 * (1.0 + math.cos(math.pi * p))


def build_scheduler(optimizer: torch.optim.Optimizer, cfg: Mapping[str, Any], total_steps: int):
    """``LambdaLR`` over ``lr_multiplier`` (stepped once per optimizer step)."""
    cfg = dict(cfg or {})
    schedule = str(cfg.get("schedule", "constant"))
    warmup = warmup_steps_for(cfg, total_steps)
    min_ratio = float(cfg.get("min_lr_ratio", 0.0))
    lr_multiplier(0, schedule=schedule, warmup_steps=warmup, total_steps=total_steps, min_lr_ratio=min_ratio)

    def fn(step: int) -> float:
        return lr_multiplier(step, schedule=schedule, warmup_steps=warmup, total_steps=total_steps,
                             min_lr_ratio=min_ratio)

    return torch.optim.lr_scheduler.LambdaLR(optimizer, fn)
