"""Position schemes: exact small cases, Algorithm 1 / eq. (6) equivalence, invariants, bad input."""

from __future__ import annotations

from itertools import combinations

import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from longrecipe.positions import (
    SCHEMES,
    FullLength,
    LongRecipePositions,
    PoSE,
    RandomizedPositions,
    build_scheme,
    delimiter_token_ids,
    segment_starts_from_delimiters,
    sorted_subset,
)


def rng(seed: int = 7) -> np.random.Generator:
    return np.random.default_rng(seed)


def assert_invariants(pos: np.ndarray, n: int, target: int) -> None:
    assert pos.dtype == np.int64 and pos.shape == (n,)
    assert pos[0] == 0
    assert np.all(np.diff(pos) > 0)
    assert pos[-1] < target


# --- exact small cases (seed 7; the draws are spelled out and the arrays derived by hand) ------------

def test_flt_is_arange():
    assert FullLength(10)(np.array([4, 4, 4]), rng()).tolist() == [0, 1, 2]


def test_rpes_exact():
    # choice(9, 3) with seed 7 -> {5, 6, 8}; +1 -> {6, 7, 9}; 0 always first
    assert np.sort(rng().choice(9, 3, replace=False, shuffle=False)).tolist() == [5, 6, 8]
    assert RandomizedPositions(10)(np.zeros(4, dtype=int), rng()).tolist() == [0, 6, 7, 9]


def test_pose_exact_two_chunks():
    # n=6, T=12: cut point 1 + choice(5, 1) = 5, skip u ~ U{0..6} = 4 -> [0..4] + [5+4]
    assert PoSE(12)(np.zeros(6, dtype=int), rng()).tolist() == [0, 1, 2, 3, 4, 9]


def test_pose_exact_three_chunks():
    # cut points {4, 5}, sorted skips [4, 6]: [0..3], [4+4], [5+6]
    assert PoSE(12, num_chunks=3)(np.zeros(6, dtype=int), rng()).tolist() == [0, 1, 2, 3, 8, 11]


IDS = np.array([5, 9, 5, 5, 9, 9, 5, 5])  # delimiter 9: segments [5 9] [5 5 9 9] [5 5]


def test_segments_end_after_delimiter_runs():
    assert segment_starts_from_delimiters(IDS, [9]).tolist() == [0, 2, 6]
    assert segment_starts_from_delimiters([9, 9, 1], [9]).tolist() == [0, 2]
    assert segment_starts_from_delimiters([1, 2, 9], [9]).tolist() == [0]
    assert segment_starts_from_delimiters([1, 2, 3], []).tolist() == [0]
    assert segment_starts_from_delimiters([700, 9, 3], [9]).tolist() == [0, 2]  # ids above the table


def test_longrecipe_algorithm1_exact():
    # n=8, N=3, T=14: list of T-n+N = 9 slots; slots 1 + choice(8, 2) = {6, 7}
    # seg0 -> 0,1; seg1 at slot 6 -> 6 + (2-1) = 7..10; seg2 at slot 7 -> 7 + 1 + 3 = 11,12
    scheme = LongRecipePositions(14, delimiter_ids=[9])
    assert scheme(IDS, rng()).tolist() == [0, 1, 7, 8, 9, 10, 11, 12]


def test_longrecipe_max_skip_exact():
    # gaps U{0..3} = [3, 2] (sum 5 <= budget 6): seg1 starts 2+3 = 5, seg2 9+2 = 11
    scheme = LongRecipePositions(14, max_skip=3, delimiter_ids=[9])
    assert scheme(IDS, rng()).tolist() == [0, 1, 5, 6, 7, 8, 11, 12]


def test_longrecipe_max_skip_rescaled_to_budget():
    # T=10, budget 2; gaps [5, 3] sum 8 -> floor(5*2/8)=1, floor(3*2/8)=0
    scheme = LongRecipePositions(10, max_skip=5, delimiter_ids=[9])
    assert scheme(IDS, rng()).tolist() == [0, 1, 3, 4, 5, 6, 7, 8]


def test_longrecipe_zero_skip_is_contiguous_and_full_window_has_no_gaps():
    assert LongRecipePositions(100, max_skip=0, delimiter_ids=[9])(IDS, rng()).tolist() == list(range(8))
    assert LongRecipePositions(8, delimiter_ids=[9])(IDS, rng()).tolist() == list(range(8))
    assert LongRecipePositions(8, max_skip=50, delimiter_ids=[9])(IDS, rng()).tolist() == list(range(8))


def test_longrecipe_no_delimiters_is_one_segment():
    assert LongRecipePositions(1000, delimiter_ids=[])(IDS, rng()).tolist() == list(range(8))


def test_longrecipe_explicit_segment_starts_override_delimiters():
    scheme = LongRecipePositions(14)  # unbound: segment_starts required
    assert scheme(IDS, rng(), segment_starts=np.array([0, 2, 6])).tolist() == [0, 1, 7, 8, 9, 10, 11, 12]
    bound = LongRecipePositions(14, delimiter_ids=[5])
    assert bound(IDS, rng(), segment_starts=[0, 2, 6]).tolist() == [0, 1, 7, 8, 9, 10, 11, 12]


def test_other_schemes_ignore_segment_starts():
    for scheme in (FullLength(20), RandomizedPositions(20), PoSE(20)):
        assert scheme(IDS, rng(3), segment_starts=[0, 2]).tolist() == scheme(IDS, rng(3)).tolist()


# --- equivalence with literal implementations ------------------------------------------------------

def algorithm1_literal(lengths: list[int], slots: list[int], target: int) -> list[int]:
    """Algorithm 1 as printed: a list of T-n+N slots, segments at their slots, flatten, read indices."""
    n, N = sum(lengths), len(lengths)
    table: list[object] = [0] * (target - n + N)
    for seg, slot in enumerate(slots):
        table[slot] = ("seg", seg)
    flat: list[object] = []
    for item in table:
        flat.extend([item] * lengths[item[1]] if item != 0 else [0])
    return [i for i, item in enumerate(flat) if item != 0]


@settings(max_examples=150, deadline=None)
@given(st.integers(0, 2**32 - 1), st.lists(st.integers(1, 6), min_size=1, max_size=12), st.integers(0, 40))
def test_algorithm1_matches_the_literal_list_construction(seed, lengths, extra):
    n = sum(lengths)
    target = n + extra
    starts = np.concatenate([[0], np.cumsum(lengths)[:-1]])
    got = LongRecipePositions(target)(np.zeros(n, dtype=int), rng(seed), segment_starts=starts)
    # the same draw, replayed: slot 0, then N-1 distinct slots among 1..T-n+N-1
    slots = [0] + (sorted_subset(rng(seed), target - n + len(lengths) - 1, len(lengths) - 1) + 1).tolist()
    assert got.tolist() == algorithm1_literal(lengths, slots, target)


@settings(max_examples=150, deadline=None)
@given(st.integers(0, 2**32 - 1), st.lists(st.integers(1, 6), min_size=1, max_size=12), st.integers(0, 5))
def test_max_skip_matches_eq6_recursion(seed, lengths, max_skip):
    n = sum(lengths)
    target = n + max_skip * len(lengths)  # never over budget: no rescaling
    starts = np.concatenate([[0], np.cumsum(lengths)[:-1]])
    got = LongRecipePositions(target, max_skip=max_skip)(np.zeros(n, dtype=int), rng(seed), segment_starts=starts)
    gaps = rng(seed).integers(0, max_skip + 1, size=len(lengths) - 1)
    expected, pos = [], 0
    for i, length in enumerate(lengths):
        if i:
            pos = pos + lengths[i - 1] + int(gaps[i - 1])  # eq. (6), text convention
        expected.extend(range(pos, pos + length))
    assert got.tolist() == expected


# --- uniformity (seeded, so deterministic) ----------------------------------------------------------

def chi2(counts: np.ndarray) -> float:
    expected = counts.sum() / counts.size
    return float(((counts - expected) ** 2 / expected).sum())


def test_sorted_subset_is_uniform_over_subsets():
    subsets = {c: i for i, c in enumerate(combinations(range(6), 3))}  # 20 subsets
    counts = np.zeros(len(subsets))
    g = rng(0)
    for _ in range(4000):
        counts[subsets[tuple(sorted_subset(g, 6, 3).tolist())]] += 1
    assert chi2(counts) < 43.8  # chi2(19) at p = 0.001


def test_algorithm1_gaps_are_a_uniform_composition_of_the_budget():
    # 3 one-token segments in a window of 5: the 2 skipped indices split into (g1, g2, tail): 6 outcomes
    scheme = LongRecipePositions(5)
    seen: dict[tuple[int, ...], int] = {}
    g = rng(1)
    for _ in range(3000):
        key = tuple(scheme(np.zeros(3, dtype=int), g, segment_starts=[0, 1, 2]).tolist())
        seen[key] = seen.get(key, 0) + 1
    assert len(seen) == 6
    assert chi2(np.array(list(seen.values()), dtype=float)) < 20.5  # chi2(5) at p = 0.001


def test_sorted_subset_edges():
    assert sorted_subset(rng(), 5, 0).tolist() == []
    assert sorted_subset(rng(), 5, 5).tolist() == [0, 1, 2, 3, 4]
    with pytest.raises(ValueError, match=r"k must be in \[0, population=5\]"):
        sorted_subset(rng(), 5, 6)


# --- invariants over many seeds ---------------------------------------------------------------------

@settings(max_examples=200, deadline=None)
@given(
    seed=st.integers(0, 2**32 - 1),
    n=st.integers(1, 300),
    extra=st.integers(0, 3000),
    name=st.sampled_from(sorted(SCHEMES)),
    max_skip=st.one_of(st.none(), st.integers(0, 200)),
    num_chunks=st.integers(1, 6),
)
def test_invariants(seed, n, extra, name, max_skip, num_chunks):
    target = n + extra
    kwargs = {"flt": {}, "rpes": {}, "pose": {"num_chunks": num_chunks},
              "longrecipe": {"max_skip": max_skip, "delimiter_ids": [0, 1]}}[name]
    scheme = build_scheme(name, target, **kwargs)
    ids = rng(seed).integers(0, 8, size=n)
    pos = scheme(ids, rng(seed))
    assert_invariants(pos, n, target)
    assert scheme(ids, rng(seed)).tolist() == pos.tolist()  # pure and seeded
    if name == "longrecipe":  # tokens inside a segment stay consecutive
        starts = segment_starts_from_delimiters(ids, [0, 1])
        inside = np.ones(n - 1, dtype=bool)
        inside[starts[1:] - 1] = False
        assert np.all(np.diff(pos)[inside] == 1)


def test_schemes_resample_per_sample():
    ids = np.tile([3, 3, 3, 9], 50)
    for scheme in (RandomizedPositions(2000), PoSE(2000), LongRecipePositions(2000, delimiter_ids=[9]),
                   LongRecipePositions(2000, max_skip=20, delimiter_ids=[9])):
        outs = {tuple(scheme(ids, rng(s)).tolist()) for s in range(5)}
        assert len(outs) == 5, scheme


def test_pose_degenerate_chunks():
    assert PoSE(50, num_chunks=1)(np.zeros(5, dtype=int), rng()).tolist() == [0, 1, 2, 3, 4]
    assert PoSE(5)(np.zeros(5, dtype=int), rng()).tolist() == [0, 1, 2, 3, 4]
    pos = PoSE(50, num_chunks=9)(np.zeros(3, dtype=int), rng())  # more chunks than tokens: 3 chunks
    assert_invariants(pos, 3, 50)
    assert PoSE(50)(np.zeros(1, dtype=int), rng()).tolist() == [0]


# --- tokenizer binding ------------------------------------------------------------------------------

def test_bind_tokenizer_finds_the_tiny_tokenizers_delimiters(tiny_tokenizer):
    ids = delimiter_token_ids(tiny_tokenizer)
    decoded = [tiny_tokenizer.decode([i]) for i in ids]
    for d in (".", "!", "?", "\n"):
        assert any(text.endswith(d) for text in decoded)
    assert all(text.endswith((".", "!", "?", "\n")) for text in decoded)
    scheme = LongRecipePositions(4096).bind_tokenizer(tiny_tokenizer)
    assert scheme.delimiter_ids == tuple(ids.tolist())
    text = "Alice built the bridge. Did Bob know?\nIt was green! We"
    enc = np.asarray(tiny_tokenizer(text, add_special_tokens=False)["input_ids"])
    pieces = [tiny_tokenizer.decode(part) for part in np.split(enc, scheme.segment_starts(enc)[1:])]
    assert pieces == ["Alice built the bridge.", " Did Bob know?\n", "It was green!", " We"]
    assert_invariants(scheme(enc, rng()), enc.size, 4096)
    for other in (FullLength(8), RandomizedPositions(8), PoSE(8)):
        assert other.bind_tokenizer(tiny_tokenizer) is other


def _wrapped(vocab: list[str], decoder):
    from tokenizers import Tokenizer, models
    from transformers import PreTrainedTokenizerFast

    tok = Tokenizer(models.WordLevel({t: i for i, t in enumerate(vocab)}, unk_token="<unk>"))
    tok.decoder = decoder
    return PreTrainedTokenizerFast(tokenizer_object=tok, unk_token="<unk>")


def test_delimiter_ids_from_byte_level_and_sentencepiece_pieces():
    from tokenizers import decoders

    bpe = _wrapped(["<unk>", "Ġ.", ".Ċ", "Ċ", "ĊĊ", "Ġthe", "?!", ".)", "Ġ", "Mr."], decoders.ByteLevel())
    assert delimiter_token_ids(bpe).tolist() == [1, 2, 3, 4, 6, 9]
    sp = _wrapped(["<unk>", "▁.", "▁the", "!", "▁?", "<0x0A>"], decoders.Sequence(
        [decoders.Replace("▁", " "), decoders.ByteFallback(), decoders.Fuse()]))
    assert delimiter_token_ids(sp).tolist() == [1, 3, 4, 5]


# --- Hydra configs ----------------------------------------------------------------------------------

def test_hydra_position_configs_build_the_schemes():
    from hydra.utils import instantiate

    from longrecipe.config import compose

    cfg = compose("positions", ["target_length=5000", "schemes.pose.num_chunks=3", "schemes.longrecipe.max_skip=7"])
    built = {name: instantiate(cfg.schemes[name]) for name in cfg.schemes}
    assert built == {
        "flt": FullLength(5000), "rpes": RandomizedPositions(5000), "pose": PoSE(5000, num_chunks=3),
        "longrecipe": LongRecipePositions(5000, max_skip=7),
    }
    assert built["longrecipe"].delimiters == (".", "!", "?", "\n")
    swapped = compose("positions", ["position@schemes.longrecipe=rpes"])
    assert instantiate(swapped.schemes.longrecipe) == RandomizedPositions(80000)


# --- bad input --------------------------------------------------------------------------------------

@pytest.mark.parametrize(
    ("build", "message"),
    [
        (lambda: build_scheme("yarn", 10), r"position scheme must be one of \['flt', 'longrecipe', 'pose', 'rpes'\], got 'yarn'"),
        (lambda: FullLength(0), r"target_length must be an integer >= 1, got 0; set target_length"),
        (lambda: RandomizedPositions("8k"), r"target_length must be an integer >= 1, got '8k' \(str\)"),
        (lambda: PoSE(10, num_chunks=0), r"num_chunks must be an integer >= 1, got 0; use num_chunks=2"),
        (lambda: LongRecipePositions(10, max_skip=-1), r"max_skip must be an integer >= 0, got -1; set max_skip=M"),
        (lambda: LongRecipePositions(10, delimiters="."), r"delimiters must be a non-empty list of non-empty strings"),
        (lambda: PoSE(10, num_chunks=True), r"num_chunks must be an integer >= 1, got True"),
    ],
)
def test_bad_parameters(build, message):
    with pytest.raises(ValueError, match=message):
        build()


def test_bad_calls():
    with pytest.raises(ValueError, match=r"target_length must be >= the sample length: got a sample of 8 tokens "
                                         r"for target_length=5; use samples of at most target_length tokens"):
        PoSE(5)(IDS, rng())
    with pytest.raises(ValueError, match=r"rng must be a numpy.random.Generator, got int; use .*sample_rng"):
        RandomizedPositions(50)(IDS, 3)
    with pytest.raises(ValueError, match=r"input_ids must be a non-empty 1-D array .* got shape \(2, 4\)"):
        FullLength(50)(IDS.reshape(2, 4), rng())
    with pytest.raises(ValueError, match=r"input_ids must be a non-empty 1-D array .* got shape \(0,\)"):
        FullLength(50)(np.zeros(0, dtype=int), rng())
    with pytest.raises(ValueError, match=r"input_ids must hold integer token ids, got dtype float64"):
        FullLength(50)(np.zeros(3), rng())
    with pytest.raises(ValueError, match=r"no delimiter_ids: call scheme.bind_tokenizer\(tokenizer\) first .* "
                                         r"or pass segment_starts=\.\.\. per sample"):
        LongRecipePositions(50)(IDS, rng())


@pytest.mark.parametrize(
    ("starts", "message"),
    [
        ([1, 4], r"segment_starts must begin with 0"),
        ([0, 4, 4], r"segment_starts must be strictly increasing"),
        ([0, 8], r"segment_starts must lie in \[0, 8\) for a sample of 8 tokens, got 8"),
        ([], r"segment_starts must be a non-empty 1-D integer array"),
        ([0.0, 2.0], r"segment_starts must be a non-empty 1-D integer array .* dtype float64"),
    ],
)
def test_bad_segment_starts(starts, message):
    with pytest.raises(ValueError, match=message):
        LongRecipePositions(50)(IDS, rng(), segment_starts=np.asarray(starts))


def test_bind_tokenizer_keeps_explicit_delimiter_ids(tiny_tokenizer):
    """conf/position/longrecipe.yaml: explicit delimiter_ids override the tokenizer lookup."""
    scheme = LongRecipePositions(4096, delimiter_ids=[9]).bind_tokenizer(tiny_tokenizer)
    assert scheme.delimiter_ids == (9,)
    assert scheme.segment_starts(IDS).tolist() == LongRecipePositions(4096, delimiter_ids=[9]).segment_starts(IDS).tolist()
