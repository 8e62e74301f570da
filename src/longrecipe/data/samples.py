"""Tokenisation (``datasets.map``, arrow cache) and vectorised packing of documents into fixed-length samples.

Packing policies (``short_docs``)
---------------------------------
``concat``
    All documents form one token stream, each followed by EOS; the stream is cut into consecutive
    windows of ``sample_length`` tokens. A long document therefore fills several samples and its tail
    continues into the next sample together with the following documents. Only the final partial
    window of the whole stream (< ``sample_length`` tokens) is dropped (counted as ``tail_tokens_dropped``).
``drop``
    Every sample comes from a single document: documents shorter than ``sample_length`` are dropped
    (counted), longer ones are split into ``len // sample_length`` consecutive windows and the tail of
    each document (``len % sample_length`` tokens) is dropped (counted). No EOS is inserted.

Counters in ``PackedSamples.stats``: ``docs_packed`` (documents with at least one token in a sample),
``short_docs_dropped`` / ``short_doc_tokens_dropped`` (``drop`` only) and ``tail_tokens_dropped``.

The result is a "prepared" table (CONTRIBUTING): ``input_ids`` (list[int32]), ``segment_starts``
(token offsets in the sample where a document, or the sample, starts; first is 0) and ``doc_ids``
(the document of each segment).
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

import numpy as np

SHORT_DOCS_POLICIES = ("concat", "drop")


@dataclass(frozen=True)
class PackedSamples:
    """Packed samples: ``input_ids [N, T]`` plus one row per segment in flat arrays."""

    input_ids: np.ndarray  # [N, T]
    segment_sample: np.ndarray  # [S] sample index of each segment (sorted)
    segment_start: np.ndarray  # [S] token offset inside the sample
    segment_doc: np.ndarray  # [S] index of the document
    stats: dict[str, int]

    def __len__(self) -> int:
        return int(self.input_ids.shape[0])

    def segment_starts(self, index: int) -> np.ndarray:
        lo, hi = np.searchsorted(self.segment_sample, [index, index + 1])
        return self.segment_start[lo:hi]


def check_short_docs(short_docs: str) -> str:
    if short_docs not in SHORT_DOCS_POLICIES:
        raise ValueError(
            f"data.short_docs must be one of {list(SHORT_DOCS_POLICIES)}, got {short_docs!r}; use 'concat' to "
            "join documents shorter than a sample with EOS, or 'drop' to keep only documents >= sample_length"
        )
    return short_docs


def pack_documents(
    doc_lengths: np.ndarray,
    tokens: np.ndarray,
    *,
    sample_length: int,
    short_docs: str = "concat",
    eos_token_id: int | None = None,
) -> PackedSamples:
    """Pack documents (``tokens`` = all documents' tokens back to back, ``doc_lengths`` per document).

    Pure and vectorised (no Python loop over documents or samples). See the module docstring for the
    ``concat`` / ``drop`` policies.
    """
    check_short_docs(short_docs)
    lengths = np.asarray(doc_lengths, dtype=np.int64)
    tokens = np.asarray(tokens)
    if lengths.ndim != 1 or tokens.ndim != 1 or int(lengths.sum()) != tokens.shape[0] or (lengths < 0).any():
        raise ValueError(
            f"doc_lengths must be non-negative and sum to len(tokens); got sum {int(lengths.sum())} "
            f"for {tokens.shape[0]} tokens"
        )
    if sample_length < 1:
        raise ValueError(f"data.sample_length must be >= 1, got {sample_length}")
    T = int(sample_length)
    doc_starts = np.cumsum(lengths) - lengths  # offsets in ``tokens``
    if short_docs == "concat":
        if eos_token_id is None:
            raise ValueError(
                "short_docs='concat' needs an EOS token between documents but the tokenizer has no eos_token_id; "
                "set tokenizer.eos_token or use data.short_docs=drop"
            )
        spans = lengths + 1
        stream_starts = np.cumsum(spans) - spans  # document starts in the stream
        total = int(spans.sum())
        stream = np.full(total, eos_token_id, dtype=tokens.dtype if tokens.size else np.int32)
        doc_of_token = np.repeat(np.arange(lengths.size), lengths)
        stream[np.arange(tokens.shape[0]) + doc_of_token] = tokens
        n = total // T
        input_ids = stream[: n * T].reshape(n, T)
        # segments: each sample's first token, plus every document start inside a sample
        win_starts = np.arange(n, dtype=np.int64) * T
        win_doc = np.searchsorted(stream_starts, win_starts, side="right") - 1
        inside = stream_starts < n * T
        seg_sample = np.concatenate([np.arange(n), stream_starts[inside] // T])
        seg_start = np.concatenate([np.zeros(n, dtype=np.int64), stream_starts[inside] % T])
        seg_doc = np.concatenate([win_doc, np.flatnonzero(inside)])
        order = np.lexsort((seg_doc, seg_start, seg_sample))
        seg_sample, seg_start, seg_doc = seg_sample[order], seg_start[order], seg_doc[order]
        keep = np.ones(seg_sample.size, dtype=bool)
        keep[1:] = (seg_sample[1:] != seg_sample[:-1]) | (seg_start[1:] != seg_start[:-1])
        stats = {
            "docs_packed": int(np.unique(seg_doc[keep]).size),
            "short_docs_dropped": 0,
            "short_doc_tokens_dropped": 0,
            "tail_tokens_dropped": total - n * T,
        }
        return PackedSamples(input_ids, seg_sample[keep], seg_start[keep], seg_doc[keep], stats)
    n_windows = lengths // T
    kept = n_windows > 0
    n = int(n_windows.sum())
    sample_doc = np.repeat(np.arange(lengths.size), n_windows)
    first_window = np.cumsum(n_windows) - n_windows
    window_in_doc = np.arange(n) - first_window[sample_doc]
    starts = doc_starts[sample_doc] + window_in_doc * T
    input_ids = tokens[starts[:, None] + np.arange(T)[None, :]] if n else np.zeros((0, T), dtype=tokens.dtype)
    stats = {
        "docs_packed": int(kept.sum()),
        "short_docs_dropped": int((~kept).sum()),
        "short_doc_tokens_dropped": int(lengths[~kept].sum()),
        "tail_tokens_dropped": int((lengths - n_windows * T)[kept].sum()),
    }
    return PackedSamples(input_ids, np.arange(n), np.zeros(n, dtype=np.int64), sample_doc, stats)


def packed_to_dataset(packed: PackedSamples, doc_ids: list[str] | np.ndarray):
    """The packed samples as a "prepared" ``datasets.Dataset`` (``input_ids``, ``segment_starts``, ``doc_ids``)."""
    import datasets
    import pyarrow as pa
    from datasets.table import InMemoryTable

    n, T = packed.input_ids.shape
    row_offsets = pa.array(np.arange(n + 1, dtype=np.int32) * T)
    seg_offsets = pa.array(np.searchsorted(packed.segment_sample, np.arange(n + 1)).astype(np.int32))
    names = np.asarray(doc_ids, dtype=object)[packed.segment_doc] if packed.segment_doc.size else np.array([], object)
    table = pa.table({
        "input_ids": pa.ListArray.from_arrays(row_offsets, pa.array(packed.input_ids.reshape(-1).astype(np.int32))),
        "segment_starts": pa.ListArray.from_arrays(seg_offsets, pa.array(packed.segment_start.astype(np.int32))),
        "doc_ids": pa.ListArray.from_arrays(seg_offsets, pa.array(names.tolist(), type=pa.string())),
    })
    return datasets.Dataset(InMemoryTable(table))


def _tokenize_batch(batch: dict[str, list[Any]], tokenizer: Any) -> dict[str, list[list[int]]]:
    enc = tokenizer(batch["text"], add_special_tokens=False, verbose=False)
    return {"input_ids": enc["input_ids"]}


def tokenize_documents(documents, tokenizer, *, num_proc: int | None = None, batch_size: int = 256):
    """Tokenise a documents dataset (column ``text``, from ``load_documents_dataset``) with ``datasets.map``.

    Returns a dataset with ``id`` and ``input_ids`` (no special tokens). File-backed inputs are
    cached next to their arrow files (``datasets`` fingerprints the tokenizer and arguments).
    """
    import datasets

    features = datasets.Features({"id": datasets.Value("string"), "input_ids": datasets.List(datasets.Value("int32"))})
    return documents.map(
        _tokenize_batch,
        batched=True,
        batch_size=batch_size,
        num_proc=num_proc if num_proc and num_proc > 1 and len(documents) > 1 else None,
        fn_kwargs={"tokenizer": tokenizer},
        remove_columns=[c for c in documents.column_names if c != "id"],
        features=features,
        desc="tokenising",
    )


def token_arrays(tokenized) -> tuple[np.ndarray, np.ndarray]:
    """``(doc_lengths, tokens)`` of a tokenised dataset, read straight from its arrow column."""
    import pyarrow.compute as pc

    if len(tokenized) == 0:
        return np.zeros(0, dtype=np.int64), np.zeros(0, dtype=np.int32)
    column = tokenized.with_format("arrow")[:].column("input_ids")  # respects selections / row order
    lengths = np.asarray(pc.list_value_length(column).to_numpy(), dtype=np.int64)
    flat = np.asarray(pc.list_flatten(column).to_numpy(), dtype=np.int32)
    return lengths, flat
