"""Factories for the non-DeepSpeed Lightning strategies (``conf/strategy/{single,ddp}.yaml``).

The DeepSpeed ZeRO-3 strategies live in ``training/deepspeed.py``; ``train(cfg)`` only calls
``hydra.utils.instantiate(cfg.strategy)`` and hands the result to the ``Trainer``.
"""

from __future__ import annotations

import torch


def resolve_device(device: str = "auto") -> torch.device:
    """``auto`` → ``cuda:0`` when a GPU is visible, else ``cpu``; otherwise ``torch.device(device)``."""
    if device == "auto":
        return torch.device("cuda", 0) if torch.cuda.is_available() else torch.device("cpu")
    try:
        dev = torch.device(device)
    except RuntimeError as err:
        raise ValueError(f"strategy.device must be 'auto', 'cpu' or 'cuda[:i]', got {device!r}") from err
    if dev.type == "cuda" and not torch.cuda.is_available():
        raise ValueError(f"strategy.device={device!r} but no CUDA GPU is visible; use strategy.device=cpu or auto")
    return dev


def single_device(device: str = "auto"):
    """One CPU or GPU (``SingleDeviceStrategy``)."""
    from lightning.pytorch.strategies import SingleDeviceStrategy

    return SingleDeviceStrategy(device=resolve_device(device))


def ddp(process_group_backend: str | None = None, find_unused_parameters: bool = False,
        gradient_as_bucket_view: bool = True, static_graph: bool = False, timeout_minutes: int = 30):
    """Data parallel over ``trainer.devices`` x ``trainer.num_nodes`` (NCCL on GPU, gloo on CPU)."""
    from datetime import timedelta

    from lightning.pytorch.strategies import DDPStrategy

    return DDPStrategy(process_group_backend=process_group_backend, find_unused_parameters=find_unused_parameters,
                       gradient_as_bucket_view=gradient_as_bucket_view, static_graph=static_graph,
                       timeout=timedelta(minutes=int(timeout_minutes)))
