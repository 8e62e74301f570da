"""Position-id throughput of every scheme on one core (issue target: >= 10M ids/s each).

Run: ``python benchmarks/positions.py [--repeats 200]``. Prints one JSON line per scheme with the
ids/s at 24k -> 80k and 38.4k -> 128k (30% samples) on real-looking token ids: the synthetic corpus
tokenized by the locally trained tiny tokenizer (so LongRecipe's delimiter search is included).
"""

from __future__ import annotations

import argparse
import json
import os
import time

import numpy as np

from longrecipe.positions import FullLength, LongRecipePositions, PoSE, RandomizedPositions
from longrecipe.positions.report import token_stream
from longrecipe.tiny import synthetic_documents
from longrecipe.tiny.tokenizer import cached_tokenizer
from longrecipe.utils.seeding import sample_rng

SETTINGS = ((24_000, 80_000), (38_400, 128_000))
TARGET_IDS_PER_S = 10_000_000


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--repeats", type=int, default=200, help="samples timed per scheme and setting")
    parser.add_argument("--tokenizer-cache", default="outputs/cache/tiny-tokenizer")
    args = parser.parse_args()
    if hasattr(os, "sched_setaffinity"):
        os.sched_setaffinity(0, {min(os.sched_getaffinity(0))})  # one core
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
