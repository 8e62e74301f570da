"""``build_report``: results of many runs → the paper's tables (markdown + CSV) and figures (PNG)."""

from __future__ import annotations

import json
from collections.abc import Sequence
from pathlib import Path

import pandas as pd

from longrecipe.reporting import figures
from longrecipe.reporting.collect import collect_results
from longrecipe.reporting.tables import (
    ablation_table,
    main_table,
    perplexity_table,
    stage_table,
    to_markdown,
    token_ratio_table,
)
from longrecipe.utils.io import write_json_atomic, write_text_atomic
from longrecipe.utils.logging import get_logger

log = get_logger(__name__)

TABLES = {
    "table1_main": ("Table 1 — long-context and general abilities", main_table),
    "table2_ablation": ("Table 2 — ablations (selection of impactful tokens)", ablation_table),
    "table3_stages": ("Table 3 — replay and merging stages", stage_table),
    "fig2_token_ratio": ("Fig. 2 — token ratio", token_ratio_table),
    "perplexity": ("Perplexity by evaluated length", perplexity_table),
}


def load_position_stats(paths: Sequence[str | Path]) -> pd.DataFrame:
    """Records of ``longrecipe-positions``' ``stats.json`` files (scheme, target_length, metrics)."""
    rows: list[dict] = []
    for p in map(Path, paths):
        data = json.loads(p.read_text(encoding="utf-8"))
        rows.extend(data["results"] if isinstance(data, dict) else data)
    return pd.DataFrame(rows)


def load_pos_profile(paths: Sequence[str | Path]) -> pd.DataFrame:
    """(bucket, pos, frequency) rows from the position buckets of ``longrecipe-analyze``'s ``analysis.json``."""
    rows: list[dict] = []
    for p in map(Path, paths):
        data = json.loads(p.read_text(encoding="utf-8"))
        for bucket in data.get("buckets", []):
            for pos, freq in bucket.get("pos_frequency", {}).items():
                if pos != "SPACE":
                    rows.append({"bucket": bucket["start"], "pos": pos, "frequency": float(freq)})
    return pd.DataFrame(rows)


def build_report(runs: Sequence[str | Path], out_dir: str | Path, *, position_stats: Sequence[str | Path] = (),
                 analyses: Sequence[str | Path] = ()) -> dict:
    """Write ``report.md``, one CSV per table and the PNG figures to ``out_dir``; return the paths."""
    out_dir = Path(out_dir)
    out_dir.mkdir(parents=True, exist_ok=True)
    frame = collect_results(runs)
    written: dict[str, str] = {}
    sections = ["# longrecipe report\n", f"{len(frame)} result records from {frame['source'].nunique() if len(frame) else 0} files.\n"]
    tables: dict[str, pd.DataFrame] = {}
    for name, (title, fn) in TABLES.items():
        table = fn(frame) if len(frame) else pd.DataFrame()
        tables[name] = table
        sections.append(f"\n## {title}\n\n{to_markdown(table)}")
        if not table.empty:
            csv = out_dir / f"{name}.csv"
            write_text_atomic(csv, table.to_csv(index=False))
            written[name] = str(csv)
    pngs = {
        "fig2_token_ratio": figures.token_ratio_figure(tables["fig2_token_ratio"], out_dir / "fig2_token_ratio.png"),
        "perplexity": figures.perplexity_figure(tables["perplexity"], out_dir / "perplexity.png"),
    }
    if position_stats:
        stats = load_position_stats(position_stats)
        pngs["fig3_positions"] = figures.position_stats_figure(stats, out_dir / "fig3_positions.png")
    if analyses:
        profile = load_pos_profile(analyses)
        pngs["fig4_pos_profile"] = figures.pos_profile_figure(profile, out_dir / "fig4_pos_profile.png")
    for name, png in pngs.items():
        if png is not None:
            written[f"{name}_png"] = str(png)
            sections.append(f"\n![{name}]({Path(png).name})\n")
    report = out_dir / "report.md"
    write_text_atomic(report, "".join(sections))
    written["report"] = str(report)
    write_json_atomic(out_dir / "report_index.json", written)
    log.info("report written to %s", report)
    return {"paths": written, "tables": tables, "markdown": "".join(sections)}
