"""Position statistics of every scheme on real text (paper Fig. 3): the logic behind ``longrecipe-positions``.

``run_position_stats(cfg)`` reads a corpus (``longrecipe.data.readers.iter_documents``: a folder of ``.txt`` files, or the synthetic
corpus), tokenizes it, cuts ``num_samples`` random windows for each target length ``T`` -- of ``T`` tokens for
the full-length schemes (``full_length_schemes``: FLT trains on ``arange(T)``, paper §5.1), of
``round(token_ratio * T)`` tokens for the others -- applies every configured scheme and reports the mean and the
standard deviation over samples of each statistic of :mod:`longrecipe.positions.stats`. It writes ``stats.json``,
``table.md`` (with the definitions) and ``positions.png``.
"""

from __future__ import annotations

import os
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import numpy as np

from longrecipe.positions.stats import position_stats
from longrecipe.utils.io import save_figure_atomic, write_json_atomic, write_text_atomic
from longrecipe.utils.logging import get_logger
from longrecipe.utils.seeding import sample_rng

log = get_logger(__name__)

STAT_KEYS = ("avg_distance", "avg_segment_length", "max_position", "coverage")
DEFINITIONS = (
    "Definitions (paper Fig. 3; `longrecipe.positions.stats`): *avg distance* = mean |p_i - p_j| over all pairs of "
    "tokens of a sample; *avg continuous segment length* = sample length / number of maximal runs of consecutive "
    "positions; *max position* = largest position id; *distance coverage* = share of the 100 equal buckets of "
    "relative distances 1..T-1 reached by at least one pair. Each cell: mean ± standard deviation over the samples "
    "(random windows of the corpus). Full-length schemes (FLT) use samples of the whole window T, the others "
    "samples of token_ratio x T tokens."
)


def load_documents(cfg: Any) -> tuple[list[str], dict[str, Any]]:
    """The corpus texts via :func:`longrecipe.data.readers.iter_documents` (``corpus=null``: the synthetic
    corpus), with the reader's counters (files read, invalid UTF-8 bytes replaced, empty docs skipped)."""
    from longrecipe.data.readers import ReadStats, iter_documents

    if cfg.corpus:
        if not Path(cfg.corpus).exists():
            raise ValueError(f"corpus must be a file or folder of .txt/.jsonl/.parquet documents, got "
                             f"{str(cfg.corpus)!r} (does not exist); pass corpus=<dir> or corpus=null for the "
                             "synthetic corpus")
        source, kwargs = str(cfg.corpus), {}
    else:
        n_docs = int(cfg.synthetic_docs)
        if n_docs < 1:
            raise ValueError(f"synthetic_docs must be >= 1, got {n_docs}; or pass corpus=<folder of .txt files>")
        source, kwargs = "synthetic", {"n_docs": n_docs, "seed": int(cfg.seed)}
    stats = ReadStats()
    texts = [doc.text for doc in iter_documents(source, encoding_errors=str(cfg.encoding_errors), stats=stats,
                                                progress=False, **kwargs)]
    if not texts:
        raise ValueError(f"corpus {source!r} holds no non-empty documents; pass a folder of .txt files")
    info = stats.as_dict()
    info.pop("files_bad_utf8")
    return texts, {"source": source, **info}


def load_tokenizer(cfg: Any) -> Any:
    if cfg.tokenizer:
        from transformers import AutoTokenizer

        return AutoTokenizer.from_pretrained(str(cfg.tokenizer))
    from longrecipe.tiny.tokenizer import cached_tokenizer

    return cached_tokenizer(cfg.tokenizer_cache_dir)


def token_stream(texts: Sequence[str], tokenizer: Any, *, separator: str = "\n\n") -> np.ndarray:
    """The documents tokenized (no special tokens) and concatenated, separated by ``separator``'s tokens."""
    sep = list(tokenizer(separator, add_special_tokens=False)["input_ids"])
    encoded = tokenizer(list(texts), add_special_tokens=False)["input_ids"]
    parts: list[np.ndarray] = []
    for i, ids in enumerate(encoded):
        if i:
            parts.append(np.asarray(sep, dtype=np.int64))
        parts.append(np.asarray(ids, dtype=np.int64))
    return np.concatenate(parts) if parts else np.zeros(0, dtype=np.int64)


def sample_windows(stream: np.ndarray, length: int, count: int, rng: np.random.Generator) -> list[np.ndarray]:
    """``count`` windows of ``length`` tokens at uniformly random offsets of ``stream``."""
    if stream.shape[0] < length:
        raise ValueError(
            f"the corpus has {stream.shape[0]} tokens, fewer than one sample of {length} tokens; "
            "use a larger corpus (corpus=<dir> or more synthetic_docs) or a smaller target_lengths/token_ratio"
        )
    offsets = rng.integers(0, stream.shape[0] - length + 1, size=count)
    return [stream[o:o + length] for o in offsets]


def format_table(records: Sequence[dict[str, Any]]) -> str:
    """A markdown table of the averaged statistics, one row per (target length, scheme)."""
    lines = [
        "| scheme | target length | sample length | samples | avg distance among tokens "
        "| avg continuous segment length | max position | distance coverage |",
        "|---|---:|---:|---:|---:|---:|---:|---:|",
    ]
    for r in records:
        lines.append(
            f"| {r['scheme']} | {r['target_length']:,} | {r['sample_length']:,} | {r['num_samples']} "
            f"| {r['avg_distance']:,.1f} ± {r['avg_distance_std']:,.1f} "
            f"| {r['avg_segment_length']:,.2f} ± {r['avg_segment_length_std']:,.2f} "
            f"| {r['max_position']:,.0f} ± {r['max_position_std']:,.0f} | {r['coverage']:.3f} ± {r['coverage_std']:.3f} |"
        )
    return "\n".join(lines) + "\n"


def plot_stats(records: Sequence[dict[str, Any]], path: str | os.PathLike) -> Path:
    """Grouped bar chart (one panel per statistic, bars per scheme, groups per target), written atomically."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    path = Path(path)
    schemes = list(dict.fromkeys(r["scheme"] for r in records))
    targets = list(dict.fromkeys(r["target_length"] for r in records))
    by_key = {(r["scheme"], r["target_length"]): r for r in records}
    panels = [("avg_distance", "avg distance among tokens", False),
              ("avg_segment_length", "avg continuous segment length (log)", True),
              ("coverage", "distance coverage", False)]
    fig, axes = plt.subplots(1, len(panels), figsize=(5 * len(panels), 4))
    width = 0.8 / max(len(schemes), 1)
    x = np.arange(len(targets))
    for ax, (key, title, log_scale) in zip(axes, panels):
        for j, scheme in enumerate(schemes):
            values = [by_key[(scheme, t)][key] for t in targets]
            ax.bar(x + (j - (len(schemes) - 1) / 2) * width, values, width, label=scheme)
        ax.set_xticks(x, [f"{t / 1000:g}k" for t in targets])
        ax.set_xlabel("target length")
        ax.set_title(title)
        if log_scale:
            ax.set_yscale("log")
    axes[0].legend()
    fig.tight_layout()
    return save_figure_atomic(fig, path)


def _output_dir(cfg: Any) -> Path:
    if cfg.get("output_dir"):
        return Path(cfg.output_dir)
    from hydra.core.hydra_config import HydraConfig

    if HydraConfig.initialized():
        return Path(HydraConfig.get().runtime.output_dir)
    raise ValueError("output_dir must be set when run_position_stats is called outside longrecipe-positions; "
                     "pass output_dir=<folder>")


def run_position_stats(cfg: Any) -> dict[str, Any]:
    """Compute, log and save the statistics table for every scheme and target length (see module doc)."""
    from hydra.utils import instantiate
    from omegaconf import OmegaConf
    from tqdm.auto import tqdm

    out = _output_dir(cfg)
    if (out / "stats.json").exists() and not cfg.get("overwrite", False):
        raise FileExistsError(f"{out / 'stats.json'} exists; pass overwrite=true or another output_dir")
    targets = [int(t) for t in cfg.target_lengths]
    ratio = float(cfg.token_ratio)
    num_samples = int(cfg.num_samples)
    if not targets or min(targets) < 2:
        raise ValueError(f"target_lengths must be a non-empty list of integers >= 2, got {targets}")
    if not 0.0 < ratio <= 1.0:
        raise ValueError(f"token_ratio must be in (0, 1], got {ratio}; the paper uses 0.3")
    if num_samples < 1:
        raise ValueError(f"num_samples must be >= 1, got {num_samples}")
    names = list(cfg.schemes)
    if not names:
        raise ValueError("schemes is empty; keep at least one of position@schemes.<name> in conf/positions.yaml")

    texts, corpus_info = load_documents(cfg)
    tokenizer = load_tokenizer(cfg)
    stream = token_stream(texts, tokenizer)
    corpus_info.update(tokens=int(stream.shape[0]), tokenizer=str(getattr(tokenizer, "name_or_path", "")))
    log.info("corpus %s: %d documents, %d tokens", corpus_info["source"], len(texts), stream.shape[0])

    full_length = set(cfg.get("full_length_schemes") or [])
    unknown = sorted(full_length - set(names))
    if unknown:
        raise ValueError(f"full_length_schemes names {unknown}, which are not in schemes {names}")
    records: list[dict[str, Any]] = []
    progress = tqdm(total=len(targets) * len(names) * num_samples, desc="position stats", leave=False)
    for t_idx, target in enumerate(targets):
        sample_length = max(2, round(ratio * target))
        samples = {length: sample_windows(stream, length, num_samples, np.random.default_rng([int(cfg.seed), length]))
                   for length in {sample_length, *([target] if full_length else [])}}
        node = OmegaConf.create(OmegaConf.to_container(cfg, resolve=False))
        node.target_length = target
        for s_idx, name in enumerate(names):
            length = target if name in full_length else sample_length
            windows = samples[length]
            scheme = instantiate(node.schemes[name]).bind_tokenizer(tokenizer)
            rows = []
            for k, window in enumerate(windows):
                positions = scheme(window, sample_rng(int(cfg.seed), t_idx, k, stream=s_idx))
                rows.append(position_stats(positions, target, num_buckets=int(cfg.num_buckets)).as_dict())
                progress.update(1)
            table = {key: np.asarray([r[key] for r in rows], dtype=np.float64) for key in STAT_KEYS}
            record: dict[str, Any] = {"scheme": name, "target_length": target, "sample_length": length,
                                      "num_samples": num_samples}
            for key in STAT_KEYS:
                record[key] = float(table[key].mean())
                record[f"{key}_std"] = float(table[key].std())
            record["max_position_max"] = int(table["max_position"].max())
            records.append(record)
    progress.close()

    markdown = f"{DEFINITIONS}\n\n" + format_table(records)
    log.info("position statistics (%s, %d samples each):\n%s", corpus_info["source"], num_samples, markdown)
    result = {
        "corpus": corpus_info,
        "token_ratio": ratio,
        "num_buckets": int(cfg.num_buckets),
        "definitions": DEFINITIONS,
        "config": OmegaConf.to_container(cfg, resolve=True),
        "results": records,
    }
    write_text_atomic(out / "table.md", markdown)
    plot_stats(records, out / "positions.png")
    write_json_atomic(out / "stats.json", result)
    return result
