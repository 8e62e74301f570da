"""The results schema shared by every evaluation group, and its writers (JSON, markdown, JSONL, heatmap).

A record is ``{task, length, score, n, metric, model, run_id, group, status}``: ``score`` is 0-100 for accuracy
style metrics (``ppl`` is a perplexity), ``n`` the number of samples behind it, ``status`` ``"ok"`` or
``"not run (no data)"`` (then ``score`` is ``None`` and ``n`` is 0, so a missing task is visible, never dropped).
"""

from __future__ import annotations

import json
import math
from collections import defaultdict
from collections.abc import Iterable, Sequence
from pathlib import Path
from typing import Any

from longrecipe.utils.io import save_figure_atomic, write_json_atomic, write_text_atomic

RECORD_KEYS = ("task", "length", "score", "n", "metric", "model", "run_id", "group", "status")
OK = "ok"
NO_DATA = "not run (no data)"
TOO_SHORT = "not run (length too short)"


def make_record(*, task: str, length: int | None, score: float | None, n: int, metric: str, model: str, run_id: str,
                group: str, status: str = OK) -> dict[str, Any]:
    if status == OK and (score is None or (isinstance(score, float) and math.isnan(score))):
        raise ValueError(f"record for task {task!r} has status ok but no score")
    return {"task": task, "length": None if length is None else int(length),
            "score": None if score is None else round(float(score), 4), "n": int(n), "metric": metric,
            "model": model, "run_id": run_id, "group": group, "status": status}


def validate_records(records: Sequence[dict[str, Any]]) -> None:
    for r in records:
        if tuple(r) != RECORD_KEYS:
            raise ValueError(f"result record keys must be {RECORD_KEYS}, got {tuple(r)}")


def mean_records(records: Sequence[dict[str, Any]], *, task: str, metric: str, by_category: bool = False,
                 expected: Sequence[str] = ()) -> list[dict[str, Any]]:
    """One average record per length over ``records`` (``status == ok`` only).

    With ``by_category`` tasks are first averaged within their category (name without a trailing ``_<digit>``,
    so niah_multikey_1/2/3 count once), as the paper's NIAH(M) averages multikey, multivalue and multiquery.
    Tasks in ``expected`` that did not run are named in the metric string so the average is never silently
    partial.
    """
    by_len: dict[Any, list[dict[str, Any]]] = defaultdict(list)
    for r in records:
        by_len[r["length"]].append(r)
    out = []
    for length, recs in by_len.items():
        ok = [r for r in recs if r["status"] == OK]
        if not ok:
            continue
        missing = sorted(set(expected) - {r["task"] for r in ok})
        groups: dict[str, list[float]] = defaultdict(list)
        for r in ok:
            key = _category(r["task"]) if by_category else r["task"]
            groups[key].append(r["score"])
        score = sum(sum(v) / len(v) for v in groups.values()) / len(groups)
        label = metric + (f" (mean of {len(groups)} categories)" if by_category else f" (mean of {len(ok)} tasks)")
        if missing:
            label += f"; not run: {', '.join(missing)}"
        first = ok[0]
        out.append(make_record(task=task, length=length, score=score, n=sum(r["n"] for r in ok), metric=label,
                               model=first["model"], run_id=first["run_id"], group=first["group"]))
    return out


def _category(task: str) -> str:
    head, _, tail = task.rpartition("_")
    return head if head and tail.isdigit() else task


def markdown_table(records: Sequence[dict[str, Any]]) -> str:
    """Rows are tasks, columns are lengths (one table per model/run)."""
    lengths = sorted({r["length"] for r in records if r["length"] is not None})
    tasks = list(dict.fromkeys(r["task"] for r in records))
    cell: dict[tuple[str, Any], str] = {}
    metric: dict[str, str] = {}
    for r in records:
        cell[(r["task"], r["length"])] = r["status"] if r["score"] is None else f"{r['score']:.2f}"
        metric.setdefault(r["task"], r["metric"])
    cols = [str(x) for x in lengths] or ["-"]
    keys = lengths or [None]
    head = f"| task | metric | {' | '.join(cols)} |\n|---|---|{'---|' * len(cols)}\n"
    rows = "".join(
        f"| {t} | {metric[t]} | {' | '.join(cell.get((t, k), '') for k in keys)} |\n" for t in tasks
    )
    first = records[0] if records else {"model": "", "run_id": "", "group": ""}
    return f"# {first['group']} results: {first['model']} (run {first['run_id']})\n\n{head}{rows}"


def write_results(out_dir: str | Path, records: Sequence[dict[str, Any]], samples: Iterable[dict[str, Any]] = (),
                  *, overwrite: bool = False) -> dict[str, Path]:
    """``results.json``, ``results.md`` and ``samples.jsonl`` under ``out_dir``; each write is atomic.

    A finished run (``results.json`` present) is never replaced unless ``overwrite``.
    """
    out_dir = Path(out_dir)
    final = out_dir / "results.json"
    if final.exists() and not overwrite:
        raise FileExistsError(f"{final} already exists; pass overwrite=true or choose another output_dir")
    validate_records(records)
    paths = {
        "samples": write_text_atomic(out_dir / "samples.jsonl",
                                     "".join(json.dumps(s, default=str) + "\n" for s in samples)),
        "markdown": write_text_atomic(out_dir / "results.md", markdown_table(records)),
    }
    paths["results"] = write_json_atomic(final, list(records))  # last: its presence marks a finished run
    return paths


def niah_heatmap(samples: Sequence[dict[str, Any]], path: str | Path, *, title: str = "NIAH") -> Path | None:
    """Depth x length heatmap (mean per-sample score x 100) of samples that carry a depth; PNG via Agg."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt
    import numpy as np

    cells: dict[tuple[float, int], list[float]] = defaultdict(list)
    for s in samples:
        if s.get("depth") is not None and s.get("score") is not None:
            cells[(round(float(s["depth"]), 4), int(s["length"]))].append(float(s["score"]))
    if not cells:
        return None
    depths = sorted({d for d, _ in cells})
    lengths = sorted({L for _, L in cells})
    grid = np.full((len(depths), len(lengths)), np.nan)
    for (d, L), v in cells.items():
        grid[depths.index(d), lengths.index(L)] = 100.0 * sum(v) / len(v)
    fig, ax = plt.subplots(figsize=(1.2 + 0.9 * len(lengths), 1.0 + 0.35 * len(depths)))
    im = ax.imshow(grid, cmap="RdYlGn", vmin=0, vmax=100, aspect="auto")
    ax.set_xticks(range(len(lengths)), [str(x) for x in lengths])
    ax.set_yticks(range(len(depths)), [f"{100 * d:.0f}%" for d in depths])
    ax.set_xlabel("context length (tokens)")
    ax.set_ylabel("needle depth")
    ax.set_title(title)
    fig.colorbar(im, ax=ax, label="score")
    fig.tight_layout()
    return save_figure_atomic(fig, path)
