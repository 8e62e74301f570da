"""Shared fixtures: a locally trained tokenizer, tiny model dirs, the shared corpora."""

from __future__ import annotations

import os
from pathlib import Path

import pytest

os.environ.setdefault("TOKENIZERS_PARALLELISM", "false")
os.environ.setdefault("HF_HUB_OFFLINE", "1")
os.environ.setdefault("HF_DATASETS_OFFLINE", "1")
os.environ.setdefault("WANDB_MODE", "offline")

REPO_ROOT = Path(__file__).resolve().parents[1]
SHARED = REPO_ROOT.parent / "shared"
SHARED_NLTK = SHARED / "nltk_data"
if SHARED_NLTK.is_dir():
    os.environ.setdefault("NLTK_DATA", str(SHARED_NLTK))


@pytest.fixture(scope="session")
def synthetic_docs() -> list[str]:
    from longrecipe.tiny import synthetic_documents

    return synthetic_documents(40, seed=1234)


@pytest.fixture(scope="session")
def tiny_tokenizer_dir(tmp_path_factory, synthetic_docs) -> Path:
    """A byte-level BPE tokenizer (vocab 512) trained on the synthetic corpus, saved to disk."""
    from longrecipe.tiny import train_tokenizer

    out = tmp_path_factory.mktemp("tokenizer")
    train_tokenizer(synthetic_docs, vocab_size=512, save_dir=out)
    return out


@pytest.fixture(scope="session")
def tiny_tokenizer(tiny_tokenizer_dir):
    from transformers import AutoTokenizer

    return AutoTokenizer.from_pretrained(str(tiny_tokenizer_dir))


@pytest.fixture(scope="session")
def state_union_dir() -> Path:
    path = SHARED_NLTK / "corpora" / "state_union"
    if not path.is_dir():
        pytest.skip(f"shared corpus not present at {path}")
    return path


@pytest.fixture()
def tiny_model_dir(tmp_path, tiny_tokenizer_dir):
    """Factory: save a seeded tiny model of ``arch`` (+ the tiny tokenizer) and return its folder."""

    def make(arch: str = "llama", seed: int = 0, **config_kwargs) -> Path:
        import torch
        from transformers import AutoModelForCausalLM, AutoTokenizer

        from longrecipe.tiny import tiny_model_config

        torch.manual_seed(seed)
        model = AutoModelForCausalLM.from_config(tiny_model_config(arch, **config_kwargs))
        out = tmp_path / f"tiny-{arch}-{seed}"
        model.save_pretrained(str(out))
        AutoTokenizer.from_pretrained(str(tiny_tokenizer_dir)).save_pretrained(str(out))
        return out

    return make
