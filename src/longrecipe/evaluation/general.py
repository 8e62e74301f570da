"""General abilities (MMLU, GSM8K, HumanEval, ...) through lm-evaluation-harness with *our* model object.

``LongRecipeLM`` adapts an already-loaded HF causal LM (RoPE scaling included) to lm-eval's ``LM`` interface
(log-likelihoods, rolling log-likelihoods, greedy generation), so ``lm_eval.simple_evaluate`` never reloads the
checkpoint (and ``HFLM``'s ``accelerate`` dependency is not needed). Local tasks are YAML files in lm-eval's
format; relative ``dataset_kwargs.data_files`` are resolved against the YAML's folder.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

from longrecipe.evaluation.uncertainty import binomial_se
from longrecipe.utils.logging import get_logger

log = get_logger(__name__)

_PERCENT_PREFIXES = ("acc", "exact_match", "pass@", "f1", "em", "mc1", "mc2")
# metrics that average per-sample 0/1 scores (lm-eval's stderr is off: bootstrap_iters=0)
_BINARY_METRICS = ("acc", "acc_norm", "exact_match", "mc1")


def _lm_base():
    from lm_eval.api.model import LM

    return LM


def make_lm(model, tokenizer, *, batch_size: int = 8, max_length: int | None = None, max_gen_toks: int = 256):
    """An lm-eval ``LM`` wrapping ``model``/``tokenizer`` (class created lazily so lm-eval stays optional)."""
    import torch
    import torch.nn.functional as F

    class LongRecipeLM(_lm_base()):
        def __init__(self):
            super().__init__()
            self.model, self.tok = model, tokenizer
            self.batch_size = batch_size
            self.max_length = int(max_length or getattr(model.config, "max_position_embeddings", 2048))
            self.max_gen_toks = max_gen_toks
            self._device = next(model.parameters()).device
            self.prefix_id = tokenizer.bos_token_id if tokenizer.bos_token_id is not None else tokenizer.eos_token_id

        @property
        def tokenizer_name(self) -> str:
            return str(getattr(self.tok, "name_or_path", "longrecipe")).replace("/", "__")

        def _encode(self, text: str) -> list[int]:
            return list(self.tok(text, add_special_tokens=False)["input_ids"])

        def _split(self, context: str, continuation: str) -> tuple[list[int], list[int]]:
            n_spaces = len(context) - len(context.rstrip())
            if n_spaces:
                continuation, context = context[-n_spaces:] + continuation, context[:-n_spaces]
            whole = self._encode(context + continuation)
            ctx = self._encode(context)
            cont = whole[len(ctx):]
            if not ctx:
                ctx = [self.prefix_id]
            return ctx, cont

        def _score(self, pairs: list[tuple[list[int], list[int]]]) -> list[tuple[float, bool]]:
            """Sum log-prob of each continuation given its context, and whether it is the greedy path."""
            results: list[tuple[float, bool] | None] = [None] * len(pairs)
            order = sorted(range(len(pairs)), key=lambda i: -(len(pairs[i][0]) + len(pairs[i][1])))
            for b in range(0, len(order), self.batch_size):
                idx = order[b : b + self.batch_size]
                seqs = [(pairs[i][0] + pairs[i][1])[-(self.max_length + 1):][:-1] for i in idx]
                width = max(len(s) for s in seqs)
                ids = torch.full((len(seqs), width), self.tok.pad_token_id or 0, dtype=torch.long)
                mask = torch.zeros_like(ids)
                for r, s in enumerate(seqs):
                    ids[r, : len(s)] = torch.tensor(s)
                    mask[r, : len(s)] = 1
                with torch.inference_mode():
                    logits = self.model(input_ids=ids.to(self._device), attention_mask=mask.to(self._device)).logits
                for r, i in enumerate(idx):
                    cont = pairs[i][1]
                    n = len(seqs[r])
                    lp = F.log_softmax(logits[r, n - len(cont) : n].float(), dim=-1)
                    target = torch.tensor(cont, device=lp.device)
                    total = float(lp.gather(1, target[:, None]).sum())
                    greedy = bool((lp.argmax(-1) == target).all())
                    results[i] = (total, greedy)
            return results  # type: ignore[return-value]

        def loglikelihood(self, requests, disable_tqdm: bool = False):
            return self._score([self._split(*req.args[:2]) for req in requests])

        def loglikelihood_rolling(self, requests, disable_tqdm: bool = False):
            out = []
            for req in requests:
                full = [self.prefix_id, *self._encode(req.args[0])]
                pairs = [(full[: s + 1], full[s + 1 : s + 1 + self.max_length])
                         for s in range(0, len(full) - 1, self.max_length)]
                out.append(sum(lp for lp, _ in self._score(pairs)))  # _score keeps the last max_length tokens
            return out

        def generate_until(self, requests, disable_tqdm: bool = False):
            from longrecipe.evaluation.generation import generate_batched

            out = []
            for req in requests:
                context, kwargs = req.args[0], dict(req.args[1] or {})
                until = kwargs.get("until") or []
                until = [until] if isinstance(until, str) else list(until)
                max_new = int(kwargs.get("max_gen_toks", self.max_gen_toks))
                ids = self._encode(context) or [self.prefix_id]
                text = generate_batched(self.model, self.tok, [ids], max_new_tokens=max_new,
                                        max_prompt_tokens=self.max_length - max_new, truncation="left",
                                        progress=False)[0]["prediction"]
                for stop in until:
                    if stop and stop in text:
                        text = text.split(stop)[0]
                out.append(text)
            return out

    return LongRecipeLM()


def load_local_task(yaml_path: str | Path) -> dict[str, Any]:
    """A local lm-eval task YAML as a dict config, with relative ``data_files`` resolved against its folder."""
    import yaml

    path = Path(yaml_path)
    if not path.is_file():
        raise ValueError(f"eval.local_tasks entry {str(path)!r} is not a file; give the path of an lm-eval task YAML")
    cfg = yaml.safe_load(path.read_text(encoding="utf-8"))
    files = (cfg.get("dataset_kwargs") or {}).get("data_files")
    if isinstance(files, dict):
        cfg["dataset_kwargs"]["data_files"] = {k: _resolve(path.parent, v) for k, v in files.items()}
    elif files is not None:
        cfg["dataset_kwargs"]["data_files"] = _resolve(path.parent, files)
    return cfg


def _resolve(base: Path, value):
    if isinstance(value, list):
        return [_resolve(base, v) for v in value]
    p = Path(value)
    return str(p if p.is_absolute() else (base / p).resolve())


def run_general(model, tokenizer, *, tasks: list[str] | None = None, local_tasks: list[str] | None = None,
                include_path: str | None = None, limit: int | float | None = None, num_fewshot: int | None = None,
                batch_size: int = 8, max_length: int | None = None, confirm_run_unsafe_code: bool = False,
                seed: int = 0) -> list[dict[str, Any]]:
    """Run lm-eval tasks; returns ``[{task, metric, score, n, se, percent}]`` (accuracy-like metrics scaled to 0-100,
    ``se`` lm-eval's standard error on the same scale or ``None``)."""
    import os

    from lm_eval import simple_evaluate
    from lm_eval.tasks import TaskManager

    specs: list[Any] = list(tasks or []) + [load_local_task(p) for p in (local_tasks or [])]
    if not specs:
        raise ValueError("eval.tasks and eval.local_tasks are both empty; name at least one lm-eval task")
    if confirm_run_unsafe_code:
        os.environ.setdefault("HF_ALLOW_CODE_EVAL", "1")
    lm = make_lm(model, tokenizer, batch_size=batch_size, max_length=max_length)
    result = simple_evaluate(
        model=lm, tasks=specs, num_fewshot=num_fewshot, limit=limit, log_samples=False,
        task_manager=TaskManager(include_path=include_path), confirm_run_unsafe_code=confirm_run_unsafe_code,
        random_seed=seed, numpy_random_seed=seed, torch_random_seed=seed, fewshot_random_seed=seed,
        bootstrap_iters=0,
    )
    rows = []
    for task, metrics in (result or {}).get("results", {}).items():
        n = int(((result.get("n-samples") or {}).get(task) or {}).get("effective", 0))
        for key, value in metrics.items():
            if "," not in key or "_stderr" in key or not isinstance(value, (int, float)) or isinstance(value, bool):
                continue
            name, _, filt = key.partition(",")
            scale = 100.0 if name.startswith(_PERCENT_PREFIXES) else 1.0
            stderr = metrics.get(f"{name}_stderr,{filt}")
            se = float(stderr) * scale if isinstance(stderr, (int, float)) and not isinstance(stderr, bool) else None
            if se is None and name in _BINARY_METRICS and n > 0:  # a mean of 0/1 scores: the binomial standard error
                se = binomial_se(float(value) * scale, n)
            rows.append({"task": task, "metric": key, "score": float(value) * scale, "n": n, "se": se,
                         "percent": scale == 100.0})
    return rows
