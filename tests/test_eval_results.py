"""Result records: binomial standard errors and Wilson intervals (against an independent solution), propagation
into NIAH(M) / RULER averages, the markdown table, window flags and the default lengths."""

from __future__ import annotations

import math
from types import SimpleNamespace

import numpy as np
import pytest
from omegaconf import OmegaConf

from longrecipe.evaluation.results import RECORD_KEYS, binomial_fields, make_record, markdown_table, mean_records
from longrecipe.evaluation.runner import _lengths, auto_lengths
from longrecipe.evaluation.uncertainty import Z95, binomial_se, combined_se, sample_se, wilson_interval

META = {"model": "m", "run_id": "r", "group": "niah_m"}


def _wilson_by_roots(score: float, n: int) -> tuple[float, float]:
    """Wilson's bounds are the p with (phat - p)^2 = z^2 p (1 - p) / n: roots of a quadratic."""
    phat, k = score / 100, Z95**2 / n
    lo, hi = sorted(np.roots([1 + k, -(2 * phat + k), phat**2]).real)
    return 100 * lo, 100 * hi


@pytest.mark.parametrize("score,n", [(80.0, 25), (0.0, 25), (100.0, 7), (52.0, 500), (12.5, 8)])
def test_wilson_interval_matches_the_quadratic(score, n):
    assert wilson_interval(score, n) == pytest.approx(_wilson_by_roots(score, n), abs=1e-9)


def test_binomial_se_exact_values():
    assert binomial_se(80.0, 25) == pytest.approx(8.0)  # 100 * sqrt(0.8 * 0.2 / 25)
    assert binomial_se(50.0, 500) == pytest.approx(100 * math.sqrt(0.25 / 500))
    assert binomial_se(0.0, 25) == 0.0 and wilson_interval(0.0, 25)[1] == pytest.approx(100 * Z95**2 / (25 + Z95**2))
    assert sample_se([0.0, 1.0, 1.0, 0.0]) == pytest.approx(100 * math.sqrt(1 / 3 / 4))
    assert sample_se([0.5]) is None and combined_se([0.5, 0.5], [3.0, None]) is None
    with pytest.raises(ValueError, match="n must be >= 1"):
        binomial_se(50.0, 0)


def _task(task, score, n=25, length=4096, **kw):
    return make_record(task=task, length=length, score=score, n=n, metric="string_match_all",
                       haystack=kw.pop("haystack", "needle"), chat_template=True, model_window=8192,
                       **binomial_fields(score, n), **META, **kw)


def test_niah_m_average_propagates_the_task_errors():
    recs = [_task("niah_multikey_1", 80.0), _task("niah_multikey_2", 60.0), _task("niah_multikey_3", 40.0),
            _task("niah_multivalue", 90.0, haystack="essay"), _task("niah_multiquery", 100.0, haystack="essay")]
    (agg,) = mean_records(recs, task="niah_m", metric="string_match", by_category=True)
    assert agg["score"] == pytest.approx((60.0 + 90.0 + 100.0) / 3)
    ses = [r["se"] for r in recs]
    # weights: multikey_1/2/3 = 1/9 each (1/3 of a category), multivalue / multiquery = 1/3
    expect = math.sqrt(sum((w * s) ** 2 for w, s in zip([1 / 9] * 3 + [1 / 3] * 2, ses)))
    assert agg["se"] == pytest.approx(expect, abs=1e-4)
    assert agg["ci_low"] == pytest.approx(agg["score"] - Z95 * agg["se"], abs=1e-3)
    assert agg["ci_high"] == pytest.approx(agg["score"] + Z95 * agg["se"], abs=1e-3)
    assert agg["chat_template"] is True and agg["haystack"] == "needle; essay" and agg["n"] == 125
    assert tuple(agg) == RECORD_KEYS


def test_records_flag_lengths_beyond_the_window_and_markdown_shows_uncertainty():
    inside, beyond = _task("vt", 80.0, length=8192), _task("vt", 40.0, length=16384)
    assert inside["beyond_window"] is False and beyond["beyond_window"] is True
    assert make_record(task="ppl", length=64, score=3.0, n=10, metric="ppl", **META)["beyond_window"] is None
    md = markdown_table([inside, beyond])
    assert "| vt | string_match_all | 80.00 ± 8.00 (n=25) | 40.00 ± 9.80 (n=25) |" in md
    assert "| 8192 | 16384 (beyond window 8192) |" in md
    assert "- chat template: on\n" in md and "- haystack: needle\n" in md


def test_default_lengths_follow_the_models_window(caplog):
    assert auto_lengths(81920) == [4096, 8192, 16384, 32768, 65536, 81920]  # an 80k model: never 131072
    assert auto_lengths(131072) == [4096, 8192, 16384, 32768, 65536, 131072]
    assert auto_lengths(8192) == [4096, 8192] and auto_lengths(1024) == [1024]
    model = SimpleNamespace(config=SimpleNamespace(max_position_embeddings=81920))
    assert _lengths(OmegaConf.create({"lengths": "auto"}), model)[-1] == 81920
    assert _lengths(OmegaConf.create({"lengths": None, "length_multipliers": [1, 2]}), model) == [81920, 163840]
    with pytest.raises(ValueError, match="eval.lengths must be auto, null or a list of token counts, got 'all'"):
        _lengths(OmegaConf.create({"lengths": "all"}), model)
    with pytest.raises(ValueError, match="eval.lengths=auto needs the model's max_position_embeddings"):
        auto_lengths(None)
