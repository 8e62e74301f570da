"""A tiny model trained to copy beats an untrained one through the real generation + scoring path."""

from __future__ import annotations

import numpy as np
import pytest
import torch

from longrecipe.evaluation.generation import generate_batched, prepare_tokenizer
from longrecipe.evaluation.metrics import score_ruler

KEYS = ["apple", "river", "stone", "cloud"]


def _sample(rng: np.random.Generator) -> tuple[str, str]:
    key, value = KEYS[rng.integers(len(KEYS))], str(int(rng.integers(1000, 10000)))
    return f"The {key} number is {value}. The {key} number is", value


def _score(model, tok, samples) -> float:
    outs = generate_batched(model, tok, [tok(p)["input_ids"] for p, _ in samples], max_new_tokens=6,
                            batch_size=8, progress=False)
    return 100 * float(np.mean([score_ruler("string_match_all", o["prediction"], [v])
                                for o, (_, v) in zip(outs, samples)]))


@pytest.mark.slow
def test_copy_trained_model_beats_random(tiny_tokenizer):
    from transformers import AutoModelForCausalLM

    from longrecipe.tiny import tiny_model_config

    old_threads = torch.get_num_threads()
    torch.set_num_threads(1)
    try:
        prepare_tokenizer(tiny_tokenizer)
        torch.manual_seed(0)
        untrained = AutoModelForCausalLM.from_config(tiny_model_config("llama")).eval()
        torch.manual_seed(0)
        model = AutoModelForCausalLM.from_config(tiny_model_config("llama"))
        opt = torch.optim.AdamW(model.parameters(), lr=5e-3)
        rng = np.random.default_rng(0)
        for _ in range(600):  # ~0.1-0.2 s/step on one core
            batch = []
            for _ in range(32):
                prompt, value = _sample(rng)
                p, a = tiny_tokenizer(prompt)["input_ids"], tiny_tokenizer(f" {value}.")["input_ids"]
                batch.append((p + a, [-100] * len(p) + a))
            width = max(len(x) for x, _ in batch)
            ids = torch.full((32, width), tiny_tokenizer.pad_token_id)
            labels = torch.full((32, width), -100)
            mask = torch.zeros((32, width), dtype=torch.long)
            for r, (x, y) in enumerate(batch):
                ids[r, : len(x)], labels[r, : len(y)], mask[r, : len(x)] = torch.tensor(x), torch.tensor(y), 1
            loss = model(input_ids=ids, attention_mask=mask, labels=labels).loss
            opt.zero_grad()
            loss.backward()
            opt.step()
        model.eval()
        held_out = [_sample(np.random.default_rng(99 + i)) for i in range(24)]
        trained_score, random_score = _score(model, tiny_tokenizer, held_out), _score(untrained, tiny_tokenizer, held_out)
        assert trained_score > random_score
        assert trained_score >= 10.0  # measured: 16.7 after 600 steps (untrained: 0.0)
    finally:
        torch.set_num_threads(old_threads)
