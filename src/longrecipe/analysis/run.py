"""``run_analysis(cfg)``: the impactful token analysis of LongRecipe §4.1 end to end (``longrecipe-analyze``).

Samples: each document is tokenised once (offsets kept for POS alignment) and cut into consecutive windows of
``context_length`` tokens (a BOS token first when ``add_bos`` and the tokenizer has one); windows shorter than
``min_tokens`` are dropped; the first ``max_samples`` windows in corpus order are scored.

Scoring: both models read the same windows (all-ones attention mask, explicit ``arange`` positions); for every
position the true next token's logit is gathered from each LM head (``analysis.logits``), never the full logits;
``shift = |S_H' - S_H|`` (eq. 3). With ``distribution_shift`` the eq. 2 summary is added (chunked full logits).

Resumable: windows are grouped in shards of ``shard_size``; each finished shard is one parquet written atomically
plus a marker JSON carrying the data config hash, and a re-run skips shards whose marker matches. Aggregation
parameters (``top_fraction``, buckets, ranking) are not part of that hash: re-running with new ones only
re-aggregates.

Outputs in ``output_dir``: ``records.parquet`` (one row per scored token: doc_id, sample, position, token_id,
token, word, pos, logit_base, logit_long, shift[, shift_entropy, p_true]), ``analysis.json``, ``top_tokens.md``,
``pos_by_position.png`` (Fig. 4) and ``shards/``.
"""

from __future__ import annotations

import json
import os
import tempfile
import time
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np

from longrecipe.analysis.aggregate import aggregate_shifts, auto_bucket_width
from longrecipe.analysis.corpus import iter_corpus
from longrecipe.analysis.pos import load_tagger, token_pos_tags
from longrecipe.analysis.report import plot_pos_by_position, write_markdown
from longrecipe.analysis.vocab import check_same_tokenizer, vocab_fingerprint
from longrecipe.utils.confighash import config_hash
from longrecipe.utils.io import write_json_atomic
from longrecipe.utils.logging import get_logger

log = get_logger(__name__)


@dataclass
class DocTokens:
    """One tokenised document; POS tags are computed on first use and cached."""

    doc_id: str
    text: str
    ids: np.ndarray
    offsets: np.ndarray
    _tags: tuple[np.ndarray, np.ndarray] | None = field(default=None, repr=False)

    def tags(self, tagger) -> tuple[np.ndarray, np.ndarray]:
        if self._tags is None:
            self._tags = token_pos_tags(self.text, self.offsets, tagger)
        return self._tags


@dataclass
class Window:
    doc: DocTokens
    start: int
    end: int
    bos_id: int | None

    def input_ids(self) -> np.ndarray:
        body = self.doc.ids[self.start:self.end]
        return body if self.bos_id is None else np.concatenate([[self.bos_id], body]).astype(np.int64)


def tokenize_document(tokenizer, doc_id: str, text: str) -> DocTokens:
    enc = tokenizer(text, add_special_tokens=False, return_offsets_mapping=True)
    return DocTokens(doc_id, text, np.asarray(enc["input_ids"], dtype=np.int64),
                     np.asarray(enc["offset_mapping"], dtype=np.int64).reshape(-1, 2))


def build_windows(docs, tokenizer, *, context_length: int, max_samples: int, add_bos: bool = True,
                  min_tokens: int = 16) -> list[Window]:
    """The first ``max_samples`` windows (``context_length`` tokens incl. BOS) of ``docs`` ((id, text) pairs)."""
    bos = tokenizer.bos_token_id if add_bos else None
    step = context_length - (bos is not None)
    windows: list[Window] = []
    for doc_id, text in docs:
        doc = tokenize_document(tokenizer, doc_id, text)
        for s in range(0, len(doc.ids), step):
            e = min(s + step, len(doc.ids))
            if e - s + (bos is not None) >= min_tokens:
                windows.append(Window(doc, s, e, bos))
                if len(windows) >= max_samples:
                    return windows
    return windows


LONG_ROPE_KEYS = ("rope_parameters", "max_position_embeddings")


def _validate(cfg) -> None:
    def need(key: str, ok: bool, allowed: str, fix: str) -> None:
        if not ok:
            raise ValueError(f"{key}={cfg.get(key)!r} is invalid: must be {allowed}; {fix}")

    need("base_model", bool(cfg.get("base_model")), "a model folder or hub id", "pass base_model=<path>")
    need("long_model", bool(cfg.get("long_model")), "a model folder or hub id", "pass long_model=<path>")
    rope = cfg.get("long_model_rope")
    need("long_model_rope", rope is None or (hasattr(rope, "keys") and set(rope.keys()) <= set(LONG_ROPE_KEYS)),
         f"null or a mapping with keys {list(LONG_ROPE_KEYS)}",
         "e.g. long_model_rope={rope_parameters:{rope_type:yarn,factor:2.0},max_position_embeddings:16384}")
    need("context_length", int(cfg.context_length) >= 2, ">= 2", "e.g. context_length=8192")
    need("max_samples", int(cfg.max_samples) >= 1, ">= 1", "e.g. max_samples=64")
    need("min_tokens", 2 <= int(cfg.min_tokens) <= int(cfg.context_length), "in [2, context_length]",
         "e.g. min_tokens=16")
    need("batch_size", int(cfg.batch_size) >= 1, ">= 1", "e.g. batch_size=1")
    need("shard_size", int(cfg.shard_size) >= 1, ">= 1", "e.g. shard_size=16")
    need("chunk_size", int(cfg.chunk_size) >= 1, ">= 1", "e.g. chunk_size=4096")
    need("shift_chunk_size", int(cfg.shift_chunk_size) >= 1, ">= 1", "e.g. shift_chunk_size=256")
    need("top_fraction", 0.0 < float(cfg.top_fraction) <= 1.0, "in (0, 1]", "the paper uses top_fraction=0.2")
    need("n_buckets", int(cfg.n_buckets) >= 1, ">= 1", "e.g. n_buckets=20")
    need("dtype", cfg.dtype in ("auto", "float32", "bfloat16", "float16"), "one of auto, float32, bfloat16, float16",
         "e.g. dtype=auto (bf16 on GPU, fp32 on CPU)")


def _resolve_device(cfg):
    import torch

    device = torch.device("cuda" if cfg.device == "auto" and torch.cuda.is_available()
                          else ("cpu" if cfg.device == "auto" else cfg.device))
    name = cfg.dtype if cfg.dtype != "auto" else ("bfloat16" if device.type == "cuda" else "float32")
    return device, getattr(torch, name), name


def _load_model(path: str, device, dtype, rope: dict | None = None):
    """``rope`` (``long_model_rope``): ``rope_parameters`` merged into the saved ones and/or a new
    ``max_position_embeddings``, applied at load time (a training-free long-context H' from the same weights)."""
    from transformers import AutoConfig, AutoModelForCausalLM

    config = AutoConfig.from_pretrained(path)
    rope = rope or {}
    if rope.get("rope_parameters"):
        config.rope_parameters = {**dict(getattr(config, "rope_parameters", None) or {}), **rope["rope_parameters"]}
    if rope.get("max_position_embeddings"):
        config.max_position_embeddings = int(rope["max_position_embeddings"])
    model = AutoModelForCausalLM.from_pretrained(path, config=config, attn_implementation="sdpa", dtype=dtype)
    model.to(device).eval().requires_grad_(False)
    return model


def _write_parquet_atomic(table, path: Path) -> None:
    import pyarrow.parquet as pq

    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(prefix=f".{path.name}.", suffix=".tmp", dir=path.parent)
    os.close(fd)
    try:
        pq.write_table(table, tmp)
        os.replace(tmp, path)
    finally:
        if os.path.exists(tmp):
            os.unlink(tmp)


def score_windows(windows: list[Window], base, long, tagger, *, batch_size: int, chunk_size: int,
                  distribution_shift: bool, shift_chunk_size: int, pad_id: int, first_sample: int = 0,
                  progress=None) -> dict[str, np.ndarray]:
    """Per-token records for ``windows`` (columns of the parquet, as numpy arrays)."""
    import torch

    from longrecipe.analysis.logits import final_hidden, lm_head_parts, shift_distribution_summary, true_token_logits

    device = next(base.parameters()).device
    head_b, head_l = lm_head_parts(base), lm_head_parts(long)
    cols: dict[str, list] = {k: [] for k in ("doc_id", "sample", "position", "token_id", "word", "pos",
                                             "logit_base", "logit_long", "shift", "shift_entropy", "p_true")}
    for b0 in range(0, len(windows), batch_size):
        batch = windows[b0:b0 + batch_size]
        seqs = [w.input_ids() for w in batch]
        width = max(len(s) for s in seqs)
        x = np.full((len(seqs), width), pad_id, dtype=np.int64)
        for i, s in enumerate(seqs):
            x[i, :len(s)] = s  # right padding: causal attention keeps real positions unaffected
        xt = torch.from_numpy(x).to(device)
        hb, hl = final_hidden(base, xt), final_hidden(long, xt)
        for i, (w, s) in enumerate(zip(batch, seqs)):
            n = len(s) - 1
            tgt = xt[i, 1:n + 1]
            sb = true_token_logits(hb[i, :n], head_b[0], tgt, bias=head_b[1], softcap=head_b[2], chunk_size=chunk_size)
            sl = true_token_logits(hl[i, :n], head_l[0], tgt, bias=head_l[1], softcap=head_l[2], chunk_size=chunk_size)
            tags, words = w.doc.tags(tagger)
            off = w.start - (w.bos_id is not None)  # doc index of sample position p is off + p
            cols["doc_id"].append(np.full(n, w.doc.doc_id, dtype=object))
            cols["sample"].append(np.full(n, first_sample + b0 + i, dtype=np.int32))
            cols["position"].append(np.arange(1, n + 1, dtype=np.int32))
            cols["token_id"].append(s[1:].astype(np.int32))
            cols["word"].append(words[off + 1:off + n + 1])
            cols["pos"].append(tags[off + 1:off + n + 1])
            cols["logit_base"].append(sb.cpu().numpy())
            cols["logit_long"].append(sl.cpu().numpy())
            cols["shift"].append((sl - sb).abs().cpu().numpy())
            if distribution_shift:
                ent, pt = shift_distribution_summary(hb[i, :n], head_b, hl[i, :n], head_l, tgt,
                                                     chunk_size=shift_chunk_size)
                cols["shift_entropy"].append(ent.cpu().numpy())
                cols["p_true"].append(pt.cpu().numpy())
        if progress is not None:
            progress.update(sum(len(s) - 1 for s in seqs))
    if not distribution_shift:
        del cols["shift_entropy"], cols["p_true"]
    return {k: np.concatenate(v) if v else np.zeros(0) for k, v in cols.items()}


def _records_table(cols: dict[str, np.ndarray], decode_cache: dict[int, str], tokenizer):
    import pyarrow as pa

    ids = cols["token_id"]
    for t in np.unique(ids).tolist():
        if t not in decode_cache:
            decode_cache[t] = tokenizer.decode([t])
    arrays = {
        "doc_id": pa.array(cols["doc_id"].tolist(), pa.string()),
        "sample": pa.array(cols["sample"], pa.int32()),
        "position": pa.array(cols["position"], pa.int32()),
        "token_id": pa.array(ids, pa.int32()),
        "token": pa.array([decode_cache[t] for t in ids.tolist()], pa.string()),
        "word": pa.array(cols["word"].tolist(), pa.string()),
        "pos": pa.array(cols["pos"].tolist(), pa.string()),
    }
    for k in ("logit_base", "logit_long", "shift", "shift_entropy", "p_true"):
        if k in cols:
            arrays[k] = pa.array(cols[k].astype(np.float32), pa.float32())
    return pa.table(arrays)


def run_analysis(cfg) -> dict:
    """Run (or resume) the analysis described by ``cfg`` (``conf/analyze.yaml``); returns ``analysis.json``'s dict."""
    import pyarrow as pa
    import pyarrow.parquet as pq
    from omegaconf import OmegaConf
    from tqdm.auto import tqdm
    from transformers import AutoTokenizer

    _validate(cfg)
    if not cfg.get("output_dir"):
        raise ValueError("output_dir is empty: pass output_dir=<folder> (the CLI uses the Hydra run dir)")
    out = Path(str(cfg.output_dir))
    from longrecipe.utils.model_refs import resolve_model_ref

    base_path = resolve_model_ref(cfg.base_model, "base_model")
    long_path = resolve_model_ref(cfg.long_model, "long_model")
    base_tok = AutoTokenizer.from_pretrained(base_path)
    long_tok = AutoTokenizer.from_pretrained(long_path)
    check_same_tokenizer(base_tok, long_tok)
    tagger = load_tagger(str(cfg.pos_tagger))
    device, dtype, dtype_name = _resolve_device(cfg)

    corpus = OmegaConf.to_container(cfg.corpus, resolve=True)
    long_rope = OmegaConf.to_container(cfg.long_model_rope, resolve=True) if cfg.get("long_model_rope") else None
    data_cfg = {
        "base_model": str(cfg.base_model), "long_model": str(cfg.long_model), "long_model_rope": long_rope,
        "corpus": corpus,
        "context_length": int(cfg.context_length), "max_samples": int(cfg.max_samples),
        "add_bos": bool(cfg.add_bos), "min_tokens": int(cfg.min_tokens), "shard_size": int(cfg.shard_size),
        "dtype": dtype_name, "pos_tagger": tagger.name, "distribution_shift": bool(cfg.distribution_shift),
        "vocab": vocab_fingerprint(base_tok),
    }
    data_hash = config_hash(data_cfg)
    shard_dir = out / "shards"
    previous = out / "analysis.json"
    if previous.is_file() and json.loads(previous.read_text()).get("config_hash") != data_hash and not cfg.overwrite:
        raise FileExistsError(f"{out} holds an analysis of a different config; pass overwrite=true to replace it "
                              "or choose another output_dir")
    stale = [p for p in shard_dir.glob("shard-*.json") if json.loads(p.read_text()).get("config_hash") != data_hash]
    if stale and not cfg.overwrite:
        raise FileExistsError(f"{shard_dir} holds {len(stale)} shard(s) of a different config; pass overwrite=true "
                              "or choose another output_dir")
    for p in stale:
        p.unlink()
        p.with_suffix(".parquet").unlink(missing_ok=True)

    docs = iter_corpus(corpus)
    windows = build_windows(docs, base_tok, context_length=int(cfg.context_length),
                            max_samples=int(cfg.max_samples), add_bos=bool(cfg.add_bos),
                            min_tokens=int(cfg.min_tokens))
    if not windows:
        raise ValueError(f"corpus.source={corpus['source']!r} gave no window of >= min_tokens={cfg.min_tokens} "
                         "tokens; give longer documents or lower min_tokens")
    shard_size = int(cfg.shard_size)
    shards = [windows[i:i + shard_size] for i in range(0, len(windows), shard_size)]
    todo = []
    for k in range(len(shards)):
        marker = shard_dir / f"shard-{k:05d}.json"
        if marker.is_file() and (shard_dir / f"shard-{k:05d}.parquet").is_file():
            continue  # stale markers were removed above, so a marker here matches data_hash
        todo.append(k)
    log.info("analysis: %d windows in %d shards (%d to score, %d resumed) -> %s",
             len(windows), len(shards), len(todo), len(shards) - len(todo), out)

    pad_id = base_tok.pad_token_id if base_tok.pad_token_id is not None else 0
    decode_cache: dict[int, str] = {}
    elapsed, t_tag, scored = 0.0, 0.0, 0
    if todo:
        base = _load_model(base_path, device, dtype)
        long = _load_model(long_path, device, dtype, long_rope)
        if base.get_output_embeddings().weight.shape != long.get_output_embeddings().weight.shape:
            raise ValueError("base_model and long_model LM heads differ in shape "
                             f"({tuple(base.get_output_embeddings().weight.shape)} vs "
                             f"{tuple(long.get_output_embeddings().weight.shape)}); they must share the vocabulary")
        total = sum(len(w.input_ids()) - 1 for k in todo for w in shards[k])
        with tqdm(total=total, desc="analyze (tokens)", unit="tok", mininterval=2.0) as bar:
            for k in todo:
                t0 = time.perf_counter()
                for w in shards[k]:
                    w.doc.tags(tagger)  # POS tagging timed apart from the model passes
                t_tag += time.perf_counter() - t0
                t0 = time.perf_counter()
                cols = score_windows(shards[k], base, long, tagger, batch_size=int(cfg.batch_size),
                                     chunk_size=int(cfg.chunk_size), distribution_shift=bool(cfg.distribution_shift),
                                     shift_chunk_size=int(cfg.shift_chunk_size), pad_id=pad_id,
                                     first_sample=k * shard_size, progress=bar)
                elapsed += time.perf_counter() - t0
                scored += len(cols["shift"])
                _write_parquet_atomic(_records_table(cols, decode_cache, base_tok),
                                      shard_dir / f"shard-{k:05d}.parquet")
                write_json_atomic(shard_dir / f"shard-{k:05d}.json",
                                  {"config_hash": data_hash, "shard": k, "n_windows": len(shards[k]),
                                   "n_records": int(len(cols["shift"]))})
        del base, long

    table = pa.concat_tables([pq.read_table(shard_dir / f"shard-{k:05d}.parquet") for k in range(len(shards))])
    _write_parquet_atomic(table, out / "records.parquet")
    cols = {name: table.column(name).to_numpy(zero_copy_only=False) for name in table.column_names}
    for t, s in zip(cols["token_id"].tolist(), cols["token"].tolist()):
        decode_cache.setdefault(t, s)
    width = int(cfg.bucket_width) if cfg.get("bucket_width") else auto_bucket_width(int(cfg.context_length),
                                                                                    int(cfg.n_buckets))
    summary = aggregate_shifts(
        positions=cols["position"], token_ids=cols["token_id"], pos_tags=cols["pos"], shift=cols["shift"],
        bucket_width=width, top_fraction=float(cfg.top_fraction), n_anchors=int(cfg.n_anchors),
        rank_by=str(cfg.anchor_rank_by), min_pos_count=int(cfg.min_pos_count), min_lift=float(cfg.min_lift),
        exclude=list(cfg.exclude_from_anchors), top_k_tokens=int(cfg.top_k_tokens),
        shift_entropy=cols.get("shift_entropy"), p_true=cols.get("p_true"), decode=decode_cache.__getitem__,
    )
    result = {
        "config_hash": data_hash,
        "base_model": str(cfg.base_model),
        "long_model": str(cfg.long_model),
        "long_model_rope": long_rope,
        "tokenizer": getattr(base_tok, "name_or_path", str(cfg.base_model)),
        "vocab_fingerprint": data_cfg["vocab"],
        "corpus": corpus,
        "context_length": int(cfg.context_length),
        "n_samples": len(windows),
        "n_documents": len({w.doc.doc_id for w in windows}),
        "pos_tagger": tagger.name,
        "pos_tagger_reduced": bool(tagger.reduced),
        "dtype": dtype_name,
        "device": str(device),
        "throughput_tokens_per_s": (scored / elapsed) if elapsed > 0 else None,  # model passes only
        "scoring_seconds": elapsed,
        "tagging_seconds": t_tag,
        **summary,
    }
    write_json_atomic(out / "analysis.json", result)
    write_markdown(out / "top_tokens.md", result)
    plot_pos_by_position(result, out / "pos_by_position.png")
    log.info("analysis done: anchors=%s (by %s); outputs in %s", result["anchors"], result["anchor_rank_by"], out)
    return result
