"""Tiny, fully local building blocks: a generated corpus, a locally trained tokenizer and
tiny Llama / Mistral / Qwen2 configs. Used by the tests and the CPU demo; no hub access."""

from longrecipe.tiny.corpus import synthetic_documents
from longrecipe.tiny.models import TINY_ARCHS, tiny_model_config
from longrecipe.tiny.tokenizer import train_tokenizer

__all__ = ["TINY_ARCHS", "synthetic_documents", "tiny_model_config", "train_tokenizer"]
