"""experiments/smollm2_repro/summarize.py: the seed table (mean and range over seeds, ranking within a seed) from
Table 1 / Table 3 rows, with exact expected text."""

from __future__ import annotations

import importlib.util
from pathlib import Path

SCRIPT = Path(__file__).resolve().parents[1] / "experiments" / "smollm2_repro" / "summarize.py"


def _summarize():
    spec = importlib.util.spec_from_file_location("smollm2_repro_summarize", SCRIPT)
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def _row(method, stage, seed, p2, p16):
    return {"method": method, "stage": stage, "seed": seed, "ppl_2048": p2, "ppl_16384": p16}


def test_seed_table_exact():
    s = _summarize()
    rows1 = [_row("base", "base", 0, 25.0, 46.0), _row("PoSE", "extend", 0, 22.0, 18.0),
             _row("PoSE", "extend", 1, 24.0, 21.0), _row("LongRecipe", "merge", 1, 23.0, 19.0),
             _row("LongRecipe", "merge", 0, 23.5, 20.0), _row("LongRecipe", "extend", 0, 23.7, 20.2),
             _row("RPES", "extend", 1, 24.0, None)]  # unfinished seed: left out
    rows3 = [{"method": "PoSE", "stage": "extend", "seed": 0, "heldout_ppl": 24.0},
             {"method": "PoSE", "stage": "extend", "seed": 1, "heldout_ppl": 25.0}]
    text, rows = s.seed_table(rows1, rows3)
    assert [(r["method"], r["stage"], r["seeds"]) for r in rows] == [("PoSE", "extend", [0, 1]),
                                                                     ("LongRecipe", "merge", [0, 1])]
    assert rows[1]["ppl_16384"] == [20.0, 19.0]  # ordered by seed
    assert text.splitlines()[2:] == [
        "| PoSE | extend | 0, 1 | 23.00 (22.00–24.00) | 19.50 (18.00–21.00) | 24.50 (24.00–25.00) |",
        "| LongRecipe | merge | 0, 1 | 23.25 (23.00–23.50) | 19.50 (19.00–20.00) | — |",
        "",
        "- ppl@16k ranking, seed 0: PoSE 18.00 < LongRecipe 20.00",
        "- ppl@16k ranking, seed 1: LongRecipe 19.00 < PoSE 21.00"]
    assert [r["method"] for r in s.seed_table(rows1[:3], [])[1]] == ["PoSE"]  # the base is never a seed row
    assert s.seed_table([rows1[1]], [])[0].startswith("(no method has two finished seeds yet")
