"""Long-document data: readers, packing into samples, per-sample positions, resumable sampler, DataModule.

Exports are resolved lazily (PEP 562) so that ``from longrecipe.data.readers import iter_documents``
(CLI, analysis) does not import Lightning.
"""

from __future__ import annotations

import importlib
from typing import Any

_EXPORTS = {
    "IGNORE_INDEX": "collate",
    "LongContextCollator": "collate",
    "PositionedSamples": "collate",
    "check_positions": "collate",
    "DATA_FORMATS": "datamodule",
    "LongContextDataModule": "datamodule",
    "resolve_sample_length": "datamodule",
    "ENCODING_POLICIES": "readers",
    "Document": "readers",
    "ReadStats": "readers",
    "decode_bytes": "readers",
    "iter_documents": "readers",
    "load_documents_dataset": "readers",
    "ResumableDataLoader": "sampler",
    "ResumableDistributedSampler": "sampler",
    "epoch_order": "sampler",
    "SHORT_DOCS_POLICIES": "samples",
    "PackedSamples": "samples",
    "pack_documents": "samples",
    "packed_to_dataset": "samples",
    "token_arrays": "samples",
    "tokenize_documents": "samples",
}

__all__ = sorted(_EXPORTS)


def __getattr__(name: str) -> Any:
    module = _EXPORTS.get(name)
    if module is None:
        raise AttributeError(f"module 'longrecipe.data' has no attribute {name!r}")
    value = getattr(importlib.import_module(f"longrecipe.data.{module}"), name)
    globals()[name] = value
    return value


def __dir__() -> list[str]:
    return sorted(set(globals()) | set(_EXPORTS))
