"""Data selection: selectors by hand, budget / order / determinism of prepared datasets, ablations, training."""

from __future__ import annotations

import json

import numpy as np
import pytest

from longrecipe.config import compose
from longrecipe.selection import AnchorSelection, PrefixSelection, RandomSelection, assemble, upsample_indices
from longrecipe.selection.prepare import char_starts_to_token_starts

LENGTHS = np.array([3, 4, 2, 5, 1])
HAS_ANCHOR = np.array([False, True, False, False, True])


def test_anchor_selection_by_hand():
    rng = np.random.default_rng(0)
    # keep_other=0: anchors {1, 4} hold 5 tokens -> exactly the budget
    assert AnchorSelection(["NUM"], keep_other=0.0).select(LENGTHS, HAS_ANCHOR, 5, rng).tolist() == [1, 4]
    # budget 7: 2 tokens missing -> dropped sentences come back earliest first (0: 3 tokens), fill in order: 0, 1
    assert AnchorSelection(["NUM"], keep_other=0.0).select(LENGTHS, HAS_ANCHOR, 7, rng).tolist() == [0, 1]
    # keep_other=1 keeps everything: the contiguous prefix
    assert AnchorSelection(["NUM"], keep_other=1.0).select(LENGTHS, HAS_ANCHOR, 8, rng).tolist() == [0, 1, 2]
    # keep_other=0.5 with a fixed stream: draws [0.637, 0.270, 0.041, 0.017, 0.813] keep 2 and 3 besides anchors
    draws = np.random.default_rng(0).random(5)
    assert (draws < 0.5).tolist() == [False, True, True, True, False]
    assert AnchorSelection(["NUM"], keep_other=0.5).select(LENGTHS, HAS_ANCHOR, 11, np.random.default_rng(0)).tolist() \
        == [1, 2, 3]


def test_ablation_selectors_by_hand():
    assert PrefixSelection().select(LENGTHS, HAS_ANCHOR, 6, np.random.default_rng(0)).tolist() == [0, 1]
    perm = np.random.default_rng(3).permutation(5)  # [4, 2, 1, 3, 0] -> 1 + 2 + 4 >= 6
    assert perm.tolist() == [4, 2, 1, 3, 0]
    assert RandomSelection().select(LENGTHS, HAS_ANCHOR, 6, np.random.default_rng(3)).tolist() == [1, 2, 4]


def test_assemble_cuts_to_the_budget():
    ids, seg, src = assemble(np.arange(15), np.array([0, 3, 7, 9, 14]), np.array([1, 4, 0]), 6)
    assert ids.tolist() == [3, 4, 5, 6, 14, 0] and seg.tolist() == [0, 4, 5] and src.tolist() == [3, 14, 0]
    ids, seg, src = assemble(np.arange(15), np.array([0, 3, 7, 9, 14]), np.array([0, 3]), 4)
    assert ids.tolist() == [0, 1, 2, 9] and seg.tolist() == [0, 3] and src.tolist() == [0, 9]
    with pytest.raises(ValueError, match="fewer than the budget 9"):
        assemble(np.arange(15), np.array([0, 3, 7, 9, 14]), np.array([4]), 9)


def test_upsample_indices():
    rng = np.random.default_rng(0)
    assert upsample_indices(3, None, None, rng).tolist() == [0, 1, 2]
    assert upsample_indices(3, 2, None, rng).tolist() == [0, 1]
    assert upsample_indices(3, 6, np.array([0.0, 1.0, 0.0]), rng).tolist() == [0, 1, 1, 1, 1, 2]
    with pytest.raises(ValueError, match="n_samples must be >= 1 or null"):
        upsample_indices(3, 0, None, rng)


def test_char_starts_to_token_starts():
    offsets = np.array([[0, 3], [3, 4], [5, 9], [9, 10], [11, 14]])
    assert char_starts_to_token_starts(offsets, [0, 5, 11]).tolist() == [0, 2, 4]
    assert char_starts_to_token_starts(offsets, [4, 10]).tolist() == [0, 2, 4]  # whitespace starts -> next token


def test_bad_selection_config():
    with pytest.raises(ValueError, match=r"selection.keep_other must be in \[0, 1\]"):
        AnchorSelection(["NUM"], keep_other=1.5)
    with pytest.raises(ValueError, match=r"selection=anchors needs anchor types: set selection.anchors"):
        AnchorSelection(None, None)
    with pytest.raises(ValueError, match=r"unknown or no part-of-speech tags \['NUMBER'\]"):
        AnchorSelection(["NUMBER"])


# ---------------------------------------------------------------- end to end through conf/prepare.yaml
def _prepare(tok_dir, out, *extra):
    from longrecipe.selection.prepare import prepare_dataset

    cfg = compose("prepare", [f"tokenizer={tok_dir}", f"output_dir={out}", "corpus.n_synthetic=8",
                              "target_length=512", "token_ratio=0.3", "splitter=delimiters", *extra])
    return prepare_dataset(cfg)


def _load(path):
    import datasets

    ds = datasets.load_from_disk(str(path))
    return [dict(r) for r in ds]


def _windows(tok, n_docs=8, target=512):
    from longrecipe.tiny import synthetic_documents

    out = []
    for text in synthetic_documents(n_docs, seed=0):
        ids = np.asarray(tok(text, add_special_tokens=False)["input_ids"])
        out += [ids[a:a + target] for a in range(0, len(ids), target) if len(ids[a:a + target]) >= round(0.3 * target)]
    return out


def test_prepare_anchor_samples(tiny_tokenizer_dir, tiny_tokenizer, tmp_path):
    prov = _prepare(tiny_tokenizer_dir, tmp_path / "a", "selection.anchors=[NUM]")
    rows = _load(tmp_path / "a")
    windows = _windows(tiny_tokenizer)
    budget = round(0.3 * 512)
    assert prov["budget"] == budget == 154 and len(rows) == len(windows) == prov["n_samples"]
    assert prov["anchors"] == ["NUM"] and prov["anchors_source"] == "config" and prov["mode"] == "anchors"
    for row, window in zip(rows, windows):
        ids, seg = np.asarray(row["input_ids"]), np.asarray(row["segment_starts"])
        assert len(ids) == budget  # budget exact
        assert seg[0] == 0 and (np.diff(seg) > 0).all() and seg[-1] < budget and len(row["doc_ids"]) == len(seg)
        # document order: each segment is found in the window after the previous one
        cursor = 0
        for s, e in zip(seg, np.append(seg[1:], budget)):
            view = np.lib.stride_tricks.sliding_window_view(window[cursor:], e - s)
            hits = np.flatnonzero((view == ids[s:e]).all(axis=1))
            assert hits.size, "segment not found after the previous one"
            cursor += int(hits[0]) + (e - s)
    # numerals are enriched in the selected samples
    assert prov["anchor_token_share"]["samples"] > 1.2 * prov["anchor_token_share"]["corpus"]
    on_disk = json.loads((tmp_path / "a" / "longrecipe_provenance.json").read_text())
    assert on_disk == json.loads(json.dumps(prov)) and len(on_disk["source_doc_ids"]) == 8
    assert [d for r in rows for d in r["doc_ids"][:1]][0] == on_disk["source_doc_ids"][0]
    # deterministic for a seed, different for another seed
    _prepare(tiny_tokenizer_dir, tmp_path / "b", "selection.anchors=[NUM]")
    assert _load(tmp_path / "b") == rows
    _prepare(tiny_tokenizer_dir, tmp_path / "c", "selection.anchors=[NUM]", "seed=7")
    assert _load(tmp_path / "c") != rows
    # a finished dataset is never replaced silently
    with pytest.raises(FileExistsError, match="overwrite=true"):
        _prepare(tiny_tokenizer_dir, tmp_path / "a", "selection.anchors=[NUM]")


def test_prepare_ablations_and_upsampling(tiny_tokenizer_dir, tiny_tokenizer, tmp_path):
    windows = _windows(tiny_tokenizer)
    none = _load(_prepare(tiny_tokenizer_dir, tmp_path / "none", "selection=none") and tmp_path / "none")
    rand = _load(_prepare(tiny_tokenizer_dir, tmp_path / "rand", "selection=random") and tmp_path / "rand")
    # w/o T: the contiguous prefix of each window
    assert [r["input_ids"] for r in none] == [w[:154].tolist() for w in windows]
    # Random T: same budget and count, different sentences, still starting at segment boundaries
    assert len(rand) == len(none) and all(len(r["input_ids"]) == 154 for r in rand)
    assert sum(r["input_ids"] != n["input_ids"] for r, n in zip(rand, none)) >= len(none) // 2
    # upsampling to n_samples: originals first in document order, copies beside them, all anchor-rich first
    prov = _prepare(tiny_tokenizer_dir, tmp_path / "up", "selection.anchors=[NUM]", f"n_samples={len(windows) + 5}")
    up = _load(tmp_path / "up")
    base = _load(_prepare(tiny_tokenizer_dir, tmp_path / "a", "selection.anchors=[NUM]") and tmp_path / "a")
    assert len(up) == len(windows) + 5 and prov["n_upsampled"] == 5 and prov["n_selected"] == len(windows)
    assert [r for i, r in enumerate(up) if i == 0 or r != up[i - 1]] == base


def test_prepare_reads_anchors_from_analysis_json(tiny_tokenizer_dir, tmp_path):
    (tmp_path / "analysis.json").write_text(json.dumps({"anchors": ["NUM", "PRON"]}))
    prov = _prepare(tiny_tokenizer_dir, tmp_path / "a", f"selection.analysis_json={tmp_path / 'analysis.json'}")
    assert prov["anchors"] == ["NUM", "PRON"] and prov["anchors_source"] == str(tmp_path / "analysis.json")
    (tmp_path / "empty.json").write_text(json.dumps({"anchors": []}))
    with pytest.raises(ValueError, match="lists no anchor types"):
        _prepare(tiny_tokenizer_dir, tmp_path / "b", f"selection.analysis_json={tmp_path / 'empty.json'}")
    with pytest.raises(ValueError, match=r"token_ratio must be in \(0, 1\], got 1.5"):
        _prepare(tiny_tokenizer_dir, tmp_path / "c", "selection=none", "token_ratio=1.5")
    with pytest.raises(ValueError, match=r"splitter must be one of \['auto', 'delimiters', 'punkt'\]"):
        _prepare(tiny_tokenizer_dir, tmp_path / "d", "selection=none", "splitter=spacy")


def test_prepared_dataset_trains_one_step(tiny_model_dir, tmp_path):
    """The prepared folder feeds train(cfg) (DataModule format=prepared, LongRecipe positions) for one step."""
    from longrecipe.training.train import train

    base = tiny_model_dir("llama", seed=0)
    _prepare(base, tmp_path / "prepared", "selection.anchors=[NUM]", "target_length=1024")
    cfg = compose("train", [f"model.pretrained={base}", f"data.source={tmp_path / 'prepared'}", "data.format=prepared",
                            "position=longrecipe", "target_length=1024", "trainer.max_steps=1", "logger=none",
                            f"run_dir={tmp_path / 'run'}", "trainer.accelerator=cpu", "data.val_fraction=0.0"])
    result = train(cfg)
    assert result["global_step"] == 1


def test_prepare_writes_the_training_segments(tiny_tokenizer_dir, tiny_tokenizer, tmp_path):
    """The default splitter cuts with the rule training uses (released splitter: every delimiter token closes a
    segment), so re-segmenting a prepared sample with the bound training scheme gives its segment_starts."""
    from longrecipe.positions import LongRecipePositions

    _prepare(tiny_tokenizer_dir, tmp_path / "p", "selection=none", "splitter=auto")
    scheme = LongRecipePositions(512).bind_tokenizer(tiny_tokenizer)
    rows = _load(tmp_path / "p")
    assert rows
    for row in rows:
        ids = np.asarray(row["input_ids"])
        assert np.asarray(row["segment_starts"]).tolist() == scheme.segment_starts(ids).tolist()
