"""Position statistics on hand-made arrays with known answers, and exact-vs-brute-force equivalence."""

from __future__ import annotations

from itertools import combinations

import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from longrecipe.positions import stats
from longrecipe.positions.stats import (
    PositionStats,
    average_distance,
    average_segment_length,
    distance_coverage,
    pair_distances_hit,
    position_stats,
)


def test_average_distance_by_hand():
    assert average_distance([0, 1, 2]) == pytest.approx(4 / 3)  # 1 + 2 + 1 over 3 pairs
    assert average_distance([0, 5, 6, 10]) == pytest.approx(31 / 6)  # 5+6+10+1+5+4
    assert average_distance([10, 0, 6, 5]) == pytest.approx(31 / 6)  # order does not matter
    assert average_distance(np.arange(24000)) == pytest.approx(24001 / 3)  # (n+1)/3 for arange(n)


@settings(max_examples=100, deadline=None)
@given(st.lists(st.integers(0, 10**6), min_size=2, max_size=60))
def test_average_distance_equals_brute_force(values):
    brute = np.mean([abs(a - b) for a, b in combinations(values, 2)])
    assert average_distance(values) == pytest.approx(brute, rel=1e-12)


def test_average_distance_is_exact_at_paper_scale():
    p = np.sort(np.random.default_rng(0).choice(128000, 38400, replace=False))
    weights = 2 * np.arange(p.size) - (p.size - 1)
    exact_sum = sum(int(w) * int(v) for w, v in zip(weights, p))  # python ints
    assert average_distance(p) == 2 * exact_sum / (p.size * (p.size - 1))


def test_average_segment_length_by_hand():
    assert average_segment_length([0, 1, 2, 5, 6, 9]) == 2.0  # runs 3, 2, 1
    assert average_segment_length([3]) == 1.0
    assert average_segment_length([0, 2, 4]) == 1.0
    assert average_segment_length(np.arange(100)) == 100.0


def test_coverage_by_hand():
    # T = 11, 10 buckets: one bucket per distance 1..10
    assert distance_coverage([0, 1, 2], 11, 10) == pytest.approx(0.2)  # distances {1, 2}
    assert distance_coverage([0, 10], 11, 10) == pytest.approx(0.1)  # {10}
    assert distance_coverage([0, 3, 10], 11, 10) == pytest.approx(0.3)  # {3, 7, 10}
    # 5 buckets of width 2: {1,2} {3,4} {5,6} {7,8} {9,10}
    assert distance_coverage([0, 1, 2], 11, 5) == pytest.approx(0.2)
    assert distance_coverage([0, 3, 10], 11, 5) == pytest.approx(0.6)
    # FLT at 30% of the window covers the first 30 of 100 buckets exactly
    assert distance_coverage(np.arange(24000), 80000, 100) == pytest.approx(0.30)


@pytest.mark.parametrize("seed", range(12))
def test_fft_difference_set_equals_direct(seed, monkeypatch):
    g = np.random.default_rng(seed)
    target = int(g.integers(2, 3000))
    p = np.sort(g.choice(target, size=int(g.integers(1, min(target, 200) + 1)), replace=False))
    direct = pair_distances_hit(p, target)
    monkeypatch.setattr(stats, "_DIRECT_PAIRS", -1)  # force the FFT path
    assert np.array_equal(pair_distances_hit(p, target), direct)
    assert not direct[0]  # distinct positions: no pair at distance 0
    expected = np.zeros(target, dtype=bool)
    expected[np.unique(np.abs(p[:, None] - p[None, :])[np.triu_indices(p.size, 1)])] = True
    assert np.array_equal(direct, expected)


def test_fft_path_at_scale_matches_a_sparse_check():
    g = np.random.default_rng(5)
    p = np.sort(g.choice(128000, 2500, replace=False))  # 3.1M pairs: FFT path
    hit = pair_distances_hit(p, 128000)
    diffs = np.unique(np.abs(p[:, None] - p[None, :])[np.triu_indices(p.size, 1)])
    assert np.flatnonzero(hit).tolist() == diffs.tolist()


def test_position_stats_bundle():
    # pair distances: from 0: 1,2,5,6,9; from 1: 1,4,5,8; from 2: 3,4,7; from 5: 1,4; from 6: 3 -> 63 / 15
    s = position_stats([0, 1, 2, 5, 6, 9], 11, num_buckets=10)
    assert s == PositionStats(avg_distance=pytest.approx(63 / 15), avg_segment_length=2.0, max_position=9,
                              coverage=pytest.approx(0.9))
    assert set(s.as_dict()) == {"avg_distance", "avg_segment_length", "max_position", "coverage"}


def test_bad_inputs():
    with pytest.raises(ValueError, match=r"positions must be a 1-D integer array with at least 2 entries"):
        average_distance([3])
    with pytest.raises(ValueError, match=r"positions must lie in \[0, target_length=10\), got \[0, 10\]"):
        distance_coverage([0, 10], 10, 5)
    with pytest.raises(ValueError, match=r"num_buckets must be in \[1, target_length - 1 = 9\], got 10"):
        distance_coverage([0, 1], 10, 10)
    with pytest.raises(ValueError, match=r"positions must be a 1-D integer array .* dtype float64"):
        average_segment_length([0.0, 1.0])
