"""End to end through the real Hydra config (``conf/evaluate.yaml`` + ``conf/eval/*``) with tiny local models,
plus equivalence tests for batched generation, chunked perplexity and the lm-eval adapter."""

from __future__ import annotations

import json
import math
from pathlib import Path

import numpy as np
import pytest
import torch

from longrecipe.config import compose
from longrecipe.evaluation import evaluate
from longrecipe.evaluation.generation import generate_batched, load_eval_model, truncate_ids
from longrecipe.evaluation.perplexity import positional_perplexity, token_nll
from longrecipe.evaluation.results import RECORD_KEYS

DATA = Path(__file__).parent / "data" / "eval"


@pytest.fixture(autouse=True)
def _one_thread():
    old = torch.get_num_threads()
    torch.set_num_threads(1)  # tiny models: threads only contend on a shared 2-core box
    yield
    torch.set_num_threads(old)


@pytest.fixture()
def model_dir(tiny_model_dir):
    return tiny_model_dir("llama", seed=0, max_position_embeddings=1024)


def _records(out: Path) -> list[dict]:
    recs = json.loads((out / "results.json").read_text())
    assert recs and all(tuple(r) == RECORD_KEYS for r in recs)
    return recs


def test_niah_m_end_to_end_two_lengths(model_dir, tmp_path):
    out = tmp_path / "run"
    cfg = compose("evaluate", ["eval=niah_m", f"model_path={model_dir}", f"output_dir={out}",
                               "eval.lengths=[512,640]", "eval.num_samples=2", "eval.max_new_tokens=6",
                               "batch_size=2", "progress=false", "run_id=t1", "max_position_embeddings=600"])
    records = evaluate(cfg)
    recs = _records(out)
    assert recs == records
    tasks = ["niah_multikey_1", "niah_multikey_2", "niah_multikey_3", "niah_multivalue", "niah_multiquery"]
    for length in (512, 640):
        got = {r["task"]: r for r in recs if r["length"] == length}
        assert set(got) == {*tasks, "niah_m"}
        assert all(got[t]["n"] == 2 and got[t]["status"] == "ok" for t in tasks)
        # niah_m = mean over categories: multikey (mean of _1/_2/_3), multivalue, multiquery
        mk = np.mean([got[f"niah_multikey_{i}"]["score"] for i in (1, 2, 3)])
        expect = np.mean([mk, got["niah_multivalue"]["score"], got["niah_multiquery"]["score"]])
        assert got["niah_m"]["score"] == pytest.approx(expect, abs=1e-3)
        for t in tasks:  # binomial standard error and Wilson interval beside every score
            p = got[t]["score"] / 100
            assert got[t]["se"] == pytest.approx(100 * np.sqrt(p * (1 - p) / 2), abs=1e-3)
            assert got[t]["ci_low"] <= got[t]["score"] <= got[t]["ci_high"]
        weights = [1 / 9] * 3 + [1 / 3] * 2
        se = np.sqrt(sum((w * got[t]["se"]) ** 2 for w, t in zip(weights, tasks)))
        assert got["niah_m"]["se"] == pytest.approx(se, abs=1e-3)
        assert got["niah_multikey_2"]["haystack"] == "needle"
        assert got["niah_multikey_1"]["haystack"].startswith("state_union+inaugural")  # real text by default
        assert all(r["beyond_window"] is (length > 600) and r["model_window"] == 600 for r in got.values())
    assert {r["chat_template"] for r in recs} == {False}  # auto: the tiny tokenizer has no chat template
    assert {r["model"] for r in recs} == {model_dir.name} and {r["run_id"] for r in recs} == {"t1"}
    samples = [json.loads(x) for x in (out / "samples.jsonl").read_text().splitlines()]
    assert len(samples) == 20
    for s in samples:
        assert s["prompt_tokens"] <= s["length"] - 6 and s["truncated"] is False
        assert set(s) >= {"prompt_tokens", "depth", "answers", "prediction", "score"}
    assert (out / "niah_heatmap.png").stat().st_size > 1000
    md = (out / "results.md").read_text()
    assert "| niah_m |" in md and " ± " in md and "(n=2)" in md and "| 640 (beyond window 600) |" in md
    with pytest.raises(FileExistsError, match="overwrite=true"):
        evaluate(cfg)


def test_too_short_length_is_reported_not_run(model_dir, tmp_path):
    """A length that cannot hold the template is a visible "not run" record, not a crash or a silent gap."""
    cfg = compose("evaluate", ["eval=niah_m", f"model_path={model_dir}", f"output_dir={tmp_path / 's'}",
                               "eval.lengths=[128,512]", "eval.num_samples=1", "eval.max_new_tokens=6",
                               "progress=false", "eval.tasks=[niah_multivalue]", "eval.heatmap=false"])
    recs = evaluate(cfg)
    short = [r for r in recs if r["length"] == 128]
    assert [(r["task"], r["status"], r["score"]) for r in short] == [
        ("niah_multivalue", "not run (length too short)", None)]
    assert short[0]["metric"] == "string_match_all"  # the task's own RULER metric, not a placeholder
    assert {r["task"] for r in recs if r["length"] == 512} == {"niah_multivalue", "niah_m"}


def test_ruler_qa_not_run_is_reported(model_dir, tmp_path):
    from transformers import AutoTokenizer

    tok = AutoTokenizer.from_pretrained(str(model_dir))  # an instruct-style tokenizer: auto turns the template on
    tok.chat_template = "{% for m in messages %}<|{{ m['role'] }}|>{{ m['content'] }}{% endfor %}<|assistant|>"
    tok.save_pretrained(str(model_dir))
    cfg = compose("evaluate", ["eval=ruler", f"model_path={model_dir}", f"output_dir={tmp_path / 'r'}",
                               "eval.tasks=[niah_single_1,qa_1,qa_2]", "eval.lengths=[512]", "eval.num_samples=1",
                               "eval.max_new_tokens=4", f"eval.hotpotqa_path={DATA / 'hotpotqa_tiny.json'}",
                               "progress=false"])
    recs = {r["task"]: r for r in evaluate(cfg)}
    assert recs["qa_1"]["status"] == "not run (no data)" and recs["qa_1"]["score"] is None and recs["qa_1"]["n"] == 0
    assert recs["qa_2"]["status"] == "ok" and recs["qa_2"]["metric"] == "string_match_part"
    assert recs["ruler"]["metric"].endswith("not run: qa_1")
    assert recs["ruler"]["score"] == pytest.approx((recs["niah_single_1"]["score"] + recs["qa_2"]["score"]) / 2,
                                                   abs=1e-3)
    assert {r["chat_template"] for r in recs.values()} == {True}
    assert recs["qa_2"]["haystack"] == "hotpotqa:hotpotqa_tiny.json" and recs["qa_1"]["se"] is None
    sample = json.loads((tmp_path / "r" / "samples.jsonl").read_text().splitlines()[0])
    assert sample["extra"]["singular"] is True


def test_longbench_end_to_end(model_dir, tmp_path):
    cfg = compose("evaluate", ["eval=longbench", f"model_path={model_dir}", f"output_dir={tmp_path / 'lb'}",
                               f"eval.data_dir={DATA / 'longbench'}", "eval.max_new_tokens=4", "eval.max_length=96",
                               "eval.subsets=[passage_retrieval_en,trec,multifieldqa_zh,narrativeqa]",
                               "progress=false"])
    recs = {r["task"]: r for r in evaluate(cfg)}
    assert recs["narrativeqa"]["status"] == "not run (no data)"
    assert recs["passage_retrieval_en"]["n"] == 2 and recs["passage_retrieval_en"]["metric"] == "retrieval"
    assert recs["trec"]["metric"] == "classification" and recs["multifieldqa_zh"]["metric"] == "qa_f1_zh"
    assert "not run: narrativeqa" in recs["longbench"]["metric"]
    samples = [json.loads(x) for x in (tmp_path / "lb" / "samples.jsonl").read_text().splitlines()]
    # prompts are middle-truncated to max_length - max_new_tokens and the truncation is recorded
    assert all(s["prompt_tokens"] <= 92 for s in samples) and any(s["truncated"] for s in samples)


def test_ppl_end_to_end_and_buckets(model_dir, tmp_path):
    cfg = compose("evaluate", ["eval=ppl", f"model_path={model_dir}", f"output_dir={tmp_path / 'p'}",
                               "eval.base_length=64", "eval.length_multipliers=[1,2]", "eval.num_windows=2",
                               "eval.num_buckets=4", "eval.chunk_size=16", "eval.min_words=3000", "progress=false"])
    recs = evaluate(cfg)
    assert [r["length"] for r in recs if r["task"] == "ppl"] == [64, 128]
    b128 = [r for r in recs if r["length"] == 128 and r["task"].startswith("ppl[")]
    # edges round(linspace(1, 128, 5)) = [1, 33, 64, 96, 128] (64.5 rounds half to even)
    assert [r["task"] for r in b128] == ["ppl[1:33]", "ppl[33:64]", "ppl[64:96]", "ppl[96:128]"]
    overall = next(r for r in recs if r["length"] == 128 and r["task"] == "ppl")
    # overall log-ppl is the token-weighted mean of the bucket log-ppls
    w = np.array([r["n"] for r in b128], dtype=float)
    mean_log = float((np.log([r["score"] for r in b128]) * w).sum() / w.sum())
    assert math.log(overall["score"]) == pytest.approx(mean_log, rel=1e-4)
    assert overall["n"] == 127 * 2 and 1 < overall["score"] < 600  # random tiny model: about vocab size


def test_general_local_lm_eval_task(model_dir, tmp_path):
    cfg = compose("evaluate", ["eval=general", f"model_path={model_dir}", f"output_dir={tmp_path / 'g'}",
                               "eval.tasks=[]", f"eval.local_tasks=[{DATA / 'lm_eval' / 'tiny_mc.yaml'}]"])
    recs = evaluate(cfg)
    acc = next(r for r in recs if r["metric"] == "acc,none")
    assert acc["task"] == "longrecipe_tiny_mc" and acc["n"] == 5 and acc["score"] in {0, 20, 40, 60, 80, 100}


def test_lm_eval_adapter_loglikelihood_matches_direct(model_dir):
    from longrecipe.evaluation.general import make_lm

    model, tok = load_eval_model(model_dir, "float32", "sdpa", "cpu")
    lm = make_lm(model, tok, batch_size=2)

    class Req:
        def __init__(self, *args):
            self.args = args

    reqs = [Req("It was quiet and", " they could see it"), Req("Alice visited the", " garden"), Req("Hi ", "there")]
    got = lm.loglikelihood(reqs)
    for req, (lp, _) in zip(reqs, got):
        ctx, cont = req.args
        if ctx.endswith(" "):
            ctx, cont = ctx[:-1], " " + cont
        c = tok(ctx, add_special_tokens=False)["input_ids"]
        full = tok(ctx + cont, add_special_tokens=False)["input_ids"]
        with torch.no_grad():
            logits = model(torch.tensor([full])).logits[0].log_softmax(-1)
        direct = sum(float(logits[i - 1, full[i]]) for i in range(len(c), len(full)))
        assert lp == pytest.approx(direct, abs=1e-4)


def test_batched_generation_equals_single(model_dir):
    model, tok = load_eval_model(model_dir, "float32", "sdpa", "cpu")
    prompts = [tok(t)["input_ids"] for t in ["Alice visited the old", "It was", "In 1950, Bob and Carol would walk to"]]
    single = generate_batched(model, tok, prompts, max_new_tokens=[5, 3, 5], batch_size=1, progress=False)
    batched = generate_batched(model, tok, prompts, max_new_tokens=[5, 3, 5], batch_size=3, progress=False)
    assert [o["prediction"] for o in single] == [o["prediction"] for o in batched]
    assert [o["new_tokens"] for o in batched][1] <= 3
    assert [o["prompt_tokens"] for o in batched] == [len(p) for p in prompts]


def test_chunked_nll_equals_full_logits(model_dir, tiny_tokenizer):
    model, _ = load_eval_model(model_dir, "float32", "sdpa", "cpu")
    ids = torch.randint(0, 512, (2, 50), generator=torch.Generator().manual_seed(0))
    with torch.no_grad():
        logits = model(ids).logits
    full = torch.nn.functional.cross_entropy(logits[:, :-1].transpose(1, 2), ids[:, 1:], reduction="none")
    assert torch.allclose(token_nll(model, ids, chunk_size=7), full, atol=1e-5)
    rows = positional_perplexity(model, tiny_tokenizer, ["Alice built the bridge. " * 40], [32], num_windows=2,
                                 num_buckets=1, progress=False)
    assert rows[0]["ppl"] == pytest.approx(rows[1]["ppl"])  # one bucket == overall


def test_truncation_and_bad_inputs(model_dir, tmp_path):
    assert truncate_ids(list(range(10)), 5, "middle") == ([0, 1, 7, 8, 9], True)
    assert truncate_ids(list(range(10)), 4, "left") == ([6, 7, 8, 9], True)
    assert truncate_ids([1, 2], 5) == ([1, 2], False)
    with pytest.raises(ValueError, match="truncation=none"):
        truncate_ids(list(range(10)), 5, "none")
    with pytest.raises(ValueError, match=r"dtype must be one of"):
        load_eval_model(model_dir, "float8")
    with pytest.raises(ValueError, match=r"model_path=.* is a folder without config.json"):
        load_eval_model(tmp_path)
    bad = compose("evaluate", ["eval=niah_m", f"model_path={model_dir}", f"output_dir={tmp_path / 'x'}",
                               "eval.tasks=[niah_bogus]"])
    with pytest.raises(ValueError, match="unknown RULER tasks"):
        evaluate(bad)
    bad = compose("evaluate", ["eval=longbench", f"model_path={model_dir}", f"output_dir={tmp_path / 'y'}",
                               "eval.subsets=[nope]"])
    with pytest.raises(ValueError, match="unknown LongBench subsets"):
        evaluate(bad)
