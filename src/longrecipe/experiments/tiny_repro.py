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

Sweeps (``conf/sweep/*.yaml``): a value given for a position knob (``extend.config.position.<key>``, e.g. LongRecipe's
``max_skip``) reaches only the methods whose scheme has that key. With ``shared_runs_dir`` set (the sweeps set it),
each sub-run lives in ``<shared_runs_dir>/<name>/<hash of its stage configs>``: the points of a sweep reuse the
sub-runs the swept value does not change (pretraining, the base evaluation, FLT / RPES / PoSE when sweeping M, the
extension + replay when sweeping the merge λ), one process at a time (a file lock beside each folder); the point's
``run_dir`` keeps ``plan.json`` (its sub-run folders) and its report.
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


def _check(spec: dict, cfg: DictConfig) -> None:
    methods = list(spec.get("methods") or [])
    if not methods and not spec.get("equal_tokens_methods"):  # equal-tokens runs alone are a valid piece
        raise ValueError(f"tiny_repro.methods must list methods from {list(METHODS)}, got {methods}; "
                         "e.g. tiny_repro.methods=[flt,longrecipe] (or tiny_repro.equal_tokens_methods=[flt] alone)")
    bad = [m for m in methods if m not in METHODS]
    if bad:
        raise ValueError(f"tiny_repro.methods has unknown methods {bad}; allowed: {list(METHODS)}")
    seeds = spec.get("seeds")
    if not seeds or any(not isinstance(s, int) or s < 0 for s in seeds):
        raise ValueError(f"tiny_repro.seeds must be a non-empty list of integers >= 0, got {seeds}; "
                         "e.g. tiny_repro.seeds=[0,1]")
    if not spec.get("pretrain") and not cfg.get("base_model"):
        raise ValueError("tiny_repro.pretrain is null, so the methods need an existing base: set base_model=<model "
                         "folder, hub id or packaged:<name>> (e.g. base_model=packaged:smollm2_135m_instruct)")
    for key in ("selection_methods", "equal_tokens_methods", "full_length_methods", "replay_methods"):
        bad = sorted(set(spec.get(key) or []) - set(METHODS))
        if bad:
            raise ValueError(f"tiny_repro.{key} has unknown methods {bad}; allowed: {list(METHODS)}")
    not_full = sorted(set(spec.get("equal_tokens_methods") or []) - set(spec.get("full_length_methods") or []))
    if not_full:
        raise ValueError(f"tiny_repro.equal_tokens_methods names {not_full}, which do not train on full-length "
                         "samples (tiny_repro.full_length_methods): they already see the short methods' tokens; "
                         "drop them from tiny_repro.equal_tokens_methods")


def position_keys(method: str) -> set[str]:
    """The keys of ``conf/position/<method>.yaml`` (what that scheme accepts)."""
    from longrecipe.config import CONF_DIR

    path = CONF_DIR / "position" / f"{method}.yaml"
    if not path.is_file():
        raise ValueError(f"no position scheme {method!r} in {path.parent}; tiny_repro.methods take {list(METHODS)}")
    return {str(k) for k in OmegaConf.load(path) if k != "_target_"}


def method_position_values(method: str, position: dict | None, methods: list[str]) -> dict:
    """``position`` values (``extend.config.position``) that apply to ``method``: a key that another method's scheme
    has and this one's lacks (e.g. ``max_skip`` of LongRecipe for FLT) is left out; unknown keys stay (and fail)."""
    if not position:
        return {}
    own = position_keys(method)
    others = set().union(*(position_keys(m) for m in methods if m != method)) if len(methods) > 1 else set()
    dropped = sorted(k for k in position if k not in own and k in others)
    if dropped:
        log.info("tiny_repro: position %s applies to other methods only; not passed to %s", dropped, method)
    return {k: v for k, v in position.items() if k not in dropped}


def _method_extend(cfg: DictConfig, spec: dict, method: str) -> dict:
    extend = _plain(cfg.extend)
    extend = {**extend, "groups": {**(extend.get("groups") or {}), "position": method}}
    config = dict(extend.get("config") or {})
    if "position" in config:
        config["position"] = method_position_values(method, config["position"], list(spec["methods"]))
        if not config["position"]:
            del config["position"]
    if method in set(spec.get("full_length_methods") or []):
        config["token_ratio"] = 1.0
    extend["config"] = config
    return extend


def equal_tokens_extend(cfg: DictConfig, spec: dict, method: str) -> dict:
    """``method``'s extension (a full-length one) with ``trainer.max_steps`` cut to ``ceil(steps * token_ratio)``, so
    it sees about as many tokens as the methods trained on ``token_ratio`` samples: the equal-compute comparison."""
    extend = _method_extend(cfg, spec, method)
    config = dict(extend["config"])
    ratio = float(_plain(cfg.train_common)["config"].get("token_ratio", 1.0))
    steps = int(((config.get("trainer") or {}).get("max_steps")) or 0)
    if steps < 1:
        raise ValueError(f"tiny_repro.equal_tokens_methods needs extend.config.trainer.max_steps >= 1, got {steps}")
    config["trainer"] = {**(config.get("trainer") or {}), "max_steps": max(1, math.ceil(steps * ratio))}
    return {**extend, "config": config}


def sub_run_key(cfg: DictConfig, name: str, values: dict) -> str:
    """Hash of what a sub-run computes: each of its stages' hashed config, its fixed inputs and its metadata."""
    from longrecipe.pipeline.stages import default_registry, run_meta
    from longrecipe.utils.confighash import config_hash

    sub = sub_config(cfg, SubRun(name, "", values))
    registry = default_registry()
    stages = {st: registry.get(st).configure(sub, st) for st in values["stages"]}
    return config_hash({"stages": stages, "base_model": values.get("base_model"), "inputs": values.get("inputs"),
                        "dataset": values.get("dataset"), "meta": run_meta(sub)})[:12]


def tiny_repro_plan(cfg: DictConfig) -> list[SubRun]:
    """The sub-runs of the reproduction, in execution order (pure: nothing runs)."""
    spec = _plain(cfg.tiny_repro)
    _check(spec, cfg)
    root = Path(str(cfg.run_dir))
    shared = Path(str(cfg.shared_runs_dir)) if cfg.get("shared_runs_dir") else None

    def place(name: str, default: Path, values: dict) -> SubRun:
        folder = default if shared is None else shared / name / sub_run_key(cfg, name, values)
        return SubRun(name, str(folder), values)

    common = _plain(cfg.train_common)
    base_length = int(common["config"]["base_length"])
    plan: list[SubRun] = []
    if spec.get("pretrain"):
        pre = place("pretrain", root / "pretrain", {
            "stages": ["base", "extend"], "base_model": None, "inputs": {},
            "extend": spec["pretrain"],
            "meta": {"method": "pretrain", "stage": "pretrain", "target_length": base_length, "token_ratio": 1.0},
        })
        plan.append(pre)
        pretrained = str((Path(pre.run_dir) / "extend" / "model").resolve())
    else:  # an existing model (a folder, hub id or packaged:<name>), resolved when its sub-runs start
        pretrained = str(cfg.base_model)
    if spec.get("evaluate_base", True):
        plan.append(place("base", root / "runs" / "base", {
            "stages": ["evaluate"], "base_model": pretrained, "inputs": {"evaluate": pretrained},
            "meta": {"method": "base", "stage": "base", "target_length": base_length, "token_ratio": 1.0,
                     "seed": int(common["config"]["seed"]), "max_skip": None},
        }))
    selected = set(spec.get("selection_methods") or []) & set(spec["methods"])
    dataset = None
    if selected:  # impactful-token analysis (H = the base) and LongRecipe's data selection, once for every seed
        sel = place("selection", root / "selection", {
            "stages": ["analyze", "prepare"], "base_model": pretrained, "inputs": {},
            "meta": {"method": "selection", "stage": "selection"},
        })
        plan.append(sel)
        dataset = str((Path(sel.run_dir) / "prepare" / "dataset").resolve())
        selection = ((_plain(cfg.get("prepare")) or {}).get("groups") or {}).get("selection", "anchors")
    from longrecipe.pipeline.stages import METHOD_NAMES

    replayed = set(spec.get("replay_methods") or [])
    for method in spec.get("equal_tokens_methods") or []:  # full-length runs cut to the short methods' tokens
        for seed in spec["seeds"]:
            extend = equal_tokens_extend(cfg, spec, method)
            name = f"{method}_equal_tokens/seed{seed}"
            plan.append(place(name, root / "runs" / f"{method}_equal_tokens" / f"seed{seed}", {
                "base_model": pretrained, "inputs": {}, "extend": extend, "stages": ["extend", "evaluate"],
                "train_common": {"config": {"seed": int(seed)}},
                "meta": {"method": f"{METHOD_NAMES.get(method, method)} (equal tokens)"}}))
    for method in spec["methods"]:
        for seed in spec["seeds"]:
            name = f"{method}/seed{seed}"
            values = {"base_model": pretrained, "inputs": {}, "extend": _method_extend(cfg, spec, method),
                      "train_common": {"config": {"seed": int(seed)}}, "meta": {}}
            if method in selected:
                values = {**values, "dataset": dataset, "meta": {"selection": selection}}
            if method not in replayed:
                plan.append(place(name, root / "runs" / method / f"seed{seed}",
                                  {**values, "stages": ["extend", "evaluate"]}))
            elif shared is None:
                plan.append(place(name, root / "runs" / method / f"seed{seed}",
                                  {**values, "stages": ["extend", "replay", "merge", "evaluate"]}))
            else:  # extension + replay shared by every merge λ; merge + evaluation per λ
                trained = place(name, Path(), {**values, "stages": ["extend", "replay"]})
                replayed_model = str((Path(trained.run_dir) / "replay" / "model").resolve())
                plan += [trained, place(f"{name}/merge", Path(), {**values, "stages": ["merge", "evaluate"],
                                                                  "inputs": {"merge": replayed_model}})]
    return plan + general_plan(cfg, spec, plan, place, pretrained)


GENERAL_STAGES = ("extend", "replay", "merge")


def general_plan(cfg: DictConfig, spec: dict, plan: list[SubRun], place, pretrained: str) -> list[SubRun]:
    """``tiny_repro.general``: short-context general-ability evaluations (paper Table 3) of the base and of every
    model a method run produced (``extend``, and ``replay`` / ``merge`` where it ran them), each a sub-run under
    ``run_dir/general/`` whose ``evaluate`` block is ``tiny_repro.general`` (kept apart from the long-context
    report)."""
    from longrecipe.pipeline.stages import METHOD_NAMES

    block = spec.get("general")
    if not block:
        return []
    root = Path(str(cfg.run_dir)) / "general"
    evaluate = {"groups": block.get("groups") or {}, "config": block.get("config") or {},
                "evals": block.get("evals"), "per_eval": block.get("per_eval") or {}}
    seed0 = int(_plain(cfg.train_common)["config"]["seed"])
    out = [place("general/base", root / "base", {
        "stages": ["evaluate"], "base_model": pretrained, "inputs": {"evaluate": pretrained}, "evaluate": evaluate,
        "meta": {"method": "base", "stage": "base", "seed": seed0}})]
    for sub in plan:
        if sub.name == "pretrain" or not set(GENERAL_STAGES) & set(sub.values["stages"]):
            continue  # the base's own pretraining, or a sub-run that produces no model
        method_run = sub.name.removesuffix("/merge")
        method, seed = method_run.split("/")
        label = sub.values["meta"].get("method") or METHOD_NAMES.get(method, method)
        for stage in (s for s in GENERAL_STAGES if s in sub.values["stages"]):
            model = str((Path(sub.run_dir) / stage / "model").resolve())
            out.append(place(f"general/{method_run}/{stage}", root / method / seed / stage, {
                "stages": ["evaluate"], "base_model": pretrained, "inputs": {"evaluate": model}, "evaluate": evaluate,
                "train_common": {"config": {"seed": int(seed.removeprefix("seed"))}},
                # the method run's own labels (e.g. LongRecipe's selection), which an evaluation-only run cannot see
                "meta": {**sub.values["meta"], "method": label, "stage": stage,
                         "seed": int(seed.removeprefix("seed"))}}))
    return out


def sub_config(cfg: DictConfig, sub: SubRun) -> DictConfig:
    """``cfg`` with ``sub.values`` applied (``extend``, ``stages``, ``inputs``, ``meta`` replaced; the rest merged)."""
    out = OmegaConf.create(OmegaConf.to_container(cfg, resolve=True))
    with open_dict(out):
        out.driver = None
        out.run_dir = sub.run_dir
        out.force = []
        for key in ("stages", "base_model", "dataset", "inputs", "extend", "evaluate", "meta"):
            if key in sub.values:
                out[key] = sub.values[key]
        if "train_common" in sub.values:
            out.train_common = OmegaConf.merge(out.train_common, sub.values["train_common"])
    return out


def run_tiny_repro(cfg: DictConfig) -> dict[str, Any]:
    """Run the plan (each sub-run resumable), then build the report and print the perplexity table."""
    from filelock import FileLock
    from tqdm.auto import tqdm

    from longrecipe.pipeline.stages import run_pipeline
    from longrecipe.utils.io import write_json_atomic

    plan = tiny_repro_plan(cfg)
    root = Path(str(cfg.run_dir)).expanduser().resolve()
    root.mkdir(parents=True, exist_ok=True)
    shared = bool(cfg.get("shared_runs_dir"))
    write_json_atomic(root / "plan.json", [{"name": s.name, "run_dir": str(Path(s.run_dir).resolve()),
                                            "stages": s.values["stages"]} for s in plan])
    timings: dict[str, float] = {}
    results: dict[str, Any] = {}
    t_all = time.time()
    for sub in tqdm(plan, desc="tiny_repro runs", unit="run"):
        log.info("tiny_repro: %s -> %s", sub.name, sub.run_dir)
        t0 = time.time()
        if shared:  # another sweep point may be running (or have run) this very sub-run: one at a time
            Path(sub.run_dir).parent.mkdir(parents=True, exist_ok=True)
            with FileLock(f"{sub.run_dir}.lock"):
                results[sub.name] = run_pipeline(sub_config(cfg, sub))
        else:
            results[sub.name] = run_pipeline(sub_config(cfg, sub))
        timings[sub.name] = round(time.time() - t0, 1)
        log.info("tiny_repro: %s done in %.1fs", sub.name, timings[sub.name])
    runs = [Path(s.run_dir) for s in plan if "evaluate" in s.values["stages"]] if shared else None
    report = build_tiny_report(root, cfg, runs)
    summary = {"run_dir": str(root), "seconds": round(time.time() - t_all, 1), "timings": timings,
               "stage_seconds": _stage_seconds(results), **report}
    from longrecipe.utils.io import write_text_atomic

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


def build_tiny_report(root: Path, cfg: DictConfig, runs: list[Path] | None = None) -> dict[str, Any]:
    """``build_report`` over ``runs`` (default ``root/runs``) plus the seed-aware perplexity / NIAH summary of the
    reproduction; with ``wandb`` on, also the report's summary run (``root/report``)."""
    from longrecipe.reporting.collect import collect_results
    from longrecipe.reporting.report import build_report
    from longrecipe.tracking.layout import tracking_settings
    from longrecipe.tracking.logs import log_report

    runs = runs or [root / "runs"]
    out = build_report(runs, root / "report")
    settings = tracking_settings(cfg.get("wandb"))
    if settings is not None:
        log_report(settings, out, runs, root / "report", config=cfg,
                   meta={"experiment": cfg.get("experiment_name"), "stage": "report"})
    frame = collect_results(runs)
    final = frame[frame["stage"].isin(["base", "merge", "extend"])]
    ppl = ppl_rows(final[final["method"] != "LongRecipe"]) + ppl_rows(final[(final["method"] == "LongRecipe")])
    base_length = int(cfg.train_common.config.base_length)
    general = root / "general"
    return {"report": out["paths"].get("report"), "paths": out["paths"], "ppl": ppl, "niah": niah_rows(final),
            "general": general_rows(collect_results([general])) if general.is_dir() else [],
            "base_length": base_length}


STAGE_ORDER = {"base": 0, "extend": 1, "replay": 2, "merge": 3}


def general_rows(frame) -> list[dict[str, Any]]:
    """Per (method, stage, task, length): the general-ability score averaged over seeds (paper Table 3's shape), with
    the mean standard error and the seed count; ``ppl`` keeps only whole-window perplexity."""
    if not len(frame):
        return []
    sel = frame[~frame["task"].astype(str).str.startswith("ppl[")]
    rows = []
    for (method, stage, task, length), g in sel.groupby(["method", "stage", "task", "length"], sort=True):
        se = g["se"].dropna().astype(float) if "se" in g else []
        rows.append({"method": method, "stage": stage, "task": task, "length": int(length),
                     "metric": str(g["metric"].iloc[0]), "score": float(g["score"].astype(float).mean()),
                     "se": float(se.mean()) if len(se) else None, "n": int(g["n"].astype(int).iloc[0]),
                     "seeds": int(g["seed"].nunique())})
    return sorted(rows, key=lambda r: (r["method"] != "base", r["method"], STAGE_ORDER.get(r["stage"], 9), r["task"]))


def general_markdown(rows: list[dict[str, Any]]) -> list[str]:
    """The general-ability table: one row per (method, stage), one column per task (score ± se)."""
    tasks = sorted({(r["task"], r["length"]) for r in rows})
    cell = {(r["method"], r["stage"], r["task"], r["length"]): r for r in rows}
    lines = ["General ability, short context (before replay / after replay / after merge; score ± se):", "",
             "| method | stage | " + " | ".join(f"{t}@{n}" for t, n in tasks) + " |", "|---|---|" + "---|" * len(tasks)]
    for method, stage in dict.fromkeys((r["method"], r["stage"]) for r in rows):
        vals = []
        for t, n in tasks:
            r = cell.get((method, stage, t, n))
            if r is None or r["score"] is None or math.isnan(r["score"]):
                vals.append("—")
            else:
                vals.append(f"{r['score']:.2f}" + (f" ± {r['se']:.2f}" if r["se"] is not None else ""))
        lines.append(f"| {method} | {stage} | " + " | ".join(vals) + " |")
    return lines


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
    if summary.get("general"):
        lines += ["", *general_markdown(summary["general"])]
    if summary.get("seconds") is not None:
        lines += ["", f"wall time: {summary['seconds']} s; per run: "
                  + ", ".join(f"{k} {v}s" for k, v in (summary.get("timings") or {}).items())]
    if summary.get("report"):
        lines += ["", f"full report: {summary['report']}"]
    return "\n".join(lines) + "\n"
