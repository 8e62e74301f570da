"""Read what an offline wandb run really logged, from its run folder (``offline-run-*/run-<id>.wandb``).

The ``.wandb`` file is wandb's transaction log: a 7-byte header (``:W&B``, magic ``0xBEE1``, version 0) followed by
protobuf ``Record`` messages framed like a LevelDB log (32 KiB blocks; each chunk a 7-byte header of CRC, little-endian
length and type FULL / FIRST / MIDDLE / LAST; a block tail shorter than a header is zero padding). Tables and images
are files under ``files/media/`` referenced from history rows. Used by the tests and by ``longrecipe-dashboard
check``: a dashboard may only name keys that runs really logged.
"""

from __future__ import annotations

import json
import struct
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

HEADER = b":W&B"
BLOCK = 32768
CHUNK_HEADER = 7
FULL, FIRST, MIDDLE, LAST = 1, 2, 3, 4


def iter_records(path: str | Path) -> Iterator[bytes]:
    """The serialized ``Record`` messages of a ``.wandb`` file, in write order (a torn tail is ignored)."""
    data = Path(path).read_bytes()
    if data[:4] != HEADER:
        raise ValueError(f"{path} is not a wandb transaction log (header {data[:4]!r}, expected {HEADER!r})")
    pos, parts = 7, []
    while pos + CHUNK_HEADER <= len(data):
        left = BLOCK - pos % BLOCK
        if left < CHUNK_HEADER:
            pos += left
            continue
        length, kind = struct.unpack("<HB", data[pos + 4:pos + 7])
        if kind == 0 and length == 0:  # zero padding up to the block end
            pos += left
            continue
        start, pos = pos + CHUNK_HEADER, pos + CHUNK_HEADER + length
        if pos > len(data):
            break
        chunk = data[start:pos]
        if kind == FULL:
            yield chunk
        elif kind == FIRST:
            parts = [chunk]
        elif kind == MIDDLE:
            parts.append(chunk)
        elif kind == LAST:
            parts.append(chunk)
            yield b"".join(parts)
            parts = []
        else:
            raise ValueError(f"{path}: unknown chunk type {kind} at byte {start - CHUNK_HEADER}")


def _put(target: dict[str, Any], item) -> None:
    """Store one history / summary / config item; media values arrive split into ``nested_key`` parts."""
    path = list(item.nested_key) or [item.key]
    for part in path[:-1]:
        node = target.get(part)
        if not isinstance(node, dict):
            node = target[part] = {}
        target = node
    target[path[-1]] = json.loads(item.value_json)


def _flatten(prefix: str, value: Any, out: dict[str, Any]) -> None:
    if isinstance(value, dict) and value:
        for k, v in value.items():
            _flatten(f"{prefix}.{k}" if prefix else str(k), v, out)
    else:
        out[prefix] = value


@dataclass
class OfflineRun:
    """One offline run as logged: identity, layout, config, history rows, summary and media files."""

    folder: Path
    run_id: str = ""
    project: str = ""
    name: str = ""
    group: str = ""
    job_type: str = ""
    tags: list[str] = field(default_factory=list)
    config: dict[str, Any] = field(default_factory=dict)
    history: list[dict[str, Any]] = field(default_factory=list)
    summary: dict[str, Any] = field(default_factory=dict)
    metrics: dict[str, str] = field(default_factory=dict)  # defined metric -> its step metric ("" = _step)

    @property
    def flat_config(self) -> dict[str, Any]:
        """``config`` with nested keys joined by dots (as the wandb UI and workspace filters name them)."""
        out: dict[str, Any] = {}
        for k, v in self.config.items():
            if not k.startswith("_wandb"):
                _flatten(k, v, out)
        return out

    def keys(self) -> set[str]:
        """Every history / summary key this run logged (``_``-prefixed bookkeeping keys left out)."""
        keys = {k for row in self.history for k in row} | set(self.summary)
        return {k for k in keys if not k.startswith("_")}

    def media(self, key: str) -> list[dict[str, Any]]:
        """The media references (``{"_type": "table-file" | "image-file", "path": ...}``) logged under ``key``."""
        return [row[key] for row in self.history if isinstance(row.get(key), dict) and "_type" in row[key]]

    def table(self, key: str) -> list[dict[str, Any]]:
        """Rows (dicts by column) of the last table logged under ``key``."""
        refs = [m for m in self.media(key) if m["_type"] == "table-file"]
        if not refs:
            raise KeyError(f"run {self.run_id} logged no table under {key!r}; tables: {self.table_keys()}")
        data = json.loads((self.folder / "files" / refs[-1]["path"]).read_text(encoding="utf-8"))
        return [dict(zip(data["columns"], row)) for row in data["data"]]

    def table_keys(self) -> list[str]:
        return sorted({k for row in self.history for k, v in row.items()
                       if isinstance(v, dict) and v.get("_type") == "table-file"})

    def image_paths(self, key: str) -> list[Path]:
        return [self.folder / "files" / m["path"] for m in self.media(key) if m["_type"] == "image-file"]

    def image_keys(self) -> list[str]:
        return sorted({k for row in self.history for k, v in row.items()
                       if isinstance(v, dict) and v.get("_type") == "image-file"})


def read_offline_run(folder: str | Path) -> OfflineRun:
    """Parse ``folder`` (an ``offline-run-*`` directory) into an :class:`OfflineRun`."""
    from wandb.proto import wandb_internal_pb2 as pb

    folder = Path(folder)
    logs = sorted(folder.glob("run-*.wandb"))
    if not logs:
        raise FileNotFoundError(f"{folder} holds no run-*.wandb file; give an offline-run-* folder")
    run = OfflineRun(folder=folder)
    for raw in iter_records(logs[0]):
        rec = pb.Record()
        rec.ParseFromString(raw)
        kind = rec.WhichOneof("record_type")
        if kind == "run":
            r = rec.run
            run.run_id, run.project, run.name = r.run_id, r.project, r.display_name
            run.group, run.job_type, run.tags = r.run_group, r.job_type, list(r.tags)
            for item in r.config.update:
                _put(run.config, item)
        elif kind == "config":
            for item in rec.config.update:
                _put(run.config, item)
        elif kind == "history":
            row: dict[str, Any] = {}
            for item in rec.history.item:
                _put(row, item)
            run.history.append(row)
        elif kind == "summary":
            for item in rec.summary.update:
                _put(run.summary, item)
        elif kind == "metric" and (rec.metric.name or rec.metric.glob_name):
            run.metrics[rec.metric.name or rec.metric.glob_name] = rec.metric.step_metric
    return run


def find_offline_runs(root: str | Path) -> list[OfflineRun]:
    """Every offline run under ``root`` (searched recursively), in folder order."""
    return [read_offline_run(p) for p in sorted(Path(root).rglob("offline-run-*")) if p.is_dir()]
