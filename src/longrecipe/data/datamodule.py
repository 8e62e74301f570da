"""``LongContextDataModule``: long documents -> fixed-length samples with simulated long positions.

Pipeline (``setup``): read documents (:mod:`longrecipe.data.readers`) -> split documents into
train / validation (seeded) -> tokenise with ``datasets.map`` (arrow cache) -> pack each split into
``sample_length`` windows (:mod:`longrecipe.data.samples`). Or, with ``format=prepared``, load a
saved prepared dataset whose rows are the samples.

Positions are drawn per sample when the sample is loaded, with ``sample_rng(seed, epoch, index)``;
the epoch travels inside the sampler's ``(epoch, index)`` keys (see
:mod:`longrecipe.data.sampler`), so workers, persistent workers and resumed runs all agree.
Validation uses held-out samples with FLT positions ``0..T-1`` (deterministic).

Resume: the DataModule counts training samples as batches reach the model
(``on_before_batch_transfer``) and saves ``{epoch, consumed}`` through ``state_dict`` (Lightning
stores it in checkpoints); ``load_state_dict`` makes the next epoch iteration start at exactly the
next sample.
"""

from __future__ import annotations

import math
import os
from pathlib import Path
from typing import Any

import lightning as L
import numpy as np
from torch.utils.data import DataLoader

from longrecipe.data.collate import LongContextCollator, PositionedSamples
from longrecipe.data.readers import ReadStats, check_encoding_errors, load_documents_dataset
from longrecipe.data.sampler import ResumableDataLoader, ResumableDistributedSampler
from longrecipe.data.samples import (
    check_short_docs,
    pack_documents,
    packed_to_dataset,
    token_arrays,
    tokenize_documents,
)
from longrecipe.utils.logging import get_logger

log = get_logger(__name__)

DATA_FORMATS = ("auto", "txt", "jsonl", "parquet", "hf", "prepared")
_SPLIT_STREAM = 2  # RNG stream for the train/validation document split


def resolve_sample_length(sample_length: int | None, token_ratio: float | None, target_length: int) -> int:
    """``sample_length`` or ``round(token_ratio * target_length)``, validated against ``target_length``."""
    if isinstance(target_length, bool) or not isinstance(target_length, int) or target_length < 2:
        raise ValueError(f"data.target_length must be an integer >= 2, got {target_length!r}; set target_length "
                         "(top-level key) to the extended context window, e.g. target_length=81920")
    if sample_length is None:
        if token_ratio is None or not 0.0 < float(token_ratio) <= 1.0:
            raise ValueError(f"token_ratio must be in (0, 1], got {token_ratio!r}; it is the sample length as a "
                             "fraction of target_length (paper: 0.3) -- or set data.sample_length explicitly")
        sample_length = round(float(token_ratio) * target_length)
    if isinstance(sample_length, bool) or not isinstance(sample_length, int) or sample_length < 2:
        raise ValueError(f"data.sample_length must be an integer >= 2, got {sample_length!r}; "
                         "set it (or token_ratio) so that samples hold at least 2 tokens")
    if sample_length > target_length:
        raise ValueError(f"data.sample_length ({sample_length}) must be <= data.target_length ({target_length}): "
                         "positions of a sample must fit the target window; lower sample_length / token_ratio "
                         "or raise target_length")
    return sample_length


def _check_int(name: str, value: Any, lo: int, *, allow_none: bool = False, hint: str = "") -> None:
    if value is None and allow_none:
        return
    if isinstance(value, bool) or not isinstance(value, int) or value < lo:
        none = " or null" if allow_none else ""
        raise ValueError(f"data.{name} must be an integer >= {lo}{none}, got {value!r}{hint}")


class LongContextDataModule(L.LightningDataModule):
    """Long-context training data (issue 2, part 4). See ``docs/data.md``.

    Args:
        tokenizer: an HF tokenizer or a path/name for ``AutoTokenizer.from_pretrained``
            (may be None only with ``format=prepared`` and a scheme that needs no tokenizer).
        position: a position scheme ``f(input_ids, rng, *, segment_starts=None)`` (``bind_tokenizer``
            is called when present), a config node with ``_target_`` (instantiated), or None for FLT.
        source: ``synthetic``, a file / folder of ``.txt``/``.jsonl``/``.parquet``, a saved HF dataset
            folder, an HF dataset name, or (``format=prepared``) a prepared dataset folder.
        target_length / sample_length / token_ratio: sample length is ``sample_length`` or
            ``round(token_ratio * target_length)``; positions stay ``< target_length``.
        short_docs: ``concat`` (join with EOS) or ``drop`` (keep documents >= sample_length).
        val_fraction: fraction of documents (prepared: rows) held out for validation.
        drop_last: DDP uneven split -- drop the remainder (True) or pad by repeating samples (False).
        use_segment_starts: pass ``segment_starts`` to the scheme (default: only for ``prepared``).
    """

    def __init__(
        self,
        tokenizer: Any = None,
        position: Any = None,
        *,
        target_length: int,
        source: str | os.PathLike = "synthetic",
        format: str = "auto",  # noqa: A002 - config key name
        text_field: str = "text",
        id_field: str | None = None,
        split: str = "train",
        glob: str | None = None,
        n_docs: int = 200,
        encoding_errors: str = "replace",
        sample_length: int | None = None,
        token_ratio: float | None = 0.3,
        short_docs: str = "concat",
        use_segment_starts: bool | None = None,
        max_samples: int | None = None,
        max_val_samples: int | None = None,
        val_fraction: float = 0.05,
        batch_size: int = 1,
        val_batch_size: int | None = None,
        num_workers: int = 0,
        num_proc: int | None = 1,
        cache_dir: str | os.PathLike | None = None,
        seed: int = 0,
        shuffle: bool = True,
        drop_last: bool = False,
        pin_memory: bool = False,
    ) -> None:
        super().__init__()
        if format not in DATA_FORMATS:
            raise ValueError(f"data.format must be one of {list(DATA_FORMATS)}, got {format!r}; 'auto' picks the "
                             "reader from the file suffixes, 'prepared' reads a longrecipe-prepare folder")
        self.sample_length = resolve_sample_length(sample_length, token_ratio, target_length)
        self.target_length = target_length
        check_short_docs(short_docs)
        check_encoding_errors(encoding_errors)
        _check_int("batch_size", batch_size, 1)
        _check_int("val_batch_size", val_batch_size, 1, allow_none=True)
        _check_int("num_workers", num_workers, 0)
        _check_int("num_proc", num_proc, 1, allow_none=True)
        _check_int("seed", seed, 0)
        _check_int("n_docs", n_docs, 1)
        _check_int("max_samples", max_samples, 1, allow_none=True)
        _check_int("max_val_samples", max_val_samples, 1, allow_none=True)
        if isinstance(val_fraction, bool) or not isinstance(val_fraction, (int, float)) or not 0 <= val_fraction < 1:
            raise ValueError(f"data.val_fraction must be in [0, 1), got {val_fraction!r}; "
                             "use 0 to disable validation or e.g. 0.05 to hold out 5% of the documents")
        if source is None or str(source).strip() == "":
            raise ValueError("data.source is empty; set it to 'synthetic', a folder/file of documents, "
                             "an HF dataset name, or a prepared dataset folder")
        self.source = str(source)
        self.format = format
        self.text_field, self.id_field, self.split, self.glob = text_field, id_field, split, glob
        self.n_docs, self.encoding_errors = n_docs, encoding_errors
        self.token_ratio, self.short_docs = token_ratio, short_docs
        self.use_segment_starts = (format == "prepared") if use_segment_starts is None else bool(use_segment_starts)
        self.max_samples, self.max_val_samples, self.val_fraction = max_samples, max_val_samples, float(val_fraction)
        self.batch_size, self.val_batch_size = batch_size, val_batch_size or batch_size
        self.num_workers, self.num_proc = num_workers, num_proc
        self.cache_dir = str(Path(cache_dir).expanduser()) if cache_dir is not None else None
        self.seed, self.shuffle, self.drop_last, self.pin_memory = seed, bool(shuffle), bool(drop_last), pin_memory

        self.tokenizer = self._load_tokenizer(tokenizer)
        self.position = self._bind_position(position)
        self.stats: dict[str, Any] = {}
        self.train_samples = None  # prepared-format datasets.Dataset
        self.val_samples = None
        self._train_sampler: ResumableDistributedSampler | None = None
        self._pending_state: dict[str, Any] | None = None

    # ---------------------------------------------------------------------------------------------
    def _load_tokenizer(self, tokenizer: Any) -> Any:
        if tokenizer is None:
            if self.format != "prepared":
                raise ValueError("LongContextDataModule needs a tokenizer (object or path) to tokenise "
                                 f"data.source={self.source!r}; pass tokenizer=... (only format=prepared works without)")
            return None
        if isinstance(tokenizer, (str, os.PathLike)):
            from transformers import AutoTokenizer

            return AutoTokenizer.from_pretrained(str(tokenizer))
        return tokenizer

    def _bind_position(self, position: Any) -> Any:
        if position is None:
            return None
        if not callable(position):
            from omegaconf import DictConfig

            if isinstance(position, (dict, DictConfig)) and "_target_" in position:
                from hydra.utils import instantiate

                position = instantiate(position)
            else:
                raise ValueError(f"position must be a scheme callable f(input_ids, rng, *, segment_starts=None), a "
                                 f"config with _target_, or None (FLT); got {type(position).__name__}")
        if hasattr(position, "bind_tokenizer"):
            if self.tokenizer is None:
                raise ValueError(f"position scheme {type(position).__name__} needs a tokenizer (bind_tokenizer) "
                                 "but none was given; pass tokenizer=...")
            position = position.bind_tokenizer(self.tokenizer)
        return position

    @property
    def pad_token_id(self) -> int:
        tok = self.tokenizer
        if tok is None:
            return 0
        pad = tok.pad_token_id if tok.pad_token_id is not None else tok.eos_token_id
        return int(pad) if pad is not None else 0

    # --- building ----------------------------------------------------------------------------------
    def prepare_data(self) -> None:
        """Fill the arrow caches once (Lightning calls this on local rank 0 before ``setup`` everywhere)."""
        trainer = getattr(self, "trainer", None)
        if self.format != "prepared" and trainer is not None and trainer.world_size > 1:
            docs = load_documents_dataset(**self._reader_kwargs())
            tokenize_documents(docs, self.tokenizer, num_proc=self.num_proc)

    def setup(self, stage: str | None = None) -> None:
        if self.train_samples is not None:
            return
        if self.format == "prepared":
            self._setup_prepared()
        else:
            self._setup_documents()
        log.info("data: %d train / %d validation samples of %d tokens (target_length=%d, short_docs=%s)",
                 len(self.train_samples), len(self.val_samples) if self.val_samples is not None else 0,
                 self.sample_length, self.target_length, self.short_docs)

    def _reader_kwargs(self) -> dict[str, Any]:
        return dict(source=self.source, fmt=self.format, text_field=self.text_field, id_field=self.id_field,
                    encoding_errors=self.encoding_errors, glob=self.glob, split=self.split, cache_dir=self.cache_dir,
                    n_docs=self.n_docs, seed=self.seed)

    def _setup_documents(self) -> None:
        read_stats = ReadStats()
        docs = load_documents_dataset(**self._reader_kwargs(), stats=read_stats)
        tokenized = tokenize_documents(docs, self.tokenizer, num_proc=self.num_proc)
        lengths, tokens = token_arrays(tokenized)
        doc_ids = np.asarray(tokenized.with_format("arrow")[:].column("id").to_pylist() if len(tokenized) else [],
                             dtype=object)
        n_docs = lengths.size
        n_val = 0
        if self.val_fraction > 0 and n_docs >= 2:
            n_val = min(max(1, round(self.val_fraction * n_docs)), n_docs - 1)
        rng = np.random.default_rng(np.random.SeedSequence([self.seed, 0, _SPLIT_STREAM]))
        is_val = np.zeros(n_docs, dtype=bool)
        is_val[rng.permutation(n_docs)[:n_val]] = True
        eos = self.tokenizer.eos_token_id
        packs = {}
        for name, chosen in (("train", ~is_val), ("val", is_val)):
            token_mask = np.repeat(chosen, lengths)
            packs[name] = pack_documents(lengths[chosen], tokens[token_mask], sample_length=self.sample_length,
                                         short_docs=self.short_docs, eos_token_id=eos)
            packs[name] = (packs[name], doc_ids[chosen])
        train_pack, train_ids = packs["train"]
        if len(train_pack) == 0:
            raise ValueError(
                f"data.source={self.source!r} gives no training sample: {int(lengths[~is_val].sum())} tokens in "
                f"{int((~is_val).sum())} training documents, data.sample_length={self.sample_length}, "
                f"data.short_docs={self.short_docs!r}; add documents, lower sample_length / token_ratio"
                + (", or use short_docs=concat" if self.short_docs == "drop" else "")
            )
        val_pack, val_ids = packs["val"]
        self.train_samples = self._cap(packed_to_dataset(train_pack, train_ids), self.max_samples)
        self.val_samples = self._cap(packed_to_dataset(val_pack, val_ids), self.max_val_samples)
        if n_val and len(self.val_samples) == 0:
            log.warning("data: the %d validation documents (%d tokens) fill no sample of %d tokens; "
                        "validation is disabled (raise data.val_fraction to hold out more)",
                        n_val, int(lengths[is_val].sum()), self.sample_length)
        self.stats = {
            "read": read_stats.as_dict(),
            "tokens": int(lengths.sum()),
            "train_documents": int((~is_val).sum()),
            "val_documents": int(n_val),
            "train_packing": train_pack.stats,
            "val_packing": val_pack.stats,
            "train_samples": len(self.train_samples),
            "val_samples": len(self.val_samples),
        }
        log.info("data: packed %d tokens of %d documents (%d dropped as shorter than a sample, %d tail tokens "
                 "dropped)", self.stats["tokens"], n_docs,
                 train_pack.stats["short_docs_dropped"] + val_pack.stats["short_docs_dropped"],
                 train_pack.stats["tail_tokens_dropped"] + val_pack.stats["tail_tokens_dropped"])

    def _setup_prepared(self) -> None:
        import datasets
        import pyarrow.compute as pc

        path = Path(self.source).expanduser()
        if not path.is_dir():
            raise ValueError(f"data.source {self.source!r} does not exist (looked for {path.resolve()}); "
                             "with data.format=prepared give a folder written by longrecipe-prepare (save_to_disk)")
        loaded = datasets.load_from_disk(str(path))
        if isinstance(loaded, datasets.DatasetDict):
            if self.split not in loaded:
                raise ValueError(f"data.split={self.split!r} not in {path} (splits: {list(loaded)}); set data.split")
            loaded = loaded[self.split]
        needed = ["input_ids"] + (["segment_starts"] if self.use_segment_starts else [])
        missing = [c for c in needed if c not in loaded.column_names]
        if missing:
            raise ValueError(f"prepared dataset {path} lacks columns {missing} (has {loaded.column_names}); the "
                             "prepared format needs input_ids, segment_starts, doc_ids (or set "
                             "data.use_segment_starts=false)")
        if len(loaded) == 0:
            raise ValueError(f"prepared dataset {path} has no rows; re-run longrecipe-prepare")
        lengths = np.asarray(pc.list_value_length(loaded.with_format("arrow")[:].column("input_ids")).to_numpy())
        if lengths.max() > self.target_length or lengths.min() < 1:
            raise ValueError(f"prepared dataset {path} has rows of {int(lengths.min())}..{int(lengths.max())} tokens; "
                             f"each must be 1..data.target_length ({self.target_length}); re-prepare with a shorter "
                             "sample length or raise target_length")
        n = len(loaded)
        n_val = min(max(1, round(self.val_fraction * n)), n - 1) if self.val_fraction > 0 and n >= 2 else 0
        rng = np.random.default_rng(np.random.SeedSequence([self.seed, 0, _SPLIT_STREAM]))
        perm = rng.permutation(n)
        val_rows, train_rows = np.sort(perm[:n_val]), np.sort(perm[n_val:])
        self.train_samples = self._cap(loaded.select(train_rows), self.max_samples)
        self.val_samples = self._cap(loaded.select(val_rows), self.max_val_samples)
        self.stats = {"prepared_rows": n, "train_samples": len(self.train_samples),
                      "val_samples": len(self.val_samples), "tokens": int(lengths.sum())}

    @staticmethod
    def _cap(ds: Any, limit: int | None) -> Any:
        return ds.select(range(limit)) if limit is not None and len(ds) > limit else ds

    # --- dataloaders -------------------------------------------------------------------------------
    def _world(self) -> tuple[int, int]:
        """``(rank, num_replicas)`` of the *data-parallel* group: ranks of one sequence-parallel group
        (DeepSpeed-Ulysses) share their samples, so they count as one replica."""
        from longrecipe.parallel.groups import current_sequence_parallel

        sp = current_sequence_parallel()
        if sp is not None:
            return int(sp.dp_rank), int(sp.dp_size)
        trainer = getattr(self, "trainer", None)
        if trainer is not None:
            kwargs = trainer.distributed_sampler_kwargs or {}
            return int(kwargs.get("rank", 0)), int(kwargs.get("num_replicas", 1))
        import torch.distributed as dist

        if dist.is_available() and dist.is_initialized():
            return dist.get_rank(), dist.get_world_size()
        return 0, 1

    def train_dataset(self) -> PositionedSamples:
        self.setup("fit")
        return PositionedSamples(self.train_samples, self.position, seed=self.seed, target_length=self.target_length,
                                 use_segment_starts=self.use_segment_starts)

    def train_sampler(self) -> ResumableDistributedSampler:
        """The (single) training sampler; rebuilt only if the rank / world size changed."""
        self.setup("fit")
        rank, world = self._world()
        sampler = self._train_sampler
        if sampler is None or (sampler.rank, sampler.num_replicas) != (rank, world):
            sampler = ResumableDistributedSampler(range(len(self.train_samples)), seed=self.seed, shuffle=self.shuffle,
                                                  num_replicas=world, rank=rank, drop_last=self.drop_last)
            if self._train_sampler is not None:
                sampler.load_state_dict(self._train_sampler.state_dict())
            self._train_sampler = sampler
        if self._pending_state is not None:
            sampler.load_state_dict(self._pending_state)
            self._pending_state = None
        return sampler

    def train_dataloader(self) -> ResumableDataLoader:
        return ResumableDataLoader(self.train_dataset(), batch_size=self.batch_size, sampler=self.train_sampler(),
                          collate_fn=LongContextCollator(self.pad_token_id, self.target_length - 1), num_workers=self.num_workers,
                          pin_memory=self.pin_memory, persistent_workers=self.num_workers > 0, drop_last=False)

    def val_dataset(self) -> PositionedSamples:
        self.setup("validate")
        return PositionedSamples(self.val_samples, None, seed=self.seed, target_length=self.target_length,
                                 use_segment_starts=False)

    def val_dataloader(self) -> DataLoader | list:
        ds = self.val_dataset()
        if len(ds) == 0:
            return []
        return DataLoader(ds, batch_size=self.val_batch_size, shuffle=False,
                          collate_fn=LongContextCollator(self.pad_token_id, self.target_length - 1), num_workers=self.num_workers,
                          pin_memory=self.pin_memory)

    # --- progress & resume ----------------------------------------------------------------------------
    def set_epoch(self, epoch: int) -> None:
        """For hand-written loops (Lightning calls ``set_epoch`` on the sampler itself)."""
        self.train_sampler().set_epoch(epoch)

    def mark_consumed(self, batch_size: int) -> None:
        """Record one training batch of ``batch_size`` samples per rank as delivered to the model."""
        _, world = self._world()
        self.train_sampler().mark_consumed(batch_size * world)

    def on_before_batch_transfer(self, batch: Any, dataloader_idx: int) -> Any:
        trainer = getattr(self, "trainer", None)
        if trainer is not None and trainer.training and self._train_sampler is not None and isinstance(batch, dict):
            self.mark_consumed(int(batch["input_ids"].shape[0]))
        return batch

    def state_dict(self) -> dict[str, Any]:
        if self._train_sampler is not None:
            return {"train_sampler": self._train_sampler.state_dict()}
        if self._pending_state is not None:
            return {"train_sampler": dict(self._pending_state)}
        return {}

    def load_state_dict(self, state_dict: dict[str, Any]) -> None:
        state = state_dict.get("train_sampler")
        if state is None:
            return
        if self._train_sampler is not None:
            self._train_sampler.load_state_dict(state)
        else:
            self._pending_state = dict(state)

    # --- provenance ---------------------------------------------------------------------------------------
    def provenance(self) -> dict[str, Any]:
        """What the samples were built from (for ``longrecipe.json`` / run folders)."""
        return {
            "source": self.source, "format": self.format, "text_field": self.text_field,
            "sample_length": self.sample_length, "target_length": self.target_length,
            "token_ratio": self.token_ratio, "short_docs": self.short_docs, "seed": self.seed,
            "encoding_errors": self.encoding_errors, "val_fraction": self.val_fraction,
            "n_docs": self.n_docs if self.source == "synthetic" else None,
            "position": type(self.position).__name__ if self.position is not None else "flt",
            "tokenizer": getattr(self.tokenizer, "name_or_path", None),
            "stats": self.stats,
            "steps_per_epoch_hint": math.ceil(len(self.train_samples) / self.batch_size)
            if self.train_samples is not None else None,
        }
