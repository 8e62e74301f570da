"""Figures people would rather look at than read: token-ratio curve (Fig. 2), position statistics
(Fig. 3), POS profile of impactful tokens (Fig. 4), perplexity by evaluated length."""

from __future__ import annotations

import math
from pathlib import Path

import pandas as pd

from longrecipe.utils.io import save_figure_atomic


def _plt():
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    return plt


def _finite(values) -> bool:
    return any(v is not None and not (isinstance(v, float) and math.isnan(v)) for v in values)


def token_ratio_figure(table: pd.DataFrame, out: Path) -> Path | None:
    """Fig. 2: long-context scores against token ratio, one line per (method, column): points of different
    methods are never joined into one line."""
    if table.empty or "token_ratio" not in table:
        return None
    table = table[table["token_ratio"] != "—"].copy()
    if table.empty:
        return None
    table["token_ratio"] = table["token_ratio"].astype(float)
    table = table.sort_values("token_ratio")
    columns = [c for c in ("NIAH(M)", "RULER", "LongBench") if c in table and _finite(table[c])]
    if not columns:
        return None
    plt = _plt()
    fig, ax = plt.subplots(figsize=(5, 3.5))
    methods = table.groupby("method", sort=True) if "method" in table else [(None, table)]
    for method, rows in methods:
        for col in columns:
            if _finite(rows[col]):
                label = col if method is None else f"{method} {col}"
                ax.plot(rows["token_ratio"] * 100, rows[col], marker="o", label=label)
    ax.set_xlabel("tokens per sample (% of target window)")
    ax.set_ylabel("score")
    ax.set_title("Score vs token ratio (paper Fig. 2)")
    ax.legend()
    fig.tight_layout()
    return save_figure_atomic(fig, out)


def position_stats_figure(stats: pd.DataFrame, out: Path) -> Path | None:
    """Fig. 3: average distance among tokens and average continuous segment length per scheme."""
    if stats.empty:
        return None
    plt = _plt()
    fig, axes = plt.subplots(1, 2, figsize=(9, 3.5))
    for ax, metric, title in ((axes[0], "avg_distance", "average distance among tokens"),
                              (axes[1], "avg_segment_length", "average continuous segment length")):
        if metric not in stats:
            continue
        pivot = stats.pivot_table(index="target_length", columns="scheme", values=metric)
        pivot.plot.bar(ax=ax, rot=0)
        ax.set_title(title)
        ax.set_xlabel("target length")
    fig.tight_layout()
    return save_figure_atomic(fig, out)


def pos_profile_figure(profile: pd.DataFrame, out: Path) -> Path | None:
    """Fig. 4: frequency of each part of speech among the top-shift tokens, per position bucket.

    ``profile`` has columns ``bucket`` (position bucket start), ``pos`` and ``frequency``.
    """
    if profile.empty:
        return None
    plt = _plt()
    fig, ax = plt.subplots(figsize=(6, 3.5))
    for pos, group in profile.groupby("pos"):
        group = group.sort_values("bucket")
        ax.plot(group["bucket"], group["frequency"], marker=".", label=str(pos))
    ax.set_xlabel("token position")
    ax.set_ylabel("frequency among top-shift tokens")
    ax.set_title("POS of impactful tokens (paper Fig. 4)")
    ax.legend(fontsize=7, ncol=2)
    fig.tight_layout()
    return save_figure_atomic(fig, out)


def perplexity_figure(table: pd.DataFrame, out: Path) -> Path | None:
    """Perplexity against evaluated length, one line per run (log scale)."""
    cols = [c for c in table.columns if str(c).startswith("ppl@")]
    if table.empty or not cols:
        return None
    lengths = [int(c.split("@")[1]) for c in cols]
    plt = _plt()
    fig, ax = plt.subplots(figsize=(6, 3.5))
    for _, row in table.iterrows():
        label = " / ".join(str(row[k]) for k in ("method", "stage") if k in row and row[k] != "—") or "run"
        ax.plot(lengths, [row[c] for c in cols], marker="o", label=label)
    ax.set_xscale("log", base=2)
    ax.set_xticks(lengths, [str(n) for n in lengths])
    ax.minorticks_off()
    ax.set_xlabel("evaluated context length (tokens)")
    ax.set_ylabel("perplexity")
    ax.legend(fontsize=7)
    fig.tight_layout()
    return save_figure_atomic(fig, out)
