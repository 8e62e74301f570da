"""Tensor-by-tensor access to HF safetensors checkpoints, and a streaming shard writer.

Reading goes through ``safetensors.safe_open`` (memory-mapped; one tensor materialised at a time).
Writing uses the safetensors file layout directly — an 8-byte little-endian header length, a JSON
header with ``dtype``/``shape``/``data_offsets`` per tensor, then the raw bytes in offset order —
so a shard is written one tensor at a time and never held in memory as a whole. Every shape and
dtype is known before the first byte is written (they come from the input checkpoints' headers).
"""

from __future__ import annotations

import json
import math
import re
import struct
from collections.abc import Iterable, Iterator
from contextlib import ExitStack
from dataclasses import dataclass
from pathlib import Path

import torch

SINGLE_FILE = "model.safetensors"
INDEX_FILE = "model.safetensors.index.json"

DTYPE_CODES: dict[torch.dtype, str] = {
    torch.float64: "F64",
    torch.float32: "F32",
    torch.float16: "F16",
    torch.bfloat16: "BF16",
    torch.int64: "I64",
    torch.int32: "I32",
    torch.int16: "I16",
    torch.int8: "I8",
    torch.uint8: "U8",
    torch.bool: "BOOL",
    torch.float8_e4m3fn: "F8_E4M3",
    torch.float8_e5m2: "F8_E5M2",
}
CODE_DTYPES: dict[str, torch.dtype] = {v: k for k, v in DTYPE_CODES.items()}


@dataclass(frozen=True)
class TensorInfo:
    """Where one tensor lives and what it looks like, read from a safetensors header."""

    name: str
    file: Path
    dtype: torch.dtype
    shape: tuple[int, ...]

    @property
    def nbytes(self) -> int:
        return math.prod(self.shape) * torch.empty((), dtype=self.dtype).element_size()


def _read_header(path: Path) -> dict:
    with open(path, "rb") as fh:
        (n,) = struct.unpack("<Q", fh.read(8))
        if n <= 0 or n > 100_000_000:
            raise ValueError(f"{path} is not a safetensors file (header length {n})")
        return json.loads(fh.read(n))


def checkpoint_files(model_dir: str | Path) -> list[Path]:
    """The safetensors files of an HF model folder (single file or the shards of an index)."""
    model_dir = Path(model_dir)
    if (model_dir / INDEX_FILE).is_file():
        index = json.loads((model_dir / INDEX_FILE).read_text())
        names = sorted(set(index.get("weight_map", {}).values()))
        if not names:
            raise ValueError(f"{model_dir / INDEX_FILE} has an empty weight_map")
        return [model_dir / n for n in names]
    if (model_dir / SINGLE_FILE).is_file():
        return [model_dir / SINGLE_FILE]
    raise ValueError(
        f"{model_dir} holds no safetensors checkpoint: expected {SINGLE_FILE} or {INDEX_FILE}; "
        "export the model with save_pretrained(safe_serialization=True)"
    )


def tensor_index(model_dir: str | Path) -> dict[str, TensorInfo]:
    """Every tensor of the checkpoint, by name, from the file headers only (nothing is loaded)."""
    out: dict[str, TensorInfo] = {}
    for file in checkpoint_files(model_dir):
        for name, meta in _read_header(file).items():
            if name == "__metadata__":
                continue
            if meta["dtype"] not in CODE_DTYPES:
                raise ValueError(f"{file}: tensor {name!r} has unsupported dtype {meta['dtype']}")
            out[name] = TensorInfo(name, file, CODE_DTYPES[meta["dtype"]], tuple(int(s) for s in meta["shape"]))
    return out


class TensorReader:
    """Keeps one ``safe_open`` handle per shard and returns tensors one at a time."""

    def __init__(self, index: dict[str, TensorInfo]):
        from safetensors import safe_open

        self._index = index
        self._stack = ExitStack()
        self._handles = {
            f: self._stack.enter_context(safe_open(str(f), framework="pt", device="cpu"))
            for f in sorted({info.file for info in index.values()})
        }

    def get(self, name: str) -> torch.Tensor:
        return self._handles[self._index[name].file].get_tensor(name)

    def close(self) -> None:
        self._stack.close()

    def __enter__(self) -> TensorReader:
        return self

    def __exit__(self, *exc) -> None:
        self.close()


def parse_size(size: int | str) -> int:
    """``5GB`` / ``500MB`` / ``2KiB`` / an int -> bytes."""
    if isinstance(size, int):
        value = size
    else:
        m = re.fullmatch(r"\s*(\d+(?:\.\d+)?)\s*([KMGT]?i?B)?\s*", str(size), flags=re.IGNORECASE)
        if not m:
            raise ValueError(f"max_shard_size must be bytes or like '5GB'/'500MB', got {size!r}")
        unit = (m.group(2) or "B").upper()
        base = 1024 if "I" in unit else 1000
        power = {"B": 0, "K": 1, "M": 2, "G": 3, "T": 4}[unit[0]]
        value = int(float(m.group(1)) * base**power)
    if value <= 0:
        raise ValueError(f"max_shard_size must be > 0, got {size!r}")
    return value


def plan_shards(infos: Iterable[tuple[str, torch.dtype, tuple[int, ...]]], max_shard_size: int) -> list[list[str]]:
    """Split tensors, in order, into shards of at most ``max_shard_size`` bytes (a bigger tensor gets its own)."""
    shards: list[list[str]] = [[]]
    size = 0
    for name, dtype, shape in infos:
        nbytes = math.prod(shape) * torch.empty((), dtype=dtype).element_size()
        if shards[-1] and size + nbytes > max_shard_size:
            shards.append([])
            size = 0
        shards[-1].append(name)
        size += nbytes
    return [s for s in shards if s]


def write_safetensors_streaming(
    path: str | Path,
    specs: list[tuple[str, torch.dtype, tuple[int, ...]]],
    tensors: Iterator[tuple[str, torch.Tensor]],
    *,
    metadata: dict[str, str] | None = None,
) -> int:
    """Write a safetensors file whose tensors arrive one at a time from ``tensors``.

    ``specs`` fixes the names, dtypes and shapes (and so the header) up front; each tensor from the
    iterator must match its spec, in the same order. Returns the number of data bytes written.
    """
    header: dict[str, dict] = {"__metadata__": dict(metadata or {"format": "pt"})}
    offset = 0
    for name, dtype, shape in specs:
        if dtype not in DTYPE_CODES:
            raise ValueError(f"tensor {name!r}: dtype {dtype} cannot be stored in safetensors")
        nbytes = math.prod(shape) * torch.empty((), dtype=dtype).element_size()
        header[name] = {"dtype": DTYPE_CODES[dtype], "shape": list(shape), "data_offsets": [offset, offset + nbytes]}
        offset += nbytes
    blob = json.dumps(header, separators=(",", ":")).encode()
    blob += b" " * (-(8 + len(blob)) % 8)  # data starts 8-byte aligned, as safetensors writes it
    written = 0
    with open(path, "wb") as fh:
        fh.write(struct.pack("<Q", len(blob)))
        fh.write(blob)
        for (name, dtype, shape), (got_name, tensor) in zip(specs, tensors, strict=True):
            if got_name != name or tensor.dtype != dtype or tuple(tensor.shape) != tuple(shape):
                raise ValueError(
                    f"streamed tensor {got_name!r} {tensor.dtype} {tuple(tensor.shape)} does not match the "
                    f"planned {name!r} {dtype} {tuple(shape)}"
                )
            raw = tensor.detach().contiguous().reshape(-1).view(torch.uint8).numpy()
            fh.write(memoryview(raw))
            written += raw.nbytes
    if written != offset:
        raise ValueError(f"{path}: wrote {written} data bytes, header promised {offset}")
    return written
