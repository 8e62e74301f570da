"""The results schema shared by every evaluation group, and its writers (JSON, markdown, JSONL, heatmap).

A record is a flat dict with the keys of ``RECORD_KEYS``:

- ``task``, ``length`` (tokens; ``None`` when not length-bound), ``metric``, ``model``, ``run_id``, ``group``;
- ``score``: 0-100 for accuracy-style metrics (``ppl`` is a perplexity); ``n``: the samples behind it;
- ``se``, ``ci_low``, ``ci_high``: its standard error and 95 % interval (:mod:`longrecipe.evaluation.uncertainty`;
  ``None`` where not defined, e.g. perplexity);
- ``status``: ``"ok"`` or ``"not run (...)"`` (then ``score`` is ``None`` and ``n`` is 0, so a missing task is
  visible, never dropped);
- ``chat_template``: whether prompts were wrapped in the tokenizer's chat template (``None``: not applicable);
- ``haystack``: the haystack text a task used (e.g. ``state_union+inaugural (...)``, ``noise``, ``needle``,
  ``squad:dev-v2.0.json``; ``None`` when the task has none);
- ``model_window``: the evaluated model's ``max_position_embeddings``; ``beyond_window``: ``length`` exceeds it.
"""

from __future__ import annotations

import json
import math
from collections import defaultdict
from collections.abc import Iterable, Sequence
from pathlib import Path
from typing import Any

from longrecipe.evaluation.uncertainty import binomial_se, combined_se, normal_interval, wilson_interval
from longrecipe.utils.io import save_figure_atomic, write_json_atomic, write_text_atomic

RECORD_KEYS = ("task", "length", "score", "n", "se", "ci_low", "ci_high", "metric", "model", "run_id", "group",
               "status", "chat_template", "haystack", "model_window", "beyond_window")
OK = "ok"
NO_DATA = "not run (no data)"
TOO_SHORT = "not run (length too short)"


def _round(x: float | None) -> float | None:
    return None if x is None else round(float(x), 4)


def make_record(*, task: str, length: int | None, score: float | None, n: int, metric: str, model: str, run_id: str,
                group: str, status: str = OK, se: float | None = None, ci: tuple[float, float] | None = None,
                chat_template: bool | None = None, haystack: str | None = None,
                model_window: int | None = None) -> dict[str, Any]:
    if status == OK and (score is None or (isinstance(score, float) and math.isnan(score))):
        raise ValueError(f"record for task {task!r} has status ok but no score")
    length = None if length is None else int(length)
    model_window = None if model_window is None else int(model_window)
    beyond = None if length is None or model_window is None else length > model_window
    return {"task": task, "length": length, "score": _round(score), "n": int(n), "se": _round(se),
            "ci_low": _round(ci[0]) if ci else None, "ci_high": _round(ci[1]) if ci else None, "metric": metric,
            "model": model, "run_id": run_id, "group": group, "status": status,
            "chat_template": None if chat_template is None else bool(chat_template), "haystack": haystack,
            "model_window": model_window, "beyond_window": beyond}


def binomial_fields(score: float, n: int) -> dict[str, Any]:
    """``se`` and ``ci`` (Wilson 95 %) keyword arguments of :func:`make_record` for a mean of ``n`` [0, 1] scores."""
    return {"se": binomial_se(score, n), "ci": wilson_interval(score, n)}


def validate_records(records: Sequence[dict[str, Any]]) -> None:
    for r in records:
        if tuple(r) != RECORD_KEYS:
            raise ValueError(f"result record keys must be {RECORD_KEYS}, got {tuple(r)}")


def _common(values: Iterable[Any]) -> Any:
    """The shared value, or (for strings) the distinct values joined with ``; ``; ``None`` when they differ."""
    vals = list(dict.fromkeys(v for v in values if v is not None))
    if len(vals) == 1:
        return vals[0]
    if vals and all(isinstance(v, str) for v in vals):
        return "; ".join(vals)
    return None


def mean_records(records: Sequence[dict[str, Any]], *, task: str, metric: str, by_category: bool = False,
                 expected: Sequence[str] = ()) -> list[dict[str, Any]]:
    """One average record per length over ``records`` (``status == ok`` only).

    With ``by_category`` tasks are first averaged within their category (name without a trailing ``_<digit>``,
    so niah_multikey_1/2/3 count once), as the paper's NIAH(M) averages multikey, multivalue and multiquery.
    Tasks in ``expected`` that did not run are named in the metric string so the average is never silently
    partial. The average's standard error combines the tasks' (independent samples): ``sqrt(sum w^2 se^2)`` with
    each task's weight ``w`` in the average; its interval is normal, clipped to [0, 100].
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
        groups: dict[str, list[dict[str, Any]]] = defaultdict(list)
        for r in ok:
            groups[_category(r["task"]) if by_category else r["task"]].append(r)
        score = sum(sum(x["score"] for x in v) / len(v) for v in groups.values()) / len(groups)
        weights = [1.0 / (len(groups) * len(v)) for v in groups.values() for _ in v]
        se = combined_se(weights, [x["se"] for v in groups.values() for x in v])
        label = metric + (f" (mean of {len(groups)} categories)" if by_category else f" (mean of {len(ok)} tasks)")
        if missing:
            label += f"; not run: {', '.join(missing)}"
        first = ok[0]
        out.append(make_record(task=task, length=length, score=score, n=sum(r["n"] for r in ok), metric=label,
                               model=first["model"], run_id=first["run_id"], group=first["group"], se=se,
                               ci=None if se is None else normal_interval(score, se),
                               chat_template=_common(r["chat_template"] for r in ok),
                               haystack=_common(r["haystack"] for r in ok),
                               model_window=_common(r["model_window"] for r in ok)))
    return out


def _category(task: str) -> str:
    head, _, tail = task.rpartition("_")
    return head if head and tail.isdigit() else task


def _cell(r: dict[str, Any]) -> str:
    if r["score"] is None:
        return r["status"]
    se = f" ± {r['se']:.2f}" if r.get("se") is not None else ""
    return f"{r['score']:.2f}{se} (n={r['n']})"


def markdown_table(records: Sequence[dict[str, Any]]) -> str:
    """Rows are tasks, columns are lengths (one table per model/run); each cell ``score ± se (n=...)``, lengths
    beyond the model's window are marked in the header."""
    lengths = sorted({r["length"] for r in records if r["length"] is not None})
    tasks = list(dict.fromkeys(r["task"] for r in records))
    cell: dict[tuple[str, Any], str] = {}
    metric: dict[str, str] = {}
    beyond: set[Any] = set()
    for r in records:
        cell[(r["task"], r["length"])] = _cell(r)
        metric.setdefault(r["task"], r["metric"])
        if r.get("beyond_window"):
            beyond.add(r["length"])
    window = _common(r.get("model_window") for r in records)
    cols = [f"{x} (beyond window {window})" if x in beyond else str(x) for x in lengths] or ["-"]
    keys = lengths or [None]
    head = f"| task | metric | {' | '.join(cols)} |\n|---|---|{'---|' * len(cols)}\n"
    rows = "".join(
        f"| {t} | {metric[t]} | {' | '.join(cell.get((t, k), '') for k in keys)} |\n" for t in tasks
    )
    first = records[0] if records else {"model": "", "run_id": "", "group": ""}
    chat = _common(r.get("chat_template") for r in records)
    hay = _common(r.get("haystack") for r in records)
    notes = [f"chat template: {'on' if chat else 'off' if chat is False else 'n/a'}",
             f"haystack: {hay or 'n/a'}", f"model window: {window if window is not None else 'n/a'} tokens",
             "cells: score ± standard error (n samples); 95 % intervals in results.json (ci_low, ci_high)"]
    if beyond:
        notes.append(f"lengths beyond the model's window ({window}): {', '.join(map(str, sorted(beyond)))}")
    body = "".join(f"- {x}\n" for x in notes)
    return f"# {first['group']} results: {first['model']} (run {first['run_id']})\n\n{body}\n{head}{rows}"


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
            # depths are drawn at random (RULER): bin them into tenths of the context
            cells[(min(int(float(s["depth"]) * 10), 9) / 10, int(s["length"]))].append(float(s["score"]))
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
    ax.set_yticks(range(len(depths)), [f"{100 * d:.0f}-{100 * d + 10:.0f}%" for d in depths])
    ax.set_xlabel("context length (tokens)")
    ax.set_ylabel("needle depth")
    ax.set_title(title)
    fig.colorbar(im, ax=ax, label="score")
    fig.tight_layout()
    return save_figure_atomic(fig, path)
