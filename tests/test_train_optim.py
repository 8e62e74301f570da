"""Optimizer registry / selection and LR schedules (hand-computed values)."""

from __future__ import annotations

import math

import pytest
import torch

from longrecipe.training.optim import (
    build_optimizer,
    build_scheduler,
    lr_multiplier,
    param_groups,
    register_optimizer,
    select_optimizer,
)


def test_warmup_then_constant():
    got = [lr_multiplier(s, schedule="constant", warmup_steps=4, total_steps=10) for s in range(6)]
    assert got == [0.25, 0.5, 0.75, 1.0, 1.0, 1.0]


def test_linear_to_zero_and_cosine_exact():
    # warmup 2, total 7: decay steps 2..6 with p = (s - 2) / 4
    lin = [lr_multiplier(s, schedule="linear", warmup_steps=2, total_steps=7) for s in range(7)]
    assert lin == [0.5, 1.0, 1.0, 0.75, 0.5, 0.25, 0.0]
    cos = [lr_multiplier(s, schedule="cosine", warmup_steps=0, total_steps=5, min_lr_ratio=0.1) for s in range(5)]
    expected = [0.1 + 0.9 * 0.5 * (1 + math.cos(math.pi * k / 4)) for k in range(5)]
    assert cos == pytest.approx(expected, abs=1e-15)
    assert cos[0] == 1.0 and cos[-1] == pytest.approx(0.1)


def test_scheduler_drives_the_optimizer_lr():
    p = torch.nn.Parameter(torch.zeros(2, 2))
    opt = build_optimizer(torch.nn.ParameterList([p]), {"name": "adamw", "lr": 1e-3})
    sched = build_scheduler(opt, {"schedule": "linear", "warmup_steps": 1}, total_steps=3)
    lrs = []
    for _ in range(3):
        lrs.append(opt.param_groups[0]["lr"])
        opt.step()
        sched.step()
    assert lrs == pytest.approx([1e-3, 1e-3, 0.0])


def test_param_groups_skip_decay_for_norms_and_biases():
    lin = torch.nn.Linear(3, 4)
    norm = torch.nn.LayerNorm(4)
    named = list(lin.named_parameters()) + [(f"norm.{n}", p) for n, p in norm.named_parameters()]
    groups = param_groups(named, 0.1)
    assert [len(g["params"]) for g in groups] == [1, 3]
    assert [g["weight_decay"] for g in groups] == [0.1, 0.0]


def test_selection_and_registry_hook():
    assert select_optimizer("auto", None) == "adamw"

    class StrategyWithChoice:
        longrecipe_optimizer = "my_sgd"

    @register_optimizer("my_sgd")
    def _sgd(params, *, lr, betas, eps, weight_decay):
        return torch.optim.SGD(params, lr=lr)

    assert select_optimizer("auto", StrategyWithChoice()) == "my_sgd"
    opt = build_optimizer(torch.nn.Linear(2, 2), {"name": "auto", "lr": 0.5}, strategy=StrategyWithChoice())
    assert isinstance(opt, torch.optim.SGD)


@pytest.mark.parametrize("cfg, message", [
    ({"name": "lion"}, "optim.name must be 'auto' or one of"),
    ({"lr": 0}, "optim.lr must be > 0"),
    ({"betas": [0.9, 1.0]}, r"optim.betas must be two numbers in \[0, 1\)"),
    ({"weight_decay": -1}, "optim.weight_decay must be >= 0"),
])
def test_bad_optim_config(cfg, message):
    with pytest.raises(ValueError, match=message):
        build_optimizer(torch.nn.Linear(2, 2), cfg)


def test_bad_schedule():
    with pytest.raises(ValueError, match="optim.schedule must be one of"):
        lr_multiplier(0, schedule="step", warmup_steps=0, total_steps=3)
    opt = torch.optim.SGD([torch.nn.Parameter(torch.zeros(1))], lr=1.0)
    with pytest.raises(ValueError, match=r"optim.warmup_ratio must be in \[0, 1\)"):
        build_scheduler(opt, {"warmup_ratio": 1.5}, total_steps=3)
