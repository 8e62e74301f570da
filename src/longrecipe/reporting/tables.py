"""The paper's tables as pandas frames built from collected records (missing cells stay NaN → "—").

Column definitions (paper Appendix D):
- NIAH(M): mean of RULER's niah_multikey (mean of its variants 1-3), niah_multivalue and niah_multiquery;
  a record with task ``niah_m`` is used as-is when present.
- RULER: mean over the 13 RULER subsets (12 without ``vt`` for Qwen2; any other gap → "—"); a ``ruler`` record wins.
- LongBench: mean over its 21 subsets (fewer → "—"); a ``longbench`` record wins.
- An aggregate record (``niah_m`` / ``ruler`` / ``longbench``) whose metric names tasks that did not run
  (``...; not run: ...``) is a partial average and is ignored; the column is then computed from the parts.
- MMLU / GSM8K / HumanEval: the lm-eval score of that task (one metric: ``GENERAL_METRICS`` when several).
Long-context columns average over the evaluated lengths of a run (each length weighted equally).
Several seeds of one configuration are averaged; the seed count is kept in column ``seeds``. Runs that differ in
any other configuration key (``CONFIG_KEYS``) are separate rows (the varying keys become extra columns).
Every column ``C`` has a companion ``C se``: the standard error of that average, combined from the records' ``se``
(``sqrt(sum w^2 se^2)`` over the records it averages with weights ``w``; "—" when a record has none, e.g. results
written before records carried ``se``). Markdown shows ``score ± se``.
"""

from __future__ import annotations

import math
from dataclasses import dataclass

import numpy as np
import pandas as pd

NIAH_M_PARTS = {
    "niah_multikey": ("niah_multikey_1", "niah_multikey_2", "niah_multikey_3"),
    "niah_multivalue": ("niah_multivalue",),
    "niah_multiquery": ("niah_multiquery",),
}
RULER_TASKS = ("niah_single_1", "niah_single_2", "niah_single_3", "niah_multikey_1", "niah_multikey_2",
               "niah_multikey_3", "niah_multivalue", "niah_multiquery", "vt", "cwe", "fwe", "qa_1", "qa_2")
LONGBENCH_SUBSETS = ("narrativeqa", "qasper", "multifieldqa_en", "multifieldqa_zh", "hotpotqa", "2wikimqa", "musique",
                     "dureader", "gov_report", "qmsum", "multi_news", "vcsum", "trec", "triviaqa", "samsum", "lsht",
                     "passage_count", "passage_retrieval_en", "passage_retrieval_zh", "lcc", "repobench-p")
LONG_COLUMNS = ("NIAH(M)", "RULER", "LongBench")
GENERAL_COLUMNS = ("MMLU", "GSM8K", "HumanEval")
GENERAL_TASKS = {"MMLU": "mmlu", "GSM8K": "gsm8k", "HumanEval": "humaneval"}
# the lm-eval metric a column reports when a task's results carry several (lm-eval 0.4 keys "metric,filter")
GENERAL_METRICS = {"MMLU": "acc,none", "GSM8K": "exact_match,strict-match", "HumanEval": "pass@1,create_test"}
RUN_KEYS = ("model_name", "target_length", "method")
# what makes two runs different configurations (seeds of one configuration are averaged, nothing else is)
CONFIG_KEYS = ("model_name", "target_length", "method", "selection", "token_ratio", "max_skip", "merge_lambda",
               "experiment")


SE_SUFFIX = " se"


@dataclass(frozen=True)
class Estimate:
    """A score and the variance of its sampling error (NaN when unknown)."""

    value: float
    var: float = float("nan")

    @property
    def se(self) -> float:
        return math.sqrt(self.var) if not math.isnan(self.var) else float("nan")


NAN = Estimate(float("nan"))


def _nan(v) -> bool:
    return v is None or (isinstance(v, float) and math.isnan(v))


def _mean(values) -> Estimate:
    """Mean of the finite estimates (floats count as estimates of unknown variance); variance ``sum var / k^2``."""
    items = [v if isinstance(v, Estimate) else Estimate(float(v)) for v in values if not _nan(v)]
    items = [e for e in items if not math.isnan(e.value)]
    if not items:
        return NAN
    k = len(items)
    return Estimate(float(np.mean([e.value for e in items])), float(sum(e.var for e in items)) / k**2)


def _per_length(records: pd.DataFrame, fn) -> Estimate:
    if records.empty:
        return NAN
    lengths = records["length"].fillna(-1)
    return _mean([fn(group) for _, group in records.groupby(lengths)])


def _task_score(records: pd.DataFrame, task: str) -> Estimate:
    sel = records[records["task"] == task]
    if not len(sel):
        return NAN
    se = sel["se"] if "se" in sel else pd.Series([None] * len(sel), index=sel.index)
    return _mean([Estimate(float(v), float("nan") if _nan(e) else float(e) ** 2)
                  for v, e in zip(sel["score"], se) if not _nan(v)])


def _complete_aggregate(records: pd.DataFrame, task: str) -> pd.DataFrame:
    """Aggregate records ``task`` (written by ``longrecipe-eval``) that average every task they were meant to.

    ``mean_records`` still writes an average when some expected tasks did not run, but names them in the metric
    (``...; not run: qa_1, qa_2``); such a partial average is not the paper's column, so it is never used as-is.
    """
    sel = records[records["task"] == task]
    partial = sel["metric"].astype(str).str.contains("not run:", regex=False)
    return sel[~partial]


def niah_m_estimate(records: pd.DataFrame) -> Estimate:
    agg = _complete_aggregate(records, "niah_m")
    if not agg.empty:
        return _per_length(agg, lambda g: _task_score(g, "niah_m"))

    def one_length(g: pd.DataFrame) -> Estimate:
        parts = [_mean([_task_score(g, t) for t in tasks]) for tasks in NIAH_M_PARTS.values()]
        return NAN if any(math.isnan(p.value) for p in parts) else _mean(parts)

    return _per_length(records, one_length)


def ruler_estimate(records: pd.DataFrame) -> Estimate:
    agg = _complete_aggregate(records, "ruler")
    if not agg.empty:
        return _per_length(agg, lambda g: _task_score(g, "ruler"))
    sel = records[records["task"].isin(RULER_TASKS)]

    def one_length(g: pd.DataFrame) -> Estimate:
        scores = {t: _task_score(g, t) for t in RULER_TASKS}
        missing = {t for t, v in scores.items() if math.isnan(v.value)}
        # the paper averages all 13 subsets (12 without vt, for Qwen2): any other gap is not "RULER"
        return _mean(scores.values()) if missing <= {"vt"} else NAN

    return _per_length(sel, one_length)


def longbench_estimate(records: pd.DataFrame) -> Estimate:
    agg = _complete_aggregate(records, "longbench")
    if not agg.empty:
        return _task_score(agg, "longbench")
    scores = [_task_score(records, t) for t in LONGBENCH_SUBSETS]
    # the paper's column averages all 21 subsets; fewer is not "LongBench"
    return NAN if any(math.isnan(v.value) for v in scores) else _mean(scores)


def niah_m_score(records: pd.DataFrame) -> float:
    return niah_m_estimate(records).value


def ruler_score(records: pd.DataFrame) -> float:
    return ruler_estimate(records).value


def longbench_score(records: pd.DataFrame) -> float:
    return longbench_estimate(records).value


def general_score(records: pd.DataFrame, column: str) -> float:
    return general_estimate(records, column).value


def general_estimate(records: pd.DataFrame, column: str) -> Estimate:
    """The lm-eval score of the column's task. lm-eval reports some tasks under several metrics (GSM8K:
    ``exact_match,strict-match`` and ``exact_match,flexible-extract``), each a record of the same task; their mean
    is no metric at all, so one metric is taken: the only one, else ``GENERAL_METRICS``' choice, else "—"."""
    name = GENERAL_TASKS[column]
    sel = records[records["task"] == name]
    metrics = sel["metric"].dropna().unique()
    if len(metrics) > 1:
        want = GENERAL_METRICS[column]
        sel = sel[sel["metric"] == want] if want in set(metrics) else sel.iloc[0:0]
    return _task_score(sel, name)


COLUMN_FUNCS = {
    "NIAH(M)": niah_m_estimate,
    "RULER": ruler_estimate,
    "LongBench": longbench_estimate,
    **{c: (lambda r, c=c: general_estimate(r, c)) for c in GENERAL_COLUMNS},
}


def _key_str(value) -> str:
    return "—" if value is None or (isinstance(value, float) and math.isnan(value)) else str(value)


def _config_keys(frame: pd.DataFrame, keys: tuple[str, ...]) -> tuple[str, ...]:
    """``keys`` plus every other configuration key (``CONFIG_KEYS``) that varies in ``frame``: runs of different
    configurations (e.g. the Table 2 / Fig. 2 ablation runs beside the main LongRecipe run) get their own rows,
    never one averaged cell; a key that is constant adds no column."""
    extra = tuple(k for k in CONFIG_KEYS if k not in keys and k in frame
                  and frame[k].map(_key_str).nunique() > 1)
    return (*keys, *extra)


def _table(frame: pd.DataFrame, keys: tuple[str, ...], columns: tuple[str, ...]) -> pd.DataFrame:
    if frame.empty:
        return pd.DataFrame(columns=[*keys, *columns, *(c + SE_SUFFIX for c in columns), "seeds"])
    keys = _config_keys(frame, keys)
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
        means = {c: _mean([s[c] for s in per_seed]) for c in columns}
        row.update({c: means[c].value for c in columns})
        row.update({c + SE_SUFFIX: means[c].se for c in columns})
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
    run = frame[[*(k for k in CONFIG_KEYS if k in frame), "seed"]].apply(lambda c: c.map(_key_str)).agg("|".join, axis=1)
    return frame[rank == rank.groupby(run).transform("max")]


def main_table(frame: pd.DataFrame) -> pd.DataFrame:
    """Table 1: (model, length, method) × long-context and general columns, final stage of each run."""
    return _table(final_stage(frame), RUN_KEYS, LONG_COLUMNS + GENERAL_COLUMNS)


def ablation_table(frame: pd.DataFrame) -> pd.DataFrame:
    """Table 2: method × selection mode (w/o T = none, Random T = random, anchors) on long-context columns,
    final stage of each run (as Table 1: an evaluation of an earlier stage is not averaged in)."""
    return _table(final_stage(frame), ("method", "selection"), LONG_COLUMNS)


def stage_table(frame: pd.DataFrame) -> pd.DataFrame:
    """Table 3: method × stage (extend = before replay, replay, merge) on general columns."""
    return _table(frame, ("method", "stage"), GENERAL_COLUMNS)


def token_ratio_table(frame: pd.DataFrame) -> pd.DataFrame:
    """Fig. 2: token ratio × long-context columns, final stage of each run."""
    return _table(final_stage(frame), ("method", "token_ratio"), LONG_COLUMNS)


def perplexity_table(frame: pd.DataFrame) -> pd.DataFrame:
    """Perplexity (task ``ppl``, whole-sequence records only) per run and evaluated length."""
    if frame.empty:
        return pd.DataFrame()
    sel = frame[(frame["task"] == "ppl") & (frame["metric"].isin(["ppl", None]) | frame["metric"].isna())]
    if sel.empty:
        return pd.DataFrame()
    keys = list(_config_keys(sel, ("model_name", "target_length", "method", "stage")))
    sel = sel.copy()
    for k in keys:
        sel[k] = sel[k].astype(object).where(sel[k].notna(), "—")
    table = sel.pivot_table(index=keys, columns="length", values="score", aggfunc="mean")
    table.columns = [f"ppl@{int(c)}" for c in table.columns]
    return table.reset_index()


def to_markdown(table: pd.DataFrame, *, digits: int = 1) -> str:
    """Markdown with missing cells as "—" (never invented); a column with a ``<column> se`` companion is shown as
    ``score ± se`` (just the score when its standard error is unknown)."""
    if table.empty:
        return "_no results_\n"
    cols = [c for c in table.columns if not (str(c).endswith(SE_SUFFIX) and str(c)[: -len(SE_SUFFIX)] in table)]
    lines = ["| " + " | ".join(map(str, cols)) + " |", "|" + "|".join("---" for _ in cols) + "|"]
    for _, row in table.iterrows():
        cells = []
        for c in cols:
            v = row[c]
            se = row.get(f"{c}{SE_SUFFIX}") if isinstance(c, str) else None
            if v is None or (isinstance(v, float) and math.isnan(v)):
                cells.append("—")
            elif isinstance(v, float):
                cells.append(f"{v:.{digits}f}" + ("" if _nan(se) else f" ± {float(se):.{digits}f}"))
            else:
                cells.append(str(v))
        lines.append("| " + " | ".join(cells) + " |")
    return "\n".join(lines) + "\n"
