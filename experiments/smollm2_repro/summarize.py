"""Tables and figures of experiments/smollm2_repro/RESULTS.md from the run folder of ``run.sh`` (never typed by hand).

Launch (repo root): ``python experiments/smollm2_repro/summarize.py [--run-dir outputs/smollm2_repro]`` -- rewrites
the part of RESULTS.md between the ``<!-- tables -->`` markers, ``summary.json`` and the figures next to it
(``ppl_by_position.png``, ``niah_by_depth.png``, ``pos_profile.png``); sub-runs that have not finished show as "—".
"""

from __future__ import annotations

import argparse
import json
import re
import shutil
import sys
from pathlib import Path

HERE = Path(__file__).resolve().parent
BUCKET = re.compile(r"^ppl\[(\d+):(\d+)\]$")
MARKER = ".longrecipe_stage.json"
# display order: the base, then the methods as in the paper's tables
TRAINING_FREE = "base + dynamic NTK, no training"
ORDER = ["base", TRAINING_FREE, "FLT", "FLT (equal tokens)", "RPES", "PoSE", "LongRecipe"]
# the training-free control: the base with the RoPE every method trains with, evaluated by experiments/smollm2_base
# on the same perplexity windows (its "none" rows equal this run's base row) and NIAH at 16k with 3 samples
BASE_RUNS = HERE.parent / "smollm2_base" / "runs"
STAGES = {"base": 0, "extend": 1, "replay": 2, "merge": 3}


def _json(path: Path):
    return json.loads(path.read_text()) if path.is_file() else None


def _runs(root: Path) -> list[dict]:
    """Every sub-run with an evaluation: its metadata, stage markers and records (ppl + ruler)."""
    out = []
    for meta_path in sorted(root.glob("runs/**/run_meta.json")):
        run = meta_path.parent
        meta = _json(meta_path)
        if "method" not in meta:  # a stage's own run_meta.json ({stage})
            continue
        records = []
        for ev in ("ppl", "ruler"):
            records += _json(run / "evaluate" / ev / "results.json") or []
        markers = {st: _json(run / st / MARKER) for st in ("extend", "replay", "merge", "evaluate")}
        evaluated = ((markers.get("evaluate") or {}).get("inputs") or {}).get("model")
        if not markers["extend"] and evaluated:  # an evaluation-only sub-run: the training of the model it evaluated
            made_by = _json(Path(evaluated).parent / MARKER) or {}
            if made_by.get("stage") == "extend":
                markers["extend"] = made_by
        out.append({"dir": run, "meta": meta, "records": records,
                    "markers": {k: v for k, v in markers.items() if v}})
    return out


def _training_free(runs_dir: Path) -> list[dict]:
    records = []
    for name in ("ppl-dynamic_ntk", "niah-dynamic_ntk"):
        records += _json(runs_dir / name / "results.json") or []
    if not records:
        return []
    return [{"dir": runs_dir / "niah-dynamic_ntk", "meta": {"method": TRAINING_FREE, "seed": None},
             "records": records, "markers": {}, "samples": runs_dir / "niah-dynamic_ntk" / "samples.jsonl"}]


def _key(run: dict) -> tuple:
    m = run["meta"]
    return (ORDER.index(m["method"]) if m["method"] in ORDER else 99, m.get("seed") or 0,
            STAGES.get(_stage_of(run), 9))


def _fmt(x, digits: int = 1) -> str:
    return "—" if x is None else f"{x:,.{digits}f}"


def _score(records: list[dict], task: str, length: int) -> dict | None:
    return next((r for r in records if r["task"] == task and r["length"] == length), None)


def _stage_of(run: dict) -> str:
    if run["meta"].get("stage"):  # an evaluation-only sub-run of one stage's model (run.sh stagewise)
        return run["meta"]["stage"]
    done = [s for s in ("merge", "replay", "extend") if (run["markers"].get(s) or {}).get("status") == "complete"]
    return done[0] if done else "base"


def table1(runs: list[dict]) -> tuple[str, list[dict]]:
    """Paper Table 1's shape: long-context scores of every final model, with what its training cost."""
    rows = []
    for run in sorted(runs, key=_key):
        recs, ext = run["records"], run["markers"].get("extend") or {}
        ppl = {n: (_score(recs, "ppl", n) or {}).get("score") for n in (2048, 16384)}
        tail = next((r["score"] for r in recs if r["length"] == 16384 and r["task"].startswith("ppl[")
                     and BUCKET.match(r["task"]) and int(BUCKET.match(r["task"]).group(1)) >= 14000), None)
        niah = {t: _score(recs, t, 16384) for t in ("niah_single_2", "niah_multikey_1")}
        train_s = sum(float((run["markers"].get(s) or {}).get("seconds") or 0) for s in ("extend", "replay"))
        rows.append({"method": run["meta"]["method"], "seed": run["meta"].get("seed"), "stage": _stage_of(run),
                     "tokens": (ext.get("outputs") or {}).get("tokens"), "steps": (ext.get("outputs") or {}).get(
                         "global_step"), "train_seconds": round(train_s, 1) if train_s else None,
                     "ppl_2048": ppl[2048], "ppl_16384": ppl[16384], "ppl_16384_last_bucket": tail,
                     **{t: None if r is None else {k: r.get(k) for k in ("score", "se", "n", "status")}
                        for t, r in niah.items()}})
    lines = ["| method | seed | final stage | steps | tokens trained | train time (s) | ppl@2k | ppl@16k | "
             "ppl@16k, last bucket | NIAH single@16k | NIAH multikey@16k |",
             "|---|---:|---|---:|---:|---:|---:|---:|---:|---:|---:|"]
    for r in rows:
        cells = []
        for t in ("niah_single_2", "niah_multikey_1"):
            v = r[t]
            cells.append("—" if not v or v["score"] is None else f"{v['score']:.0f} ± {v['se']:.0f} (n={v['n']})")
        tokens = "—" if r["tokens"] is None else f"{r['tokens']:,}"
        lines.append(f"| {r['method']} | {'' if r['seed'] is None else r['seed']} | {r['stage']} | "
                     f"{r['steps'] or '—'} | {tokens} | "
                     f"{_fmt(r['train_seconds'], 0)} | {_fmt(r['ppl_2048'], 2)} | {_fmt(r['ppl_16384'], 2)} | "
                     f"{_fmt(r['ppl_16384_last_bucket'], 1)} | " + " | ".join(cells) + " |")
    return "\n".join(lines) + "\n", rows


PROBE_FAMILIES = ("probe_arithmetic", "probe_compare", "probe_sequence")


def _probe_cells(probe: dict) -> tuple[list[str], float | None]:
    """``score ± se`` per probe family ("—" where missing) and their mean (only when every family is there)."""
    cells = [("—" if f not in probe else f"{probe[f]['score']:.1f} ± {probe[f]['se']:.1f}") for f in PROBE_FAMILIES]
    have = [probe[f]["score"] for f in PROBE_FAMILIES if f in probe]
    return cells, (sum(have) / len(have) if len(have) == len(PROBE_FAMILIES) else None)


def table3(root: Path) -> tuple[str, list[dict]]:
    """Paper Table 3's shape: short-context general ability before replay, after replay and after merge."""
    rows = []
    for meta_path in sorted(root.glob("general/**/run_meta.json")):
        run = meta_path.parent
        meta = _json(meta_path)
        if "method" not in meta:
            continue
        recs = []
        for ev in ("general_probe", "ppl"):
            recs += _json(run / "evaluate" / ev / "results.json") or []
        if not recs:
            continue
        row = {"method": meta["method"], "stage": meta.get("stage"), "seed": meta.get("seed")}
        for r in recs:
            if r["task"].startswith("probe_"):
                row[r["task"]] = {"score": r["score"], "se": r.get("se"), "n": r["n"]}
            elif r["task"] == "ppl":
                row["heldout_ppl"] = r["score"]
        rows.append(row)
    rows.sort(key=lambda r: (ORDER.index(r["method"]) if r["method"] in ORDER else 99, STAGES.get(r["stage"], 9),
                             r["seed"] or 0))
    lines = ["| method | stage | seed | arithmetic | compare | sequence | mean | held-out ppl@2k |",
             "|---|---|---:|---:|---:|---:|---:|---:|"]
    for r in rows:
        cells, mean = _probe_cells(r)
        lines.append(f"| {r['method']} | {r['stage']} | {r['seed']} | " + " | ".join(cells)
                     + f" | {_fmt(mean, 1)} | {_fmt(r.get('heldout_ppl'), 2)} |")
    if not rows:
        return "(no general-ability sub-run has finished yet)\n", rows
    n = next((r[f]["n"] for r in rows for f in PROBE_FAMILIES if f in r), None)
    note = f"\n{n} questions per family (chance 25 %); ± is the binomial standard error.\n" if n else ""
    return "\n".join(lines) + "\n" + note, rows


def _spread(values: list[float | None], digits: int = 2) -> str:
    have = [v for v in values if v is not None]
    if len(have) < 2:
        return "—"
    return f"{sum(have) / len(have):.{digits}f} ({min(have):.{digits}f}–{max(have):.{digits}f})"


def seed_table(rows1: list[dict], rows3: list[dict]) -> tuple[str, list[dict]]:
    """Every (method, final stage) run with two seeds or more: the mean and range over seeds of Table 1's perplexity
    and of Table 3's held-out perplexity, and the ranking of the methods at 16k within each seed."""
    groups: dict[tuple, list[dict]] = {}
    for r in rows1:
        if r["seed"] is not None and r["method"] != "base":
            groups.setdefault((r["method"], r["stage"]), []).append(r)
    heldout = {(r["method"], r["stage"], r["seed"]): r.get("heldout_ppl") for r in rows3}
    rows = []
    for (method, stage), runs in groups.items():
        runs = sorted((r for r in runs if r["ppl_16384"] is not None), key=lambda r: r["seed"])
        if len(runs) < 2:
            continue
        seeds = [r["seed"] for r in runs]
        rows.append({"method": method, "stage": stage, "seeds": seeds,
                     **{k: [r[k] for r in runs] for k in ("ppl_2048", "ppl_16384")},
                     "heldout_ppl": [heldout.get((method, stage, s)) for s in seeds]})
    if not rows:
        return "(no method has two finished seeds yet: `bash experiments/smollm2_repro/run.sh seed1`)\n", rows
    lines = ["| method | final stage | seeds | ppl@2k mean (min–max) | ppl@16k mean (min–max) | "
             "held-out ppl@2k mean (min–max) |", "|---|---|---|---:|---:|---:|"]
    for r in rows:
        lines.append(f"| {r['method']} | {r['stage']} | {', '.join(map(str, r['seeds']))} | {_spread(r['ppl_2048'])} | "
                     f"{_spread(r['ppl_16384'])} | {_spread(r['heldout_ppl'])} |")
    shared = sorted(set.intersection(*(set(r["seeds"]) for r in rows)))
    lines.append("")
    for seed in shared:  # the 30 % methods' ranking at 16k within one seed (lowest perplexity first)
        order = sorted(rows, key=lambda r: r["ppl_16384"][r["seeds"].index(seed)])
        lines.append(f"- ppl@16k ranking, seed {seed}: " + " < ".join(
            f"{r['method']} {r['ppl_16384'][r['seeds'].index(seed)]:.2f}" for r in order))
    return "\n".join(lines) + "\n", rows


def timing_table(root: Path) -> tuple[str, list[dict]]:
    """Wall time of every finished stage of every sub-run (from the stage markers), and the total."""
    rows = []
    for marker in sorted(root.glob("**/" + MARKER)):
        rec = _json(marker) or {}
        if rec.get("status") != "complete" or rec.get("seconds") is None:
            continue
        outputs = rec.get("outputs") or {}
        rows.append({"sub_run": str(marker.parent.parent.relative_to(root)), "stage": rec.get("stage"),
                     "seconds": float(rec["seconds"]), "finished": rec.get("finished"),
                     "tokens": outputs.get("tokens"), "resumed": rec.get("resumed", 0)})
    rows.sort(key=lambda r: r["finished"] or "")
    if not rows:
        return "(nothing has finished yet)\n", rows
    lines = ["| sub-run | stage | wall time (s) | tokens trained | finished |", "|---|---|---:|---:|---|"]
    for r in rows:
        tokens = "" if r["tokens"] is None else f"{r['tokens']:,}"
        lines.append(f"| {r['sub_run']} | {r['stage']} | {r['seconds']:,.0f} | {tokens} | {r['finished']} |")
    total = sum(r["seconds"] for r in rows)
    lines += ["", f"Total: {total:,.0f} s ({total / 3600:.2f} h) of stage wall time on this machine."]
    return "\n".join(lines) + "\n", rows


def lambda_table(root: Path) -> tuple[str, list[dict]]:
    """The merge λ sweep (``run.sh lambda``): θ = (1-λ)·θ_base + λ·θ_replayed, long-context perplexity and the probe."""
    rows = []
    for meta_path in sorted(root.glob("sweep/merge_lambda/lambda*/run_meta.json")):
        run = meta_path.parent
        lam = (_json(meta_path) or {}).get("merge_lambda")
        recs = []
        for ev in ("ppl", "general_probe"):
            recs += _json(run / "evaluate" / ev / "results.json") or []
        if lam is None or not recs:
            continue
        row = {"lambda": float(lam)}
        for n in (2048, 16384):
            row[f"ppl_{n}"] = (_score(recs, "ppl", n) or {}).get("score")
        probe = [r for r in recs if r["task"].startswith("probe_")]
        row["probe"] = {r["task"]: {"score": r["score"], "se": r.get("se"), "n": r["n"]} for r in probe}
        rows.append(row)
    if not rows:
        return "(the λ sweep has not run: `bash experiments/smollm2_repro/run.sh lambda`)\n", rows
    rows.sort(key=lambda r: r["lambda"])
    lines = ["| λ (weight of the replayed model) | ppl@2k | ppl@16k | arithmetic | compare | sequence | probe mean |",
             "|---:|---:|---:|---:|---:|---:|---:|"]
    for r in rows:
        cells, mean = _probe_cells(r["probe"])
        lines.append(f"| {r['lambda']:.2f} | {_fmt(r['ppl_2048'], 2)} | {_fmt(r['ppl_16384'], 2)} | "
                     + " | ".join(cells) + f" | {_fmt(mean, 1)} |")
    return "\n".join(lines) + "\n", rows


def selection_summary(root: Path) -> tuple[str, dict]:
    analysis = _json(root / "selection" / "analyze" / "analysis" / "analysis.json")
    if not analysis:
        return "(analysis not finished yet)\n", {}
    pos = sorted(analysis.get("pos") or [], key=lambda r: -float(r.get("lift") or 0))[:8]
    lines = [f"Anchors (by lift): **{', '.join(analysis.get('anchors') or []) or 'none'}**; "
             f"{analysis.get('n_samples')} windows of {analysis.get('context_length'):,} tokens, "
             f"POS tagger {analysis.get('pos_tagger')}.", "",
             "| part of speech | tokens | share of all tokens | share of the top-20 % shifted | lift |",
             "|---|---:|---:|---:|---:|"]
    for r in pos:
        lines.append(f"| {r.get('pos')} | {int(r.get('count') or 0):,} | {100 * float(r.get('share') or 0):.1f} % | "
                     f"{100 * float(r.get('top_share') or 0):.1f} % | {float(r.get('lift') or 0):.2f} |")
    lines += ["", "Anchor types need at least `min_pos_count` tokens and a lift of at least `min_lift` (conf/analyze.yaml); "
              "the top 20 % are taken per position bucket (ties at the threshold share the last slots)."]
    keep = {k: analysis.get(k) for k in ("anchors", "n_samples", "context_length", "pos_tagger", "long_model_rope",
                                          "throughput_tokens_per_s")}
    return "\n".join(lines) + "\n", keep


def _label(run: dict) -> str:
    seed = run["meta"].get("seed")
    if seed is None:
        return run["meta"]["method"]
    return f"{run['meta']['method']} ({_stage_of(run)}, seed {seed})"


def ppl_figure(runs: list[dict], path: Path) -> bool:
    """Perplexity by position at 16k: every model on a log scale (left), and the models other than the collapsing
    base on a linear scale (right), where the methods' differences are visible; seed 1 dashed."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    curves = []
    for run in sorted(runs, key=_key):
        pts = sorted((int(m.group(1)), int(m.group(2)), r["score"]) for r in run["records"]
                     if r["length"] == 16384 and (m := BUCKET.match(r["task"])))
        if pts:
            curves.append((run, [(a + b) / 2 for a, b, _ in pts], [s for _, _, s in pts]))
    if not curves:
        return False
    fig, (ax_all, ax_zoom) = plt.subplots(1, 2, figsize=(12, 4.5))
    colours = {}
    for run, xs, ys in curves:
        method = f"{run['meta']['method']} {_stage_of(run)}"
        colour = colours.setdefault(method, f"C{len(colours)}")
        style = "--" if (run["meta"].get("seed") or 0) else "-"
        is_base = run["meta"]["method"] == "base"
        ax_all.plot(xs, ys, style, color=colour, marker="o", ms=4, label=_label(run) if is_base else None)
        if not is_base:
            ax_zoom.plot(xs, ys, style, color=colour, marker="o", ms=4, label=_label(run))
    for ax in (ax_all, ax_zoom):
        ax.axvline(8192, color="grey", ls="--", lw=1)
        ax.set_xlabel("position in a 16,384-token window (bucket centre)")
    ax_all.set_yscale("log")
    ax_all.set_ylabel("perplexity")
    ax_all.set_title("every model (log scale; the others: right)")
    ax_all.legend(fontsize=7, loc="upper left")
    ax_zoom.set_title("without the base (linear scale; dashed: seed 1)")
    ax_zoom.legend(fontsize=7)
    fig.suptitle("SmolLM2-135M-Instruct extended 8k -> 16k: perplexity by position")
    fig.tight_layout()
    fig.savefig(path, dpi=120)
    plt.close(fig)
    return True


def niah_figure(runs: list[dict], path: Path) -> bool:
    """Per-sample NIAH results at 16k (needle depth on x, method on y; filled = found)."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    rows = []
    for run in sorted(runs, key=_key):
        samples = run.get("samples") or run["dir"] / "evaluate" / "ruler" / "samples.jsonl"
        if samples.is_file():
            pts = [json.loads(x) for x in samples.read_text().splitlines() if x.strip()]
            pts = [p for p in pts if int(p.get("length") or 16384) == 16384]
            rows.append((_label(run), pts))
    if not rows:
        return False
    fig, ax = plt.subplots(figsize=(7, 0.45 * len(rows) + 1.2))
    for y, (_, pts) in enumerate(rows):
        for p in pts:
            marker = "o" if p["task"] == "niah_single_2" else "s"
            ok = float(p.get("score") or 0) >= 1.0
            ax.scatter([100 * float(p.get("depth") or 0)], [y], marker=marker, s=60,
                       facecolors="tab:green" if ok else "none", edgecolors="tab:green" if ok else "tab:red")
    ax.set_yticks(range(len(rows)), [r[0] for r in rows])
    ax.set_xlabel("needle depth (%) — circles: niah_single_2, squares: niah_multikey_1; filled = answered")
    ax.set_title("NIAH at 16,384 tokens (twice the base window)")
    ax.set_xlim(-5, 105)
    fig.tight_layout()
    fig.savefig(path, dpi=120)
    plt.close(fig)
    return True


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--run-dir", default="outputs/smollm2_repro")
    args = parser.parse_args()
    root = Path(args.run_dir)
    runs = _runs(root) + _training_free(BASE_RUNS)
    t1, rows1 = table1(runs)
    t3, rows3 = table3(root)
    sel, sel_json = selection_summary(root)
    ts, rows_s = seed_table(rows1, rows3)
    tl, rows_l = lambda_table(root)
    tt, rows_t = timing_table(root)
    figures = []
    if ppl_figure(runs, HERE / "ppl_by_position.png"):
        figures.append("![perplexity by position](ppl_by_position.png)")
    if niah_figure(runs, HERE / "niah_by_depth.png"):
        figures.append("![NIAH by depth](niah_by_depth.png)")
    pos_png = root / "selection" / "analyze" / "analysis" / "pos_by_position.png"
    if pos_png.is_file():
        shutil.copyfile(pos_png, HERE / "pos_profile.png")
        figures.append("![POS profile of the impactful tokens (paper Fig. 4)](pos_profile.png)")
    block = "\n".join([
        "### Table 1 shape: long context, every final model", "", t1,
        "### Table 3 shape: short-context general ability", "", t3,
        "### Seeds: mean and range over the seeds of every method run with two or more", "", ts,
        "### Merge λ sweep (LongRecipe, replayed model merged with the base)", "", tl,
        "### Impactful tokens (H = base, H' = base + YaRN x2)", "", sel,
        *figures, "",
        "### Wall time of every stage (2 CPU cores)", "", tt,
    ])
    results = HERE / "RESULTS.md"
    text = results.read_text()
    start, end = "<!-- tables -->", "<!-- /tables -->"
    if start not in text or end not in text:
        raise SystemExit(f"{results} lacks the {start} ... {end} markers")
    text = text[: text.index(start) + len(start)] + "\n" + block + text[text.index(end):]
    results.write_text(text)
    summary = {"table1": rows1, "table3": rows3, "seeds": rows_s, "lambda": rows_l, "selection": sel_json,
               "timing": rows_t}
    (HERE / "summary.json").write_text(json.dumps(summary, indent=2, default=str) + "\n")
    sys.stdout.write(block + "\n")


if __name__ == "__main__":
    main()
