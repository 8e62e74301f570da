"""Train a small byte-level BPE tokenizer locally and wrap it as an HF fast tokenizer."""

from __future__ import annotations

from collections.abc import Iterable
from pathlib import Path

SPECIAL_TOKENS = {"bos_token": "<s>", "eos_token": "</s>", "pad_token": "<pad>", "unk_token": "<unk>"}


def train_tokenizer(texts: Iterable[str], *, vocab_size: int = 512, save_dir: str | Path | None = None):
    """Byte-level BPE (GPT-2 style pre-tokenisation, offsets kept) trained on ``texts``.

    Returns a ``transformers.PreTrainedTokenizerFast``; saved with ``save_pretrained`` when
    ``save_dir`` is given so ``AutoTokenizer.from_pretrained(save_dir)`` loads it.
    """
    from tokenizers import Tokenizer, decoders, models, pre_tokenizers, processors, trainers
    from transformers import PreTrainedTokenizerFast

    if vocab_size < 300:
        raise ValueError(f"vocab_size must be >= 300 (256 bytes + specials + merges), got {vocab_size}")
    tok = Tokenizer(models.BPE(unk_token=SPECIAL_TOKENS["unk_token"]))
    tok.pre_tokenizer = pre_tokenizers.ByteLevel(add_prefix_space=False)
    tok.decoder = decoders.ByteLevel()
    tok.post_processor = processors.ByteLevel(trim_offsets=True)
    trainer = trainers.BpeTrainer(
        vocab_size=vocab_size,
        special_tokens=list(SPECIAL_TOKENS.values()),
        initial_alphabet=pre_tokenizers.ByteLevel.alphabet(),
        show_progress=False,
    )
    tok.train_from_iterator(texts, trainer=trainer)
    fast = PreTrainedTokenizerFast(tokenizer_object=tok, **SPECIAL_TOKENS)
    fast.model_max_length = 1_000_000_000
    if save_dir is not None:
        fast.save_pretrained(str(save_dir))
    return fast


def cached_tokenizer(cache_dir: str | Path, *, n_docs: int = 200, vocab_size: int = 512, seed: int = 0):
    """Load the tiny tokenizer from ``cache_dir``, training it on the synthetic corpus first if absent.

    The folder is written atomically, so concurrent or interrupted runs never see half a tokenizer.
    """
    from transformers import AutoTokenizer

    from longrecipe.tiny.corpus import synthetic_documents
    from longrecipe.utils.io import atomic_dir

    cache_dir = Path(cache_dir)
    if not (cache_dir / "tokenizer.json").is_file():
        try:
            with atomic_dir(cache_dir) as tmp:
                train_tokenizer(synthetic_documents(n_docs, seed=seed), vocab_size=vocab_size, save_dir=tmp)
        except FileExistsError:
            if not (cache_dir / "tokenizer.json").is_file():
                raise
    return AutoTokenizer.from_pretrained(str(cache_dir))
