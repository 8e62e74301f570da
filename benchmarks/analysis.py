"""Speed of the impactful token analysis (scored tokens/s) and of data selection (documents/s); prints JSON.

    python benchmarks/analysis.py                       # tiny Llama pair, CPU (or GPU when present)
    python benchmarks/analysis.py --context 2048 --samples 16 --hidden 256 --layers 4
"""

from __future__ import annotations

import argparse
import json
import tempfile
import time
from pathlib import Path


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--context", type=int, default=512)
    parser.add_argument("--samples", type=int, default=16)
    parser.add_argument("--hidden", type=int, default=128)
    parser.add_argument("--layers", type=int, default=4)
    parser.add_argument("--vocab", type=int, default=512)
    parser.add_argument("--docs", type=int, default=32)
    parser.add_argument("--distribution-shift", action="store_true", help="also time the eq. 2 summary")
    args = parser.parse_args()

    import torch
    from transformers import AutoModelForCausalLM

    from longrecipe.analysis.run import run_analysis
    from longrecipe.config import compose
    from longrecipe.selection.prepare import prepare_dataset
    from longrecipe.tiny import synthetic_documents, tiny_model_config, train_tokenizer

    with tempfile.TemporaryDirectory() as tmp:
        tmp = Path(tmp)
        tok = train_tokenizer(synthetic_documents(40, seed=1), vocab_size=args.vocab, save_dir=tmp / "tok")
        torch.manual_seed(0)
        cfg = tiny_model_config("llama", vocab_size=args.vocab, hidden_size=args.hidden, num_hidden_layers=args.layers,
                                max_position_embeddings=args.context)
        model = AutoModelForCausalLM.from_config(cfg)
        for name in ("base", "long"):
            model.save_pretrained(str(tmp / name))
            tok.save_pretrained(str(tmp / name))
            with torch.no_grad():
                model.lm_head.weight.add_(0.01 * torch.randn_like(model.lm_head.weight))
        overrides = [f"base_model={tmp / 'base'}", f"long_model={tmp / 'long'}", f"output_dir={tmp / 'an'}",
                     f"context_length={args.context}", f"max_samples={args.samples}", "corpus.n_synthetic=64",
                     f"distribution_shift={str(args.distribution_shift).lower()}"]
        t0 = time.perf_counter()
        result = run_analysis(compose("analyze", overrides))
        analysis_wall = time.perf_counter() - t0

        rows = {}
        for mode, extra in (("anchors", ["selection.anchors=[NUM]"]), ("random", ["selection=random"]),
                            ("none", ["selection=none"])):
            t0 = time.perf_counter()
            prov = prepare_dataset(compose("prepare", [f"tokenizer={tmp / 'base'}", f"output_dir={tmp / mode}",
                                                       f"corpus.n_synthetic={args.docs}", "target_length=1024",
                                                       "splitter=delimiters", *extra]))
            rows[mode] = {"docs_per_s": prov["docs_per_second"], "wall_s": time.perf_counter() - t0,
                          "samples": prov["n_samples"]}

    print(json.dumps({
        "device": result["device"], "dtype": result["dtype"], "torch_threads": torch.get_num_threads(),
        "model": {"hidden": args.hidden, "layers": args.layers, "vocab": args.vocab},
        "analysis": {"context": args.context, "samples": args.samples, "tokens": result["n_tokens"],
                     "distribution_shift": args.distribution_shift,
                     "scored_tokens_per_s": result["throughput_tokens_per_s"],
                     "tagging_s": result["tagging_seconds"], "wall_s": analysis_wall},
        "selection": rows,
    }, indent=2))


if __name__ == "__main__":
    main()
