"""The comparison dashboard: a wandb workspace kept in the repository, built by one command
(``longrecipe-dashboard``, conf/dashboard.yaml) and checked offline against the keys that runs really logged.

:func:`dashboard_spec` is plain data (sections of panels, each naming the keys it plots); :func:`check_spec` compares
it with offline runs (:mod:`longrecipe.tracking.offline`); :func:`build_workspace` turns it into a
``wandb_workspaces`` ``Workspace`` (no network needed); saving it (``save=true``) needs a wandb account.

Sections (docs/wandb.md describes each panel):

* ``methods`` — score / perplexity vs evaluated length, one line per method (runs grouped by ``longrecipe.method``),
  NIAH heatmaps, perplexity by position, the evaluation tables;
* ``compute`` — training loss against tokens seen and against FLOPs, total FLOPs / tokens / wall time per method;
* ``sweeps`` — mean score against the token ratio, the skip bound M and the merge λ, and all of them at once;
* ``positions`` — ``longrecipe-positions`` statistics table and figure;
* ``report`` — the report run's Tables 1-3, Fig. 2, perplexity tables and figure.
"""

from __future__ import annotations

from collections.abc import Iterable, Sequence
from dataclasses import dataclass, field
from typing import Any

SECTIONS = ("methods", "compute", "sweeps", "positions", "report")
KNOBS = (("token_ratio", "token ratio"), ("max_skip", "skip bound M"), ("merge_lambda", "merge λ"))
REPORT_TABLES = ("table1_main", "table2_ablation", "table3_stages", "fig2_token_ratio", "perplexity", "scores")


@dataclass(frozen=True)
class Ref:
    """A key a panel reads: ``kind`` is ``history`` (logged over steps), ``summary``, ``config`` (dotted),
    ``table`` or ``image``."""

    kind: str
    key: str


@dataclass(frozen=True)
class PanelSpec:
    kind: str  # line | bar | scatter | parallel | media | table
    title: str
    refs: tuple[Ref, ...]
    options: dict[str, Any] = field(default_factory=dict)


@dataclass(frozen=True)
class SectionSpec:
    name: str
    panels: tuple[PanelSpec, ...]


def _h(key: str) -> Ref:
    return Ref("history", key)


def _method() -> Ref:
    return Ref("config", "longrecipe.method")


def dashboard_spec(evals: Sequence[str] = ("ppl", "niah_m"), sections: Sequence[str] = SECTIONS) -> list[SectionSpec]:
    """The dashboard for evaluation groups ``evals`` (their ``conf/eval`` names) and the chosen ``sections``."""
    bad = [s for s in sections if s not in SECTIONS]
    if bad:
        raise ValueError(f"dashboard sections {bad} are unknown; choose from {list(SECTIONS)}")
    if not evals:
        raise ValueError("dashboard evals is empty; name the evaluation groups the runs use, e.g. evals=[ppl,niah_m]")
    scores = [g for g in evals if g != "ppl"]
    out: list[SectionSpec] = []
    if "methods" in sections:
        panels = []
        for g in scores:
            panels.append(PanelSpec("line", f"{g} score vs context length (per method)",
                                    (_h("eval/length"), _h(f"eval/{g}/{g}"), _method())))
        if "ppl" in evals:
            panels.append(PanelSpec("line", "perplexity vs context length (per method)",
                                    (_h("eval/length"), _h("eval/ppl/ppl"), _method()), {"log_y": True}))
            panels.append(PanelSpec("media", "perplexity by position", (Ref("image", "eval/ppl/ppl_by_position"),)))
        for g in scores:
            panels.append(PanelSpec("media", f"{g}: needle depth x context length",
                                    (Ref("image", f"eval/{g}/niah_heatmap"),)))
        for g in evals:
            panels.append(PanelSpec("table", f"{g} results (task, length, depth, score, n, status)",
                                    (Ref("table", f"eval/{g}/results"),)))
        out.append(SectionSpec("Methods side by side", tuple(panels)))
    if "compute" in sections:
        out.append(SectionSpec("Training compute", (
            PanelSpec("line", "training loss vs tokens seen", (_h("compute/tokens"), _h("train/loss"), _method())),
            PanelSpec("line", "training loss vs FLOPs", (_h("compute/flops"), _h("train/loss"), _method())),
            PanelSpec("bar", "compute per run: FLOPs, tokens, wall time",
                      (Ref("summary", "compute/flops"), Ref("summary", "compute/tokens"),
                       Ref("summary", "compute/wall_s"), _method())),
            PanelSpec("line", "throughput (tokens/s)", (_h("trainer/global_step"), _h("perf/tokens_per_s"), _method())),
        )))
    if "sweeps" in sections:
        panels = []
        for knob, label in KNOBS:
            for g in evals:
                panels.append(PanelSpec("scatter", f"{g} (mean over lengths) vs {label}",
                                        (Ref("config", f"longrecipe.{knob}"), Ref("summary", f"eval/{g}/mean"))))
        panels.append(PanelSpec("parallel", "sweeps at a glance",
                                tuple(Ref("config", f"longrecipe.{k}") for k, _ in KNOBS)
                                + tuple(Ref("summary", f"eval/{g}/mean") for g in evals)))
        out.append(SectionSpec("Sweeps: token ratio, skip bound M, merge λ", tuple(panels)))
    if "positions" in sections:
        out.append(SectionSpec("Position statistics (longrecipe-positions)", (
            PanelSpec("media", "distance and segment statistics per scheme", (Ref("image", "positions/figure"),)),
            PanelSpec("table", "statistics table", (Ref("table", "positions/stats"),)),
        )))
    if "report" in sections:
        panels = [PanelSpec("table", name, (Ref("table", f"report/{name}"),)) for name in REPORT_TABLES]
        panels.append(PanelSpec("media", "report figures", (Ref("image", "report/perplexity"),)))
        out.append(SectionSpec("Paper tables (longrecipe-report)", tuple(panels)))
    return out


def referenced(spec: Iterable[SectionSpec]) -> list[Ref]:
    """Every key the dashboard reads, de-duplicated in order."""
    return list(dict.fromkeys(r for s in spec for p in s.panels for r in p.refs))


def check_spec(spec: Iterable[SectionSpec], runs: Sequence[Any]) -> list[Ref]:
    """The keys of ``spec`` that none of ``runs`` (:class:`~longrecipe.tracking.offline.OfflineRun`) logged."""
    history = set().union(*(r.keys() for r in runs)) if runs else set()
    summary = set().union(*(set(r.summary) for r in runs)) if runs else set()
    config = set().union(*(set(r.flat_config) for r in runs)) if runs else set()
    tables = set().union(*(set(r.table_keys()) for r in runs)) if runs else set()
    images = set().union(*(set(r.image_keys()) for r in runs)) if runs else set()
    have = {"history": history, "summary": summary, "config": config, "table": tables, "image": images}
    return [ref for ref in referenced(spec) if ref.key not in have[ref.kind]]


def _metric(ref: Ref):
    import wandb_workspaces.reports.v2 as wr

    if ref.kind == "config":
        return wr.Config(ref.key)
    if ref.kind == "summary":
        return wr.SummaryMetric(ref.key)
    return ref.key


def _panel(p: PanelSpec):
    import wandb_workspaces.reports.v2 as wr

    refs = [r for r in p.refs if r.kind != "config"] if p.kind in ("line", "bar") else list(p.refs)
    groupby = next((wr.Config(r.key) for r in p.refs if r.kind == "config"), None) if p.kind in ("line", "bar") \
        else None
    if p.kind == "line":
        return wr.LinePlot(title=p.title, x=refs[0].key, y=[r.key for r in refs[1:]], groupby=groupby,
                           groupby_aggfunc="mean" if groupby else None, **p.options)
    if p.kind == "bar":
        return wr.BarPlot(title=p.title, metrics=[r.key for r in refs], groupby=groupby,
                          groupby_aggfunc="mean" if groupby else None)
    if p.kind == "scatter":
        return wr.ScatterPlot(title=p.title, x=_metric(refs[0]), y=_metric(refs[1]))
    if p.kind == "parallel":
        return wr.ParallelCoordinatesPlot(title=p.title, columns=[wr.ParallelCoordinatesPlotColumn(metric=_metric(r))
                                                                  for r in refs])
    if p.kind == "media":
        return wr.MediaBrowser(title=p.title, media_keys=[r.key for r in refs])
    if p.kind == "table":
        return wr.WeavePanelSummaryTable(table_name=refs[0].key)
    raise ValueError(f"panel kind {p.kind!r} is unknown")


def build_workspace(spec: Sequence[SectionSpec], *, entity: str, project: str, name: str,
                    filters: dict[str, Any] | None = None):
    """A ``wandb_workspaces.workspaces.Workspace`` for ``spec``; ``filters`` keeps runs whose ``longrecipe.<key>``
    config equals the value (e.g. ``{"model_name": "tiny_llama", "target_length": 512}``). Built offline."""
    try:
        import wandb_workspaces.workspaces as ws
    except ImportError as err:
        raise ImportError("the dashboard needs wandb-workspaces: pip install 'longrecipe[wandb]' "
                          "(or pip install wandb-workspaces)") from err
    exprs = [ws.Config(f"longrecipe.{k}") == v for k, v in (filters or {}).items() if v is not None]
    sections = [ws.Section(name=s.name, panels=[_panel(p) for p in s.panels], is_open=True) for s in spec]
    return ws.Workspace(entity=entity, project=project, name=name, sections=sections,
                        runset_settings=ws.RunsetSettings(filters=exprs))
