"""The paper's experiment grid (Table 1 rows, Table 2 ablations, Fig. 2 token ratios) as data.

``paper_experiments()`` returns ``{name: PaperExperiment}``; ``render_yaml(exp)`` writes the
``conf/experiment/<name>.yaml`` recipe for ``longrecipe-run`` (extend → replay → merge → evaluate).
``experiments/paper/make_configs.py`` regenerates the committed YAMLs from here.

Table 4 (Llama3-8B / Qwen2-7B; Mistral-7B-v0.3 is not listed there, see ``MODELS``):

| | Llama3 80k | Llama3 128k | Qwen2 80k | Qwen2 128k |
|---|---|---|---|---|
| sample length | 24k | 38.4k | 24k | 38.4k |
| Dynamic NTK θ / factor | 48.9M / 10 | 131.5M / 16 | 13.5M / 4 | 13.5M / 4 |
| batch / steps / lr | 96 / 104 / 5e-5 | same | same | same |
| GPUs | 1 | 2 | 1 | 1 |

Sample lengths 24000 / 38400 tokens (30% of 80k / 128k) reproduce Table 4's total tokens exactly
(96 × 104 × 24000 = 240M, × 38400 = 384M); the windows themselves are 81920 / 131072 (8k × RoPE factor 10 / 16),
so ``token_ratio`` is 24000 / 81920 = 0.29296875 (``run_meta.json`` records 0.3). Fig. 2 variants use the ratio
itself (10% → 8192 tokens).
"""

from __future__ import annotations

from dataclasses import dataclass

# model group, display name, base window, rope group per target length, strategy per target length, GPUs
MODELS: dict[str, dict] = {
    "llama3_8b": {"group": "llama3_8b_instruct", "base_length": 8192,
                  "rope": {"80k": "paper_llama3_80k", "128k": "paper_llama3_128k"},
                  "strategy": {"80k": "deepspeed_zero3_offload", "128k": "deepspeed_ulysses"},
                  "devices": {"80k": 1, "128k": 2}, "name": "Llama3-8B-Instruct"},
    # Mistral-7B-v0.3 is not in Table 4: like Qwen2-7B it has a 32k window and rope_theta 1e6, so it takes
    # Qwen2's Dynamic NTK settings (θ 13.5M, factor 4); 128k on 2 GPUs with Ulysses like Llama3 (same size class).
    "mistral_7b": {"group": "mistral_7b_v03", "base_length": 32768,
                   "rope": {"80k": "paper_qwen2", "128k": "paper_qwen2"},
                   "strategy": {"80k": "deepspeed_zero3_offload", "128k": "deepspeed_ulysses"},
                   "devices": {"80k": 1, "128k": 2}, "name": "Mistral-7B-v0.3"},
    "qwen2_7b": {"group": "qwen2_7b", "base_length": 32768,
                 "rope": {"80k": "paper_qwen2", "128k": "paper_qwen2"},
                 "strategy": {"80k": "deepspeed_zero3_offload", "128k": "deepspeed_zero3_offload"},
                 "devices": {"80k": 1, "128k": 1}, "name": "Qwen2-7B"},
}
LENGTHS = {"80k": {"target_length": 81920, "sample_length": 24000},
           "128k": {"target_length": 131072, "sample_length": 38400}}
METHODS = {"flt": "FLT", "rpes": "RPES", "pose": "PoSE", "longrecipe": "LongRecipe"}
# Table 4's 24k / 38.4k samples are 30% of 80k / 128k (decimal): 24000 / 81920 = 38400 / 131072 = 0.29296875
SAMPLE_RATIO = 0.29296875
# anchor POS types: the top of the paper's Fig. 4 (run the `analyze` stage to derive them for another model)
PAPER_ANCHORS = ("NUM", "PRON", "AUX")
TOKEN_RATIOS = (0.1, 0.2, 0.3, 0.4, 1.0)
BATCH, STEPS, LR, REPLAY_LR, WEIGHT_DECAY, MERGE_LAMBDA = 96, 104, 5.0e-5, 5.0e-6, 0.1, 0.5
# Fu et al. 2024 (length-upsampled SlimPajama); the paper uses 10k of its 80k samples
EXTENSION_HUB = "yaofu/slimpajama-per-source-length-upsample"
EXTENSION_DATA = "data/slimpajama_upsample"
# WizardLM-evol-instruct-70k + Magicoder-OSS-Instruct-75K as JSONL files in one local folder (68M tokens)
REPLAY_DATA = "data/replay/wizardlm_magicoder"


@dataclass(frozen=True)
class PaperExperiment:
    name: str
    model: str
    length: str
    method: str
    selection: str = "anchors"
    token_ratio: float | None = None
    note: str = ""


def paper_experiments() -> dict[str, PaperExperiment]:
    """Table 1 (3 models × 80k/128k × 4 methods), Table 2 ablations and Fig. 2 token ratios (Llama3 80k)."""
    out: dict[str, PaperExperiment] = {}
    for model in MODELS:
        for length in LENGTHS:
            for method in METHODS:
                name = f"{model}_{length}_{method}"
                out[name] = PaperExperiment(name, model, length, method, note="Table 1")
    for sel, label in (("none", "w/o T"), ("random", "Random T")):
        name = f"llama3_8b_80k_longrecipe_sel_{sel}"
        out[name] = PaperExperiment(name, "llama3_8b", "80k", "longrecipe", selection=sel,
                                    note=f"Table 2 ablation: LongRecipe {label}")
    for ratio in TOKEN_RATIOS:
        name = f"llama3_8b_80k_longrecipe_ratio{int(round(ratio * 100))}"
        out[name] = PaperExperiment(name, "llama3_8b", "80k", "longrecipe", token_ratio=ratio,
                                    note=f"Fig. 2: token ratio {int(round(ratio * 100))}%")
    return out


def render_yaml(exp: PaperExperiment) -> str:
    """The complete ``conf/experiment/<name>.yaml`` text for ``exp`` (first lines: package header, launch)."""
    m, n = MODELS[exp.model], LENGTHS[exp.length]
    devices = m["devices"][exp.length]
    strategy = m["strategy"][exp.length]
    ratio = SAMPLE_RATIO if exp.token_ratio is None else exp.token_ratio
    shown = 0.3 if exp.token_ratio is None else exp.token_ratio
    extend_ratio = ""
    if exp.method == "flt":
        extend_ratio, shown = "\n    token_ratio: 1.0", 1.0
    sample = round(ratio * n["target_length"]) if exp.method != "flt" else n["target_length"]
    selected = exp.method == "longrecipe" and exp.selection != "none"
    stages = ["extend", "replay", "merge", "evaluate", "report"] if exp.method == "longrecipe" else \
        ["extend", "evaluate", "report"]
    if selected:
        stages = ["prepare", *stages]
    selection = exp.selection if exp.method == "longrecipe" else "none"
    sp = f"\n    strategy:\n      sequence_parallel_size: {devices}" if strategy == "deepspeed_ulysses" else ""
    lines = [
        "# @package _global_",
        f"# Launch: longrecipe-run experiment={exp.name}   # GPU x{devices}: {m['name']} "
        f"{m['base_length'] // 1024}k -> {exp.length}, {METHODS[exp.method]}",
        f"# {exp.note}. Table 4 settings: {sample}-token samples, batch {BATCH} (1 per device x {BATCH} accumulation),",
        f"# {STEPS} steps, lr 5e-5; replay lr 5e-6 (weight decay {WEIGHT_DECAY}, 10% of the extension tokens); "
        f"merge λ1 = λ2 = {MERGE_LAMBDA}.",
        f"# Data (local folders, see docs/experiments.md): {EXTENSION_DATA} = Fu et al. 2024 length-upsampled "
        "SlimPajama",
        f"# (save_to_disk of {EXTENSION_HUB}, 10k samples);",
        f"# {REPLAY_DATA} = WizardLM-evol-instruct-70k +",
        "# Magicoder-OSS-Instruct-75K JSONL. Generated by experiments/paper/make_configs.py "
        "(longrecipe.experiments.paper).",
        f"experiment_name: {exp.name}",
        f"run_dir: outputs/paper/{exp.name}",
        f"stages: [{', '.join(stages)}]",
        "meta:",
        f"  method: {METHODS[exp.method]}",
        f"  model_name: {exp.model}",
        f"  selection: {selection}",
        f"  token_ratio: {shown}",
        "",
        "train_common:",
        "  groups:",
        f"    model: {m['group']}",
        f"    strategy: {strategy}",
        "    trainer: gpu",
        "    logger: csv",
        "  config:",
        "    seed: 42",
        f"    base_length: {m['base_length']}",
        f"    target_length: {n['target_length']}",
        f"    # {ratio} x {n['target_length']} = {round(ratio * n['target_length'])} tokens per sample",
        f"    token_ratio: {ratio}",
        "    trainer:",
        f"      devices: {devices}",
        f"      accumulate_grad_batches: {BATCH}" + sp,
        "",
        "extend:",
        "  groups:",
        f"    position: {exp.method}",
        f"    rope: {m['rope'][exp.length]}",
        "    data: long_docs",
        "  config:" + extend_ratio,
        *(["    # the paper's PoSE rows come from the LongRecipe release's PoSE baseline (cut lt ~ U{0..L'-n}, skip",
           "    # rt ~ U{lt..L'-n}; most samples get no skip), not Zhu et al.'s PoSE: that variant reproduces the",
           "    # paper's PoSE token distance (Fig. 3: 21.3k at 128k / 38.4k; this variant 20.6k, Zhu et al.'s 27.7k) and",
           "    # so its 'LongRecipe ~2x PoSE'. Source: utils/preprocess_data.py, setting_choice='pose', of",
           "    # zhiyuanhubj/LongRecipe (docs/positions.md). position.variant=zhu2023 gives the published PoSE.",
           "    position:",
           "      variant: longrecipe_release"] if exp.method == "pose" else []),
        "    data:",
        *([f"      source: {EXTENSION_DATA}", "      max_samples: 10000"] if not selected else []),
        "      batch_size: 1",
        "    trainer:",
        f"      max_steps: {STEPS}",
        "    optim:",
        "      lr: 5.0e-5",
        "",
        "replay:",
        "  groups:",
        "    data: replay",
        "    position: null",
        "    rope: none",
        "  config:",
        "    data:",
        f"      source: {REPLAY_DATA}",
        "      budget_fraction: 0.1",
        "      batch_size: 1",
        "    optim:",
        "      lr: 5.0e-6",
        f"      weight_decay: {WEIGHT_DECAY}",
        "    trainer:",
        "      max_steps: -1",
        "      max_epochs: 1",
        "",
        "merge:",
        "  method: linear",
        f"  lambda: {MERGE_LAMBDA}",
        "",
        "# impactful-token selection (LongRecipe): sentences with the anchor POS types are kept / upsampled",
        "prepare:",
        "  groups:",
        f"    selection: {exp.selection if selected else 'anchors'}",
        "  config:",
        "    corpus:",
        f"      source: {EXTENSION_DATA}",
        "    n_samples: 10000",
        *([f"    selection:\n      anchors: [{', '.join(PAPER_ANCHORS)}]"] if exp.selection == "anchors" else []),
        "",
        "evaluate:",
        "  evals: [niah_m, ruler, longbench, general]",
        "  config:",
        "    eval:",
        f"      lengths: [{', '.join(str(x) for x in _eval_lengths(n['target_length']))}]",
        # Appendix D: Qwen2's RULER average leaves out variable tracking (12 subsets)
        *(["      exclude: [vt]"] if exp.model == "qwen2_7b" else []),
    ]
    return "\n".join(lines) + "\n"


def _eval_lengths(target: int) -> list[int]:
    """RULER/NIAH lengths up to the target window (powers of two from 4k, then the target)."""
    out, n = [], 4096
    while n < target:
        out.append(n)
        n *= 2
    return [*out, target]
