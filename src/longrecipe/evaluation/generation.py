"""Model loading for evaluation and batched greedy generation with a KV cache.

``load_eval_model`` uses plain transformers: an exported longrecipe model folder carries its RoPE scaling in
``config.rope_parameters`` and the extended ``max_position_embeddings``, so ``from_pretrained`` restores it.
Optional overrides let a base checkpoint be evaluated with a scaling applied at load time.
"""

from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path
from typing import Any

from longrecipe.utils.logging import get_logger

log = get_logger(__name__)

DTYPES = ("auto", "float32", "bfloat16", "float16")
TRUNCATIONS = ("middle", "left", "none")


def load_eval_model(
    path: str | Path,
    dtype: str = "auto",
    attn_implementation: str | None = "sdpa",
    device: str | None = None,
    *,
    rope_parameters: dict[str, Any] | None = None,
    max_position_embeddings: int | None = None,
):
    """``(model, tokenizer)`` from an HF folder, in eval mode, with a pad token and left padding.

    ``device=None`` picks ``cuda`` when available. ``dtype="auto"`` is bfloat16 on GPU and float32 on CPU.
    ``rope_parameters`` / ``max_position_embeddings`` override the saved config (e.g. evaluate an 8k base model
    with ``{"rope_type": "dynamic", "factor": 4.0, "rope_theta": ...}``).
    """
    import torch
    from transformers import AutoConfig, AutoModelForCausalLM, AutoTokenizer

    if dtype not in DTYPES:
        raise ValueError(f"dtype must be one of {list(DTYPES)}, got {dtype!r}; e.g. eval dtype=bfloat16")
    from longrecipe.utils.model_refs import resolve_model_ref

    path = Path(resolve_model_ref(path, "model_path"))
    device = device or ("cuda" if torch.cuda.is_available() else "cpu")
    if dtype == "auto":
        torch_dtype = torch.bfloat16 if device.startswith("cuda") else torch.float32
    else:
        torch_dtype = getattr(torch, dtype)
    config = AutoConfig.from_pretrained(str(path))
    if rope_parameters:
        base = dict(getattr(config, "rope_parameters", None) or {})
        config.rope_parameters = {**base, **dict(rope_parameters)}
    if max_position_embeddings:
        config.max_position_embeddings = int(max_position_embeddings)
    kwargs: dict[str, Any] = {"config": config, "dtype": torch_dtype}
    if attn_implementation:
        kwargs["attn_implementation"] = attn_implementation
    model = AutoModelForCausalLM.from_pretrained(str(path), **kwargs).to(device).eval()
    tokenizer = AutoTokenizer.from_pretrained(str(path))
    prepare_tokenizer(tokenizer)
    log.info("loaded %s (%s, %s, rope=%s, max_pos=%s)", path, torch_dtype, device,
             getattr(model.config, "rope_parameters", None), getattr(model.config, "max_position_embeddings", None))
    return model, tokenizer


def prepare_tokenizer(tokenizer) -> None:
    """Left padding (generation appends on the right) and a pad token (falls back to EOS)."""
    tokenizer.padding_side = "left"
    if tokenizer.pad_token_id is None:
        tokenizer.pad_token = tokenizer.eos_token


def truncate_ids(ids: list[int], max_tokens: int | None, mode: str = "middle") -> tuple[list[int], bool]:
    """Fit ``ids`` into ``max_tokens``: ``middle`` keeps the first and last halves (LongBench), ``left`` keeps the
    end, ``none`` raises. Returns ``(ids, truncated)``."""
    if mode not in TRUNCATIONS:
        raise ValueError(f"truncation must be one of {list(TRUNCATIONS)}, got {mode!r}")
    if max_tokens is None or len(ids) <= max_tokens:
        return list(ids), False
    if max_tokens < 2:
        raise ValueError(f"max_prompt_tokens must be >= 2, got {max_tokens}")
    if mode == "none":
        raise ValueError(f"prompt has {len(ids)} tokens > max_prompt_tokens={max_tokens} and truncation=none; "
                         "raise the limit or set truncation=middle")
    if mode == "left":
        return list(ids[-max_tokens:]), True
    half = max_tokens // 2
    return list(ids[:half]) + list(ids[len(ids) - (max_tokens - half):]), True


def generate_batched(
    model,
    tokenizer,
    prompts: Sequence[Sequence[int]],
    *,
    max_new_tokens: int | Sequence[int],
    batch_size: int = 1,
    max_prompt_tokens: int | None = None,
    truncation: str = "middle",
    stop_at_newline: bool = False,
    progress: bool = True,
    desc: str = "generate",
) -> list[dict[str, Any]]:
    """Greedy generation for token-id prompts; returns per prompt ``{prediction, prompt_tokens, truncated,
    new_tokens}`` in input order.

    Prompts are sorted by length so each left-padded batch wastes little; ``attention_mask`` marks the padding
    (generate derives position ids from it), and the KV cache is on. ``max_new_tokens`` may differ per prompt;
    a batch uses its maximum and each output is cut to its own budget.
    """
    import torch
    from tqdm.auto import tqdm

    if batch_size < 1:
        raise ValueError(f"batch_size must be >= 1, got {batch_size}")
    n = len(prompts)
    budgets = [int(max_new_tokens)] * n if isinstance(max_new_tokens, int) else [int(x) for x in max_new_tokens]
    if len(budgets) != n:
        raise ValueError(f"max_new_tokens has {len(budgets)} entries for {n} prompts")
    fitted = [truncate_ids(list(p), max_prompt_tokens, truncation) for p in prompts]
    order = sorted(range(n), key=lambda i: -len(fitted[i][0]))
    pad_id = tokenizer.pad_token_id if tokenizer.pad_token_id is not None else tokenizer.eos_token_id
    device = next(model.parameters()).device
    out: list[dict[str, Any]] = [{} for _ in range(n)]
    bar = tqdm(total=n, desc=desc, disable=not progress)
    for start in range(0, n, batch_size):
        idx = order[start : start + batch_size]
        seqs = [fitted[i][0] for i in idx]
        width = max(len(s) for s in seqs)
        input_ids = torch.full((len(seqs), width), pad_id, dtype=torch.long)
        mask = torch.zeros((len(seqs), width), dtype=torch.long)
        for row, s in enumerate(seqs):
            input_ids[row, width - len(s):] = torch.tensor(s, dtype=torch.long)
            mask[row, width - len(s):] = 1
        new = max(budgets[i] for i in idx)
        with torch.inference_mode():
            gen = model.generate(
                input_ids=input_ids.to(device), attention_mask=mask.to(device), max_new_tokens=new,
                do_sample=False, num_beams=1, use_cache=True, pad_token_id=pad_id,
                eos_token_id=tokenizer.eos_token_id, temperature=None, top_p=None, top_k=None,
            )
        for row, i in enumerate(idx):
            tokens = gen[row, width:].tolist()[: budgets[i]]
            if tokenizer.eos_token_id is not None and tokenizer.eos_token_id in tokens:
                tokens = tokens[: tokens.index(tokenizer.eos_token_id)]
            text = tokenizer.decode(tokens, skip_special_tokens=True)
            if stop_at_newline:
                text = text.lstrip("\n").split("\n")[0]
            out[i] = {"prediction": text, "prompt_tokens": len(seqs[row]), "truncated": fitted[i][1],
                      "new_tokens": len(tokens)}
        bar.update(len(idx))
    bar.close()
    return out
