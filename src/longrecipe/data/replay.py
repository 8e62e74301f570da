"""Replay data (paper §4 "Pretraining Data Replay", §5.3): instruction data packed into short samples.

After extension the model is trained briefly (lr 5e-6) on general instruction data — the paper
uses WizardLM-evol-instruct-70k and Magicoder-OSS-Instruct-75K, 5-10% of the extension tokens —
to recover short-context abilities.

Pipeline of pure functions, wrapped by :class:`ReplayDataModule`:

1. :func:`read_records` — JSONL / JSON / HF ``datasets`` folder / ``synthetic`` records; with ``format="text"``
   plain documents instead (a ``.txt`` file or folder, read like the training corpora): pretraining-style replay,
   each document cut into pieces of ``max_length`` tokens with the loss on every token (:func:`text_examples`);
2. :func:`to_turns` — WizardLM ``{"instruction","output"}``, ``{"conversations":[{"from","value"}]}``,
   Magicoder ``{"problem","solution"}`` or any configured field mapping -> ``[(role, text), ...]``;
3. :func:`encode_turns` — token ids + labels (``-100`` on prompt tokens when ``loss_on="response"``),
   through the tokenizer's chat template when it has one, a plain ``### Instruction/### Response``
   layout otherwise;
4. :func:`select_budget` — seeded shuffle, then examples until the token budget
   (``budget_fraction`` × extension tokens, or ``max_tokens``) is reached;
5. :func:`pack_examples` — greedy packing of whole examples into samples of ``max_length`` tokens;
6. :func:`collate_packed` — the batch: ``input_ids``, ``labels``, ``position_ids`` restarting at 0
   in every packed document, and document isolation:

   * ``attention_mask``: a block-diagonal causal mask ``[B, 1, T, T]`` — boolean (``True`` = may
     attend; for ``sdpa``) or additive float (0 / dtype-min; for ``eager``) — which transformers
     passes to the attention kernel unchanged; ``mask_format="none"`` omits it, and transformers then
     derives the same isolation from the restarting ``position_ids`` (sdpa, eager and flash-attn);
   * ``seq_lens`` ``[B, D]`` (document lengths, 0-padded) and ``cu_seqlens`` (int32 cumulative
     lengths over the flattened batch) for flash-attn varlen kernels: see :func:`flash_attention_kwargs`.

   The first token of each packed document is never a target (its "previous token" belongs to
   another document), padding is its own document with ``-100`` labels.
"""

from __future__ import annotations

import json
import math
from collections.abc import Iterable, Iterator, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import lightning.pytorch as pl
import numpy as np
import torch

from longrecipe.models.attention import is_flash, varlen_kwargs
from longrecipe.utils.logging import get_logger

log = get_logger(__name__)

IGNORE_INDEX = -100
MASK_FORMATS = ("bool", "additive", "none")
_AUTO_MASK = {"sdpa": "bool", "eager": "additive"}
LOSS_ON = ("response", "all")

# field mappings of the supported public formats
FORMATS: dict[str, dict[str, str]] = {
    "wizardlm": {"prompt": "instruction", "response": "output"},
    "magicoder": {"prompt": "problem", "response": "solution"},
    "alpaca": {"prompt": "instruction", "response": "output", "input": "input"},
    "conversations": {"messages": "conversations", "role": "from", "content": "value"},
}
_ROLE_ALIASES = {"human": "user", "user": "user", "gpt": "assistant", "assistant": "assistant",
                 "chatgpt": "assistant", "bing": "assistant", "bard": "assistant", "system": "system", "model": "assistant"}


# ---------------------------------------------------------------------------- records
def synthetic_instructions(n: int, *, seed: int = 0) -> list[dict[str, str]]:
    """``n`` small local instruction/response pairs (WizardLM format): arithmetic, repeat, reverse, count.

    Built from the tiny corpus generator's sentences, so the CPU pipeline needs no download.
    """
    from longrecipe.tiny.corpus import synthetic_document

    if n < 0:
        raise ValueError(f"data.num_synthetic must be >= 0, got {n}")
    rng = np.random.default_rng(seed)
    out: list[dict[str, str]] = []
    for _ in range(n):
        kind = int(rng.integers(0, 4))
        if kind == 0:
            a, b = int(rng.integers(0, 1000)), int(rng.integers(0, 1000))
            op = ["+", "-", "*"][int(rng.integers(0, 3))]
            val = a + b if op == "+" else a - b if op == "-" else a * b
            out.append({"instruction": f"What is {a} {op} {b}?", "output": f"{a} {op} {b} = {val}."})
            continue
        sentence = synthetic_document(rng, 1).strip()
        if kind == 1:
            out.append({"instruction": f"Repeat this sentence exactly: {sentence}", "output": sentence})
        elif kind == 2:
            words = sentence.split()
            out.append({"instruction": f"Reverse the order of the words: {sentence}", "output": " ".join(words[::-1])})
        else:
            out.append({"instruction": f"How many words are in this sentence? {sentence}",
                        "output": f"There are {len(sentence.split())} words."})
    return out


def read_records(source: str | Path, *, split: str = "train", num_synthetic: int = 512, seed: int = 0,
                 format: str = "auto", glob: str | None = None) -> list[dict]:
    """Records from ``synthetic``, a ``.jsonl``/``.json`` file, a folder of them, or an HF ``datasets`` folder;
    ``format="text"``: ``{"text": document}`` records from any corpus the training data readers accept (a folder's
    files matching ``glob`` only, when given)."""
    if format == "text":
        from longrecipe.data.readers import iter_documents

        if str(source) == "synthetic":
            raise ValueError("data.format=text replays plain documents: give data.source=<folder of .txt files or a "
                             "corpus file> (e.g. ../shared/nltk_data/corpora/inaugural), not synthetic")
        if not Path(source).exists():
            raise ValueError(f"data.source={source!r} does not exist; give a folder of .txt files or a corpus file "
                             "for data.format=text")
        return [{"text": d.text} for d in iter_documents(source, encoding_errors="replace", glob=glob, progress=False)]
    if str(source) == "synthetic":
        return synthetic_instructions(num_synthetic, seed=seed)
    path = Path(source)
    if not path.exists():
        raise ValueError(
            f"data.source={source!r} does not exist; give a .jsonl/.json file, a folder of them, an HF datasets "
            "folder (save_to_disk), or data.source=synthetic"
        )
    if path.is_dir() and ((path / "dataset_info.json").is_file() or (path / "dataset_dict.json").is_file()):
        from datasets import DatasetDict, load_from_disk

        ds = load_from_disk(str(path))
        if isinstance(ds, DatasetDict):
            if split not in ds:
                raise ValueError(f"data.split={split!r} not in {sorted(ds)} of {path}")
            ds = ds[split]
        return [dict(r) for r in ds]
    files = sorted(p for p in path.rglob("*") if p.suffix in (".jsonl", ".json")) if path.is_dir() else [path]
    if not files:
        raise ValueError(f"data.source={source!r} holds no .jsonl/.json files")
    records: list[dict] = []
    for f in files:
        text = f.read_text(encoding="utf-8")
        if f.suffix == ".jsonl":
            records.extend(json.loads(line) for line in text.splitlines() if line.strip())
        else:
            obj = json.loads(text)
            records.extend(obj if isinstance(obj, list) else [obj])
    return records


def detect_format(record: dict) -> str:
    """Which of :data:`FORMATS` a record is in (``conversations`` also matches ``messages`` lists)."""
    if "conversations" in record:
        return "conversations"
    if "problem" in record and "solution" in record:
        return "magicoder"
    if "instruction" in record and "output" in record:
        return "alpaca" if record.get("input") else "wizardlm"
    raise ValueError(
        f"cannot tell the format of a record with keys {sorted(record)}; set data.format to one of "
        f"{sorted(FORMATS)} or give data.fields={{prompt: <key>, response: <key>}}"
    )


def to_turns(record: dict, *, format: str = "auto", fields: dict[str, str] | None = None) -> list[tuple[str, str]]:
    """Normalise one record to ``[(role, text), ...]`` with roles ``system``/``user``/``assistant``."""
    fmt = detect_format(record) if format == "auto" and not fields else format
    mapping = dict(FORMATS.get(fmt, {}))
    if fields:
        mapping.update(fields)
    if not mapping:
        raise ValueError(f"data.format must be 'auto', 'text' or one of {sorted(FORMATS)} (or give data.fields), "
                         f"got {format!r}")
    if "messages" in mapping:
        msgs = record.get(mapping["messages"])
        if not isinstance(msgs, list) or not msgs:
            raise ValueError(f"record has no non-empty list under {mapping['messages']!r}: keys {sorted(record)}")
        rk, ck = mapping.get("role", "from"), mapping.get("content", "value")
        turns = []
        for m in msgs:
            role = _ROLE_ALIASES.get(str(m.get(rk, m.get("role", ""))).lower())
            if role is None:
                raise ValueError(f"unknown conversation role {m.get(rk)!r}; expected one of {sorted(_ROLE_ALIASES)}")
            turns.append((role, str(m.get(ck, m.get("content", "")))))
        return turns
    pk, rk = mapping.get("prompt"), mapping.get("response")
    if pk not in record or rk not in record:
        raise ValueError(f"record lacks the fields prompt={pk!r} / response={rk!r} (keys: {sorted(record)}); "
                         "fix data.fields or data.format")
    prompt = str(record[pk])
    extra = mapping.get("input")
    if extra and record.get(extra):
        prompt = f"{prompt}\n\n{record[extra]}"
    return [("user", prompt), ("assistant", str(record[rk]))]


# ---------------------------------------------------------------------------- tokenisation
@dataclass(frozen=True)
class Example:
    input_ids: np.ndarray  # int64 [n]
    labels: np.ndarray  # int64 [n], IGNORE_INDEX where no loss


_PLAIN_ROLE_HEADERS = {"system": "### System:\n", "user": "### Instruction:\n", "assistant": "### Response:\n"}


def encode_turns(tokenizer, turns: Sequence[tuple[str, str]], *, loss_on: str = "response",
                 use_chat_template: bool = True) -> Example:
    """Token ids and labels of one conversation; assistant tokens are the targets (all tokens if ``loss_on='all'``)."""
    if loss_on not in LOSS_ON:
        raise ValueError(f"data.loss_on must be one of {list(LOSS_ON)}, got {loss_on!r}")
    ids: list[int] = []
    is_target: list[bool] = []
    if use_chat_template and getattr(tokenizer, "chat_template", None):
        messages = [{"role": r, "content": c} for r, c in turns]
        prev: list[int] = []
        for i, (role, _) in enumerate(turns):
            if role != "assistant":
                continue
            prefix = _template_ids(tokenizer, messages[:i], add_generation_prompt=True)
            upto = _template_ids(tokenizer, messages[: i + 1], add_generation_prompt=False)
            if prefix[: len(prev)] != prev or upto[: len(prefix)] != prefix:
                raise ValueError("the tokenizer's chat template does not render conversations prefix-consistently; "
                                 "set data.use_chat_template=false to use the plain layout")
            ids += prefix[len(prev):] + upto[len(prefix):]
            is_target += [False] * (len(prefix) - len(prev)) + [True] * (len(upto) - len(prefix))
            prev = upto
        full = _template_ids(tokenizer, messages, add_generation_prompt=False)
        if full[: len(prev)] != prev:
            raise ValueError("the tokenizer's chat template is not prefix-consistent; set data.use_chat_template=false")
        ids += full[len(prev):]
        is_target += [False] * (len(full) - len(prev))
    else:
        if tokenizer.bos_token_id is not None:
            ids.append(int(tokenizer.bos_token_id))
            is_target.append(False)
        for i, (role, content) in enumerate(turns):
            head = ("\n\n" if i else "") + _PLAIN_ROLE_HEADERS[role]
            head_ids = tokenizer(head, add_special_tokens=False)["input_ids"]
            body = tokenizer(content, add_special_tokens=False)["input_ids"]
            ids += head_ids
            is_target += [False] * len(head_ids)
            if role == "assistant":
                body = body + ([int(tokenizer.eos_token_id)] if tokenizer.eos_token_id is not None else [])
            ids += body
            is_target += [role == "assistant"] * len(body)
    input_ids = np.asarray(ids, dtype=np.int64)
    target = np.asarray(is_target, dtype=bool) if loss_on == "response" else np.ones(len(ids), dtype=bool)
    labels = np.where(target, input_ids, IGNORE_INDEX).astype(np.int64)
    return Example(input_ids, labels)


def text_examples(tokenizer, text: str, max_length: int) -> list[Example]:
    """A plain document as pretraining-style examples: BOS (when the tokenizer has one) + up to ``max_length - 1``
    text tokens each, in order, the loss on every token."""
    if max_length < 2:
        raise ValueError(f"data.max_length must be >= 2 for text replay, got {max_length}")
    ids = tokenizer(text, add_special_tokens=False)["input_ids"]
    bos = [int(tokenizer.bos_token_id)] if tokenizer.bos_token_id is not None else []
    step = max_length - len(bos)
    out = []
    for i in range(0, len(ids), step):
        piece = np.asarray(bos + [int(t) for t in ids[i:i + step]], dtype=np.int64)
        labels = piece.copy()
        labels[: len(bos)] = IGNORE_INDEX
        out.append(Example(piece, labels))
    return out


def _template_ids(tokenizer, messages: list[dict], *, add_generation_prompt: bool) -> list[int]:
    if not messages:
        return []
    out = tokenizer.apply_chat_template(messages, tokenize=True, add_generation_prompt=add_generation_prompt,
                                        return_dict=False)
    return [int(x) for x in out]


# ---------------------------------------------------------------------------- budget & packing
def replay_token_budget(extension_tokens: int | None, budget_fraction: float | None,
                        max_tokens: int | None = None) -> int | None:
    """Tokens of replay data: ``max_tokens`` if given, else ``budget_fraction × extension_tokens`` (paper: 5-10%)."""
    if max_tokens is not None:
        if max_tokens <= 0:
            raise ValueError(f"data.max_tokens must be > 0 or null, got {max_tokens}")
        return int(max_tokens)
    if budget_fraction is None or extension_tokens is None:
        return None
    if not 0.0 < budget_fraction <= 1.0:
        raise ValueError(f"data.budget_fraction must be in (0, 1] (paper: 0.05-0.10), got {budget_fraction}")
    if extension_tokens <= 0:
        raise ValueError(f"data.extension_tokens must be > 0, got {extension_tokens}")
    return max(1, math.ceil(budget_fraction * extension_tokens))


def select_budget(examples: Sequence[Example], budget: int | None, *, seed: int = 0) -> list[Example]:
    """Seeded shuffle, then whole examples until ``budget`` tokens are reached (all of them when None)."""
    order = np.random.default_rng(seed).permutation(len(examples))
    chosen: list[Example] = []
    total = 0
    for i in order:
        if budget is not None and total >= budget:
            break
        chosen.append(examples[int(i)])
        total += len(examples[int(i)].input_ids)
    if budget is not None and total < budget:
        log.warning("replay data has only %d tokens, below the budget of %d; using all of it", total, budget)
    return chosen


def pack_examples(examples: Iterable[Example], max_length: int) -> list[list[Example]]:
    """Greedy in-order packing of whole examples into samples of at most ``max_length`` tokens.

    An example longer than ``max_length`` is truncated to it and becomes a sample of its own.
    """
    if max_length < 2:
        raise ValueError(f"data.max_length must be >= 2, got {max_length}")
    packs: list[list[Example]] = []
    cur: list[Example] = []
    used = 0
    for ex in examples:
        if len(ex.input_ids) > max_length:
            ex = Example(ex.input_ids[:max_length], ex.labels[:max_length])
        if cur and used + len(ex.input_ids) > max_length:
            packs.append(cur)
            cur, used = [], 0
        cur.append(ex)
        used += len(ex.input_ids)
    if cur:
        packs.append(cur)
    return packs


def block_causal_mask(doc_ids: torch.Tensor, *, mask_format: str = "bool", dtype: torch.dtype = torch.float32) -> torch.Tensor:
    """``[B, 1, T, T]`` mask from per-token document ids ``[B, T]``: causal within a document, nothing across."""
    if mask_format not in ("bool", "additive"):
        raise ValueError(f"mask_format must be 'bool' or 'additive' here, got {mask_format!r}")
    t = doc_ids.shape[1]
    causal = torch.ones(t, t, dtype=torch.bool).tril()
    allowed = (doc_ids[:, :, None] == doc_ids[:, None, :]) & causal
    allowed = allowed[:, None]
    if mask_format == "bool":
        return allowed
    return torch.zeros(allowed.shape, dtype=dtype).masked_fill(~allowed, torch.finfo(dtype).min)


def collate_packed(packs: Sequence[Sequence[Example]], *, pad_token_id: int, max_length: int | None = None,
                   mask_format: str = "bool", mask_dtype: torch.dtype = torch.float32) -> dict[str, torch.Tensor]:
    """Batch of packed samples (see the module docstring for the keys)."""
    if mask_format not in MASK_FORMATS:
        raise ValueError(f"data.mask_format must be one of {list(MASK_FORMATS)}, got {mask_format!r}")
    lengths = [sum(len(e.input_ids) for e in p) for p in packs]
    t = max_length if max_length is not None else max(lengths)
    if max(lengths) > t:
        raise ValueError(f"a packed sample has {max(lengths)} tokens > max_length={t}")
    b = len(packs)
    input_ids = torch.full((b, t), int(pad_token_id), dtype=torch.long)
    labels = torch.full((b, t), IGNORE_INDEX, dtype=torch.long)
    position_ids = torch.zeros((b, t), dtype=torch.long)
    doc_ids = torch.zeros((b, t), dtype=torch.long)
    seg_lens: list[list[int]] = []
    for row, pack in enumerate(packs):
        off = 0
        lens: list[int] = []
        for d, ex in enumerate(pack):
            n = len(ex.input_ids)
            input_ids[row, off:off + n] = torch.from_numpy(ex.input_ids)
            lab = torch.from_numpy(ex.labels.copy())
            lab[0] = IGNORE_INDEX  # never predict a document's first token from the previous document
            labels[row, off:off + n] = lab
            position_ids[row, off:off + n] = torch.arange(n)
            doc_ids[row, off:off + n] = d
            lens.append(n)
            off += n
        if off < t:  # padding: one more "document" with its own positions, never a target
            position_ids[row, off:] = torch.arange(t - off)
            doc_ids[row, off:] = len(pack)
            lens.append(t - off)
        seg_lens.append(lens)
    width = max(len(x) for x in seg_lens)
    seq_lens = torch.tensor([x + [0] * (width - len(x)) for x in seg_lens], dtype=torch.int32)
    flat = torch.tensor([n for x in seg_lens for n in x], dtype=torch.int32)
    cu_seqlens = torch.cat([torch.zeros(1, dtype=torch.int32), flat.cumsum(0, dtype=torch.int32)])
    batch = {"input_ids": input_ids, "labels": labels, "position_ids": position_ids,
             "seq_lens": seq_lens, "cu_seqlens": cu_seqlens}
    if mask_format != "none":
        batch["attention_mask"] = block_causal_mask(doc_ids, mask_format=mask_format, dtype=mask_dtype)
    return batch


def flash_attention_kwargs(batch: dict[str, torch.Tensor]) -> dict[str, Any]:
    """transformers' varlen flash-attention kwargs for a packed batch flattened to one row.

    Use as ``model(input_ids=batch["input_ids"].view(1, -1), position_ids=batch["position_ids"].view(1, -1),
    **flash_attention_kwargs(batch))`` with ``attn_implementation="flash_attention_2"`` and no attention_mask.
    """
    return varlen_kwargs(batch["cu_seqlens"])


def resolve_mask_format(mask_format: str, attn_implementation: str | None = "sdpa") -> str:
    """``auto`` -> the isolation that is exact for the attention kernel (checked by tests/test_replay.py).

    sdpa: boolean 4-D mask; eager: additive 4-D mask (eager *adds* the mask to the scores, so a
    boolean one would silently not isolate); flash kernels: no mask — ``LongContextLM`` flattens the batch to
    one row and passes the batch's ``cu_seqlens`` explicitly (:func:`longrecipe.models.attention.flash_inputs`),
    so documents stay apart at any batch size.
    With ``none`` on sdpa/eager the model must run with ``use_cache=False``: transformers only derives
    packed-document isolation from ``position_ids`` when no cache object exists.
    """
    impl = attn_implementation or "sdpa"
    if impl == "auto":  # mirrors the model loader: flash-attn on GPU when installed, else sdpa
        import importlib.util

        impl = "flash_attention_2" if torch.cuda.is_available() and importlib.util.find_spec("flash_attn") else "sdpa"
    if mask_format == "auto":
        if is_flash(impl):  # flash kernels: explicit cu_seqlens, see longrecipe.models.attention.flash_inputs
            return "none"
        if impl not in _AUTO_MASK:
            raise ValueError(f"data.mask_format=auto knows attn_implementation {sorted(_AUTO_MASK)}, got {impl!r}; "
                             f"set data.mask_format to one of {list(MASK_FORMATS)}")
        return _AUTO_MASK[impl]
    if mask_format not in MASK_FORMATS:
        raise ValueError(f"data.mask_format must be 'auto' or one of {list(MASK_FORMATS)}, got {mask_format!r} "
                         "(bool for sdpa, additive for eager, none for flash-attn / position-id packing)")
    if mask_format == "bool" and impl == "eager":
        raise ValueError("data.mask_format=bool does not isolate documents with attn_implementation=eager (eager adds "
                         "the mask to the scores); use data.mask_format=additive or auto")
    return mask_format


# ---------------------------------------------------------------------------- datasets & DataModule
class PackedReplayDataset(torch.utils.data.Dataset):
    """Indexable list of packed samples (each a list of :class:`Example`)."""

    def __init__(self, packs: list[list[Example]]):
        self.packs = packs

    def __len__(self) -> int:
        return len(self.packs)

    def __getitem__(self, i: int) -> list[Example]:
        return self.packs[i]


def build_replay_packs(tokenizer, *, source: str | Path = "synthetic", format: str = "auto",
                       fields: dict[str, str] | None = None, max_length: int = 256, loss_on: str = "response",
                       use_chat_template: bool = True, budget: int | None = None, num_synthetic: int = 512,
                       split: str = "train", seed: int = 0, progress: bool = True,
                       glob: str | None = None) -> list[list[Example]]:
    """Read, encode, select the budget and pack: the whole replay-data recipe as one pure function."""
    from tqdm.auto import tqdm

    records = read_records(source, split=split, num_synthetic=num_synthetic, seed=seed, format=format, glob=glob)
    examples = []
    for rec in tqdm(records, desc="replay: tokenise", unit="ex", disable=not progress):
        if format == "text":
            examples += [ex for ex in text_examples(tokenizer, rec["text"], max_length) if len(ex.input_ids) > 1]
            continue
        ex = encode_turns(tokenizer, to_turns(rec, format=format, fields=fields), loss_on=loss_on,
                          use_chat_template=use_chat_template)
        if (ex.labels != IGNORE_INDEX).any():
            examples.append(ex)
    if not examples:
        raise ValueError(f"data.source={source!r} produced no examples with a response to learn from")
    return pack_examples(select_budget(examples, budget, seed=seed), max_length)


class ReplayDataModule(pl.LightningDataModule):
    """Packed instruction-data batches for the replay stage (``conf/data/replay.yaml``).

    ``tokenizer`` is a tokenizer object or a folder/name to load; ``extension_tokens`` (tokens seen in
    extension, filled in by the pipeline) × ``budget_fraction`` sets how much data is used, unless
    ``max_tokens`` is given. Positions are the standard ``0..n-1`` per document; position schemes
    do not apply (``position`` is accepted and ignored so ``train(cfg)`` can pass it uniformly).
    """

    def __init__(self, tokenizer: Any = None, *, source: str = "synthetic", format: str = "auto",
                 fields: dict[str, str] | None = None, max_length: int = 256, batch_size: int = 1,
                 loss_on: str = "response", use_chat_template: bool = True, mask_format: str = "auto",
                 attn_implementation: str | None = "sdpa",
                 budget_fraction: float | None = 0.05, extension_tokens: int | None = None,
                 max_tokens: int | None = None, num_synthetic: int = 512, split: str = "train", seed: int = 0,
                 num_workers: int = 0, glob: str | None = None, position: Any = None, **_ignored: Any):
        super().__init__()
        if batch_size < 1:
            raise ValueError(f"data.batch_size must be >= 1, got {batch_size}")
        mask_format = resolve_mask_format(mask_format, attn_implementation)
        if loss_on not in LOSS_ON:
            raise ValueError(f"data.loss_on must be one of {list(LOSS_ON)}, got {loss_on!r}")
        self.tokenizer = tokenizer
        self.source, self.format, self.fields = str(source), format, dict(fields) if fields else None
        self.max_length, self.batch_size, self.loss_on = int(max_length), int(batch_size), loss_on
        self.use_chat_template, self.mask_format = bool(use_chat_template), mask_format
        self.budget = replay_token_budget(extension_tokens, budget_fraction, max_tokens)
        self.num_synthetic, self.split, self.seed, self.num_workers = int(num_synthetic), split, int(seed), int(num_workers)
        self.glob = glob
        self.dataset: PackedReplayDataset | None = None
        if position is not None or _ignored:
            log.info("ReplayDataModule uses standard positions; ignoring %s",
                     sorted(_ignored) + (["position"] if position is not None else []))

    def _tok(self):
        if self.tokenizer is None:
            raise ValueError("ReplayDataModule needs a tokenizer (object or folder path)")
        if isinstance(self.tokenizer, (str, Path)):
            from transformers import AutoTokenizer

            self.tokenizer = AutoTokenizer.from_pretrained(str(self.tokenizer))
        return self.tokenizer

    def setup(self, stage: str | None = None) -> None:
        if self.dataset is None:
            packs = build_replay_packs(
                self._tok(), source=self.source, format=self.format, fields=self.fields, max_length=self.max_length,
                loss_on=self.loss_on, use_chat_template=self.use_chat_template, budget=self.budget,
                num_synthetic=self.num_synthetic, split=self.split, seed=self.seed, glob=self.glob,
            )
            self.dataset = PackedReplayDataset(packs)
            n_tok = sum(len(e.input_ids) for p in packs for e in p)
            log.info("replay data: %d packed samples, %d tokens (budget %s)", len(packs), n_tok, self.budget)

    @property
    def num_tokens(self) -> int:
        self.setup()
        return sum(len(e.input_ids) for p in self.dataset.packs for e in p)

    def collate(self, packs: list[list[Example]]) -> dict[str, torch.Tensor]:
        tok = self._tok()
        pad = tok.pad_token_id if tok.pad_token_id is not None else tok.eos_token_id
        return collate_packed(packs, pad_token_id=int(pad), max_length=self.max_length, mask_format=self.mask_format)

    def train_dataloader(self) -> torch.utils.data.DataLoader:
        self.setup()
        gen = torch.Generator().manual_seed(self.seed)
        return torch.utils.data.DataLoader(self.dataset, batch_size=self.batch_size, shuffle=True, generator=gen,
                                           collate_fn=self.collate, num_workers=self.num_workers)

    def iter_batches(self) -> Iterator[dict[str, torch.Tensor]]:
        yield from self.train_dataloader()


__all__ = [
    "FORMATS", "IGNORE_INDEX", "Example", "ReplayDataModule", "block_causal_mask", "build_replay_packs",
    "collate_packed", "detect_format", "encode_turns", "text_examples", "flash_attention_kwargs", "pack_examples", "read_records",
    "replay_token_budget", "resolve_mask_format", "select_budget", "synthetic_instructions", "to_turns",
]
