"""Replay data: formats, labels, budget, packing, and exact document isolation of packed batches."""

from __future__ import annotations

import json

import numpy as np
import pytest
import torch

from longrecipe.config import compose
from longrecipe.data.replay import (
    IGNORE_INDEX,
    Example,
    ReplayDataModule,
    collate_packed,
    encode_turns,
    flash_attention_kwargs,
    pack_examples,
    read_records,
    replay_token_budget,
    resolve_mask_format,
    select_budget,
    synthetic_instructions,
    text_examples,
    to_turns,
)


def _ex(ids, labels=None):
    ids = np.asarray(ids, dtype=np.int64)
    return Example(ids, ids.copy() if labels is None else np.asarray(labels, dtype=np.int64))


# ---------------------------------------------------------------- formats
def test_to_turns_formats():
    assert to_turns({"instruction": "Add 2+2", "output": "4"}) == [("user", "Add 2+2"), ("assistant", "4")]
    assert to_turns({"problem": "Write f", "solution": "def f(): pass", "lang": "py"}) == [
        ("user", "Write f"), ("assistant", "def f(): pass")]
    conv = {"conversations": [{"from": "human", "value": "hi"}, {"from": "gpt", "value": "hello"},
                              {"from": "human", "value": "again"}, {"from": "gpt", "value": "sure"}]}
    assert to_turns(conv) == [("user", "hi"), ("assistant", "hello"), ("user", "again"), ("assistant", "sure")]
    assert to_turns({"q": "x", "a": "y"}, fields={"prompt": "q", "response": "a"}) == [("user", "x"), ("assistant", "y")]
    with pytest.raises(ValueError, match=r"cannot tell the format of a record with keys \['a', 'q'\]"):
        to_turns({"q": "x", "a": "y"})
    with pytest.raises(ValueError, match="record lacks the fields prompt='instruction'"):
        to_turns({"problem": "x"}, format="wizardlm")


def test_read_records_jsonl_json_and_datasets(tmp_path):
    from datasets import Dataset

    rows = [{"instruction": f"q{i}", "output": f"a{i}"} for i in range(3)]
    (tmp_path / "w.jsonl").write_text("\n".join(json.dumps(r) for r in rows) + "\n")
    (tmp_path / "m.json").write_text(json.dumps([{"problem": "p", "solution": "s"}]))
    assert read_records(tmp_path / "w.jsonl") == rows
    assert len(read_records(tmp_path)) == 4
    Dataset.from_list(rows).save_to_disk(str(tmp_path / "ds"))
    assert read_records(tmp_path / "ds") == rows
    with pytest.raises(ValueError, match="data.source='/nope' does not exist"):
        read_records("/nope")
    syn = synthetic_instructions(20, seed=3)
    assert syn == synthetic_instructions(20, seed=3) and syn != synthetic_instructions(20, seed=4)
    assert all(set(r) == {"instruction", "output"} for r in syn)


# ---------------------------------------------------------------- labels
def test_encode_plain_layout_labels(tiny_tokenizer):
    tok = tiny_tokenizer
    ex = encode_turns(tok, [("user", "What is 2 + 3?"), ("assistant", "5.")], use_chat_template=False)
    head = tok("### Instruction:\n", add_special_tokens=False)["input_ids"]
    body = tok("What is 2 + 3?", add_special_tokens=False)["input_ids"]
    head2 = tok("\n\n### Response:\n", add_special_tokens=False)["input_ids"]
    resp = tok("5.", add_special_tokens=False)["input_ids"] + [tok.eos_token_id]
    assert ex.input_ids.tolist() == [tok.bos_token_id] + head + body + head2 + resp
    n_prompt = 1 + len(head) + len(body) + len(head2)
    assert ex.labels.tolist() == [IGNORE_INDEX] * n_prompt + resp
    ex_all = encode_turns(tok, [("user", "What is 2 + 3?"), ("assistant", "5.")], loss_on="all",
                          use_chat_template=False)
    assert ex_all.labels.tolist() == ex_all.input_ids.tolist()
    with pytest.raises(ValueError, match=r"data.loss_on must be one of \['response', 'all'\]"):
        encode_turns(tok, [("user", "x")], loss_on="prompt")


def test_encode_with_chat_template_masks_only_assistant(tiny_tokenizer_dir):
    from transformers import AutoTokenizer

    tok = AutoTokenizer.from_pretrained(str(tiny_tokenizer_dir))
    tok.chat_template = ("{% for m in messages %}<|{{ m['role'] }}|>{{ m['content'] }}</s>{% endfor %}"
                         "{% if add_generation_prompt %}<|assistant|>{% endif %}")
    turns = [("user", "hi"), ("assistant", "hello"), ("user", "again"), ("assistant", "sure")]
    ex = encode_turns(tok, turns)
    msgs = [{"role": r, "content": c} for r, c in turns]
    full = tok.apply_chat_template(msgs, tokenize=True, return_dict=False)
    assert ex.input_ids.tolist() == list(full)
    targets = tok.decode([t for t, lab in zip(ex.input_ids, ex.labels) if lab != IGNORE_INDEX])
    assert targets == "hello</s>sure</s>"


# ---------------------------------------------------------------- budget & packing
def test_budget_and_packing_exact():
    assert replay_token_budget(10_000, 0.05) == 500 and replay_token_budget(10_000, 0.05, max_tokens=7) == 7
    assert replay_token_budget(None, 0.05) is None
    with pytest.raises(ValueError, match=r"data.budget_fraction must be in \(0, 1\] \(paper: 0.05-0.10\)"):
        replay_token_budget(100, 1.5)
    exs = [_ex(range(n)) for n in (4, 3, 5, 2, 6)]
    chosen = select_budget(exs, 8, seed=0)
    assert sum(len(e.input_ids) for e in chosen) >= 8 and sum(len(e.input_ids) for e in chosen[:-1]) < 8
    assert sorted(len(e.input_ids) for e in select_budget(exs, None, seed=1)) == [2, 3, 4, 5, 6]
    packs = pack_examples(exs, 8)
    assert [[len(e.input_ids) for e in p] for p in packs] == [[4, 3], [5, 2], [6]]
    assert [len(p[0].input_ids) for p in pack_examples([_ex(range(12))], 8)] == [8]


def test_collate_exact_values():
    a = _ex([10, 11, 12], [IGNORE_INDEX, 11, 12])
    b = _ex([20, 21], [20, 21])
    batch = collate_packed([[a, b], [b]], pad_token_id=2, max_length=6, mask_format="bool")
    assert batch["input_ids"].tolist() == [[10, 11, 12, 20, 21, 2], [20, 21, 2, 2, 2, 2]]
    assert batch["labels"].tolist() == [[-100, 11, 12, -100, 21, -100], [-100, 21, -100, -100, -100, -100]]
    assert batch["position_ids"].tolist() == [[0, 1, 2, 0, 1, 0], [0, 1, 0, 1, 2, 3]]
    assert batch["seq_lens"].tolist() == [[3, 2, 1], [2, 4, 0]]
    assert batch["cu_seqlens"].tolist() == [0, 3, 5, 6, 8, 12]
    m = batch["attention_mask"]
    assert m.shape == (2, 1, 6, 6) and m.dtype == torch.bool
    assert m[0, 0].int().tolist() == [[1, 0, 0, 0, 0, 0], [1, 1, 0, 0, 0, 0], [1, 1, 1, 0, 0, 0],
                                      [0, 0, 0, 1, 0, 0], [0, 0, 0, 1, 1, 0], [0, 0, 0, 0, 0, 1]]
    add = collate_packed([[a, b]], pad_token_id=2, max_length=6, mask_format="additive")["attention_mask"]
    assert torch.equal(add == 0, m[:1]) and add.min() == torch.finfo(torch.float32).min
    assert "attention_mask" not in collate_packed([[a]], pad_token_id=2, mask_format="none")
    assert flash_attention_kwargs(batch)["max_length_q"] == 4


def test_mask_format_resolution():
    assert resolve_mask_format("auto", "sdpa") == "bool"
    assert resolve_mask_format("auto", "eager") == "additive"
    assert resolve_mask_format("auto", "flash_attention_2") == "none"
    with pytest.raises(ValueError, match="does not isolate documents with attn_implementation=eager"):
        resolve_mask_format("bool", "eager")
    with pytest.raises(ValueError, match=r"data.mask_format must be 'auto' or one of \['bool', 'additive', 'none'\]"):
        resolve_mask_format("block", "sdpa")


# ---------------------------------------------------------------- isolation: packed == alone
@pytest.mark.parametrize("impl,fmt", [("sdpa", "auto"), ("eager", "auto"), ("sdpa", "additive"),
                                      ("sdpa", "none"), ("eager", "none")])
def test_packed_logits_equal_each_document_alone(impl, fmt):
    from transformers import AutoModelForCausalLM

    from longrecipe.tiny import tiny_model_config

    torch.manual_seed(0)
    model = AutoModelForCausalLM.from_config(tiny_model_config("llama"), attn_implementation=impl).eval()
    rng = np.random.default_rng(0)
    docs = [rng.integers(3, 500, size=n) for n in (7, 11, 5)]
    packs = [[_ex(docs[0]), _ex(docs[1]), _ex(docs[2])], [_ex(docs[2]), _ex(docs[0])]]
    batch = collate_packed(packs, pad_token_id=2, max_length=26, mask_format=resolve_mask_format(fmt, impl))
    with torch.no_grad():
        # use_cache=False as in training: without a mask, transformers only derives isolation from the
        # restarting position_ids when there is no cache object
        packed = model(input_ids=batch["input_ids"], position_ids=batch["position_ids"],
                       attention_mask=batch.get("attention_mask"), use_cache=False).logits
        alone = {i: model(input_ids=torch.tensor(d)[None], use_cache=False).logits[0] for i, d in enumerate(docs)}
    for row, order in enumerate([[0, 1, 2], [2, 0]]):
        off = 0
        for i in order:
            n = len(docs[i])
            torch.testing.assert_close(packed[row, off:off + n], alone[i], atol=2e-5, rtol=1e-4)
            off += n
    # the same documents without isolation (all-ones mask) do see each other: the test can fail
    with torch.no_grad():
        leaky = model(input_ids=batch["input_ids"], position_ids=batch["position_ids"],
                      attention_mask=torch.ones_like(batch["input_ids"]), use_cache=False).logits
    assert (leaky[0, 7:18] - alone[1]).abs().max() > 1e-3


def test_training_module_forwards_packed_batch_isolated(tiny_tokenizer):
    """Through LongContextLM's ``model_inputs`` (what training runs), packed hidden states equal per-document ones."""
    from transformers import AutoModelForCausalLM

    from longrecipe.models.module import model_inputs
    from longrecipe.tiny import tiny_model_config

    torch.manual_seed(1)
    model = AutoModelForCausalLM.from_config(tiny_model_config("llama"), attn_implementation="sdpa").eval()
    dm = ReplayDataModule(tiny_tokenizer, source="synthetic", num_synthetic=16, max_length=96, batch_size=2,
                          budget_fraction=None, use_chat_template=False)
    batch = next(iter(dm.train_dataloader()))
    base = model.base_model
    with torch.no_grad():
        packed = base(**model_inputs(batch), use_cache=False).last_hidden_state
        for row in range(batch["input_ids"].shape[0]):
            off = 0
            for n in batch["seq_lens"][row].tolist()[:-1]:  # skip the padding segment
                ids = batch["input_ids"][row, off:off + n][None]
                alone = base(input_ids=ids, use_cache=False).last_hidden_state[0]
                torch.testing.assert_close(packed[row, off:off + n], alone, atol=2e-5, rtol=1e-4)
                off += n


# ---------------------------------------------------------------- DataModule + Hydra config
def test_replay_config_composes_and_respects_budget(tiny_tokenizer, tmp_path):
    from hydra.utils import instantiate

    rows = [{"problem": f"Write a function number {i} that adds numbers.", "solution": f"def f{i}(a, b): return a + b"}
            for i in range(200)]
    (tmp_path / "magicoder.jsonl").write_text("\n".join(json.dumps(r) for r in rows))
    cfg = compose("train", ["data=replay", "~position", f"data.source={tmp_path / 'magicoder.jsonl'}",
                            "data.extension_tokens=20000", "data.budget_fraction=0.1", "data.batch_size=2"])
    assert cfg.data.max_length == cfg.base_length and cfg.data.attn_implementation == "sdpa"
    dm = instantiate(cfg.data, tokenizer=tiny_tokenizer, position=None)
    assert dm.budget == 2000 and dm.mask_format == "bool"
    n_tok = dm.num_tokens
    per_example = [len(e.input_ids) for p in dm.dataset.packs for e in p]
    assert n_tok >= 2000 and n_tok - per_example[-1] < 2000  # whole examples until the budget is reached
    batch = next(iter(dm.train_dataloader()))
    assert batch["input_ids"].shape == (2, cfg.base_length)
    assert batch["attention_mask"].shape == (2, 1, cfg.base_length, cfg.base_length)
    assert set(batch) == {"input_ids", "labels", "position_ids", "attention_mask", "seq_lens", "cu_seqlens"}
    with pytest.raises(ValueError, match=r"data.batch_size must be >= 1"):
        ReplayDataModule(tiny_tokenizer, batch_size=0)


# ---------------------------------------------------------------- pretraining-style text replay
def test_text_replay_pieces_and_records(tiny_tokenizer, tmp_path):
    ids = tiny_tokenizer("one two three four five six seven", add_special_tokens=False)["input_ids"]
    bos = tiny_tokenizer.bos_token_id
    pieces = text_examples(tiny_tokenizer, "one two three four five six seven", max_length=4)
    step = 4 - (bos is not None)
    assert [p.input_ids.tolist() for p in pieces] == [([bos] if bos is not None else []) + ids[i:i + step]
                                                     for i in range(0, len(ids), step)]
    assert all((p.labels[1:] == p.input_ids[1:]).all() and p.labels[0] == IGNORE_INDEX for p in pieces)
    (tmp_path / "a.txt").write_text("First document.")
    (tmp_path / "b.txt").write_text("Second one.")
    assert read_records(tmp_path, format="text") == [{"text": "First document."}, {"text": "Second one."}]
    with pytest.raises(ValueError, match=r"data.format=text replays plain documents: give data.source=<folder"):
        read_records("synthetic", format="text")
    with pytest.raises(ValueError, match=r"data.source='/nope' does not exist; give a folder of .txt files"):
        read_records("/nope", format="text")
    with pytest.raises(ValueError, match=r"data.max_length must be >= 2 for text replay, got 1"):
        text_examples(tiny_tokenizer, "x", max_length=1)


def test_text_replay_module_budget(tiny_tokenizer, tmp_path):
    (tmp_path / "doc.txt").write_text(" ".join(f"word{i}." for i in range(400)))
    dm = ReplayDataModule(tiny_tokenizer, source=str(tmp_path), format="text", max_length=64, max_tokens=128)
    dm.setup()
    assert all(len(e.input_ids) <= 64 for p in dm.dataset.packs for e in p)
    assert 128 <= dm.num_tokens < 128 + 64  # whole pieces until the budget
    batch = next(iter(dm.train_dataloader()))
    assert (batch["labels"] != IGNORE_INDEX).sum() > 0.9 * (batch["labels"].numel() - batch["labels"].shape[0])
