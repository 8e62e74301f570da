"""Documents for analysis and selection, through the DataModule's readers (``longrecipe.data.readers``).

``iter_corpus(corpus)`` yields ``(doc_id, text)`` from a ``corpus`` config mapping (``source``, ``fmt``,
``text_field``, ``id_field``, ``glob``, ``encoding_errors``, ``n_synthetic``, ``seed``). ``source="synthetic"`` is the
seeded generated corpus, so the commands run with no data on disk.
"""

from __future__ import annotations

from collections.abc import Iterator, Mapping
from typing import Any

from longrecipe.data.readers import iter_documents


def iter_corpus(corpus: Mapping[str, Any]) -> Iterator[tuple[str, str]]:
    """Yield ``(doc_id, text)`` for every non-empty document of ``corpus['source']`` in a stable order."""
    source = corpus.get("source")
    if not source:
        raise ValueError("corpus.source is empty: give a folder of .txt files, a .txt/.jsonl/.parquet file, a saved "
                         "HF dataset, or corpus.source=synthetic")
    for doc in iter_documents(str(source), fmt=str(corpus.get("fmt", "auto")),
                              text_field=str(corpus.get("text_field", "text")), id_field=corpus.get("id_field"),
                              encoding_errors=str(corpus.get("encoding_errors", "replace")), glob=corpus.get("glob"),
                              n_docs=int(corpus.get("n_synthetic", 64)), seed=int(corpus.get("seed", 0)),
                              progress=False):
        yield str(doc.id), doc.text
