"""HF export: reload with plain AutoModelForCausalLM gives identical logits; atomic; overwrite refusal."""

from __future__ import annotations

import json

import pytest
import torch

from longrecipe.config import compose
from longrecipe.models.export import export_hf_model
from longrecipe.models.loading import build_model, load_tokenizer
from longrecipe.training.train import train

ROPE = {"type": "yarn", "original_max_position_embeddings": 256}


def test_export_reloads_with_identical_logits_and_rope(tmp_path, tiny_model_dir):
    from transformers import AutoModelForCausalLM, AutoTokenizer

    base = tiny_model_dir("qwen2")
    cfg = {"pretrained": str(base), "attn_implementation": "sdpa"}
    tok = load_tokenizer(cfg)
    model = build_model(cfg, ROPE, 1024, tokenizer=tok)
    out = export_hf_model(model, tok, tmp_path / "export", train_config={"target_length": 1024},
                          provenance={"source": "synthetic"}, metrics={"train/loss": 1.5})
    names = {p.name for p in out.iterdir()}
    assert {"config.json", "model.safetensors", "generation_config.json", "tokenizer.json", "longrecipe.json"} <= names
    assert not list(tmp_path.glob(".export.*"))  # no temp folder left behind
    config = json.loads((out / "config.json").read_text())
    assert config["rope_parameters"] == {"rope_type": "yarn", "factor": 4.0, "rope_theta": 10000.0,
                                         "original_max_position_embeddings": 256}
    assert config["max_position_embeddings"] == 1024
    meta = json.loads((out / "longrecipe.json").read_text())
    assert meta["train_config"] == {"target_length": 1024} and meta["data_provenance"] == {"source": "synthetic"}
    assert meta["rope_parameters"]["rope_type"] == "yarn" and meta["metrics"]["train/loss"] == 1.5

    again = AutoModelForCausalLM.from_pretrained(str(out))
    assert again.config.rope_parameters == model.config.rope_parameters
    assert len(AutoTokenizer.from_pretrained(str(out))) == len(tok)
    ids = torch.randint(0, 512, (2, 16), generator=torch.Generator().manual_seed(0))
    pos = torch.tensor([0, 1, 2, 3, 40, 41, 42, 300, 301, 302, 700, 701, 900, 1000, 1010, 1023]).expand(2, 16)
    mask = torch.ones_like(ids)
    model.eval()
    torch.testing.assert_close(again(input_ids=ids, position_ids=pos, attention_mask=mask).logits,
                               model(input_ids=ids, position_ids=pos, attention_mask=mask).logits, rtol=0, atol=0)


def test_export_refuses_to_overwrite_unless_asked(tmp_path, tiny_model_dir):
    base = tiny_model_dir("llama")
    cfg = {"pretrained": str(base)}
    tok = load_tokenizer(cfg)
    model = build_model(cfg, ROPE, 1024, tokenizer=tok)
    target = export_hf_model(model, tok, tmp_path / "export", train_config={"run": 1})
    with pytest.raises(FileExistsError, match="already holds a finished export; refusing to overwrite it. Pass "
                                              "overwrite=true"):
        export_hf_model(model, tok, target, train_config={"run": 2})
    assert json.loads((target / "longrecipe.json").read_text())["train_config"] == {"run": 1}
    export_hf_model(model, tok, target, train_config={"run": 2}, overwrite=True)
    assert json.loads((target / "longrecipe.json").read_text())["train_config"] == {"run": 2}


def test_train_exports_and_refuses_existing_export_before_training(tmp_path, tiny_model_dir):
    base = tiny_model_dir("mistral")
    common = [f"paths.output_dir={tmp_path / 'out'}", f"model.pretrained={base}", "base_length=64",
              "target_length=256", "token_ratio=0.25", "data.n_docs=6", "data.val_fraction=0",
              "trainer.max_steps=2", "trainer.enable_progress_bar=false", "logger=none", "model=tiny_mistral"]
    result = train(compose("train", common + [f"run_dir={tmp_path / 'a'}"]))
    export = tmp_path / "a" / "export"
    assert result["export_dir"] == str(export)
    meta = json.loads((export / "longrecipe.json").read_text())
    assert meta["train_config"]["model"]["pretrained"] == str(base)
    assert meta["data_provenance"]["source"] == "synthetic" and meta["metrics"]["global_step"] == 2
    from transformers import AutoModelForCausalLM

    reloaded = AutoModelForCausalLM.from_pretrained(str(export))
    assert reloaded.config.max_position_embeddings == 256 and reloaded.config.model_type == "mistral"
    # a second run pointed at the finished export fails at once, before any training
    with pytest.raises(FileExistsError, match="already holds a finished export"):
        train(compose("train", common + [f"run_dir={tmp_path / 'b'}", f"export_dir={export}"]))
    assert not (tmp_path / "b" / "train_log.jsonl").exists()


def test_export_overwrite_never_replaces_a_folder_that_is_not_an_export(tmp_path, tiny_model_dir):
    base = tiny_model_dir("llama")
    cfg = {"pretrained": str(base)}
    tok = load_tokenizer(cfg)
    model = build_model(cfg, ROPE, 1024, tokenizer=tok)
    precious = tmp_path / "data"
    precious.mkdir()
    (precious / "notes.txt").write_text("keep me")
    with pytest.raises(FileExistsError, match="is not a longrecipe export .*overwrite=true only replaces"):
        export_hf_model(model, tok, precious, overwrite=True)
    assert (precious / "notes.txt").read_text() == "keep me"
    empty = tmp_path / "empty"
    empty.mkdir()
    assert (export_hf_model(model, tok, empty, overwrite=True) / "longrecipe.json").is_file()


@pytest.mark.parametrize("export_rel", [".", ".."])
def test_train_refuses_export_dir_that_is_or_contains_run_dir(tmp_path, export_rel):
    run_dir = tmp_path / "runs" / "a"
    cfg = compose("train", [f"run_dir={run_dir}", f"export_dir={(run_dir / export_rel).resolve()}", "overwrite=true"])
    with pytest.raises(ValueError, match="export_dir=.* must not be run_dir=.* or a parent of it"):
        train(cfg)
    assert not run_dir.exists()


def test_models_with_logit_scaling_are_refused_by_name(tiny_model_dir):
    base = tiny_model_dir("llama", logit_scale=2.0)
    cfg = {"pretrained": str(base), "attn_implementation": "sdpa"}
    with pytest.raises(ValueError, match=r"model.pretrained: model_type 'llama' scales its logits \(logit_scale=2.0\)"):
        build_model(cfg, ROPE, 1024, tokenizer=load_tokenizer(cfg))
