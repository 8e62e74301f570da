"""Export the trained model as a plain HF folder, atomically.

Layout of ``<export_dir>``::

    config.json              architecture + ``rope_parameters`` + ``max_position_embeddings = target_length``
    generation_config.json
    model.safetensors        (or sharded ``model-0000x-of-0000y.safetensors`` + index)
    tokenizer.json, tokenizer_config.json, ...
    longrecipe.json          training config, data provenance, rope summary, metrics, versions

The folder is written to a temp dir beside it and renamed at the end; an existing finished export
(one holding ``longrecipe.json``) is refused unless ``overwrite=True``.
"""

from __future__ import annotations

import datetime as _dt
import os
from collections.abc import Mapping
from pathlib import Path
from typing import Any

import torch

from longrecipe.utils.io import atomic_dir, write_json_atomic
from longrecipe.utils.logging import get_logger

log = get_logger(__name__)

MARKER = "longrecipe.json"


def check_export_target(export_dir: str | os.PathLike, overwrite: bool = False) -> Path:
    """Raise before training when ``export_dir`` already holds a finished export and ``overwrite`` is false."""
    path = Path(export_dir)
    if path.exists() and not overwrite:
        what = "a finished export" if (path / MARKER).is_file() else "a folder"
        raise FileExistsError(
            f"export_dir {path} already holds {what}; refusing to overwrite it. Pass overwrite=true to replace it "
            "or set export_dir=<new folder>"
        )
    if path.exists() and not (path / MARKER).is_file() and (not path.is_dir() or any(path.iterdir())):
        # overwrite=true replaces a previous export, never an unrelated non-empty folder (or a file)
        raise FileExistsError(
            f"export_dir {path} exists and is not a longrecipe export (no {MARKER}); overwrite=true only replaces "
            "a finished export. Set export_dir=<new or empty folder>"
        )
    return path


def check_export_outside_run(export_dir: str | os.PathLike, run_dir: str | os.PathLike) -> None:
    """Raise before training when ``export_dir`` is ``run_dir`` or one of its parents (the export would
    replace the run's checkpoints and logs)."""
    export, run = Path(export_dir).resolve(), Path(run_dir).resolve()
    if export == run or export in run.parents:
        raise ValueError(
            f"export_dir={str(export)!r} must not be run_dir={str(run)!r} or a parent of it: the export folder is "
            "replaced as a whole; use a folder of its own, e.g. export_dir=${run_dir}/export"
        )


def _versions() -> dict[str, str]:
    import lightning
    import transformers

    import longrecipe

    return {"longrecipe": getattr(longrecipe, "__version__", "unknown"), "torch": torch.__version__,
            "transformers": transformers.__version__, "lightning": lightning.__version__}


def _make_readable(folder: Path) -> None:
    """Temp dirs/files are created 0700/0600; give the export the permissions of a normal folder (umask)."""
    umask = os.umask(0)
    os.umask(umask)
    os.chmod(folder, 0o777 & ~umask)
    for path in folder.rglob("*"):
        os.chmod(path, (0o777 if path.is_dir() else 0o666) & ~umask)


def export_hf_model(
    model: Any,
    tokenizer: Any | None,
    export_dir: str | os.PathLike,
    *,
    train_config: Mapping[str, Any] | None = None,
    provenance: Mapping[str, Any] | None = None,
    metrics: Mapping[str, Any] | None = None,
    state_dict: Mapping[str, torch.Tensor] | None = None,
    overwrite: bool = False,
    dtype: torch.dtype | None = None,
) -> Path:
    """Save ``model`` (+ ``tokenizer``) to ``export_dir`` as safetensors with ``longrecipe.json``.

    ``state_dict``: a consolidated state dict (DeepSpeed ZeRO-3 gathers one); default the model's own.
    ``dtype``: cast floating weights before saving (e.g. ``torch.bfloat16``); default keep.
    """
    path = check_export_target(export_dir, overwrite)
    config = model.config
    if state_dict is None and dtype is not None:
        state_dict = {k: (v.to(dtype) if v.is_floating_point() else v) for k, v in model.state_dict().items()}
    with atomic_dir(path, overwrite=overwrite) as tmp:
        model.save_pretrained(str(tmp), state_dict=dict(state_dict) if state_dict is not None else None)
        if dtype is not None:
            from transformers import AutoConfig

            saved = AutoConfig.from_pretrained(str(tmp))
            saved.dtype = dtype
            saved.save_pretrained(str(tmp))
        gen = getattr(model, "generation_config", None)
        if gen is not None and not (tmp / "generation_config.json").is_file():
            gen.save_pretrained(str(tmp))
        if tokenizer is not None:
            tokenizer.save_pretrained(str(tmp))
        meta = {
            "format": "longrecipe-export/1",
            "created": _dt.datetime.now(_dt.timezone.utc).isoformat(timespec="seconds"),
            "model_type": getattr(config, "model_type", None),
            "rope_parameters": dict(getattr(config, "rope_parameters", None) or {}),
            "max_position_embeddings": int(getattr(config, "max_position_embeddings", 0) or 0),
            "train_config": dict(train_config or {}),
            "data_provenance": dict(provenance or {}),
            "metrics": dict(metrics or {}),
            "versions": _versions(),
        }
        write_json_atomic(tmp / MARKER, meta)
        _make_readable(tmp)
    log.info("exported model to %s", path)
    return path
