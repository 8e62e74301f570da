"""Position schemes: exact small cases, Algorithm 1 / eq. (6) equivalence, invariants, bad input."""

from __future__ import annotations

import random
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


IDS = np.array([5, 9, 5, 5, 9, 9, 5, 5])  # delimiter 9, run rule: segments [5 9] [5 5 9 9] [5 5]


def test_segments_close_at_every_delimiter_by_default_and_after_runs_as_an_option():
    # released code: [5 9] [5 5 9] [9] [5 5]; a delimiter after a delimiter is its own segment
    assert segment_starts_from_delimiters(IDS, [9]).tolist() == [0, 2, 5, 6]
    assert segment_starts_from_delimiters(IDS, [9], segmentation="run").tolist() == [0, 2, 6]
    assert segment_starts_from_delimiters([9, 9, 1], [9]).tolist() == [0, 1, 2]
    assert segment_starts_from_delimiters([9, 9, 1], [9], segmentation="run").tolist() == [0, 2]
    assert segment_starts_from_delimiters([1, 2, 9], [9]).tolist() == [0]
    assert segment_starts_from_delimiters([1, 2, 3], []).tolist() == [0]
    assert segment_starts_from_delimiters([700, 9, 3], [9]).tolist() == [0, 2]  # ids above the table
    with pytest.raises(ValueError, match=r"position.segmentation must be one of \['each', 'run'\]"):
        segment_starts_from_delimiters(IDS, [9], segmentation="sentences")


def test_longrecipe_algorithm1_exact():
    # n=8, N=3, T=14: list of T-n+N = 9 slots; slots 1 + choice(8, 2) = {6, 7}
    # seg0 -> 0,1; seg1 at slot 6 -> 6 + (2-1) = 7..10; seg2 at slot 7 -> 7 + 1 + 3 = 11,12
    scheme = LongRecipePositions(14, delimiter_ids=[9], segmentation="run")
    assert scheme(IDS, rng()).tolist() == [0, 1, 7, 8, 9, 10, 11, 12]


def test_longrecipe_max_skip_exact():
    # gaps U{0..3} = [3, 2] (sum 5 <= budget 6): seg1 starts 2+3 = 5, seg2 9+2 = 11
    scheme = LongRecipePositions(14, max_skip=3, delimiter_ids=[9], segmentation="run")
    assert scheme(IDS, rng()).tolist() == [0, 1, 5, 6, 7, 8, 11, 12]


def test_longrecipe_max_skip_rescaled_to_budget():
    # T=10, budget 2; gaps [5, 3] sum 8 -> floor(5*2/8)=1, floor(3*2/8)=0
    scheme = LongRecipePositions(10, max_skip=5, delimiter_ids=[9], segmentation="run")
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

def test_bind_tokenizer_released_rule_on_the_tiny_tokenizer(tiny_tokenizer):
    ids = delimiter_token_ids(tiny_tokenizer)
    decoded = {tiny_tokenizer.decode([i]) for i in ids}
    assert decoded and decoded <= {".", "\n", "?", "!", ".\n"}  # exact matches only
    scheme = LongRecipePositions(4096).bind_tokenizer(tiny_tokenizer)
    assert scheme.delimiter_ids == tuple(ids.tolist())
    enc = np.asarray(tiny_tokenizer("It was green.\n\nWe", add_special_tokens=False)["input_ids"])
    pieces = [tiny_tokenizer.decode(part) for part in np.split(enc, scheme.segment_starts(enc)[1:])]
    assert "".join(pieces) == "It was green.\n\nWe"
    assert scheme.segment_starts(enc).tolist() == released_split_starts(enc.tolist(), set(ids.tolist()))


def released_split_starts(ids: list[int], delimiters: set[int]) -> list[int]:
    """Independent re-statement of the released splitter's loop (FSProcessor.split_sentences): grow the current
    segment token by token; a delimiter token is appended and closes it (alone if the segment was empty)."""
    segments, current = [], []
    for tok in ids:
        current.append(tok)
        if tok in delimiters:
            segments.append(current)
            current = []
    if current:
        segments.append(current)
    starts, offset = [], 0
    for seg in segments:
        starts.append(offset)
        offset += len(seg)
    return starts


@pytest.mark.parametrize("ids", [
    [5, 9, 5, 5, 9, 9, 5, 5],             # consecutive delimiters
    [9, 9, 1, 2, 8, 3],                   # leading delimiters, ".\n"-like id 8
    [1, 2, 3, 9],                         # trailing delimiter
    [8, 8, 8],                            # only delimiters
    [1, 2, 3],                            # none
    list(np.random.default_rng(0).integers(0, 12, size=400)),
])
def test_segmentation_equals_the_released_splitter(ids):
    delims = {8, 9}
    got = segment_starts_from_delimiters(np.asarray(ids), sorted(delims)).tolist()
    assert got == released_split_starts(list(ids), delims)


def test_bind_tokenizer_suffix_match_and_run_rule_options(tiny_tokenizer):
    ids = delimiter_token_ids(tiny_tokenizer, (".", "!", "?", "\n"), match="suffix")
    decoded = [tiny_tokenizer.decode([i]) for i in ids]
    for d in (".", "!", "?", "\n"):
        assert any(text.endswith(d) for text in decoded)
    assert all(text.endswith((".", "!", "?", "\n")) for text in decoded)
    scheme = LongRecipePositions(4096, delimiters=(".", "!", "?", "\n"), delimiter_match="suffix",
                                 segmentation="run").bind_tokenizer(tiny_tokenizer)
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

    bpe = _wrapped(["<unk>", "Ġ.", ".Ċ", "Ċ", "ĊĊ", "Ġthe", "?!", ".)", "Ġ", "Mr.", "."], decoders.ByteLevel())
    assert delimiter_token_ids(bpe).tolist() == [2, 3, 10]  # exact: ".\n", "\n", "."
    assert delimiter_token_ids(bpe, (".", "!", "?", "\n"), match="suffix").tolist() == [1, 2, 3, 4, 6, 9, 10]
    sp = _wrapped(["<unk>", "▁.", "▁the", "!", "▁?", "<0x0A>"], decoders.Sequence(
        [decoders.Replace("▁", " "), decoders.ByteFallback(), decoders.Fuse()]))
    assert delimiter_token_ids(sp).tolist() == [3, 5]
    assert delimiter_token_ids(sp, (".", "!", "?", "\n"), match="suffix").tolist() == [1, 3, 4, 5]


# --- Hydra configs ----------------------------------------------------------------------------------

def test_hydra_position_configs_build_the_schemes():
    from hydra.utils import instantiate

    from longrecipe.config import compose

    cfg = compose("positions", ["target_length=5000", "schemes.pose.num_chunks=3", "schemes.longrecipe.max_skip=7"])
    built = {name: instantiate(cfg.schemes[name]) for name in cfg.schemes}
    assert built == {
        "flt": FullLength(5000), "rpes": RandomizedPositions(5000), "pose": PoSE(5000, num_chunks=3),
        "longrecipe": LongRecipePositions(5000, max_skip=7), "pose_release": PoSE(5000, variant="longrecipe_release"),
    }
    assert list(cfg.full_length_schemes) == ["flt"]
    assert built["longrecipe"].delimiters == (".", "\n", "?", "!", ".\n")
    assert (built["longrecipe"].delimiter_match, built["longrecipe"].segmentation) == ("exact", "each")
    assert not built["longrecipe"].leading_block
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


# --- the paper's / released code's variants and their statistics --------------------------------------

def test_release_pose_draws_as_the_released_code():
    """cut lt ~ U{0..B}, skip rt ~ U{lt..B}; no skip when lt >= n (the released code truncates) or lt = 0."""
    from longrecipe.positions.pose import release_pose_positions

    n, target = 6, 20  # B = 14
    seen_cuts, no_skip = set(), 0
    for seed in range(400):
        pos = release_pose_positions(np.random.default_rng(seed), n, target)
        assert_invariants(pos, n, target)
        jumps = np.flatnonzero(np.diff(pos) != 1)
        assert jumps.size <= 1
        if jumps.size == 0:
            no_skip += 1
            continue
        lt = int(jumps[0]) + 1
        rt = int(pos[lt] - lt)
        assert 0 < lt < n and lt <= rt <= target - n
        seen_cuts.add(lt)
    assert seen_cuts == {1, 2, 3, 4, 5}
    # P(no skip) = 1 - (n - 1) / (B + 1) = 1 - 5/15
    assert no_skip / 400 == pytest.approx(10 / 15, abs=3 * np.sqrt(2 / 9 / 400))


@pytest.mark.parametrize("n,target", [(38_400, 128_000), (2_400, 8_000)])
def test_release_pose_distance_matches_its_closed_form(n, target):
    from longrecipe.positions.pose import release_pose_expected_distance
    from longrecipe.positions.stats import average_distance

    scheme = PoSE(target, variant="longrecipe_release")
    samples = [scheme(np.zeros(n, dtype=np.int64), np.random.default_rng(s)) for s in range(300)]
    dist = np.array([average_distance(p) for p in samples])
    no_skip = np.mean([bool(np.all(np.diff(p) == 1)) for p in samples])
    want_no_skip, want_dist = release_pose_expected_distance(n, target)
    assert no_skip == pytest.approx(want_no_skip, abs=3 * np.sqrt(want_no_skip * (1 - want_no_skip) / 300))
    assert dist.mean() == pytest.approx(want_dist, abs=3.5 * dist.std() / np.sqrt(300))
    if target == 128_000:  # the paper's Fig. 3 PoSE distance at 128k / 38.4k is 21.3k
        assert 20_000 < want_dist < 22_500


def test_scheme_distances_match_closed_forms():
    """FLT over the full window: (T+1)/3 exactly; RPES (uniform subset with 0): ~(T+1)/3; Zhu et al.'s PoSE
    (one cut c ~ U{1..n-1}, skip u ~ U{0..B}): (n+1)/3 + E[u] E[c(n-c)] / C(n,2)."""
    from longrecipe.positions.stats import average_distance

    target, n, runs = 20_000, 6_000, 200
    assert average_distance(FullLength(target)(np.zeros(target, dtype=np.int64), rng())) == pytest.approx(
        (target + 1) / 3, rel=1e-12)
    rpes = np.array([average_distance(RandomizedPositions(target)(np.zeros(n, dtype=np.int64),
                                                                  np.random.default_rng(s))) for s in range(runs)])
    assert rpes.mean() == pytest.approx((target + 1) / 3, rel=3e-3)
    pose = np.array([average_distance(PoSE(target)(np.zeros(n, dtype=np.int64), np.random.default_rng(s)))
                     for s in range(runs)])
    c = np.arange(1, n, dtype=np.float64)
    want = (n + 1) / 3 + (target - n) / 2 * np.mean(c * (n - c)) / (n * (n - 1) / 2)
    assert pose.mean() == pytest.approx(want, abs=3.5 * pose.std() / np.sqrt(runs))


def test_leading_block_option_is_the_released_training_prefix():
    """positions[:r] = 0..r-1 with r ~ U{1..(n+1)//2} drawn after Algorithm 1; the rest unchanged."""
    n, target = 41, 400
    starts = np.arange(0, n, 4)
    plain = LongRecipePositions(target)
    block = LongRecipePositions(target, leading_block=True)
    drawn = set()
    for seed in range(300):
        g = np.random.default_rng(seed)
        a = plain(np.zeros(n, dtype=np.int64), g, segment_starts=starts)
        r = int(g.integers(1, (n + 1) // 2 + 1))
        b = block(np.zeros(n, dtype=np.int64), np.random.default_rng(seed), segment_starts=starts)
        assert_invariants(b, n, target)
        assert b.tolist() == list(range(r)) + a[r:].tolist()
        drawn.add(r)
    assert drawn == set(range(1, (n + 1) // 2 + 1))
    with pytest.raises(ValueError, match="position.leading_block must be true or false"):
        LongRecipePositions(target, leading_block="yes")


# --- closed forms of LongRecipe's statistics (Algorithm 1 as printed, and the release's slot draw) -------------

def _irregular_segments(n: int, seed: int = 0) -> np.ndarray:
    """Segment starts of a sample of n tokens cut into pieces of 1..39 tokens (one-token ones included)."""
    lengths = np.random.default_rng(seed).integers(1, 40, size=n)
    ends = np.cumsum(lengths)
    return np.concatenate([[0], ends[ends < n]]).astype(np.int64)


def released_generate_res_lists(lengths: list[int], target: int, draw: random.Random) -> list[int]:
    """Independent re-statement of the released ``FSProcessor.generate_res_lists`` for one sample: a table of
    K = T - n + N slots; N distinct slots drawn from 0..K-1 and sorted, the smallest discarded; segment 1 in slot 0,
    the others in the remaining drawn slots; flatten (a segment slot expands to its tokens); read the indices."""
    n, count = sum(lengths), len(lengths)
    slots = sorted(draw.sample(range(target - n + count), count))
    slot_of = dict(zip([0] + slots[1:], range(count)))
    positions, index = [], 0
    for k in range(target - n + count):
        size = lengths[slot_of[k]] if k in slot_of else 1
        if k in slot_of:
            positions.extend(range(index, index + size))
        index += size
    return positions


def test_algorithm1_statistics_match_their_closed_forms():
    """Mean average distance and number of runs over draws == closed forms, on fixed irregular segments."""
    from longrecipe.positions.longrecipe import (
        algorithm1_expected_runs,
        algorithm1_gap_means,
        expected_average_distance,
    )
    from longrecipe.positions.stats import average_distance, average_segment_length

    n, target, draws = 600, 2_000, 3_000
    starts = _irregular_segments(n)
    scheme = LongRecipePositions(target)
    samples = [scheme(np.zeros(n, dtype=np.int64), np.random.default_rng(s), segment_starts=starts)
               for s in range(draws)]
    dist = np.array([average_distance(p) for p in samples])
    runs = np.array([n / average_segment_length(p) for p in samples])
    want = expected_average_distance(starts, n, algorithm1_gap_means(starts.size, n, target))
    assert dist.mean() == pytest.approx(want, abs=3.5 * dist.std() / np.sqrt(draws))
    assert runs.mean() == pytest.approx(algorithm1_expected_runs(starts.size, n, target),
                                        abs=3.5 * runs.std() / np.sqrt(draws))
    # exact values of the closed forms on a small case: starts [0, 2, 3] of n = 5 in T = 11 (B = 6, N = 3)
    assert algorithm1_gap_means(3, 5, 11).tolist() == [2.0, 2.0]
    assert algorithm1_gap_means(3, 5, 11, slots="release").tolist() == [3.0, 1.5]
    assert expected_average_distance([0, 2, 3], 5, [2.0, 2.0]) == pytest.approx(2 + (2 * 6 + 2 * 6) / 10)
    assert algorithm1_expected_runs(3, 5, 11) == pytest.approx(1 + 2 * 6 / 8)


def test_released_slot_draw_matches_its_closed_form_and_differs_from_the_paper():
    """The release draws N slots and drops the smallest: its first gap has twice the mean of the others."""
    from longrecipe.positions.longrecipe import algorithm1_gap_means, expected_average_distance
    from longrecipe.positions.stats import average_distance

    n, target, draws = 300, 1_000, 2_000
    starts = _irregular_segments(n, seed=3)
    lengths = np.diff(np.append(starts, n)).tolist()
    draw = random.Random(5)
    dist = np.array([average_distance(released_generate_res_lists(lengths, target, draw)) for _ in range(draws)])
    sem = dist.std() / np.sqrt(draws)
    release = expected_average_distance(starts, n, algorithm1_gap_means(starts.size, n, target, slots="release"))
    paper = expected_average_distance(starts, n, algorithm1_gap_means(starts.size, n, target))
    assert dist.mean() == pytest.approx(release, abs=3.5 * sem)
    assert abs(paper - release) > 8 * sem  # the test can tell the two slot draws apart
    assert abs(paper / release - 1) < 0.05  # an O(1/N) difference
    with pytest.raises(ValueError, match=r"slots must be one of \['paper', 'release'\]"):
        algorithm1_gap_means(3, 5, 11, slots="released")
    with pytest.raises(ValueError, match="gap_means must have one entry per segment after the first"):
        expected_average_distance([0, 2, 3], 5, [1.0])


def test_rpes_statistics_match_their_closed_forms():
    """0 plus a uniform (n-1)-subset of 1..T-1: E[avg distance] = T (n + 1) / (3n); a step is +1 with probability
    (n - 1) / (T - 1), so E[runs] = 1 + (n - 1) (1 - (n - 1) / (T - 1))."""
    from longrecipe.positions.stats import average_distance, average_segment_length

    target, n, draws = 20_000, 6_000, 300
    samples = [RandomizedPositions(target)(np.zeros(n, dtype=np.int64), np.random.default_rng(s))
               for s in range(draws)]
    dist = np.array([average_distance(p) for p in samples])
    runs = np.array([n / average_segment_length(p) for p in samples])
    assert dist.mean() == pytest.approx(target * (n + 1) / (3 * n), abs=3.5 * dist.std() / np.sqrt(draws))
    assert runs.mean() == pytest.approx(1 + (n - 1) * (1 - (n - 1) / (target - 1)),
                                        abs=3.5 * runs.std() / np.sqrt(draws))


def test_llama3_vocabulary_layout_resolves_to_the_released_ids():
    """Llama-3's pieces at their real ids (byte-level): the exact match gives the release's [13, 198, 30, 0, 627]
    and leaves out the near misses (".\\n\\n" 382, "\\n\\n" 271, " ." 662, "?\\n" 5380, ".)" 6266, "!\\n" 4999)."""
    from tokenizers import decoders

    pieces = {0: "!", 13: ".", 30: "?", 198: "Ċ", 627: ".Ċ", 382: ".ĊĊ", 271: "ĊĊ", 662: "Ġ.", 5380: "?Ċ", 6266: ".)",
              4999: "!Ċ"}
    vocab = [pieces.get(i, f"w{i}") for i in range(7000)]
    vocab[1] = "<unk>"
    tok = _wrapped(vocab, decoders.ByteLevel())
    assert sorted(delimiter_token_ids(tok).tolist()) == sorted([13, 198, 30, 0, 627])
    scheme = LongRecipePositions(64).bind_tokenizer(tok)
    ids = np.array([5, 13, 198, 198, 6, 382, 7, 627, 0, 30])
    assert scheme.segment_starts(ids).tolist() == released_split_starts(ids.tolist(), {13, 198, 30, 0, 627})


# --- the paper's PoSE row, from its experiment configs ------------------------------------------------------------

@pytest.mark.parametrize("name", ["llama3_8b_80k_pose", "llama3_8b_128k_pose", "mistral_7b_80k_pose",
                                  "mistral_7b_128k_pose", "qwen2_7b_80k_pose", "qwen2_7b_128k_pose"])
def test_paper_pose_rows_train_the_released_pose_baseline(name, tmp_path):
    """Each paper PoSE experiment's extend stage (through the pipeline's own config path) trains
    PoSE(variant=longrecipe_release) at its window, and its samples reproduce that variant's closed form."""
    from hydra.utils import instantiate

    from longrecipe.config import compose
    from longrecipe.data.datamodule import resolve_sample_length
    from longrecipe.pipeline.stages import _train_cfg, _train_configure
    from longrecipe.positions.pose import release_pose_expected_distance
    from longrecipe.positions.stats import average_distance

    cfg = _train_cfg(_train_configure(compose("run", [f"experiment={name}"]), "extend"), tmp_path, {})
    scheme = instantiate(cfg.position)
    target = int(cfg.target_length)
    assert scheme == PoSE(target, variant="longrecipe_release")
    n = resolve_sample_length(cfg.data.sample_length, cfg.data.token_ratio, target)
    assert n == {81_920: 24_000, 131_072: 38_400}[target]  # Table 4: 24k -> 80k, 38.4k -> 128k
    if name.startswith("llama3"):
        dist = np.array([average_distance(scheme(np.zeros(n, dtype=np.int64), np.random.default_rng(s)))
                         for s in range(200)])
        no_skip, want = release_pose_expected_distance(n, target)
        assert dist.mean() == pytest.approx(want, abs=3.5 * dist.std() / np.sqrt(dist.size))
        if target == 131_072:  # the paper's Fig. 3 PoSE distance at 128k: 21.3k; LongRecipe's ~2x of it
            assert 20_500 < want < 22_500 and 0.55 < no_skip < 0.6
