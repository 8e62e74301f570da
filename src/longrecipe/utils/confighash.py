"""Stable hashes of (resolved) configs, used for stage markers and provenance."""

from __future__ import annotations

import hashlib
import json
from typing import Any


def config_hash(cfg: Any, *, length: int = 16) -> str:
    """sha256 over the canonical JSON of ``cfg`` (an OmegaConf node, dict or list)."""
    try:
        from omegaconf import DictConfig, ListConfig, OmegaConf

        if isinstance(cfg, (DictConfig, ListConfig)):
            cfg = OmegaConf.to_container(cfg, resolve=True)
    except ImportError:  # pragma: no cover
        pass
    blob = json.dumps(cfg, sort_keys=True, default=str, separators=(",", ":"))
    return hashlib.sha256(blob.encode()).hexdigest()[:length]
