"""Position-id throughput of every scheme on one core (issue target: >= 10M ids/s each).

Run: ``python benchmarks/positions.py [--repeats 200]``. Prints one JSON line per scheme with the
ids/s at 24k -> 80k and 38.4k -> 128k (30% samples) on real-looking token ids: the synthetic corpus
tokenized by the locally trained tiny tokenizer (so LongRecipe's delimiter search is included).

Side by side with the authors' released generator (a checkout of zhiyuanhubj/LongRecipe; its
``utils/preprocess_data.py`` imports ``tiktoken``, so install that too) on the same real-text ids::

    python benchmarks/positions.py --released /path/to/LongRecipe --corpus ../shared/nltk_data/corpora/state_union \
        --tokenizer packaged:smollm2_135m_instruct

times RPES (``setting_choice='R'``), PoSE (``'pose'``) and LongRecipe (``FSProcessor``: ``split_sentences`` +
``generate_res_lists``) in both, on the same windows, and compares the LongRecipe statistics (average contiguous
run, average token distance, segments per sample). One JSON line per scheme and setting, then a summary line.
"""

from __future__ import annotations

import argparse
import json
import os
import time
from pathlib import Path

import numpy as np

from longrecipe.positions import FullLength, LongRecipePositions, PoSE, RandomizedPositions
from longrecipe.positions.report import token_stream
from longrecipe.tiny import synthetic_documents
from longrecipe.tiny.tokenizer import cached_tokenizer
from longrecipe.utils.seeding import sample_rng

SETTINGS = ((24_000, 80_000), (38_400, 128_000))
TARGET_IDS_PER_S = 10_000_000


def _load_released(root: Path):
    """The released code's two generator modules, imported from their files (never copied into ours)."""
    import importlib.util
    import sys

    mods = {}
    for name, rel in (("released_fs", "preprocess_token_PI/FSProcessor.py"), ("released_pre", "utils/preprocess_data.py")):
        spec = importlib.util.spec_from_file_location(name, root / rel)
        if spec is None or not (root / rel).is_file():
            raise ValueError(f"--released {root}: {rel} not found; pass a checkout of zhiyuanhubj/LongRecipe")
        module = importlib.util.module_from_spec(spec)
        sys.modules[name] = module
        spec.loader.exec_module(module)
        mods[name] = module
    return mods["released_fs"], mods["released_pre"]


class _Batch:
    """What the released ``preprocess_dataset`` needs of a dataset: ``map(fn, batched=True, ...)``."""

    def __init__(self, windows):
        self.windows = windows

    def __len__(self) -> int:
        return len(self.windows)

    def __iter__(self):
        return iter({"input_ids": w.tolist()} for w in self.windows)

    def map(self, fn, **_):
        return fn({"input_ids": [w.tolist() for w in self.windows]})


def released_side_by_side(args) -> None:
    import pickle  # the released code reads its inputs from pickle files; we only write them for it, in a tmp dir
    import random
    import tempfile

    from longrecipe.models.loading import load_tokenizer
    from longrecipe.positions import delimiter_token_ids
    from longrecipe.positions.report import load_documents
    from longrecipe.positions.stats import average_distance, average_segment_length

    os.environ.setdefault("TQDM_DISABLE", "1")
    fs_mod, pre_mod = _load_released(Path(args.released))
    tok = load_tokenizer({"pretrained": args.tokenizer} if args.tokenizer.startswith("packaged:") else
                         {"tokenizer": args.tokenizer})
    texts, _ = load_documents(type("C", (), {"corpus": args.corpus, "encoding_errors": "replace", "seed": 0,
                                             "synthetic_docs": 60})())
    stream = token_stream(texts, tok)
    delims = delimiter_token_ids(tok).tolist()
    summary = {}
    for n, target in SETTINGS:
        windows = [stream[o:o + n] for o in np.random.default_rng(n).integers(0, stream.size - n, args.samples)]
        ours = {"rpes": RandomizedPositions(target), "pose": PoSE(target, variant="longrecipe_release"),
                "longrecipe": LongRecipePositions(target, delimiter_ids=delims)}
        timed = {}
        for name, scheme in ours.items():
            rngs = [sample_rng(0, 0, i) for i in range(len(windows))]
            start = time.perf_counter()
            pos = [scheme(w, r) for w, r in zip(windows, rngs)]
            timed[name] = {"ours_s": time.perf_counter() - start, "ours": pos}
        random.seed(0)
        proc = fs_mod.FSProcessor.__new__(fs_mod.FSProcessor)
        proc.base_length, proc.extend_length, proc.min_num, proc.max_num = n, target, 1, 1
        start = time.perf_counter()
        rel_pos = []
        for w in windows:
            _, idxs = proc.split_sentences(w.tolist(), delims)
            proc.indexes = [idxs]
            rel_pos.append(np.asarray(proc.generate_res_lists(proc.process_new_indexes())[0][:n]))
        timed["longrecipe"].update(released_s=time.perf_counter() - start, released=rel_pos)
        with tempfile.TemporaryDirectory() as tmp:
            right = Path(tmp) / "right_points.pkl"
            right.write_bytes(pickle.dumps([random.randint(1, (n + 1) // 2) for _ in windows]))
            for name, choice in (("rpes", "R"), ("pose", "pose")):
                start = time.perf_counter()
                out = pre_mod.preprocess_dataset(_Batch(windows), None, "llama3", choice, n, target, str(right),
                                                 str(right), 1)
                timed[name].update(released_s=time.perf_counter() - start,
                                   released=[np.asarray(p)[:n] for p in out["position_ids"]])
        for name, t in timed.items():
            row = {"scheme": name, "sample_length": n, "target_length": target, "samples": len(windows),
                   "ours_ids_per_s": round(n * len(windows) / t["ours_s"]),
                   "released_ids_per_s": round(n * len(windows) / t["released_s"]),
                   "speedup": round(t["released_s"] / t["ours_s"], 1)}
            for side in ("ours", "released"):
                row[f"{side}_avg_distance"] = float(np.mean([average_distance(p) for p in t[side]]))
                row[f"{side}_avg_run"] = float(np.mean([average_segment_length(p) for p in t[side]]))
            row["distance_rel_diff"] = row["ours_avg_distance"] / row["released_avg_distance"] - 1
            row["run_rel_diff"] = row["ours_avg_run"] / row["released_avg_run"] - 1
            print(json.dumps(row))
            summary.setdefault(name, []).append(row["speedup"])
    print(json.dumps({"summary": "speedup over the released generator (min over settings)",
                      **{k: min(v) for k, v in summary.items()}, "tokenizer": args.tokenizer,
                      "delimiter_ids": delims}))


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--repeats", type=int, default=200, help="samples timed per scheme and setting")
    parser.add_argument("--tokenizer-cache", default="outputs/cache/tiny-tokenizer")
    parser.add_argument("--released", default=None, help="checkout of the authors' code: compare side by side")
    parser.add_argument("--corpus", default="../shared/nltk_data/corpora/state_union")
    parser.add_argument("--tokenizer", default="packaged:smollm2_135m_instruct")
    parser.add_argument("--samples", type=int, default=32, help="windows per setting in --released mode")
    args = parser.parse_args()
    if hasattr(os, "sched_setaffinity"):
        os.sched_setaffinity(0, {min(os.sched_getaffinity(0))})  # one core
    if args.released:
        released_side_by_side(args)
        return
    tokenizer = cached_tokenizer(args.tokenizer_cache)
    stream = token_stream(synthetic_documents(60, seed=0), tokenizer)
    schemes = {
        "flt": lambda t: FullLength(t),
        "rpes": lambda t: RandomizedPositions(t),
        "pose": lambda t: PoSE(t),
        "longrecipe": lambda t: LongRecipePositions(t).bind_tokenizer(tokenizer),
        "longrecipe_max_skip64": lambda t: LongRecipePositions(t, max_skip=64).bind_tokenizer(tokenizer),
    }
    for name, make in schemes.items():
        rows = []
        for n, target in SETTINGS:
            scheme = make(target)
            samples = [stream[o:o + n] for o in np.linspace(0, stream.size - n, 8).astype(int)]
            rngs = [sample_rng(0, 0, i) for i in range(args.repeats)]
            scheme(samples[0], sample_rng(1, 0, 0))  # warm-up
            start = time.perf_counter()
            for i, r in enumerate(rngs):
                scheme(samples[i % len(samples)], r)
            seconds = time.perf_counter() - start
            rows.append({"sample_length": n, "target_length": target,
                         "ids_per_s": round(n * args.repeats / seconds),
                         "us_per_sample": round(seconds / args.repeats * 1e6, 1)})
        worst = min(r["ids_per_s"] for r in rows)
        print(json.dumps({"scheme": name, "settings": rows, "min_ids_per_s": worst,
                          "target_ids_per_s": TARGET_IDS_PER_S, "ok": worst >= TARGET_IDS_PER_S}))


if __name__ == "__main__":
    main()
