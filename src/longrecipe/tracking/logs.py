"""What each command logs to wandb (keys are the contract with :mod:`longrecipe.tracking.dashboard`).

Evaluation (one run per evaluation group, job type ``evaluate``), for group ``<g>``:

* ``eval/<g>/results`` — table of every ``results.json`` record: ``task, length, depth, score, n, status`` first,
  then every other flat field the records carry (``metric``, ``model``, confidence bounds, ...);
* ``eval/<g>/by_depth`` — the same columns per (task, length, needle depth), from the per-sample scores (NIAH / RULER);
* history rows against ``eval/length``: ``eval/<g>/<task>`` per evaluated length (so a line plot of ``eval/<g>/<g>``
  over ``eval/length`` draws score or perplexity vs length, one line per run / method); summary
  ``eval/<g>/<task>@<length>`` and ``eval/<g>/mean`` (the headline task ``<g>`` averaged over lengths, as the
  paper's long-context columns);
* images ``eval/<g>/niah_heatmap`` (depth x length) and ``eval/<g>/ppl_by_position`` (perplexity per position bucket).

Positions (``longrecipe-positions``, job type ``positions``): table ``positions/stats``, image ``positions/figure``,
summary ``positions/<scheme>/<statistic>@<target>``.

Report (``longrecipe-report`` / the ``report`` stage, job type ``report``): tables ``report/<table>`` (Tables 1-3,
Fig. 2, perplexity), images ``report/<figure>``, charts ``report/ppl_vs_length`` and ``report/score_vs_length`` (one
line per method) and the table ``report/scores`` behind the score chart.

Other pipeline stages (``base``, ``analyze``, ``prepare``, ``merge``) and the stand-alone ``longrecipe-merge`` /
``-analyze`` / ``-prepare``: a run with the numeric outputs in the summary as ``stage/<key>`` and ``stage/seconds``. Training logs through Lightning (``train/*``, ``val/*``, ``perf/*``,
``compute/tokens|flops|wall_s``).
"""

from __future__ import annotations

import json
import math
import re
import tempfile
import time
from collections import defaultdict
from collections.abc import Iterator, Mapping, Sequence
from contextlib import contextmanager
from pathlib import Path
from typing import Any

from omegaconf import DictConfig, OmegaConf

from longrecipe.tracking.layout import make_layout, method_display, tracking_settings
from longrecipe.tracking.session import TrackedRun, start_run
from longrecipe.utils.logging import get_logger

log = get_logger(__name__)

EVAL_COLUMNS = ("task", "length", "depth", "score", "n", "status")
BUCKET_TASK = re.compile(r"^(?P<task>[^\[]+)\[(?P<start>\d+):(?P<end>\d+)\]$")


def _plain(node: Any) -> Any:
    if isinstance(node, DictConfig) or OmegaConf.is_config(node):
        return OmegaConf.to_container(node, resolve=True)
    return node


def _finite(value: Any) -> bool:
    return isinstance(value, (int, float)) and not isinstance(value, bool) and math.isfinite(float(value))


def meta_from_model(model_path: Any) -> dict[str, Any]:
    """Run metadata of a model folder exported by training (its ``longrecipe.json`` training config): method,
    target length, model name, token ratio, seed. Empty for other folders."""
    if not model_path:
        return {}
    info = Path(str(model_path)) / "longrecipe.json"
    if not info.is_file():
        return {}
    try:
        train = json.loads(info.read_text(encoding="utf-8")).get("train_config") or {}
    except (OSError, json.JSONDecodeError):
        return {}
    position = train.get("position") or {}
    return {"method": method_display(position.get("_target_")), "target_length": train.get("target_length"),
            "model_name": (train.get("model") or {}).get("name"), "token_ratio": train.get("token_ratio"),
            "max_skip": position.get("max_skip"), "seed": train.get("seed")}


# ---------------------------------------------------------------------------- evaluation
def depth_rows(samples: Sequence[Mapping[str, Any]]) -> list[dict[str, Any]]:
    """Per (task, length, depth): score (mean per-sample score x 100, as the records), n, status ``ok``."""
    cells: dict[tuple[str, int, float], list[float]] = defaultdict(list)
    for s in samples:
        if s.get("depth") is not None and s.get("score") is not None:
            cells[(str(s["task"]), int(s["length"]), round(float(s["depth"]), 4))].append(float(s["score"]))
    return [{"task": t, "length": n, "depth": d, "score": 100.0 * sum(v) / len(v), "n": len(v), "status": "ok"}
            for (t, n, d), v in sorted(cells.items())]


def ppl_position_figure(records: Sequence[Mapping[str, Any]], title: str = "perplexity by position"):
    """Perplexity per position bucket, one line per evaluated length (``ppl[a:b]`` records); None without any."""
    lines: dict[int, list[tuple[int, float]]] = defaultdict(list)
    for r in records:
        m = BUCKET_TASK.match(str(r.get("task")))
        if m and _finite(r.get("score")):
            lines[int(r["length"])].append((int(m["start"]), float(r["score"])))
    if not lines:
        return None
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, ax = plt.subplots(figsize=(6, 3.5))
    for length, points in sorted(lines.items()):
        points.sort()
        ax.plot([p for p, _ in points], [v for _, v in points], marker="o", label=f"length {length}")
    ax.set_xlabel("position (bucket start, tokens)")
    ax.set_ylabel("perplexity")
    ax.set_title(title)
    ax.legend(fontsize=7)
    fig.tight_layout()
    return fig


def log_eval_records(run: TrackedRun, group: str, records: Sequence[Mapping[str, Any]],
                     samples: Sequence[Mapping[str, Any]], heatmap: str | Path | None = None) -> None:
    """Log one evaluation group's records and samples to ``run`` (keys in the module docstring)."""
    prefix = f"eval/{group}"
    run.define_step("eval/length", [f"{prefix}/*"])
    run.log_table(f"{prefix}/results", [{"depth": None, **r} for r in records], first=EVAL_COLUMNS)
    by_depth = depth_rows(samples)
    if by_depth:
        run.log_table(f"{prefix}/by_depth", by_depth, first=EVAL_COLUMNS)
    by_length: dict[int, dict[str, float]] = defaultdict(dict)
    for r in records:
        if r.get("length") is not None and _finite(r.get("score")) and not BUCKET_TASK.match(str(r["task"])):
            by_length[int(r["length"])][f"{prefix}/{r['task']}"] = float(r["score"])
    for length in sorted(by_length):
        run.log({"eval/length": length, **by_length[length]})
    summary = {f"{key}@{length}": v for length, row in by_length.items() for key, v in row.items()}
    headline = [row[f"{prefix}/{group}"] for row in by_length.values() if f"{prefix}/{group}" in row]
    if headline:  # the paper's long-context columns average the evaluated lengths
        summary[f"{prefix}/mean"] = sum(headline) / len(headline)
    run.summary(summary)
    if heatmap is not None and Path(heatmap).is_file():
        run.log_image(f"{prefix}/niah_heatmap", heatmap)
    elif by_depth:
        from longrecipe.evaluation.results import niah_heatmap

        with tempfile.TemporaryDirectory() as tmp:
            png = niah_heatmap([s for s in samples if s.get("depth") is not None], Path(tmp) / "niah_heatmap.png",
                               title=group)
            if png is not None:
                run.log_image(f"{prefix}/niah_heatmap", png)
    fig = ppl_position_figure(records, title=f"{group}: perplexity by position")
    if fig is not None:
        run.log_image(f"{prefix}/ppl_by_position", fig)


def log_evaluation(cfg: Any, records: Sequence[Mapping[str, Any]], samples: Sequence[Mapping[str, Any]],
                   out_dir: str | Path) -> None:
    """``longrecipe-eval`` / the ``evaluate`` stage: one wandb run per group when ``cfg.wandb`` is enabled.

    The run folder is ``out_dir``; metadata from ``wandb.meta`` (the pipeline's run metadata) or else the model
    folder's ``longrecipe.json``. Never raises on a wandb problem (it warns)."""
    settings = tracking_settings(cfg.get("wandb"))
    if settings is None:
        return
    group = str(cfg.eval.name)
    meta = dict(settings.get("meta") or {}) or meta_from_model(cfg.get("model_path"))
    layout = make_layout(settings, folder=out_dir, job_type=str(settings.get("job_type") or "evaluate"),
                         meta={**meta, "eval": group})
    heatmap = Path(out_dir) / "niah_heatmap.png"
    with start_run(layout, _plain(cfg)) as run:
        log_eval_records(run, group, list(records), list(samples), heatmap if heatmap.is_file() else None)


# ---------------------------------------------------------------------------- positions
def log_position_stats(cfg: Any, result: Mapping[str, Any], out_dir: str | Path) -> None:
    """``longrecipe-positions``: the statistics table, the figure and per-scheme summaries."""
    settings = tracking_settings(cfg.get("wandb"))
    if settings is None:
        return
    records = list(result.get("results") or [])
    layout = make_layout(settings, folder=out_dir, job_type=str(settings.get("job_type") or "positions"),
                         meta={**dict(settings.get("meta") or {}), "token_ratio": result.get("token_ratio")})
    with start_run(layout, _plain(cfg)) as run:
        run.log_table("positions/stats", records, first=("scheme", "target_length", "sample_length"))
        png = Path(out_dir) / "positions.png"
        if png.is_file():
            run.log_image("positions/figure", png)
        run.summary({f"positions/{r['scheme']}/{k}@{r['target_length']}": v for r in records
                     for k, v in r.items() if k not in ("scheme", "target_length") and _finite(v)})


# ---------------------------------------------------------------------------- report
HEADLINE = ("niah_m", "ruler", "longbench", "ppl")


KNOB_NAMES = {"max_skip": "M", "token_ratio": "ratio", "merge_lambda": "λ", "selection": "selection"}


def _label(row: Mapping[str, Any], keys: Sequence[str]) -> str:
    """``LongRecipe merge len512 ratio=0.3 M=16``: method and stage, then the other set keys (model name left out)."""
    parts = []
    for k in sorted(keys, key=lambda k: (k not in ("method", "stage"), list(keys).index(k))):
        v = row.get(k)
        if v is None or v == "—" or (isinstance(v, float) and math.isnan(v)) or k == "model_name":
            continue
        if isinstance(v, float) and v.is_integer():
            v = int(v)
        parts.append(str(v) if k in ("method", "stage", "experiment") else f"len{v}" if k == "target_length"
                     else f"{KNOB_NAMES.get(k, k)}={v}")
    return " ".join(parts) or "run"


def log_report(settings: Mapping[str, Any], result: Mapping[str, Any], runs: Sequence[str | Path],
               folder: str | Path, config: Any = None, meta: Mapping[str, Any] | None = None) -> None:
    """The report's summary run (job type ``report``): tables, figures and per-method line charts."""
    import pandas as pd

    from longrecipe.reporting.collect import collect_results

    layout = make_layout(settings, folder=folder, job_type=str(settings.get("job_type") or "report"),
                         meta=dict(meta or settings.get("meta") or {}))
    with start_run(layout, _plain(config)) as run:
        for name, table in (result.get("tables") or {}).items():
            if isinstance(table, pd.DataFrame) and not table.empty:
                rows = table.astype(object).where(table.notna(), None).to_dict("records")
                run.log_table(f"report/{name}", [{k: None if v == "—" else v for k, v in r.items()} for r in rows])
        for name, path in (result.get("paths") or {}).items():
            if name.endswith("_png") and Path(path).is_file():
                run.log_image(f"report/{name[:-4]}", path)
        ppl = (result.get("tables") or {}).get("perplexity")
        if isinstance(ppl, pd.DataFrame) and not ppl.empty:
            cols = [c for c in ppl.columns if str(c).startswith("ppl@")]
            keys = [c for c in ppl.columns if c not in cols]
            lengths = [int(str(c).split("@")[1]) for c in cols]
            series = [(_label(row, keys), [row[c] for c in cols]) for _, row in ppl.iterrows()]
            _line_series(run, "report/ppl_vs_length", lengths, series, "perplexity vs length")
        frame = collect_results(list(runs))
        scores = score_rows(frame)
        if scores:
            run.log_table("report/scores", scores, first=("task", "method", "length", "score"))
            for task in sorted({r["task"] for r in scores}):
                rows = [r for r in scores if r["task"] == task]
                lengths = sorted({r["length"] for r in rows})
                series = []
                for label in sorted({r["label"] for r in rows}):
                    cell = {r["length"]: r["score"] for r in rows if r["label"] == label}
                    series.append((label, [cell.get(n) for n in lengths]))
                _line_series(run, f"report/score_vs_length/{task}", lengths, series, f"{task} score vs length")


def score_rows(frame) -> list[dict[str, Any]]:
    """Headline long-context scores (``niah_m``, ``ruler``, ``longbench``) per run configuration and length, final
    model stage of each run; the label names the method and whichever sweep knobs vary."""
    from longrecipe.reporting.tables import CONFIG_KEYS, _config_keys, final_stage

    if frame.empty:
        return []
    sel = final_stage(frame)
    sel = sel[sel["task"].isin(HEADLINE[:3]) & sel["score"].notna()]
    if sel.empty:
        return []
    keys = [k for k in _config_keys(sel, ("method",)) if k in CONFIG_KEYS]
    out = []
    for (task, length, *key), g in sel.groupby(["task", "length", *keys], dropna=False, sort=True):
        row = dict(zip(keys, key))
        out.append({"task": task, "length": int(length), "score": float(g["score"].astype(float).mean()),
                    "method": row.get("method"), "label": _label(row, keys), "seeds": int(g["seed"].nunique())})
    return out


def _line_series(run: TrackedRun, key: str, xs: list[int], series: list[tuple[str, list[Any]]], title: str) -> None:
    """A ``wandb.plot.line_series`` chart (one line per label; its data is the table ``<key>_table``)."""
    def chart():
        import wandb

        ys = [[float(v) if _finite(v) else float("nan") for v in values] for _, values in series]
        return wandb.plot.line_series(xs=xs, ys=ys, keys=[label for label, _ in series], title=title,
                                      xname="length")

    run.log_chart(key, chart)


# ---------------------------------------------------------------------------- generic pipeline stages
@contextmanager
def stage_run(tracking: Mapping[str, Any] | None, folder: str | Path) -> Iterator[TrackedRun | None]:
    """A run for a pipeline stage that has no logging of its own; yields ``None`` when tracking is off."""
    settings = tracking_settings((tracking or {}).get("wandb"))
    if settings is None:
        yield None
        return
    layout = make_layout(settings, folder=folder, job_type=str(tracking["stage"]), meta=tracking.get("meta"))
    t0 = time.time()
    with start_run(layout, tracking.get("config")) as run:
        yield run
        run.summary({"stage/seconds": round(time.time() - t0, 3)})


def log_stage_outputs(run: TrackedRun | None, outputs: Mapping[str, Any]) -> None:
    """Numeric outputs of a stage (``weights`` lists become ``stage/weights/<i>``) into the run's summary."""
    if run is None:
        return
    flat: dict[str, float] = {}
    for k, v in outputs.items():
        if _finite(v):
            flat[f"stage/{k}"] = v
        elif isinstance(v, (list, tuple)) and all(_finite(x) for x in v):
            flat.update({f"stage/{k}/{i}": x for i, x in enumerate(v)})
    run.summary(flat)


@contextmanager
def command_run(cfg: Any, job_type: str, folder: str | Path) -> Iterator[TrackedRun | None]:
    """A stand-alone command's run (``longrecipe-merge`` / ``-analyze`` / ``-prepare`` with ``wandb=offline``):
    job type = the command, run folder = its Hydra run folder; yields ``None`` when tracking is off."""
    settings = tracking_settings(cfg.get("wandb"))
    tracking = {"stage": str((settings or {}).get("job_type") or job_type), "wandb": settings,
                "meta": (settings or {}).get("meta"), "config": _plain(cfg)}
    with stage_run(tracking, folder) as run:
        yield run
