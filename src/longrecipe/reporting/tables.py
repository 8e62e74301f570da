"""The paper's tables as pandas frames built from collected records (missing cells stay NaN → "—").

Column definitions (paper Appendix D):
- NIAH(M): mean of RULER's niah_multikey (mean of its variants 1-3), niah_multivalue and niah_multiquery;
  a record with task ``niah_m`` is used as-is when present.
- RULER: mean over the 13 RULER subsets (12 without ``vt`` for Qwen2; fewer → "—"); a ``ruler`` record wins.
- LongBench: mean over its subsets (21); a ``longbench`` record wins.
- MMLU / GSM8K / HumanEval: the lm-eval score of that task.
Long-context columns average over the evaluated lengths of a run (each length weighted equally).
Several seeds of one configuration are averaged; the seed count is kept in column ``seeds``.
"""

from __future__ import annotations

import math

import numpy as np
import pandas as pd

NIAH_M_PARTS = {
    "niah_multikey": ("niah_multikey_1", "niah_multikey_2", "niah_multikey_3"),
    "niah_multivalue": ("niah_multivalue",),
    "niah_multiquery": ("niah_multiquery",),
}
RULER_TASKS = ("niah_single_1", "niah_single_2", "niah_single_3", "niah_multikey_1", "niah_multikey_2",
               "niah_multikey_3", "niah_multivalue", "niah_multiquery", "vt", "cwe", "fwe", "qa_1", "qa_2")
LONG_COLUMNS = ("NIAH(M)", "RULER", "LongBench")
GENERAL_COLUMNS = ("MMLU", "GSM8K", "HumanEval")
GENERAL_TASKS = {"MMLU": "mmlu", "GSM8K": "gsm8k", "HumanEval": "humaneval"}
RUN_KEYS = ("model_name", "target_length", "method")


def _mean(values) -> float:
    values = [v for v in values if v is not None and not (isinstance(v, float) and math.isnan(v))]
    return float(np.mean(values)) if values else float("nan")


def _per_length(records: pd.DataFrame, fn) -> float:
    if records.empty:
        return float("nan")
    lengths = records["length"].fillna(-1)
    return _mean([fn(group) for _, group in records.groupby(lengths)])


def _task_score(records: pd.DataFrame, task: str) -> float:
    sel = records[records["task"] == task]
    return _mean(sel["score"].astype(float)) if len(sel) else float("nan")


def niah_m_score(records: pd.DataFrame) -> float:
    if (records["task"] == "niah_m").any():
        return _per_length(records[records["task"] == "niah_m"], lambda g: _task_score(g, "niah_m"))

    def one_length(g: pd.DataFrame) -> float:
        parts = [_mean([_task_score(g, t) for t in tasks]) for tasks in NIAH_M_PARTS.values()]
        return float("nan") if any(math.isnan(p) for p in parts) else _mean(parts)

    return _per_length(records, one_length)


def ruler_score(records: pd.DataFrame) -> float:
    if (records["task"] == "ruler").any():
        return _per_length(records[records["task"] == "ruler"], lambda g: _task_score(g, "ruler"))
    sel = records[records["task"].isin(RULER_TASKS)]

    def one_length(g: pd.DataFrame) -> float:
        scores = {t: _task_score(g, t) for t in RULER_TASKS}
        present = [v for v in scores.values() if not math.isnan(v)]
        # the paper averages all 13 subsets (12 without vt): a handful of tasks is not "RULER"
        return _mean(present) if len(present) >= len(RULER_TASKS) - 1 else float("nan")

    return _per_length(sel, one_length)


def longbench_score(records: pd.DataFrame) -> float:
    if (records["task"] == "longbench").any():
        return _task_score(records, "longbench")
    sel = records[records["group"] == "longbench"]
    return _mean([_task_score(sel, t) for t in sel["task"].unique()])


def general_score(records: pd.DataFrame, column: str) -> float:
    name = GENERAL_TASKS[column]
    return _task_score(records, name)


COLUMN_FUNCS = {
    "NIAH(M)": niah_m_score,
    "RULER": ruler_score,
    "LongBench": longbench_score,
    **{c: (lambda r, c=c: general_score(r, c)) for c in GENERAL_COLUMNS},
}


def _table(frame: pd.DataFrame, keys: tuple[str, ...], columns: tuple[str, ...]) -> pd.DataFrame:
    if frame.empty:
        return pd.DataFrame(columns=[*keys, *columns, "seeds"])
    rows = []
    keyed = frame.copy()
    for k in keys:
        keyed[k] = keyed[k].astype(object).where(keyed[k].notna(), "—")
    for key, group in keyed.groupby(list(keys), sort=True, dropna=False):
        key = key if isinstance(key, tuple) else (key,)
        seeds = group["seed"].astype(object).where(group["seed"].notna(), "-").unique()
        per_seed = [
            {c: COLUMN_FUNCS[c](g) for c in columns}
            for _, g in group.groupby(group["seed"].astype(object).where(group["seed"].notna(), "-"))
        ]
        row = dict(zip(keys, key))
        row.update({c: _mean([s[c] for s in per_seed]) for c in columns})
        row["seeds"] = len(seeds)
        rows.append(row)
    return pd.DataFrame(rows)


STAGE_RANK = {"base": 0, "pretrain": 0, "extend": 1, "replay": 2, "merge": 3}


def final_stage(frame: pd.DataFrame) -> pd.DataFrame:
    """The records of each run's (model, length, method, seed) last model stage: merge > replay > extend > base.
    Records without a known stage count as final."""
    if frame.empty:
        return frame
    rank = frame["stage"].map(lambda s: STAGE_RANK.get(s, 99) if isinstance(s, str) else 99)
    run = frame[[*RUN_KEYS, "seed"]].astype(str).agg("|".join, axis=1)
    return frame[rank == rank.groupby(run).transform("max")]


def main_table(frame: pd.DataFrame) -> pd.DataFrame:
    """Table 1: (model, length, method) × long-context and general columns, final stage of each run."""
    return _table(final_stage(frame), RUN_KEYS, LONG_COLUMNS + GENERAL_COLUMNS)


def ablation_table(frame: pd.DataFrame) -> pd.DataFrame:
    """Table 2: method × selection mode (w/o T = none, Random T = random, anchors) on long-context columns."""
    return _table(frame, ("method", "selection"), LONG_COLUMNS)


def stage_table(frame: pd.DataFrame) -> pd.DataFrame:
    """Table 3: method × stage (extend = before replay, replay, merge) on general columns."""
    return _table(frame, ("method", "stage"), GENERAL_COLUMNS)


def token_ratio_table(frame: pd.DataFrame) -> pd.DataFrame:
    """Fig. 2: token ratio × long-context columns."""
    return _table(frame, ("method", "token_ratio"), LONG_COLUMNS)


def perplexity_table(frame: pd.DataFrame) -> pd.DataFrame:
    """Perplexity (task ``ppl``, whole-sequence records only) per run and evaluated length."""
    if frame.empty:
        return pd.DataFrame()
    sel = frame[(frame["task"] == "ppl") & (frame["metric"].isin(["ppl", None]) | frame["metric"].isna())]
    if sel.empty:
        return pd.DataFrame()
    keys = ["model_name", "target_length", "method", "stage"]
    sel = sel.copy()
    for k in keys:
        sel[k] = sel[k].astype(object).where(sel[k].notna(), "—")
    table = sel.pivot_table(index=keys, columns="length", values="score", aggfunc="mean")
    table.columns = [f"ppl@{int(c)}" for c in table.columns]
    return table.reset_index()


def to_markdown(table: pd.DataFrame, *, digits: int = 1) -> str:
    """Markdown with missing cells as "—" (never invented)."""
    if table.empty:
        return "_no results_\n"
    cols = list(table.columns)
    lines = ["| " + " | ".join(map(str, cols)) + " |", "|" + "|".join("---" for _ in cols) + "|"]
    for _, row in table.iterrows():
        cells = []
        for c in cols:
            v = row[c]
            if v is None or (isinstance(v, float) and math.isnan(v)):
                cells.append("—")
            elif isinstance(v, float):
                cells.append(f"{v:.{digits}f}")
            else:
                cells.append(str(v))
        lines.append("| " + " | ".join(cells) + " |")
    return "\n".join(lines) + "\n"
