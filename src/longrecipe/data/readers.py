"""Document readers: local ``.txt`` / ``.jsonl`` / ``.parquet`` files or folders, HF datasets, and a
synthetic corpus, with explicit accounting of empty documents and undecodable bytes.

``iter_documents`` streams :class:`Document` objects (the CLI and the analysis tool reuse it);
``load_documents_dataset`` returns the same documents as an HF ``datasets.Dataset`` (arrow cache)
ready for batched tokenisation.

Policies
--------
* Empty / whitespace-only documents are skipped and counted (``ReadStats.empty_skipped``).
* Text files are decoded as UTF-8; invalid bytes follow ``encoding_errors`` (see
  :data:`ENCODING_POLICIES`) and are always counted, per document and per file. The default
  ``replace`` keeps every document and replaces each invalid byte sequence with U+FFFD.
"""

from __future__ import annotations

import codecs
import json
import os
from collections.abc import Callable, Iterator
from contextvars import ContextVar
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

from longrecipe.utils.confighash import config_hash
from longrecipe.utils.logging import get_logger

log = get_logger(__name__)

SYNTHETIC_SOURCE = "synthetic"
FILE_FORMATS = ("txt", "jsonl", "parquet")
READER_FORMATS = ("auto", *FILE_FORMATS, "hf")
_SUFFIXES = {".txt": "txt", ".jsonl": "jsonl", ".parquet": "parquet"}

_REPLACERS: dict[str, Callable[[bytes], str]] = {
    "replace": lambda bad: "\ufffd",
    "ignore": lambda bad: "",
    "backslashreplace": lambda bad: "".join(f"\\x{b:02x}" for b in bad),
    "latin1": lambda bad: bad.decode("latin-1"),
}
#: Allowed ``encoding_errors`` values. ``latin1`` decodes each invalid byte as ISO-8859-1 (recovers
#: ISO-8859 files exactly); ``strict`` raises a ValueError naming the file and byte offset.
ENCODING_POLICIES = (*_REPLACERS, "strict")

_BAD_BYTES: ContextVar[list[int] | None] = ContextVar("longrecipe_bad_bytes", default=None)


def _counting_handler(replace: Callable[[bytes], str]) -> Callable[[UnicodeError], tuple[str, int]]:
    def handler(exc: UnicodeError) -> tuple[str, int]:
        if not isinstance(exc, UnicodeDecodeError):
            raise exc
        counter = _BAD_BYTES.get()
        if counter is not None:
            counter[0] += exc.end - exc.start
        return replace(exc.object[exc.start : exc.end]), exc.end

    return handler


for _name, _replace in _REPLACERS.items():
    codecs.register_error(f"longrecipe.{_name}", _counting_handler(_replace))


@dataclass(frozen=True)
class Document:
    """One document: a stable id, its text, where it came from and how many bytes were undecodable."""

    id: str
    text: str
    source: str
    n_replaced_bytes: int = 0


@dataclass
class ReadStats:
    """Counters filled while reading (also logged as one line when reading finishes)."""

    docs_read: int = 0
    empty_skipped: int = 0
    bytes_replaced: int = 0
    files_read: int = 0
    files_bad_utf8: list[str] = field(default_factory=list)

    def as_dict(self) -> dict[str, Any]:
        out = asdict(self)
        out["n_files_bad_utf8"] = len(self.files_bad_utf8)
        return out

    def summary(self, source: str, encoding_errors: str) -> str:
        return (
            f"read {self.docs_read} documents from {source} ({self.files_read} files): "
            f"{self.empty_skipped} empty/whitespace-only skipped, {self.bytes_replaced} invalid UTF-8 bytes "
            f"handled with encoding_errors={encoding_errors!r} in {len(self.files_bad_utf8)} files"
        )


def check_encoding_errors(encoding_errors: str) -> str:
    if encoding_errors not in ENCODING_POLICIES:
        raise ValueError(
            f"data.encoding_errors must be one of {list(ENCODING_POLICIES)}, got {encoding_errors!r}; "
            "use 'replace' (default: keep the document, replace bad bytes with U+FFFD and count them)"
        )
    return encoding_errors


def decode_bytes(data: bytes, encoding_errors: str = "replace", *, where: str = "<bytes>") -> tuple[str, int]:
    """Decode UTF-8 (a leading BOM is dropped) and return ``(text, n_invalid_bytes)``.

    Invalid bytes are handled by ``encoding_errors`` (one of :data:`ENCODING_POLICIES`) and counted.
    """
    check_encoding_errors(encoding_errors)
    try:
        return data.decode("utf-8-sig"), 0
    except UnicodeDecodeError as exc:
        if encoding_errors == "strict":
            raise ValueError(
                f"{where} is not valid UTF-8 (byte {exc.start}: {data[exc.start:exc.end]!r}); "
                "data.encoding_errors='strict' refuses it: use 'replace', 'latin1', 'ignore' or "
                "'backslashreplace', or re-encode the file as UTF-8"
            ) from exc
    counter = [0]
    token = _BAD_BYTES.set(counter)
    try:
        text = data.decode("utf-8-sig", errors=f"longrecipe.{encoding_errors}")
    finally:
        _BAD_BYTES.reset(token)
    return text, counter[0]


def _is_saved_dataset(path: Path) -> bool:
    return path.is_dir() and ((path / "dataset_info.json").is_file() or (path / "dataset_dict.json").is_file())


def _looks_like_path(source: str) -> bool:
    return source.startswith(("/", "./", "../", "~")) or Path(source).suffix.lower() in _SUFFIXES


def resolve_source(source: str | os.PathLike, fmt: str = "auto") -> tuple[str, str]:
    """Return ``(kind, location)`` where kind is ``synthetic``, ``files`` or ``hf``.

    A missing local path raises a ValueError naming ``data.source`` and what was looked for.
    """
    if fmt not in READER_FORMATS:
        raise ValueError(
            f"data.format must be one of {list(READER_FORMATS)} for reading documents, got {fmt!r}; "
            "use 'auto' to pick the format from the file suffixes"
        )
    source = str(source)
    if source == SYNTHETIC_SOURCE:
        return "synthetic", source
    path = Path(source).expanduser()
    if path.exists():
        if _is_saved_dataset(path):
            if fmt not in ("auto", "hf"):
                raise ValueError(
                    f"data.source {path} is a saved HF datasets folder but data.format={fmt!r}; "
                    "use data.format=hf (documents with a text column) or data.format=prepared (packed samples)"
                )
            return "hf", str(path)
        if fmt == "hf":
            raise ValueError(
                f"data.format='hf' but data.source {path} is not a saved HF datasets folder "
                "(no dataset_info.json); use data.format=auto for .txt/.jsonl/.parquet files"
            )
        return "files", str(path)
    if fmt in FILE_FORMATS or _looks_like_path(source):
        raise ValueError(
            f"data.source {source!r} does not exist (looked for {path.resolve()}); give an existing file or "
            f"folder of {'/'.join('*' + s for s in _SUFFIXES)}, an HF dataset name, or 'synthetic'"
        )
    return "hf", source


def list_files(root: str | os.PathLike, *, fmt: str = "auto", glob: str | None = None) -> list[tuple[Path, str]]:
    """Sorted ``(path, format)`` pairs for a file or a folder (recursive, hidden files skipped).

    Without ``glob`` a folder contributes the files whose suffix matches ``fmt`` (all known suffixes
    for ``auto``); with ``glob`` every matching file is read as ``fmt`` (or by suffix for ``auto``).
    """
    root = Path(root).expanduser()
    if root.is_file():
        file_fmt = _SUFFIXES.get(root.suffix.lower()) if fmt == "auto" else fmt
        if file_fmt is None:
            raise ValueError(
                f"data.format='auto' cannot tell the format of {root} (suffix {root.suffix!r}); "
                f"set data.format to one of {list(FILE_FORMATS)}"
            )
        return [(root, file_fmt)]
    wanted = FILE_FORMATS if fmt == "auto" else (fmt,)
    candidates = sorted(
        p for p in root.glob(glob or "**/*")
        if p.is_file() and not any(part.startswith(".") for part in p.relative_to(root).parts)
    )
    out: list[tuple[Path, str]] = []
    for path in candidates:
        by_suffix = _SUFFIXES.get(path.suffix.lower())
        if glob is not None and fmt != "auto":
            out.append((path, fmt))
        elif by_suffix in wanted:
            out.append((path, by_suffix))
    if not out:
        looked = glob or ", ".join("**/*" + s for s, f in _SUFFIXES.items() if f in wanted)
        raise ValueError(
            f"data.source {root} holds no documents: looked for {looked} (data.format={fmt!r}, data.glob={glob!r}); "
            "point data.source at a folder of .txt/.jsonl/.parquet files or set data.glob"
        )
    return out


def _relname(path: Path, root: Path) -> str:
    return path.name if root.is_file() else path.relative_to(root).as_posix()


def _iter_txt(path: Path, name: str, encoding_errors: str) -> Iterator[tuple[str, str, int]]:
    text, n_bad = decode_bytes(path.read_bytes(), encoding_errors, where=str(path))
    yield name, text, n_bad


def _iter_jsonl(path: Path, name: str, text_field: str, id_field: str | None,
                encoding_errors: str) -> Iterator[tuple[str, str, int]]:
    with path.open("rb") as fh:
        for line_no, raw in enumerate(fh, start=1):
            line, n_bad = decode_bytes(raw, encoding_errors, where=f"{path} line {line_no}")
            if not line.strip():
                continue
            try:
                record = json.loads(line)
            except json.JSONDecodeError as exc:
                raise ValueError(f"{path} line {line_no} is not valid JSON ({exc.msg}); fix or remove the line") from exc
            yield _record_doc(record, f"{name}:{line_no}", text_field, id_field, f"{path} line {line_no}") + (n_bad,)


def _record_doc(record: Any, default_id: str, text_field: str, id_field: str | None, where: str) -> tuple[str, str]:
    if not isinstance(record, dict) or text_field not in record:
        keys = sorted(record) if isinstance(record, dict) else type(record).__name__
        raise ValueError(f"data.text_field={text_field!r} not found in {where} (keys: {keys}); set data.text_field")
    text = record[text_field]
    if text is None:
        text = ""
    if not isinstance(text, str):
        raise ValueError(f"data.text_field={text_field!r} in {where} is {type(text).__name__}, expected a string")
    if id_field is None:
        return default_id, text
    if id_field not in record:
        raise ValueError(f"data.id_field={id_field!r} not found in {where}; set data.id_field=null to use row numbers")
    return str(record[id_field]), text


def _iter_parquet(path: Path, name: str, text_field: str, id_field: str | None) -> Iterator[tuple[str, str, int]]:
    import pyarrow.parquet as pq

    pfile = pq.ParquetFile(path)
    columns = pfile.schema_arrow.names
    for which, fld in (("text_field", text_field), ("id_field", id_field)):
        if fld is not None and fld not in columns:
            raise ValueError(f"data.{which}={fld!r} is not a column of {path} (columns: {columns}); set data.{which}")
    row = 0
    for batch in pfile.iter_batches(columns=[c for c in (text_field, id_field) if c is not None]):
        texts = batch.column(text_field).to_pylist()
        ids = batch.column(id_field).to_pylist() if id_field is not None else [None] * len(texts)
        for text, ident in zip(texts, ids):
            record = {"text": text} if id_field is None else {"text": text, "id": ident}
            doc_id, text = _record_doc(record, f"{name}:{row}", "text", None if id_field is None else "id",
                                       f"{path} row {row}")
            yield doc_id, text, 0
            row += 1


def _iter_raw(source: str | os.PathLike, *, fmt: str, text_field: str, id_field: str | None, encoding_errors: str,
              glob: str | None, n_docs: int, seed: int, progress: bool, stats: ReadStats,
              split: str = "train") -> Iterator[tuple[str, str, str, int]]:
    """Every document, empty ones included, as ``(id, text, source, n_replaced_bytes)``; fills file stats."""
    kind, location = resolve_source(source, fmt)
    if kind == "synthetic":
        from longrecipe.tiny import synthetic_documents

        if n_docs < 1:
            raise ValueError(f"data.n_docs must be >= 1 for source=synthetic, got {n_docs}")
        for i, text in enumerate(synthetic_documents(n_docs, seed=seed)):
            yield f"synthetic:{i}", text, SYNTHETIC_SOURCE, 0
        stats.files_read = 0
        return
    if kind == "hf":
        ds = _load_hf(location, split=split, cache_dir=None, text_field=text_field)
        if id_field is not None and id_field not in ds.column_names:
            raise ValueError(f"data.id_field={id_field!r} is not a column of {location} (columns: {ds.column_names})")
        row = 0
        for batch in ds.with_format("arrow").iter(batch_size=1024):  # streamed: bounded memory
            texts = batch.column(text_field).to_pylist()
            ids = batch.column(id_field).to_pylist() if id_field is not None else [None] * len(texts)
            for text, ident in zip(texts, ids):
                doc_id = str(ident) if id_field is not None else f"{location}:{row}"
                yield doc_id, _record_doc({"t": text}, doc_id, "t", None, f"{location} row {row}")[1], location, 0
                row += 1
        return
    from tqdm.auto import tqdm

    root = Path(location)
    files = list_files(root, fmt=fmt, glob=glob)
    for path, file_fmt in tqdm(files, desc="reading documents", unit="file", disable=not progress or len(files) < 2):
        name = _relname(path, root)
        if file_fmt == "txt":
            rows = _iter_txt(path, name, encoding_errors)
        elif file_fmt == "jsonl":
            rows = _iter_jsonl(path, name, text_field, id_field, encoding_errors)
        else:
            rows = _iter_parquet(path, name, text_field, id_field)
        file_bad = 0
        for doc_id, text, n_bad in rows:
            file_bad += n_bad
            yield doc_id, text, str(path), n_bad
        stats.files_read += 1
        if file_bad:
            stats.files_bad_utf8.append(str(path))


def iter_documents(
    source: str | os.PathLike,
    *,
    fmt: str = "auto",
    text_field: str = "text",
    id_field: str | None = None,
    encoding_errors: str = "replace",
    glob: str | None = None,
    n_docs: int = 200,
    seed: int = 0,
    split: str = "train",
    stats: ReadStats | None = None,
    progress: bool = True,
) -> Iterator[Document]:
    """Stream the non-empty documents of ``source``.

    ``source``: a ``.txt`` / ``.jsonl`` / ``.parquet`` file or a folder of them (searched recursively,
    or with ``glob``), a saved HF dataset folder or an HF dataset name (``fmt="hf"`` or auto), or
    ``"synthetic"`` (``n_docs`` documents from :func:`longrecipe.tiny.synthetic_documents` with ``seed``).
    A ``.txt`` file is one document; a ``.jsonl`` line / parquet row is one document (``text_field``;
    ids from ``id_field`` or ``<file>:<line|row>``). Empty documents are skipped and counted; pass a
    :class:`ReadStats` to receive the counters (a summary is logged when the iterator is exhausted).
    """
    check_encoding_errors(encoding_errors)
    stats = stats if stats is not None else ReadStats()
    for doc_id, text, src, n_bad in _iter_raw(source, fmt=fmt, text_field=text_field, id_field=id_field,
                                               encoding_errors=encoding_errors, glob=glob, n_docs=n_docs, seed=seed,
                                               progress=progress, stats=stats, split=split):
        stats.bytes_replaced += n_bad
        if not text.strip():
            stats.empty_skipped += 1
            continue
        stats.docs_read += 1
        yield Document(id=doc_id, text=text, source=src, n_replaced_bytes=n_bad)
    log.info(stats.summary(str(source), encoding_errors))


# --------------------------------------------------------------------------------------------------
# As an HF dataset
# --------------------------------------------------------------------------------------------------


def _document_rows(source: str, fmt: str, text_field: str, id_field: str | None, encoding_errors: str,
                   glob: str | None, n_docs: int, seed: int, signature: str) -> Iterator[dict[str, Any]]:
    """Generator for ``Dataset.from_generator``; ``signature`` (a hash of the files' paths, sizes and
    mtimes) only keys the cache. No list-valued kwargs: ``from_generator`` would treat them as shards."""
    del signature
    for doc_id, text, src, n_bad in _iter_raw(source, fmt=fmt, text_field=text_field, id_field=id_field,
                                               encoding_errors=encoding_errors, glob=glob, n_docs=n_docs, seed=seed,
                                               progress=True, stats=ReadStats()):
        yield {"id": doc_id, "text": text, "source": src, "n_replaced_bytes": n_bad}


def _files_signature(location: str, fmt: str, glob: str | None) -> list[list]:
    root = Path(location)
    out = []
    for path, _ in list_files(root, fmt=fmt, glob=glob):
        st = path.stat()
        out.append([str(path.resolve()), st.st_size, st.st_mtime_ns])
    return out


def _load_hf(location: str, *, split: str, cache_dir: str | None, text_field: str):
    import datasets

    path = Path(location).expanduser()
    if path.exists():
        loaded = datasets.load_from_disk(str(path))
    else:
        try:
            loaded = datasets.load_dataset(location, split=split, cache_dir=cache_dir)
        except Exception as exc:  # noqa: BLE001 - any loader failure becomes a config error
            raise ValueError(
                f"data.source {location!r} is neither a local path (looked for {path.resolve()}) nor a loadable HF "
                f"dataset ({type(exc).__name__}: {exc}); give an existing path, a reachable dataset name, or 'synthetic'"
            ) from exc
    if isinstance(loaded, datasets.DatasetDict):
        if split not in loaded:
            raise ValueError(f"data.split={split!r} not in {location} (splits: {list(loaded)}); set data.split")
        loaded = loaded[split]
    if text_field not in loaded.column_names:
        raise ValueError(
            f"data.text_field={text_field!r} is not a column of {location} (columns: {loaded.column_names}); "
            "set data.text_field"
        )
    return loaded


def load_documents_dataset(
    source: str | os.PathLike,
    *,
    fmt: str = "auto",
    text_field: str = "text",
    id_field: str | None = None,
    encoding_errors: str = "replace",
    glob: str | None = None,
    split: str = "train",
    cache_dir: str | os.PathLike | None = None,
    n_docs: int = 200,
    seed: int = 0,
    stats: ReadStats | None = None,
):
    """The non-empty documents of ``source`` as a ``datasets.Dataset`` with columns
    ``id``, ``text``, ``source``, ``n_replaced_bytes``.

    Local files and the synthetic corpus go through ``Dataset.from_generator`` (arrow cache under
    ``cache_dir``, keyed by the reader arguments and the files' sizes/mtimes); HF datasets use
    ``load_from_disk`` / ``load_dataset``. Counters are computed from the columns (so they are exact on
    a cache hit too), logged, and copied into ``stats`` when given.
    """
    import datasets
    import numpy as np
    import pyarrow.compute as pc

    check_encoding_errors(encoding_errors)
    kind, location = resolve_source(source, fmt)
    cache_dir = str(cache_dir) if cache_dir is not None else None
    out_stats = ReadStats()
    if kind == "hf":
        raw = _load_hf(location, split=split, cache_dir=cache_dir, text_field=text_field)
        if id_field is not None and id_field not in raw.column_names:
            raise ValueError(f"data.id_field={id_field!r} is not a column of {location} (columns: {raw.column_names})")
        raw = raw.select_columns([c for c in (text_field, id_field) if c is not None])
        if text_field != "text":
            if "text" in raw.column_names:
                raw = raw.remove_columns("text")
            raw = raw.rename_column(text_field, "text")
        ids = (raw.with_format("arrow")[:].column(id_field).to_pylist() if id_field is not None and len(raw)
               else [f"{location}:{i}" for i in range(len(raw))])
        if id_field is not None:
            raw = raw.remove_columns(id_field)
        raw = raw.add_column("id", [str(x) for x in ids])
        raw = raw.add_column("source", [location] * len(raw))
        raw = raw.add_column("n_replaced_bytes", np.zeros(len(raw), dtype=np.int64))
    else:
        features = datasets.Features({
            "id": datasets.Value("string"),
            "text": datasets.Value("string"),
            "source": datasets.Value("string"),
            "n_replaced_bytes": datasets.Value("int64"),
        })
        files = _files_signature(location, fmt, glob) if kind == "files" else []
        raw = datasets.Dataset.from_generator(
            _document_rows,
            features=features,
            cache_dir=cache_dir,
            gen_kwargs=dict(source=location, fmt=fmt, text_field=text_field, id_field=id_field,
                            encoding_errors=encoding_errors, glob=glob, n_docs=n_docs, seed=seed,
                            signature=config_hash(files, length=32)),
        )
        out_stats.files_read = len(files)
    table = raw.data.table
    text = table.column("text").fill_null("")
    empty = np.asarray(pc.equal(pc.utf8_length(pc.utf8_trim_whitespace(text)), 0).to_numpy(zero_copy_only=False),
                       dtype=bool)
    n_bad = np.asarray(table.column("n_replaced_bytes").to_numpy(), dtype=np.int64)
    sources = np.asarray(table.column("source").to_pylist(), dtype=object)
    out_stats.empty_skipped = int(empty.sum())
    out_stats.docs_read = int((~empty).sum())
    out_stats.bytes_replaced = int(n_bad.sum())
    out_stats.files_bad_utf8 = sorted({str(s) for s in sources[n_bad > 0]})
    if out_stats.empty_skipped:
        raw = raw.select(np.flatnonzero(~empty))
    log.info(out_stats.summary(str(source), encoding_errors))
    if stats is not None:
        for key, value in asdict(out_stats).items():
            setattr(stats, key, value)
    return raw
