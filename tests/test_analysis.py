"""Impactful token analysis: chunked logits, aggregates, the planted-signal end-to-end run, resume, bad input."""

from __future__ import annotations

import json
import math

import numpy as np
import pytest
import torch

from longrecipe.analysis.aggregate import aggregate_shifts, auto_bucket_width, top_fraction_weights
from longrecipe.analysis.logits import final_hidden, lm_head_parts, shift_distribution_summary, true_token_logits
from longrecipe.analysis.vocab import check_same_tokenizer
from longrecipe.config import compose


def numeral_token_ids(tokenizer) -> list[int]:
    return [i for i in range(len(tokenizer)) if tokenizer.decode([i]).strip().isdigit()]


@pytest.fixture()
def planted_pair(tiny_model_dir, tiny_tokenizer, tmp_path):
    """H = a seeded tiny Llama; H' = H with the LM-head rows of numeral tokens perturbed."""
    from transformers import AutoModelForCausalLM, AutoTokenizer

    base = tiny_model_dir("llama", seed=0)
    model = AutoModelForCausalLM.from_pretrained(str(base))
    num = numeral_token_ids(tiny_tokenizer)
    with torch.no_grad():
        gen = torch.Generator().manual_seed(1)
        model.lm_head.weight[num] += torch.randn(len(num), model.config.hidden_size, generator=gen) * 0.5
    long = tmp_path / "tiny-llama-long"
    model.save_pretrained(str(long))
    AutoTokenizer.from_pretrained(str(base)).save_pretrained(str(long))
    return base, long, set(num)


# ---------------------------------------------------------------- chunked logits
def test_true_token_logits_equal_the_full_logits_gather(tiny_model_dir):
    from transformers import AutoModelForCausalLM

    model = AutoModelForCausalLM.from_pretrained(str(tiny_model_dir("llama", seed=3)), attn_implementation="sdpa")
    ids = torch.randint(0, 512, (2, 40), generator=torch.Generator().manual_seed(0))
    with torch.no_grad():
        full = model(input_ids=ids, attention_mask=torch.ones_like(ids),
                     position_ids=torch.arange(40).expand(2, 40)).logits
    hidden = final_hidden(model, ids)
    weight, bias, cap = lm_head_parts(model)
    for b in range(2):
        expected = full[b, :-1].gather(-1, ids[b, 1:, None]).squeeze(-1)
        for chunk in (1, 7, 4096):
            got = true_token_logits(hidden[b, :-1], weight, ids[b, 1:], bias=bias, softcap=cap, chunk_size=chunk)
            torch.testing.assert_close(got, expected, atol=1e-5, rtol=1e-5)


def test_true_token_logits_bias_and_softcap_by_hand():
    hidden = torch.tensor([[1.0, 2.0], [0.5, -1.0]])
    weight = torch.tensor([[1.0, 0.0], [0.0, 1.0], [2.0, 2.0]])
    bias = torch.tensor([0.0, 1.0, -1.0])
    got = true_token_logits(hidden, weight, torch.tensor([2, 1]), bias=bias, chunk_size=1)
    torch.testing.assert_close(got, torch.tensor([1 * 2 + 2 * 2 - 1.0, -1.0 + 1.0]))  # [5, 0]
    capped = true_token_logits(hidden, weight, torch.tensor([2, 1]), bias=bias, softcap=2.0)
    torch.testing.assert_close(capped, torch.tensor([2 * math.tanh(2.5), 0.0]))
    with pytest.raises(ValueError, match="chunk_size must be >= 1"):
        true_token_logits(hidden, weight, torch.tensor([0, 0]), chunk_size=0)


def test_shift_distribution_summary_by_hand():
    h = torch.tensor([[1.0, 0.0], [0.0, 1.0]])
    w = torch.tensor([[1.0, 0.0], [0.0, 1.0], [1.0, 1.0], [0.0, 0.0]])
    # identical models: the shift is 0 for every token -> p uniform: entropy 1 (normalised), p_true 1/4
    ent, pt = shift_distribution_summary(h, (w, None, None), h, (w, None, None), torch.tensor([0, 3]), chunk_size=1)
    torch.testing.assert_close(ent, torch.ones(2))
    torch.testing.assert_close(pt, torch.full((2,), 0.25))
    # long model adds log(3) to token 0's logit at every position: p = [3, 1, 1, 1] / 6
    w2 = w.clone()
    b2 = torch.tensor([math.log(3.0), 0.0, 0.0, 0.0])
    ent, pt = shift_distribution_summary(h, (w, None, None), h, (w2, b2, None), torch.tensor([0, 1]))
    p = torch.tensor([0.5, 1 / 6, 1 / 6, 1 / 6])
    torch.testing.assert_close(ent, torch.full((2,), float(-(p * p.log()).sum() / math.log(4))))
    torch.testing.assert_close(pt, torch.tensor([0.5, 1 / 6]))


# ---------------------------------------------------------------- aggregates
def test_top_fraction_weights_exact_with_ties():
    buckets = np.array([0, 0, 0, 0, 0, 1, 1])
    shift = np.array([5.0, 1.0, 1.0, 1.0, 0.0, 2.0, 3.0])
    w = top_fraction_weights(buckets, shift, 0.4)  # bucket 0 keeps ceil(2.0)=2 slots, bucket 1 ceil(0.8)=1
    np.testing.assert_allclose(w, [1, 1 / 3, 1 / 3, 1 / 3, 0, 0, 1])
    np.testing.assert_allclose(top_fraction_weights(buckets, shift, 1.0), np.ones(7))
    with pytest.raises(ValueError, match=r"top_fraction must be in \(0, 1\]"):
        top_fraction_weights(buckets, shift, 0.0)


def test_aggregate_shifts_exact():
    # 10 tokens, one bucket (width 100); NUM tokens (id 7) carry the large shifts
    positions = np.arange(1, 11)
    token_ids = np.array([7, 3, 3, 7, 4, 4, 4, 4, 5, 5])
    pos = np.array(["NUM", "NOUN", "NOUN", "NUM", "DET", "DET", "DET", "DET", "X", "X"])
    shift = np.array([4.0, 1.0, 0.0, 2.0, 0.5, 0.5, 0.0, 0.0, 3.0, 0.0])
    s = aggregate_shifts(positions=positions, token_ids=token_ids, pos_tags=pos, shift=shift, bucket_width=100,
                         top_fraction=0.3, n_anchors=2, min_pos_count=1, top_k_tokens=3)
    # top 30% = 3 tokens: shifts 4 (NUM), 3 (X), 2 (NUM)
    rows = {r["pos"]: r for r in s["pos"]}
    assert rows["NUM"]["A_sum"] == 6.0 and rows["NUM"]["A_mean"] == 3.0 and rows["NUM"]["count"] == 2
    assert rows["NUM"]["top_share"] == pytest.approx(2 / 3) and rows["NUM"]["lift"] == pytest.approx((2 / 3) / 0.2)
    assert rows["X"]["lift"] == pytest.approx((1 / 3) / 0.2) and rows["DET"]["top_share"] == 0.0
    assert [r["pos"] for r in s["pos"]][:2] == ["NUM", "X"]
    assert s["anchors"] == ["NUM"]  # X is excluded from anchors by default
    assert aggregate_shifts(positions=positions, token_ids=token_ids, pos_tags=pos, shift=shift, bucket_width=100,
                            top_fraction=0.3, min_pos_count=1, min_lift=4.0)["anchors"] == []  # NUM lift 3.33
    assert [(t["token_id"], t["A_sum"], t["count"]) for t in s["tokens"]] == [(7, 6.0, 2), (5, 3.0, 2), (3, 1.0, 2)]  # ties: lower id first
    assert s["buckets"][0]["pos_frequency"] == pytest.approx({"NUM": 2 / 3, "X": 1 / 3})
    assert [t["token_id"] for t in s["buckets"][0]["top_tokens"]] == [7, 5]
    assert s["n_top"] == 3.0 and s["A_total"] == 11.0
    by_sum = aggregate_shifts(positions=positions, token_ids=token_ids, pos_tags=pos, shift=shift, bucket_width=100,
                              rank_by="A_sum", min_pos_count=1, exclude=[])
    assert [r["pos"] for r in by_sum["pos"]] == ["NUM", "X", "DET", "NOUN"]
    with pytest.raises(ValueError, match="anchor_rank_by must be one of"):
        aggregate_shifts(positions=positions, token_ids=token_ids, pos_tags=pos, shift=shift, bucket_width=1,
                         rank_by="median")
    assert auto_bucket_width(1024, 20) == 52 and auto_bucket_width(10, 20) == 1


# ---------------------------------------------------------------- end to end
def _analyze_cfg(base, long, out, *extra):
    return compose("analyze", [f"base_model={base}", f"long_model={long}", f"output_dir={out}",
                               "context_length=128", "max_samples=12", "shard_size=4", "n_buckets=4",
                               "corpus.n_synthetic=6", *extra])


def test_planted_numeral_signal_ranks_num_first(planted_pair, tmp_path, caplog):
    import pyarrow.parquet as pq

    from longrecipe.analysis.run import run_analysis

    base, long, numerals = planted_pair
    out = tmp_path / "run"
    result = run_analysis(_analyze_cfg(base, long, out))
    assert result["anchors"][0] == "NUM" and result["pos"][0]["pos"] == "NUM"
    assert result["pos"][0]["lift"] > 3.0 and all(r["lift"] < 1.0 for r in result["pos"][1:])
    top = [t for t in result["tokens"] if t["A_sum"] > 0]
    assert top and {t["token_id"] for t in top} <= numerals  # only numeral rows changed
    for bucket in result["buckets"]:  # every position bucket is topped by a numeral token
        assert bucket["top_tokens"][0]["token_id"] in numerals
        assert bucket["pos_frequency"]["NUM"] == max(bucket["pos_frequency"].values())
    assert result["n_samples"] == 12 and result["n_buckets"] == 4 and result["bucket_width"] == 32

    records = pq.read_table(out / "records.parquet").to_pandas()
    assert list(records.columns) == ["doc_id", "sample", "position", "token_id", "token", "word", "pos",
                                     "logit_base", "logit_long", "shift", "shift_entropy", "p_true"]
    assert len(records) == result["n_tokens"] == 12 * 127  # synthetic documents are long: full windows
    changed = records["shift"] > 0
    assert set(records.loc[changed, "token_id"]) <= numerals and (records.loc[changed, "pos"] == "NUM").all()
    np.testing.assert_allclose(records["shift"], (records["logit_long"] - records["logit_base"]).abs(), atol=1e-6)
    assert (records["position"].between(1, 127)).all() and records["pos"].notna().all()
    saved = json.loads((out / "analysis.json").read_text())
    assert saved["anchors"] == result["anchors"] and saved["config_hash"] == result["config_hash"]
    md = (out / "top_tokens.md").read_text()
    assert "| 1 | NUM |" in md and "Top token types" in md
    assert (out / "pos_by_position.png").read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"

    # resume: every shard is finished, nothing is re-scored; new aggregation parameters only re-aggregate
    shard = out / "shards" / "shard-00000.parquet"
    mtime = shard.stat().st_mtime_ns
    again = run_analysis(_analyze_cfg(base, long, out, "top_fraction=0.5"))
    assert shard.stat().st_mtime_ns == mtime and again["throughput_tokens_per_s"] is None
    assert again["top_fraction"] == 0.5 and again["config_hash"] == result["config_hash"]
    # a killed run: a missing shard is scored again, the others are kept
    (out / "shards" / "shard-00001.json").unlink()
    third = run_analysis(_analyze_cfg(base, long, out))
    assert shard.stat().st_mtime_ns == mtime and third["n_tokens"] == result["n_tokens"]
    assert third["tokens"] == result["tokens"]
    # a different data config into the same folder is refused
    with pytest.raises(FileExistsError, match="different config; pass overwrite=true"):
        run_analysis(_analyze_cfg(base, long, out, "max_samples=8"))


def test_reduced_tagger_is_flagged_in_outputs(planted_pair, tmp_path):
    from longrecipe.analysis.run import run_analysis

    base, long, _ = planted_pair
    out = tmp_path / "lex"
    result = run_analysis(_analyze_cfg(base, long, out, "pos_tagger=lexicon", "max_samples=2", "min_pos_count=1",
                                       "distribution_shift=false"))
    assert result["pos_tagger"] == "lexicon" and result["pos_tagger_reduced"] is True
    assert result["anchors"][0] == "NUM"
    assert "reduced lexicon tagger" in (out / "top_tokens.md").read_text()
    assert "shift_entropy" not in json.dumps(result["buckets"])


def test_vocabulary_mismatch_fails_before_loading_models(tiny_model_dir, synthetic_docs, tmp_path):
    from longrecipe.analysis.run import run_analysis
    from longrecipe.tiny import train_tokenizer

    base = tiny_model_dir("llama", seed=0)
    other = tmp_path / "other"  # config + tokenizer, no weights: loading weights from here would fail differently
    train_tokenizer(synthetic_docs[:10], vocab_size=400, save_dir=other)
    (other / "config.json").write_text((base / "config.json").read_text())
    with pytest.raises(ValueError, match=r"base_model and long_model must share one tokenizer.*sizes 512 vs 400"):
        run_analysis(_analyze_cfg(base, other, tmp_path / "out"))
    assert not (tmp_path / "out").exists()


def test_check_same_tokenizer_names_the_difference():
    class Tok:
        def __init__(self, vocab):
            self.vocab = vocab

        def get_vocab(self):
            return self.vocab

    check_same_tokenizer(Tok({"a": 0, "b": 1}), Tok({"b": 1, "a": 0}))
    with pytest.raises(ValueError, match=r"1 tokens only in base_model e.g. \['c'\]; 0 only in long_model.*"
                                         r"1 with different ids e.g. \['b'\]"):
        check_same_tokenizer(Tok({"a": 0, "b": 1, "c": 2}), Tok({"a": 0, "b": 2}))


@pytest.mark.parametrize(("override", "message"), [
    ("context_length=1", r"context_length=1 is invalid: must be >= 2"),
    ("top_fraction=1.5", r"top_fraction=1.5 is invalid: must be in \(0, 1\]"),
    ("dtype=int8", r"dtype='int8' is invalid: must be one of auto, float32, bfloat16, float16"),
    ("pos_tagger=spacy", r"pos_tagger must be one of auto, nltk, lexicon"),
    ("long_model_rope={factor:2}", r"long_model_rope=\{'factor': 2\} is invalid: must be null or a mapping with keys "
                                   r"\['rope_parameters', 'max_position_embeddings'\]"),
])
def test_bad_config_values_are_rejected(tiny_model_dir, tmp_path, override, message):
    from longrecipe.analysis.run import run_analysis

    base = tiny_model_dir("llama", seed=0)
    with pytest.raises(ValueError, match=message):
        run_analysis(_analyze_cfg(base, base, tmp_path / "out", override))


def test_required_models_have_no_default():
    from omegaconf.errors import MissingMandatoryValue

    cfg = compose("analyze")
    with pytest.raises(MissingMandatoryValue):
        _ = cfg.base_model


def test_training_free_long_model_from_the_same_weights(tiny_model_dir, tmp_path):
    """H' = the base's own weights with a RoPE override at load time: without it every shift is exactly 0; with linear
    x4 scaling every target but the first moves (the first is predicted from position 0 alone, where RoPE is the
    identity, so its logits are H's)."""
    import pyarrow.parquet as pq

    from longrecipe.analysis.run import run_analysis

    base = tiny_model_dir("llama", seed=0)
    run_analysis(_analyze_cfg(base, base, tmp_path / "same", "max_samples=2", "distribution_shift=false"))
    same = pq.read_table(tmp_path / "same" / "shards" / "shard-00000.parquet").to_pydict()
    assert max(abs(x) for x in same["shift"]) == 0.0
    rope = "long_model_rope={rope_parameters:{rope_type:linear,factor:4.0}}"
    summary = run_analysis(_analyze_cfg(base, base, tmp_path / "scaled", "max_samples=2", "distribution_shift=false",
                                        rope))
    scaled = pq.read_table(tmp_path / "scaled" / "shards" / "shard-00000.parquet").to_pydict()
    by_pos = dict(zip(scaled["position"], scaled["shift"]))
    first = min(by_pos)
    assert by_pos[first] == pytest.approx(0.0, abs=1e-5) and min(abs(v) for p, v in by_pos.items() if p > first) > 0
    assert summary["long_model_rope"] == {"rope_parameters": {"rope_type": "linear", "factor": 4.0}}
