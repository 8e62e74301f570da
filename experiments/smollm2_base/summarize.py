"""Tables and figure of experiments/smollm2_base/RESULTS.md from the run folders of ``run.sh`` (never typed by hand).

Launch (repo root): ``python experiments/smollm2_base/summarize.py`` -- rewrites the part of RESULTS.md between the
``<!-- tables -->`` markers and ``ppl.png``; runs that have not finished yet show as "—".
"""

from __future__ import annotations

import json
import re
from pathlib import Path

HERE = Path(__file__).resolve().parent
RUNS = HERE / "runs"
ROPES = ("none", "dynamic_ntk", "yarn")
BUCKET = re.compile(r"^ppl\[(\d+):(\d+)\]$")


def _records(name: str) -> list[dict]:
    path = RUNS / name / "results.json"
    return json.loads(path.read_text()) if path.is_file() else []


def _fmt(x, digits: int = 1) -> str:
    return "—" if x is None else f"{x:,.{digits}f}"


def ppl_tables() -> tuple[str, dict]:
    overall, buckets = {}, {}
    for rope in ROPES:
        for r in _records(f"ppl-{rope}"):
            if r["task"] == "ppl":
                overall[(rope, r["length"])] = r["score"]
            elif (m := BUCKET.match(r["task"])) and r["length"] == max(x["length"] for x in _records(f"ppl-{rope}")):
                buckets[(rope, int(m.group(1)), int(m.group(2)))] = r["score"]
    lengths = sorted({k[1] for k in overall})
    lines = ["| RoPE (training-free) | " + " | ".join(f"{n:,}" for n in lengths) + " |",
             "|---|" + "---:|" * len(lengths)]
    for rope in ROPES:
        lines.append(f"| {rope} | " + " | ".join(_fmt(overall.get((rope, n))) for n in lengths) + " |")
    spans = sorted({(a, b) for _, a, b in buckets})
    blines = ["| RoPE | " + " | ".join(f"{a:,}-{b:,}" for a, b in spans) + " |", "|---|" + "---:|" * len(spans)]
    for rope in ROPES:
        blines.append(f"| {rope} | " + " | ".join(_fmt(buckets.get((rope, a, b))) for a, b in spans) + " |")
    return "\n".join(lines) + "\n\n" + ("\n".join(blines) if spans else "(no bucket rows yet)") + "\n", \
        {"overall": overall, "buckets": buckets, "spans": spans, "lengths": lengths}


def niah_table() -> str:
    rows = {}
    for rope in ROPES:
        for r in _records(f"niah-{rope}"):
            if r["task"].startswith("niah"):
                rows[(rope, r["task"], r["length"])] = (r["score"], r["n"], r.get("status"))
    tasks = sorted({k[1] for k in rows})
    lengths = sorted({k[2] for k in rows})
    if not rows:
        return "(NIAH runs not finished yet)\n"
    lines = ["| RoPE | task | " + " | ".join(f"{n:,}" for n in lengths) + " |", "|---|---|" + "---:|" * len(lengths)]
    for rope in ROPES:
        for task in tasks:
            cells = []
            for n in lengths:
                v = rows.get((rope, task, n))
                cells.append("—" if v is None or v[0] is None else f"{v[0]:.0f} % (n={v[1]})")
            lines.append(f"| {rope} | {task} | " + " | ".join(cells) + " |")
    return "\n".join(lines) + "\n"


def figure(data: dict) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    from longrecipe.utils.io import save_figure_atomic

    fig, (ax1, ax2) = plt.subplots(1, 2, figsize=(11, 4))
    for rope in ROPES:
        xs = [n for n in data["lengths"] if (rope, n) in data["overall"]]
        if xs:
            ax1.plot(xs, [data["overall"][(rope, n)] for n in xs], marker="o", label=rope)
        spans = [s for s in data["spans"] if (rope, *s) in data["buckets"]]
        if spans:
            ax2.plot([(a + b) / 2 for a, b in spans], [data["buckets"][(rope, a, b)] for a, b in spans], marker="o",
                     label=rope)
    for ax, title in ((ax1, "perplexity of the whole window"), (ax2, "perplexity by position (longest window)")):
        ax.axvline(8192, color="grey", ls="--", lw=1)
        ax.set_yscale("log")
        ax.set_title(title)
        ax.set_xlabel("tokens" if ax is ax1 else "position")
        ax.legend()
    fig.suptitle("SmolLM2-135M-Instruct (GGUF Q4_1, dequantised), state_union; dashed: trained window 8192")
    fig.tight_layout()
    save_figure_atomic(fig, HERE / "ppl.png")


def main() -> None:
    ppl, data = ppl_tables()
    body = ("### Perplexity by evaluated length (2 windows each)\n\n" + ppl.split("\n\n")[0] + "\n\n"
            "### Perplexity by position bucket, longest window (16,384 tokens)\n\n" + ppl.split("\n\n")[1] + "\n"
            "### NIAH (RULER niah_single_2, niah_multikey_1; essay haystack = state_union; chat template)\n\n"
            + niah_table() + "\n![perplexity](ppl.png)\n")
    results = HERE / "RESULTS.md"
    text = results.read_text()
    start, end = "<!-- tables -->", "<!-- /tables -->"
    head, rest = text.split(start, 1)
    _, tail = rest.split(end, 1)
    from longrecipe.utils.io import write_text_atomic

    write_text_atomic(results, f"{head}{start}\n{body}{end}{tail}")
    if data["overall"]:
        figure(data)


if __name__ == "__main__":
    main()
