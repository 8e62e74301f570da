"""``train(cfg)``: one context-extension run from a composed ``conf/train.yaml``.

Steps: validate the top-level lengths → seed → tokenizer (+ vocab check against the model config, before
any weights load) → position scheme → ``LongContextDataModule`` → ``LongContextLM`` → strategy / callbacks /
loggers from their groups → ``Trainer.fit`` (resuming from ``ckpt_path`` or, with ``resume=true``, the run's
last checkpoint) → HF export (rank 0, atomic) → ``summary.json`` / ``summary.md`` in the run folder.

Returns ``{"metrics", "run_dir", "checkpoint_dir", "export_dir", "step_log", "global_step", "resumed_from"}``.
"""

from __future__ import annotations

import os
from collections.abc import Mapping
from pathlib import Path
from typing import Any

from omegaconf import DictConfig, OmegaConf, open_dict

from longrecipe.utils.io import write_json_atomic, write_text_atomic
from longrecipe.utils.logging import get_logger

log = get_logger(__name__)

CHECKPOINT_SUFFIXES = (".ckpt",)


def _container(node: Any) -> Any:
    if isinstance(node, DictConfig) or OmegaConf.is_config(node):
        return OmegaConf.to_container(node, resolve=True)
    return node


def validate_lengths(cfg: DictConfig) -> None:
    """``base_length < target_length`` and ``0 < token_ratio <= 1`` (the paper uses 0.3)."""
    base, target, ratio = int(cfg.base_length), int(cfg.target_length), float(cfg.token_ratio)
    if base < 1 or target <= base:
        raise ValueError(f"target_length must be > base_length >= 1, got base_length={base}, target_length={target}; "
                         "the extended window must be longer than the model's original one")
    if not 0 < ratio <= 1:
        raise ValueError(f"token_ratio must be in (0, 1], got {ratio:g} (paper: 0.3)")


def _checkpoints_in(ckpt_dir: Path) -> list[Path]:
    if not ckpt_dir.is_dir():
        return []
    return sorted((p for p in ckpt_dir.iterdir() if p.name.endswith(CHECKPOINT_SUFFIXES)),
                  key=lambda p: p.stat().st_mtime)


def resolve_ckpt_path(cfg: DictConfig, ckpt_dir: Path) -> str | None:
    """The checkpoint to resume from: ``ckpt_path`` if given; with ``resume=true`` the run's ``last.ckpt``
    (else its newest checkpoint; none → a fresh start). A fresh run into a folder that already has
    checkpoints is refused so nothing is silently overwritten."""
    explicit = cfg.get("ckpt_path")
    if explicit:
        path = Path(str(explicit)).expanduser()
        if not path.exists():
            raise ValueError(f"ckpt_path={str(explicit)!r} does not exist; give a Lightning checkpoint written by a "
                             "previous run (<run_dir>/checkpoints/last.ckpt) or use resume=true with run_dir=<old run>")
        return str(path)
    found = [p for p in _checkpoints_in(ckpt_dir) if not p.name.startswith("nonfinite-")]
    if cfg.get("resume", False):
        last = ckpt_dir / "last.ckpt"
        if last.exists():
            return str(last)
        if found:
            return str(found[-1])
        log.info("resume=true but no checkpoint in %s: starting fresh", ckpt_dir)
        return None
    if found:
        raise ValueError(f"{ckpt_dir} already holds checkpoints ({found[-1].name}); pass resume=true to continue that "
                         "run, or choose a new run_dir")
    return None


def build_callbacks(cfg: DictConfig) -> list[Any]:
    """Callbacks from ``cfg.callbacks`` (a mapping name → ``_target_`` node; null entries skipped), plus the
    debug crash switch when ``debug.crash_after_step`` is set."""
    from hydra.utils import instantiate

    from longrecipe.training.callbacks import CrashAfterStep

    callbacks = []
    for name, node in (cfg.get("callbacks") or {}).items():
        if node is None:
            continue
        if "_target_" not in node:
            raise ValueError(f"callbacks.{name} needs a _target_, got keys {list(node)}")
        callbacks.append(instantiate(node))
    crash = OmegaConf.select(cfg, "debug.crash_after_step", default=None)
    if crash is not None:
        callbacks.append(CrashAfterStep(int(crash)))
    return callbacks


def build_loggers(cfg: DictConfig) -> list[Any] | bool:
    """Loggers from ``cfg.logger`` (mapping name → ``_target_`` node); none → ``False``. A factory returning
    ``None`` (the wandb logger when wandb cannot start) is left out, so training continues with the others."""
    from hydra.utils import instantiate

    nodes = cfg.get("logger") or {}
    loggers = [instantiate(node) for node in nodes.values() if node is not None]
    return [lg for lg in loggers if lg is not None] or False


def _checkpoint_dir(callbacks: list[Any], run_dir: Path) -> Path:
    from lightning.pytorch.callbacks import ModelCheckpoint

    for cb in callbacks:
        if isinstance(cb, ModelCheckpoint) and cb.dirpath:
            return Path(cb.dirpath)
    return run_dir / "checkpoints"


def _full_state_dict(trainer: Any, module: Any) -> Mapping[str, Any] | None:
    """Hook for sharded strategies: a strategy exposing ``longrecipe_full_state_dict(module)`` (DeepSpeed
    ZeRO-3) returns the consolidated HF state dict; otherwise the model's own is used."""
    gather = getattr(trainer.strategy, "longrecipe_full_state_dict", None)
    return gather(module) if callable(gather) else None


def _scalar_metrics(trainer: Any) -> dict[str, float]:
    out = {}
    for key, value in trainer.callback_metrics.items():
        try:
            out[key] = float(value)
        except (TypeError, ValueError):
            continue
    return out


def _summary_md(result: Mapping[str, Any]) -> str:
    lines = ["# Training run", "", f"- run dir: `{result['run_dir']}`", f"- export: `{result['export_dir']}`",
             f"- optimizer steps: {result['global_step']}", f"- resumed from: `{result['resumed_from']}`", "",
             "| metric | value |", "|---|---|"]
    lines += [f"| {k} | {v:.6g} |" for k, v in sorted(result["metrics"].items())]
    return "\n".join(lines) + "\n"


def train(cfg: DictConfig) -> dict[str, Any]:
    """Run one training job described by ``cfg`` (a composed ``conf/train.yaml``); see the module docstring."""
    import lightning as L
    from hydra.utils import instantiate

    from longrecipe.models.export import check_export_outside_run, check_export_target, export_hf_model
    from longrecipe.models.loading import base_model_config, check_vocab, load_tokenizer, resolve_dtype
    from longrecipe.models.module import LongContextLM
    from longrecipe.training.loggers import SafeWandbLogger

    validate_lengths(cfg)
    run_dir = Path(str(cfg.run_dir)).expanduser().resolve()
    export_dir = cfg.get("export_dir")
    with open_dict(cfg):  # freeze ${now:} so every later interpolation sees the same folder
        cfg.run_dir = str(run_dir)
        if export_dir:
            cfg.export_dir = str(Path(str(export_dir)).expanduser().resolve())
    export_dir = Path(cfg.export_dir) if export_dir else None
    overwrite = bool(cfg.get("overwrite", False))
    if export_dir is not None:
        check_export_outside_run(export_dir, run_dir)
        check_export_target(export_dir, overwrite)
    run_dir.mkdir(parents=True, exist_ok=True)

    L.seed_everything(int(cfg.seed), workers=True, verbose=False)
    tokenizer = load_tokenizer(cfg.model)
    check_vocab(tokenizer, base_model_config(cfg.model))

    position = instantiate(cfg.position) if cfg.get("position") is not None else None
    # _partial_: objects passed as instantiate() kwargs would be converted to configs (dataclass schemes)
    datamodule = instantiate(cfg.data, _partial_=True)(tokenizer=tokenizer, position=position)
    module = LongContextLM(cfg.model, cfg.get("rope"), int(cfg.target_length), cfg.get("optim"), tokenizer=tokenizer)

    strategy = instantiate(cfg.strategy) if cfg.get("strategy") is not None else "auto"
    callbacks = build_callbacks(cfg)
    loggers = build_loggers(cfg)
    trainer_kwargs = dict(_container(cfg.trainer) or {})
    trainer = L.Trainer(**trainer_kwargs, strategy=strategy, callbacks=callbacks, logger=loggers,
                        default_root_dir=str(run_dir))
    ckpt_dir = _checkpoint_dir(callbacks, run_dir)
    ckpt_path = resolve_ckpt_path(cfg, ckpt_dir)
    resolved = _container(cfg)
    if trainer.is_global_zero:
        write_json_atomic(run_dir / "train_config.json", resolved)
    for lg in loggers or []:  # the experiment tracker gets the whole resolved config
        if isinstance(lg, SafeWandbLogger):
            lg.log_hyperparams(resolved)
    if ckpt_path:
        log.info("resuming from %s", ckpt_path)

    trainer.fit(module, datamodule=datamodule, ckpt_path=ckpt_path)
    if trainer.interrupted:
        raise RuntimeError(f"training was interrupted at step {trainer.global_step}; resume with resume=true "
                           f"run_dir={run_dir}")

    metrics = _scalar_metrics(trainer)
    exported = None
    state_dict = _full_state_dict(trainer, module)
    if export_dir is not None and trainer.is_global_zero:
        provenance = getattr(datamodule, "provenance", None)
        provenance = provenance() if callable(provenance) else provenance
        export_dtype = cfg.get("export_dtype")
        exported = export_hf_model(
            module.hf_model, tokenizer, export_dir, train_config=resolved, provenance=_container(provenance) or {},
            metrics={**metrics, "global_step": trainer.global_step}, state_dict=state_dict, overwrite=overwrite,
            dtype=resolve_dtype(export_dtype) if export_dtype else None,
        )
    step_log = next((str(cb.log_file) for cb in callbacks if getattr(cb, "log_file", None)), None)
    result = {
        "metrics": metrics,
        "run_dir": str(run_dir),
        "checkpoint_dir": str(ckpt_dir),
        "export_dir": str(exported) if exported else None,
        "step_log": step_log,
        "global_step": int(trainer.global_step),
        "resumed_from": ckpt_path,
    }
    if trainer.is_global_zero:
        write_json_atomic(run_dir / "summary.json", result)
        write_text_atomic(run_dir / "summary.md", _summary_md(result))
    return result


def main_env_defaults() -> None:
    """Environment defaults for the CLI: tokenizers without fork warnings, offline wandb without a key."""
    os.environ.setdefault("TOKENIZERS_PARALLELISM", "false")
    if not os.environ.get("WANDB_API_KEY"):
        os.environ.setdefault("WANDB_MODE", "offline")
