"""Evaluation throughput on CPU: prefill tokens/s and KV-cache decoding tokens/s for one NIAH sample (prints JSON).

    python benchmarks/eval_throughput.py --length 8192            # SmolLM2-135M-Instruct, RULER niah_single_2 at 8k

The sample is built by the project's RULER generator (essay haystack = state_union when ``../shared`` is present),
wrapped in the chat template; prefill = one forward over the prompt with the cache on; decoding = the project's
``generate_batched`` (greedy, KV cache) for ``--new-tokens`` tokens, minus the prefill it includes.
"""

from __future__ import annotations

import argparse
import json
import time
from pathlib import Path

import torch

from longrecipe.evaluation.generation import generate_batched, load_eval_model
from longrecipe.evaluation.haystack import PromptCodec
from longrecipe.evaluation.ruler import RulerOptions, generate_task

REPO = Path(__file__).resolve().parents[1]


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--model", default="packaged:smollm2_135m_instruct")
    parser.add_argument("--length", type=int, default=8192)
    parser.add_argument("--new-tokens", type=int, default=32)
    parser.add_argument("--essay", default=str(REPO.parent / "shared" / "nltk_data" / "corpora" / "state_union"))
    args = parser.parse_args()
    model, tokenizer = load_eval_model(args.model, dtype="float32", device="cpu")
    codec = PromptCodec(tokenizer, chat_template=True)
    essay = args.essay if Path(args.essay).is_dir() else "synthetic"
    (sample,) = generate_task("niah_single_2", args.length, 1, codec, RulerOptions(essay_source=essay, seed=0))
    ids = codec.encode(sample.prompt)
    with torch.no_grad():
        start = time.perf_counter()
        model(input_ids=torch.tensor([ids]), use_cache=True)
        prefill = time.perf_counter() - start
    start = time.perf_counter()
    (out,) = generate_batched(model, tokenizer, [ids], max_new_tokens=args.new_tokens, progress=False)
    total = time.perf_counter() - start
    decode = max(total - prefill, 1e-9)
    print(json.dumps({"model": args.model + " (float32, dequantised from GGUF Q4_1)", "task": "niah_single_2",
                      "prompt_tokens": len(ids), "haystack": essay, "prefill_s": round(prefill, 2),
                      "prefill_tokens_per_s": round(len(ids) / prefill, 1), "new_tokens": out["new_tokens"],
                      "decode_tokens_per_s": round(out["new_tokens"] / decode, 2), "generate_total_s": round(total, 2),
                      "prediction": out["prediction"][:80], "answers": sample.answers}))


if __name__ == "__main__":
    main()
