"""Position-id throughput of every scheme on one core (issue target: >= 10M ids/s each).

Run: ``python benchmarks/positions.py [--repeats 200]``. Prints one JSON line per scheme with the
ids/s at 24k -> 80k and 38.4k -> 128k (30% samples) on real-looking token ids: the synthetic corpus
tokenized by the locally trained tiny tokenizer (so LongRecipe's delimiter search is included).

Side by side with the authors' released generator (a checkout of zhiyuanhubj/LongRecipe; its
``utils/preprocess_data.py`` imports ``tiktoken``, so install that too) on the same real-text ids::

    python benchmarks/positions.py --released /path/to/LongRecipe --corpus ../shared/nltk_data/corpora/state_union \
        --tokenizer <Llama-3 tokenizer folder, or packaged:smollm2_135m_instruct>

runs, on the same windows of the tokenized corpus (``--samples`` per setting), both sides of

* FLT: ours ``FullLength`` on whole windows of ``L'`` tokens; released: ``torch.arange`` as ``utils/train.py``
  builds it (the release has no generator for FLT);
* RPES: ``setting_choice='R'`` of ``utils/preprocess_data.preprocess_dataset``;
* PoSE: ``setting_choice='pose'`` vs ``PoSE(variant="longrecipe_release")``, ``--pose-samples`` draws (its positions
  do not read the ids; the per-sample spread is large), with the closed form of its mean distance;
* LongRecipe: ``FSProcessor.split_sentences`` + ``generate_res_lists`` vs ``LongRecipePositions`` (and whether the
  segment starts are identical on every window);
* LongRecipe with the training prefix: ``setting_choice='LongRecipe'`` (``arange(r)`` + the pickled Algorithm-1
  positions) vs ``leading_block=True`` (statistics only: the released side reuses the positions above).

It prints one JSON line per scheme and setting (ids/s, speed-up, mean average distance and contiguous run with their
standard errors on both sides), then a summary line. Only the released code's own inputs are written as pickle
files (its loader reads them), in a temporary folder.
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


def _stats_of(positions) -> tuple[float, float]:
    from longrecipe.positions.stats import average_distance, average_segment_length

    return average_distance(positions), average_segment_length(positions)


class _Side:
    """Running totals of one side (ours / released) of one scheme: seconds, ids, per-sample statistics."""

    def __init__(self) -> None:
        self.seconds, self.ids, self.dist, self.run = 0.0, 0, [], []

    def add(self, seconds: float, positions) -> None:
        self.seconds += seconds
        for p in positions:
            p = np.asarray(p)
            self.ids += p.shape[0]
            d, r = _stats_of(p)
            self.dist.append(d)
            self.run.append(r)

    def summary(self, prefix: str) -> dict:
        dist, run = np.asarray(self.dist), np.asarray(self.run)
        return {f"{prefix}_ids_per_s": round(self.ids / self.seconds),
                f"{prefix}_avg_distance": float(dist.mean()),
                f"{prefix}_avg_distance_sem": float(dist.std(ddof=1) / np.sqrt(dist.size)) if dist.size > 1 else 0.0,
                f"{prefix}_avg_run": float(run.mean()),
                f"{prefix}_avg_run_sem": float(run.std(ddof=1) / np.sqrt(run.size)) if run.size > 1 else 0.0}


def released_side_by_side(args) -> None:
    """Time and compare our schemes against the released generator on the same windows (see the module doc)."""
    import contextlib
    import pickle  # the released code reads its inputs from pickle files; we only write them for it, in a tmp dir
    import random
    import tempfile

    import torch

    from longrecipe.models.loading import load_tokenizer
    from longrecipe.positions import delimiter_token_ids
    from longrecipe.positions.longrecipe import algorithm1_gap_means, expected_average_distance
    from longrecipe.positions.pose import release_pose_expected_distance
    from longrecipe.positions.report import load_documents

    fs_mod, pre_mod = _load_released(Path(args.released))
    tok = load_tokenizer({"pretrained": args.tokenizer} if args.tokenizer.startswith("packaged:") else
                         {"tokenizer": args.tokenizer})
    texts, _ = load_documents(type("C", (), {"corpus": args.corpus, "encoding_errors": "replace", "seed": 0,
                                             "synthetic_docs": 60})())
    stream = token_stream(texts, tok)
    delims = delimiter_token_ids(tok).tolist()
    quiet = open(os.devnull, "w")  # the released code's tqdm bars and prints (they stay in its timings)
    random.seed(0)
    speedups: dict[str, list[float]] = {}
    for n, target in SETTINGS:
        offsets = np.random.default_rng(n).integers(0, stream.size - target, args.samples)
        windows = [stream[o:o + n] for o in offsets]
        sides = {name: (_Side(), _Side()) for name in ("flt", "rpes", "pose", "longrecipe", "longrecipe_leading_block")}
        extra: dict[str, dict] = {name: {} for name in sides}

        # FLT: full-length training over the whole window; the released code has no generator for it, its
        # train.py builds torch.arange(len) per batch (stage 1, or when a batch carries no position_ids)
        flt = FullLength(target)
        for i, o in enumerate(offsets[: args.flt_samples]):
            full = stream[o:o + target]
            t0 = time.perf_counter()
            ours = flt(full, sample_rng(n, 0, i))
            t1 = time.perf_counter()
            rel = torch.arange(torch.as_tensor(full).unsqueeze(0).shape[-1]).unsqueeze(0)[0].numpy()
            t2 = time.perf_counter()
            sides["flt"][0].add(t1 - t0, [ours])
            sides["flt"][1].add(t2 - t1, [rel])

        # LongRecipe: FSProcessor.split_sentences + generate_res_lists, one window at a time; then the released
        # training prefix (preprocess_dataset 'LongRecipe': arange(r) + Algorithm-1 positions[r:]) on the same draws
        scheme = LongRecipePositions(target, delimiter_ids=delims)
        block = LongRecipePositions(target, delimiter_ids=delims, leading_block=True)
        proc = fs_mod.FSProcessor.__new__(fs_mod.FSProcessor)
        proc.base_length, proc.extend_length, proc.min_num, proc.max_num = n, target, 1, 1
        rel_alg1, same_segments, closed = [], 0, {"paper": [], "release": []}
        for i, w in enumerate(windows):
            rng = sample_rng(n, 0, i)
            t0 = time.perf_counter()
            ours = scheme(w, rng)
            t1 = time.perf_counter()
            with contextlib.redirect_stderr(quiet), contextlib.redirect_stdout(quiet):
                _, idxs = proc.split_sentences(w.tolist(), delims)
                proc.indexes = [idxs]
                rel = proc.generate_res_lists(proc.process_new_indexes())[0][:n]
            t2 = time.perf_counter()
            sides["longrecipe"][0].add(t1 - t0, [ours])
            sides["longrecipe"][1].add(t2 - t1, [rel])
            rel_alg1.append(rel)
            starts = scheme.segment_starts(w)
            same_segments += [s[0] for s in idxs] == starts.tolist()
            for slots, values in closed.items():
                values.append(expected_average_distance(
                    starts, n, algorithm1_gap_means(starts.size, n, target, slots=slots)))
            t0 = time.perf_counter()
            ours_block = block(w, sample_rng(n, 1, i))
            sides["longrecipe_leading_block"][0].add(time.perf_counter() - t0, [ours_block])
        extra["longrecipe"].update(segments_identical=f"{same_segments}/{len(windows)}",
                                   closed_form_avg_distance_ours=float(np.mean(closed["paper"])),
                                   closed_form_avg_distance_released=float(np.mean(closed["release"])))
        right_points = [random.randint(1, (n + 1) // 2) for _ in windows]  # as FSProcessor.run_process draws them

        with tempfile.TemporaryDirectory() as tmp:
            right, alg1 = Path(tmp) / "right_points.pkl", Path(tmp) / "alg1.pkl"
            right.write_bytes(pickle.dumps(right_points))
            alg1.write_bytes(pickle.dumps(rel_alg1))
            runs = [("rpes", "R", windows, right), ("longrecipe_leading_block", "LongRecipe", windows, alg1)]
            # PoSE's positions do not read the ids: more draws of the same windows, so that the mean distance
            # is measured to a fraction of a percent (its per-sample spread is large)
            runs.append(("pose", "pose", [windows[i % len(windows)] for i in range(args.pose_samples)], right))
            for name, choice, ws, fs_file in runs:
                ours_scheme = {"rpes": RandomizedPositions(target), "pose": PoSE(target, variant="longrecipe_release"),
                               "longrecipe_leading_block": None}[name]
                for lo in range(0, len(ws), args.batch):
                    batch = ws[lo:lo + args.batch]
                    if ours_scheme is not None:
                        t0 = time.perf_counter()
                        ours = [ours_scheme(w, sample_rng(n, 2, lo + i)) for i, w in enumerate(batch)]
                        sides[name][0].add(time.perf_counter() - t0, ours)
                    if name == "longrecipe_leading_block":  # released: the pickled positions of this batch
                        fs_file.write_bytes(pickle.dumps(rel_alg1[lo:lo + args.batch]))
                        right.write_bytes(pickle.dumps(right_points[lo:lo + args.batch]))
                    t0 = time.perf_counter()
                    with contextlib.redirect_stderr(quiet), contextlib.redirect_stdout(quiet):
                        out = pre_mod.preprocess_dataset(_Batch(batch), None, "llama3", choice, n, target,
                                                         str(right), str(fs_file), 1)
                    sides[name][1].add(time.perf_counter() - t0, [np.asarray(p)[:n] for p in out["position_ids"]])
                if name == "longrecipe_leading_block":
                    right.write_bytes(pickle.dumps(right_points))
        no_skip, closed = release_pose_expected_distance(n, target)
        extra["pose"].update(closed_form_avg_distance=closed, closed_form_no_skip_share=no_skip)
        extra["flt"]["closed_form_avg_distance"] = (target + 1) / 3

        for name, (ours_side, rel_side) in sides.items():
            row = {"scheme": name, "sample_length": target if name == "flt" else n, "target_length": target,
                   "samples": len(rel_side.dist), **ours_side.summary("ours"), **rel_side.summary("released")}
            if ours_side.seconds > 0 and name != "longrecipe_leading_block":
                row["speedup"] = round(row["ours_ids_per_s"] / row["released_ids_per_s"], 1)
                speedups.setdefault(name, []).append(row["speedup"])
            row["distance_rel_diff"] = row["ours_avg_distance"] / row["released_avg_distance"] - 1
            row["run_rel_diff"] = row["ours_avg_run"] / row["released_avg_run"] - 1
            row.update(extra[name])
            print(json.dumps(row))
    quiet.close()
    generated = {k: min(v) for k, v in speedups.items() if k != "flt"}
    print(json.dumps({"summary": "speed-up over the released code (min over settings)", **{k: min(v) for k, v in
                      speedups.items()}, "generated_schemes_min": min(generated.values()),
                      "generated_schemes_ok_30x": min(generated.values()) >= 30,
                      "tokenizer": args.tokenizer, "delimiter_ids": delims, "corpus": args.corpus,
                      "corpus_tokens": int(stream.size)}))


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--repeats", type=int, default=200, help="samples timed per scheme and setting")
    parser.add_argument("--tokenizer-cache", default="outputs/cache/tiny-tokenizer")
    parser.add_argument("--released", default=None, help="checkout of the authors' code: compare side by side")
    parser.add_argument("--corpus", default="../shared/nltk_data/corpora/state_union")
    parser.add_argument("--tokenizer", default="packaged:smollm2_135m_instruct")
    parser.add_argument("--samples", type=int, default=256, help="windows per setting in --released mode")
    parser.add_argument("--pose-samples", type=int, default=4096, help="PoSE draws per setting in --released mode")
    parser.add_argument("--flt-samples", type=int, default=64, help="FLT windows per setting in --released mode")
    parser.add_argument("--batch", type=int, default=32, help="windows per released preprocess_dataset call")
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
