"""Gather ``results.json`` records from many run folders into one table.

Every evaluation writes ``results.json``: a list of records ``{task, length, score, n, se, ci_low, ci_high,
metric, model, run_id, group, ...}`` (see :mod:`longrecipe.evaluation.results`; older files without ``se`` read
as unknown uncertainty). What a record does not say about its run (which base model, which method, target
length, token ratio, selection mode, pipeline stage, seed) is read from ``run_meta.json`` files found
walking up from the results file towards the search root; the nearest file wins per key. Record
fields always win over run metadata.
"""

from __future__ import annotations

import json
from collections.abc import Iterable
from pathlib import Path

import pandas as pd

from longrecipe.utils.logging import get_logger

log = get_logger(__name__)

RESULTS_NAME = "results.json"
META_NAME = "run_meta.json"
META_KEYS = ("model_name", "method", "target_length", "token_ratio", "selection", "stage", "seed",
             "max_skip", "merge_lambda", "experiment")
RECORD_KEYS = ("task", "length", "score", "n", "se", "ci_low", "ci_high", "metric", "model", "run_id", "group")


def load_run_meta(results_file: Path, root: Path) -> dict:
    """Merge ``run_meta.json`` files from ``root`` down to the folder of ``results_file``."""
    results_file, root = results_file.resolve(), root.resolve()
    chain = [p for p in [results_file.parent, *results_file.parent.parents] if p == root or root in p.parents]
    meta: dict = {}
    for folder in reversed(chain):  # root first, nearest last -> nearest wins
        f = folder / META_NAME
        if f.is_file():
            meta.update(json.loads(f.read_text(encoding="utf-8")))
    return meta


def collect_results(roots: Iterable[str | Path]) -> pd.DataFrame:
    """One row per result record under ``roots`` (folders searched recursively, or files)."""
    rows: list[dict] = []
    for root in map(Path, roots):
        if not root.exists():
            raise FileNotFoundError(f"report.runs: {root} does not exist; give folders holding results.json files")
        files = [root] if root.is_file() else sorted(root.rglob(RESULTS_NAME))
        base = root.parent if root.is_file() else root
        for f in files:
            try:
                records = json.loads(f.read_text(encoding="utf-8"))
            except json.JSONDecodeError as err:
                raise ValueError(f"{f} is not valid JSON ({err}); re-run the evaluation that wrote it") from err
            if isinstance(records, dict):
                records = records.get("records", [])
            meta = load_run_meta(f, base)
            for rec in records:
                missing = [k for k in ("task", "score") if k not in rec]
                if missing:
                    raise ValueError(f"{f}: record {rec} lacks {missing}; results.json records need task and score")
                rows.append({**{k: None for k in META_KEYS}, **meta, **rec, "source": str(f)})
    columns = list(dict.fromkeys([*META_KEYS, *RECORD_KEYS, "source"]))
    frame = pd.DataFrame(rows)
    for col in columns:
        if col not in frame:
            frame[col] = None
    log.info("collected %d result records from %d files", len(frame), frame["source"].nunique() if len(frame) else 0)
    return frame
