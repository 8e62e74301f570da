"""``prepare_dataset(cfg)``: build the training set of short, anchor-rich samples (``longrecipe-prepare``).

For every document (``corpus``, read by the DataModule's readers): tokenise once, cut into consecutive long
windows of ``target_length`` tokens (the long sample being simulated), split each window into sentences, choose
sentences with the configured selector (``conf/selection/*.yaml``; see ``selection.select``) and cut their
concatenation to exactly ``budget = round(token_ratio * target_length)`` tokens. Windows with fewer than
``budget`` tokens are skipped (counted). With ``n_samples`` the samples are then truncated or upsampled
(extra copies drawn in proportion to their anchor-token share in ``anchors`` mode, uniformly otherwise).

Sentence splitting (``splitter``): ``delimiters`` (default; ``auto`` is the same) — the tokenizer's own delimiter
tokens with the training rule (``delimiters``, ``delimiter_match``, ``segmentation``; defaults = the position scheme's
= the authors' released splitter, ``positions.segments``), so the written boundaries are the segments training uses;
``punkt`` — nltk punkt sentence spans mapped to tokens, only when asked for.

Output (the "prepared dataset" contract of CONTRIBUTING): an HF ``datasets`` folder with ``input_ids`` (int32),
``segment_starts`` (int32, one per kept sentence, first 0) and ``doc_ids`` (the source document of each segment),
plus ``longrecipe_provenance.json`` (config hash, mode, anchors and where they came from, tokenizer, counts, the
source document ids). The folder is written atomically; a finished one is replaced only with ``overwrite=true``.
"""

from __future__ import annotations

import json
import time
from collections.abc import Sequence
from pathlib import Path

import numpy as np

from longrecipe.analysis.corpus import iter_corpus
from longrecipe.analysis.pos import load_tagger, token_pos_tags
from longrecipe.selection.select import assemble, upsample_indices
from longrecipe.utils.confighash import config_hash
from longrecipe.utils.io import atomic_dir, write_json_atomic
from longrecipe.utils.logging import get_logger
from longrecipe.utils.seeding import sample_rng

log = get_logger(__name__)

SPLITTERS = ("auto", "delimiters", "punkt")
PROVENANCE_FILE = "longrecipe_provenance.json"


def punkt_available() -> bool:
    import nltk.data

    try:
        nltk.data.find("tokenizers/punkt_tab/english/")
    except LookupError:
        return False
    return True


def char_starts_to_token_starts(offsets: np.ndarray, char_starts: Sequence[int]) -> np.ndarray:
    """Token index of each sentence start: the first token whose span ends after the start char; 0 always first."""
    ends = np.asarray(offsets, dtype=np.int64).reshape(-1, 2)[:, 1]
    idx = np.searchsorted(ends, np.asarray(char_starts, dtype=np.int64), side="right")
    idx = idx[(idx > 0) & (idx < len(ends))]
    return np.unique(np.concatenate([[0], idx])).astype(np.int64)


def load_anchors(selector, analysis_json: str | None) -> tuple[list[str], str]:
    """The anchor POS types: configured ones, else ``anchors`` of an ``analysis.json``; returns (anchors, source)."""
    if selector.anchors is not None:
        return list(selector.anchors), "config"
    path = Path(str(analysis_json))
    if not path.is_file():
        raise ValueError(f"selection.analysis_json={str(path)!r} is not a file; point it at the analysis.json of a "
                         "longrecipe-analyze run or set selection.anchors=[NUM]")
    anchors = json.loads(path.read_text()).get("anchors") or []
    if not anchors:
        raise ValueError(f"{path} lists no anchor types (no part of speech was over-represented among the most "
                         "shifted tokens); set selection.anchors explicitly, e.g. [NUM]")
    return [str(a) for a in anchors], str(path)


def _validate(cfg) -> int:
    if not cfg.get("tokenizer"):
        raise ValueError("tokenizer is empty: pass tokenizer=<model or tokenizer folder> (the base model's)")
    if not cfg.get("output_dir"):
        raise ValueError("output_dir is empty: pass output_dir=<folder for the prepared dataset>")
    if int(cfg.target_length) < 2:
        raise ValueError(f"target_length must be >= 2, got {cfg.target_length}; e.g. target_length=81920")
    if not 0.0 < float(cfg.token_ratio) <= 1.0:
        raise ValueError(f"token_ratio must be in (0, 1], got {cfg.token_ratio}; the paper uses 0.3")
    if cfg.splitter not in SPLITTERS:
        raise ValueError(f"splitter must be one of {list(SPLITTERS)}, got {cfg.splitter!r}")
    if cfg.get("n_samples") is not None and int(cfg.n_samples) < 1:
        raise ValueError(f"n_samples must be >= 1 or null (keep every selected sample), got {cfg.n_samples}")
    budget = round(float(cfg.token_ratio) * int(cfg.target_length))
    if budget < 1:
        raise ValueError(f"token_ratio * target_length = {float(cfg.token_ratio) * int(cfg.target_length)} rounds "
                         "to 0 tokens; raise token_ratio or target_length")
    return budget


def prepare_dataset(cfg) -> dict:
    """Build and save the prepared dataset described by ``cfg`` (``conf/prepare.yaml``); returns the provenance."""
    import datasets
    import pyarrow as pa
    from datasets.table import InMemoryTable
    from hydra.utils import instantiate
    from omegaconf import OmegaConf
    from tqdm.auto import tqdm
    from transformers import AutoTokenizer

    from longrecipe.positions.segments import (
        DEFAULT_DELIMITERS,
        delimiter_table,
        delimiter_token_ids,
        starts_from_table,
    )

    budget = _validate(cfg)
    out = Path(str(cfg.output_dir))
    if out.exists() and not cfg.overwrite:
        raise FileExistsError(f"{out} already exists; pass overwrite=true to replace it or choose another output_dir")
    selector = instantiate(cfg.selection)
    anchors, anchors_source = (load_anchors(selector, cfg.selection.get("analysis_json"))
                               if selector.uses_anchors else ([], None))
    tokenizer = AutoTokenizer.from_pretrained(str(cfg.tokenizer))
    tagger = load_tagger(str(cfg.pos_tagger)) if anchors else None
    splitter = "delimiters" if cfg.splitter == "auto" else str(cfg.splitter)
    if splitter == "punkt":
        if not punkt_available():
            raise ValueError("splitter=punkt but nltk punkt data is missing; install it with "
                             "`python -m nltk.downloader punkt_tab` or use splitter=delimiters")
        from nltk.tokenize.punkt import PunktTokenizer

        punkt = PunktTokenizer("english")
    segmentation = str(cfg.get("segmentation", "each"))
    table = delimiter_table(delimiter_token_ids(tokenizer, tuple(cfg.get("delimiters") or DEFAULT_DELIMITERS),
                                                match=str(cfg.get("delimiter_match", "exact"))))
    target = int(cfg.target_length)
    need_offsets = tagger is not None or splitter == "punkt"
    corpus = OmegaConf.to_container(cfg.corpus, resolve=True)

    rows_ids, rows_seg, rows_doc, richness, used_docs = [], [], [], [], []
    counts = {"documents": 0, "windows": 0, "windows_skipped_short": 0, "sentences": 0, "anchor_sentences": 0,
              "corpus_tokens": 0, "corpus_anchor_tokens": 0, "sample_anchor_tokens": 0}
    t0 = time.perf_counter()
    for doc_id, text in tqdm(iter_corpus(corpus), desc="prepare (documents)", unit="doc", mininterval=2.0):
        counts["documents"] += 1
        enc = tokenizer(text, add_special_tokens=False, return_offsets_mapping=need_offsets)
        ids = np.asarray(enc["input_ids"], dtype=np.int64)
        if len(ids) == 0:
            continue
        offsets = np.asarray(enc["offset_mapping"], dtype=np.int64).reshape(-1, 2) if need_offsets else None
        if splitter == "punkt":
            starts = char_starts_to_token_starts(offsets, [s for s, _ in punkt.span_tokenize(text)])
        else:
            starts = starts_from_table(ids, table, segmentation)
        is_anchor = (np.isin(token_pos_tags(text, offsets, tagger)[0], anchors) if tagger is not None
                     else np.zeros(len(ids), dtype=bool))
        counts["corpus_tokens"] += len(ids)
        counts["corpus_anchor_tokens"] += int(is_anchor.sum())
        doc_used = False
        for a in range(0, len(ids), target):
            b = min(a + target, len(ids))
            window_index = counts["windows"]
            counts["windows"] += 1
            if b - a < budget:
                counts["windows_skipped_short"] += 1
                continue
            w_starts = np.unique(np.concatenate([[0], starts[(starts > a) & (starts < b)] - a]))
            lengths = np.diff(np.append(w_starts, b - a))
            has_anchor = np.add.reduceat(is_anchor[a:b], w_starts) > 0
            counts["sentences"] += len(w_starts)
            counts["anchor_sentences"] += int(has_anchor.sum())
            chosen = selector.select(lengths, has_anchor, budget, sample_rng(int(cfg.seed), 0, window_index))
            sample, seg, src = assemble(ids[a:b], w_starts, chosen, budget)
            n_anchor = int(is_anchor[a:b][np.concatenate([np.arange(s, s + n) for s, n in
                                                          zip(src, np.diff(np.append(seg, budget)))])].sum())
            counts["sample_anchor_tokens"] += n_anchor
            rows_ids.append(sample.astype(np.int32))
            rows_seg.append(seg.astype(np.int32))
            rows_doc.append([doc_id] * len(seg))
            richness.append(n_anchor / budget)
            doc_used = True
        if doc_used:
            used_docs.append(doc_id)
    elapsed = time.perf_counter() - t0
    if not rows_ids:
        raise ValueError(f"no window of corpus.source={corpus['source']!r} holds budget={budget} tokens "
                         f"(token_ratio * target_length); give longer documents or lower token_ratio")

    n_selected = len(rows_ids)
    order = upsample_indices(n_selected, cfg.get("n_samples"), np.asarray(richness) if anchors else None,
                             sample_rng(int(cfg.seed), 1, 0))
    seg_lens = np.asarray([len(rows_seg[i]) for i in order])
    seg_offsets = np.concatenate([[0], np.cumsum(seg_lens)]).astype(np.int32)
    arrow = pa.table({
        "input_ids": pa.ListArray.from_arrays(pa.array(np.arange(len(order) + 1, dtype=np.int32) * budget),
                                              pa.array(np.concatenate([rows_ids[i] for i in order]))),
        "segment_starts": pa.ListArray.from_arrays(pa.array(seg_offsets),
                                                   pa.array(np.concatenate([rows_seg[i] for i in order]))),
        "doc_ids": pa.ListArray.from_arrays(pa.array(seg_offsets),
                                            pa.array([d for i in order for d in rows_doc[i]], pa.string())),
    })
    hashed = OmegaConf.to_container(cfg, resolve=True)
    for key in ("output_dir", "overwrite"):
        hashed.pop(key, None)
    provenance = {
        "config_hash": config_hash(hashed),
        "mode": selector.mode,
        "anchors": anchors,
        "anchors_source": anchors_source,
        "keep_other": getattr(selector, "keep_other", None),
        "tokenizer": getattr(tokenizer, "name_or_path", str(cfg.tokenizer)),
        "pos_tagger": tagger.name if tagger is not None else None,
        "pos_tagger_reduced": bool(tagger.reduced) if tagger is not None else None,
        "splitter": splitter,
        "target_length": target,
        "token_ratio": float(cfg.token_ratio),
        "budget": budget,
        "seed": int(cfg.seed),
        "n_samples": len(order),
        "n_selected": n_selected,
        "n_upsampled": int(len(order) - min(n_selected, len(order))),
        "counts": counts,
        "anchor_token_share": {
            "corpus": counts["corpus_anchor_tokens"] / max(counts["corpus_tokens"], 1),
            "samples": counts["sample_anchor_tokens"] / (n_selected * budget),
        },
        "docs_per_second": counts["documents"] / elapsed if elapsed > 0 else None,
        "source_doc_ids": used_docs,
        "corpus": corpus,
    }
    with atomic_dir(out, overwrite=bool(cfg.overwrite)) as tmp:
        datasets.Dataset(InMemoryTable(arrow)).save_to_disk(str(tmp))
        write_json_atomic(Path(tmp) / PROVENANCE_FILE, provenance)
    log.info("prepared %d samples of %d tokens (%s, anchors=%s; %d selected, %d upsampled) -> %s",
             len(order), budget, selector.mode, anchors, n_selected, provenance["n_upsampled"], out)
    return provenance
