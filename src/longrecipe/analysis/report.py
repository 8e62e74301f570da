"""Human-readable outputs of the analysis: the markdown table of top token types and the Fig. 4 plot."""

from __future__ import annotations

import os
from pathlib import Path

from longrecipe.utils.io import save_figure_atomic, write_text_atomic


def _cell(text: str) -> str:
    return repr(text)[1:-1].replace("|", "\\|").replace("`", "'")


def markdown_report(summary: dict, *, max_tokens: int = 20) -> str:
    """Markdown: anchors, the part-of-speech ranking and the top token types by A(t) (eq. 3)."""
    reduced = " (reduced lexicon tagger: open-class words are X)" if summary.get("pos_tagger_reduced") else ""
    lines = [
        "# Impactful token analysis",
        "",
        f"- base model: `{summary.get('base_model')}`; long model: `{summary.get('long_model')}`",
        f"- {summary['n_tokens']} scored tokens in {summary.get('n_samples', '?')} samples; "
        f"POS tagger: {summary.get('pos_tagger')}{reduced}",
        f"- anchors (ranked by {summary['anchor_rank_by']}): **{', '.join(summary['anchors']) or 'none'}**",
        "",
        f"## Parts of speech (top {summary['top_fraction']:.0%} most shifted tokens per position bucket)",
        "",
        "| rank | POS | count | share | top share | lift | A sum | A mean |",
        "|---:|---|---:|---:|---:|---:|---:|---:|",
    ]
    for i, r in enumerate(summary["pos"], 1):
        lines.append(f"| {i} | {r['pos']} | {r['count']} | {r['share']:.3f} | {r['top_share']:.3f} | "
                     f"{r['lift']:.2f} | {r['A_sum']:.4g} | {r['A_mean']:.4g} |")
    lines += ["", "## Top token types by A(t) = sum of |S_H' - S_H| (eq. 3)", "",
              "| rank | token id | token | POS | count | A sum | A mean |", "|---:|---:|---|---|---:|---:|---:|"]
    for i, r in enumerate(summary["tokens"][:max_tokens], 1):
        lines.append(f"| {i} | {r['token_id']} | `{_cell(r['token'])}` | {r['pos']} | {r['count']} | "
                     f"{r['A_sum']:.4g} | {r['A_mean']:.4g} |")
    return "\n".join(lines) + "\n"


def write_markdown(path: str | os.PathLike, summary: dict) -> Path:
    return write_text_atomic(path, markdown_report(summary))


def plot_pos_by_position(summary: dict, path: str | os.PathLike, *, max_pos: int = 8) -> Path:
    """Fig. 4: frequency of each part of speech among the most shifted tokens, per position bucket (PNG)."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    path = Path(path)
    shown = [r["pos"] for r in summary["pos"] if r["pos"] != "SPACE"][:max_pos]
    xs = [(b["start"] + b["end"]) / 2 for b in summary["buckets"]]
    fig, ax = plt.subplots(figsize=(7, 4))
    for tag in shown:
        ax.plot(xs, [b["pos_frequency"].get(tag, 0.0) for b in summary["buckets"]], marker="o", ms=3, label=tag)
    ax.set_xlabel("token position")
    ax.set_ylabel(f"frequency among top {summary['top_fraction']:.0%} shifted tokens")
    title = "POS of tokens with the largest logit shifts"
    if summary.get("pos_tagger_reduced"):
        title += " (reduced tagger)"
    ax.set_title(title)
    ax.set_ylim(0, 1)
    ax.legend(ncol=4, fontsize=8)
    fig.tight_layout()
    return save_figure_atomic(fig, path)
