"""The tiny CPU reproduction (``longrecipe-run experiment=tiny_repro``, ``make demo``).

One base model is pretrained at ``base_length`` on the generated corpus; then every method in
``tiny_repro.methods`` extends it to ``target_length`` with identical steps and batch (FLT on full-length samples,
the others on ``token_ratio`` × ``target_length`` samples with their position scheme), LongRecipe adds replay and
merge, and every final model (and the base) is evaluated by the run's ``evaluate`` block (perplexity per length and
position bucket, NIAH(M)). ``build_report`` turns the run folders into the tables and PNGs.

Layout of ``run_dir``::

    pretrain/                      base + extend stages (extend = pretraining at base_length, FLT positions)
    runs/base/                     evaluate stage on the pretrained base (run_meta: method base)
    runs/<method>/seed<k>/         extend [+ replay + merge] + evaluate, run_meta.json for the report
    report/                        report.md, perplexity.csv, perplexity.png, ... ; summary.json / summary.md

Each sub-run is a ``run_pipeline`` call with its own markers, so an interrupted demo resumes where it stopped.
"""

from __future__ import annotations

import math
import sys
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from omegaconf import DictConfig, OmegaConf, open_dict

from longrecipe.utils.logging import get_logger

log = get_logger(__name__)

METHODS = ("flt", "rpes", "pose", "longrecipe")


@dataclass(frozen=True)
class SubRun:
    """One pipeline invocation of the reproduction: its folder and the run-config values replaced for it."""

    name: str
    run_dir: str
    values: dict[str, Any] = field(default_factory=dict)


def _plain(node: Any) -> Any:
    return OmegaConf.to_container(node, resolve=True) if OmegaConf.is_config(node) else node


def _check(spec: dict) -> None:
    methods = list(spec.get("methods") or [])
    if not methods:
        raise ValueError(f"tiny_repro.methods must list methods from {list(METHODS)}, got {methods}; "
                         "e.g. tiny_repro.methods=[flt,longrecipe]")
    bad = [m for m in methods if m not in METHODS]
    if bad:
        raise ValueError(f"tiny_repro.methods has unknown methods {bad}; allowed: {list(METHODS)}")
    seeds = spec.get("seeds")
    if not seeds or any(not isinstance(s, int) or s < 0 for s in seeds):
        raise ValueError(f"tiny_repro.seeds must be a non-empty list of integers >= 0, got {seeds}; "
                         "e.g. tiny_repro.seeds=[0,1]")


def tiny_repro_plan(cfg: DictConfig) -> list[SubRun]:
    """The sub-runs of the reproduction, in execution order (pure: nothing runs)."""
    spec = _plain(cfg.tiny_repro)
    _check(spec)
    root = Path(str(cfg.run_dir))
    common = _plain(cfg.train_common)
    base_length = int(common["config"]["base_length"])
    pretrained = str((root / "pretrain" / "extend" / "model").resolve())
    plan = [SubRun("pretrain", str(root / "pretrain"), {
        "stages": ["base", "extend"], "base_model": None, "inputs": {},
        "extend": spec["pretrain"],
        "meta": {"method": "pretrain", "stage": "pretrain", "target_length": base_length, "token_ratio": 1.0},
    })]
    if spec.get("evaluate_base", True):
        plan.append(SubRun("base", str(root / "runs" / "base"), {
            "stages": ["evaluate"], "base_model": pretrained, "inputs": {"evaluate": pretrained},
            "meta": {"method": "base", "stage": "base", "target_length": base_length, "token_ratio": 1.0,
                     "seed": int(common["config"]["seed"])},
        }))
    full = set(spec.get("full_length_methods") or [])
    replayed = set(spec.get("replay_methods") or [])
    for method in spec["methods"]:
        for seed in spec["seeds"]:
            extend = _plain(cfg.extend)
            extend = {**extend, "groups": {**(extend.get("groups") or {}), "position": method}}
            config = dict(extend.get("config") or {})
            if method in full:
                config["token_ratio"] = 1.0
            extend["config"] = config
            stages = ["extend", "replay", "merge", "evaluate"] if method in replayed else ["extend", "evaluate"]
            values = {"stages": stages, "base_model": pretrained, "inputs": {}, "extend": extend,
                      "train_common": {"config": {"seed": int(seed)}}, "meta": {}}
            plan.append(SubRun(f"{method}/seed{seed}", str(root / "runs" / method / f"seed{seed}"), values))
    return plan


def sub_config(cfg: DictConfig, sub: SubRun) -> DictConfig:
    """``cfg`` with ``sub.values`` applied (``extend``, ``stages``, ``inputs``, ``meta`` replaced; the rest merged)."""
    out = OmegaConf.create(OmegaConf.to_container(cfg, resolve=True))
    with open_dict(out):
        out.driver = None
        out.run_dir = sub.run_dir
        out.force = []
        for key in ("stages", "base_model", "inputs", "extend", "meta"):
            if key in sub.values:
                out[key] = sub.values[key]
        if "train_common" in sub.values:
            out.train_common = OmegaConf.merge(out.train_common, sub.values["train_common"])
    return out


def run_tiny_repro(cfg: DictConfig) -> dict[str, Any]:
    """Run the plan (each sub-run resumable), then build the report and print the perplexity table."""
    from tqdm.auto import tqdm

    from longrecipe.pipeline.stages import run_pipeline

    plan = tiny_repro_plan(cfg)
    root = Path(str(cfg.run_dir)).expanduser().resolve()
    root.mkdir(parents=True, exist_ok=True)
    timings: dict[str, float] = {}
    results: dict[str, Any] = {}
    t_all = time.time()
    for sub in tqdm(plan, desc="tiny_repro runs", unit="run"):
        log.info("tiny_repro: %s -> %s", sub.name, sub.run_dir)
        t0 = time.time()
        results[sub.name] = run_pipeline(sub_config(cfg, sub))
        timings[sub.name] = round(time.time() - t0, 1)
        log.info("tiny_repro: %s done in %.1fs", sub.name, timings[sub.name])
    report = build_tiny_report(root, cfg)
    summary = {"run_dir": str(root), "seconds": round(time.time() - t_all, 1), "timings": timings,
               "stage_seconds": _stage_seconds(results), **report}
    from longrecipe.utils.io import write_json_atomic, write_text_atomic

    write_json_atomic(root / "report" / "summary.json", summary)
    write_text_atomic(root / "report" / "summary.md", summary_markdown(summary))
    sys.stdout.write("\n" + summary_markdown(summary) + "\n")
    sys.stdout.flush()
    return summary


def _stage_seconds(results: dict[str, Any]) -> dict[str, dict[str, float]]:
    out: dict[str, dict[str, float]] = {}
    for name, stages in results.items():
        out[name] = {}
        for stage, rec in (stages or {}).items():
            out[name][stage] = 0.0 if rec.get("skipped") else float(rec.get("seconds") or 0.0)
    return out


def ppl_rows(frame) -> list[dict[str, Any]]:
    """Per (method, stage, length): mean / min / max whole-window perplexity over seeds, and the seed count."""
    sel = frame[(frame["task"] == "ppl") & (frame["metric"] == "ppl")]
    rows = []
    for (method, stage, length), g in sel.groupby(["method", "stage", "length"], sort=True):
        scores = g["score"].astype(float)
        rows.append({"method": method, "stage": stage, "length": int(length), "ppl": float(scores.mean()),
                     "ppl_min": float(scores.min()), "ppl_max": float(scores.max()),
                     "seeds": int(g["seed"].nunique())})
    return rows


def niah_rows(frame) -> list[dict[str, Any]]:
    """Per (method, length): NIAH(M) score (``niah_m`` records) averaged over seeds."""
    sel = frame[frame["task"] == "niah_m"]
    return [{"method": m, "length": int(length), "niah_m": float(g["score"].astype(float).mean())}
            for (m, length), g in sel.groupby(["method", "length"], sort=True)]


def build_tiny_report(root: Path, cfg: DictConfig) -> dict[str, Any]:
    """``build_report`` over ``root/runs`` plus the seed-aware perplexity / NIAH summary of the reproduction."""
    from longrecipe.reporting.collect import collect_results
    from longrecipe.reporting.report import build_report

    out = build_report([root / "runs"], root / "report")
    frame = collect_results([root / "runs"])
    final = frame[frame["stage"].isin(["base", "merge", "extend"])]
    ppl = ppl_rows(final[final["method"] != "LongRecipe"]) + ppl_rows(final[(final["method"] == "LongRecipe")])
    base_length = int(cfg.train_common.config.base_length)
    return {"report": out["paths"].get("report"), "paths": out["paths"], "ppl": ppl, "niah": niah_rows(final),
            "base_length": base_length}


def ppl_by_method(ppl: list[dict[str, Any]]) -> dict[str, dict[int, float]]:
    """``{method: {length: ppl}}`` from :func:`ppl_rows`, the final stage of each method (merge over extend)."""
    rank = {"base": 0, "extend": 1, "replay": 2, "merge": 3}
    best: dict[str, tuple[int, dict[int, float]]] = {}
    for r in ppl:
        k = rank.get(r["stage"], 0)
        if r["method"] not in best or k > best[r["method"]][0]:
            best[r["method"]] = (k, {})
        if best[r["method"]][0] == k:
            best[r["method"]][1][r["length"]] = r["ppl"]
    return {m: v for m, (_, v) in best.items()}


def summary_markdown(summary: dict[str, Any]) -> str:
    """The reproduction's headline table: final-model perplexity per method and length (mean over seeds,
    [min, max] when several), NIAH(M) per length, and wall time."""
    ppl = summary.get("ppl") or []
    by_method = ppl_by_method(ppl)
    lengths = sorted({r["length"] for r in ppl})
    spread = {(r["method"], r["stage"], r["length"]): r for r in ppl}
    lines = ["# tiny_repro: perplexity of the final model by evaluation length", "",
             "| method | stage | seeds | " + " | ".join(f"ppl@{n}" for n in lengths) + " |",
             "|---|---|---|" + "---|" * len(lengths)]
    rank = {"base": 0, "extend": 1, "replay": 2, "merge": 3}
    for method in sorted(by_method, key=lambda m: (m != "base", m)):
        rows = [r for r in ppl if r["method"] == method]
        stage = max((r["stage"] for r in rows), key=lambda s: rank.get(s, 0))
        cells = []
        seeds = 0
        for n in lengths:
            r = spread.get((method, stage, n))
            if r is None:
                cells.append("—")
                continue
            seeds = max(seeds, r["seeds"])
            cell = f"{r['ppl']:.2f}"
            if r["seeds"] > 1:
                cell += f" [{r['ppl_min']:.2f}, {r['ppl_max']:.2f}]"
            cells.append(cell)
        lines.append(f"| {method} | {stage} | {seeds} | " + " | ".join(cells) + " |")
    niah = summary.get("niah") or []
    if niah:
        nl = sorted({r["length"] for r in niah})
        lines += ["", "NIAH(M) (string match, %):", "", "| method | " + " | ".join(f"@{n}" for n in nl) + " |",
                  "|---|" + "---|" * len(nl)]
        cell = {(r["method"], r["length"]): r["niah_m"] for r in niah}
        for m in sorted({r["method"] for r in niah}, key=lambda m: (m != "base", m)):
            vals = [cell.get((m, n)) for n in nl]
            lines.append(f"| {m} | " + " | ".join("—" if v is None or math.isnan(v) else f"{v:.1f}" for v in vals)
                         + " |")
    if summary.get("seconds") is not None:
        lines += ["", f"wall time: {summary['seconds']} s; per run: "
                  + ", ".join(f"{k} {v}s" for k, v in (summary.get("timings") or {}).items())]
    if summary.get("report"):
        lines += ["", f"full report: {summary['report']}"]
    return "\n".join(lines) + "\n"
