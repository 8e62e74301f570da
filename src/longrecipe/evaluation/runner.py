"""``evaluate(cfg)``: run one evaluation group (``conf/eval/<group>.yaml``) and write its results folder.

Groups (``eval.kind``): ``ruler`` (RULER tasks, also used by ``niah_m``), ``longbench``, ``general`` (lm-eval),
``ppl`` (perplexity by position bucket). Every group writes ``results.json`` (the shared record schema, see
:mod:`longrecipe.evaluation.results`), ``results.md`` and ``samples.jsonl``; NIAH groups also ``niah_heatmap.png``.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

from omegaconf import DictConfig, OmegaConf

from longrecipe.evaluation.results import (
    NO_DATA,
    TOO_SHORT,
    binomial_fields,
    make_record,
    mean_records,
    niah_heatmap,
    write_results,
)
from longrecipe.tracking.logs import log_evaluation
from longrecipe.utils.confighash import config_hash
from longrecipe.utils.logging import get_logger

log = get_logger(__name__)
KINDS = ("ruler", "longbench", "general", "ppl")
# RULER's standard evaluation lengths; ``eval.lengths=auto`` keeps those within the model's window (plus the window)
RULER_LENGTHS = (4096, 8192, 16384, 32768, 65536, 131072)


def evaluate(cfg: DictConfig, *, model=None, tokenizer=None) -> list[dict[str, Any]]:
    """Evaluate ``cfg.model_path`` (or a given ``model``/``tokenizer``) on ``cfg.eval``; returns the records."""
    ev = cfg.eval
    kind = ev.get("kind")
    if kind not in KINDS:
        raise ValueError(f"eval.kind must be one of {list(KINDS)}, got {kind!r}; pick a group with eval=<name>")
    if cfg.get("output_dir") in (None, "", "???"):
        raise ValueError("output_dir is not set; pass output_dir=<folder> (longrecipe-eval uses Hydra's run dir)")
    out_dir = Path(cfg.output_dir)
    if (out_dir / "results.json").exists() and not cfg.get("overwrite", False):
        raise FileExistsError(f"{out_dir / 'results.json'} already exists; pass overwrite=true or another output_dir")
    if model is None:
        if cfg.get("model_path") in (None, "", "???"):
            raise ValueError("model_path is required: longrecipe-eval eval=<group> model_path=<HF model folder>")
        from longrecipe.evaluation.generation import load_eval_model

        model, tokenizer = load_eval_model(
            cfg.model_path, cfg.get("dtype", "auto"), cfg.get("attn_implementation", "sdpa"), cfg.get("device"),
            rope_parameters=_plain(cfg.get("rope_parameters")),
            max_position_embeddings=cfg.get("max_position_embeddings"),
        )
    else:
        from longrecipe.evaluation.generation import prepare_tokenizer

        prepare_tokenizer(tokenizer)
    meta = {
        "model": cfg.get("model_name") or (Path(str(cfg.model_path)).name if cfg.get("model_path") else "model"),
        "run_id": cfg.get("run_id") or f"{ev.name}-{config_hash(cfg)[:8]}",
        "group": str(ev.name),
    }
    runner = {"ruler": _run_ruler, "longbench": _run_longbench, "general": _run_general, "ppl": _run_ppl}[kind]
    records, samples = runner(cfg, model, tokenizer, meta)
    write_results(out_dir, records, samples, overwrite=bool(cfg.get("overwrite", False)))
    if kind == "ruler" and ev.get("heatmap", True):
        niah_heatmap([s for s in samples if s["task"].startswith("niah")], out_dir / "niah_heatmap.png",
                     title=f"{meta['group']}: {meta['model']}")
    _log_records(cfg, records)
    log_evaluation(cfg, records, samples, out_dir)  # wandb (cfg.wandb): tables, per-length history, figures
    return records


def _plain(node):
    return OmegaConf.to_container(node, resolve=True) if isinstance(node, DictConfig) else node


def model_window(model) -> int | None:
    """The evaluated model's context window (``config.max_position_embeddings``), if it declares one."""
    window = getattr(getattr(model, "config", None), "max_position_embeddings", None)
    return int(window) if window else None


def auto_lengths(window: int | None) -> list[int]:
    """RULER's lengths up to the model's window, plus the window itself when it is not one of them (an 80k model:
    4k-64k and 81920, never 131072)."""
    if not window:
        raise ValueError("eval.lengths=auto needs the model's max_position_embeddings; give eval.lengths=[...]")
    lengths = [x for x in RULER_LENGTHS if x <= window]
    return lengths if window in lengths else [*lengths, int(window)]


def _lengths(ev, model) -> list[int]:
    setting = ev.get("lengths")
    window = model_window(model)
    if isinstance(setting, str):
        if setting != "auto":
            raise ValueError(f"eval.lengths must be auto, null or a list of token counts, got {setting!r}")
        lengths = auto_lengths(window)
    elif setting:
        lengths = list(setting)
    else:
        base = int(ev.get("base_length") or window or 0)
        lengths = [int(base * m) for m in (ev.get("length_multipliers") or [1])]
    if any(int(x) < 2 for x in lengths):
        raise ValueError(f"eval.lengths must be token counts >= 2, got {lengths}")
    beyond = [int(x) for x in lengths if window and int(x) > window]
    if beyond:
        log.warning("lengths %s exceed the model's window (max_position_embeddings=%d): their records carry "
                    "beyond_window=true", beyond, window)
    return [int(x) for x in lengths]


def _run_ruler(cfg, model, tokenizer, meta):
    from longrecipe.evaluation.generation import generate_batched
    from longrecipe.evaluation.haystack import LengthTooShort, PromptCodec, resolve_chat_template
    from longrecipe.evaluation.metrics import score_ruler
    from longrecipe.evaluation.ruler import METRICS, RULER_TASKS, MissingData, RulerOptions, generate_task

    ev = cfg.eval
    tasks = [t for t in ev.tasks if t not in set(ev.get("exclude") or [])]
    unknown = [t for t in tasks if t not in RULER_TASKS]
    if unknown:
        raise ValueError(f"eval.tasks has unknown RULER tasks {unknown}; allowed: {sorted(RULER_TASKS)}")
    opts = RulerOptions(
        essay_source=ev.get("essay_source", "auto"), num_depths=int(ev.get("num_depths", 40)),
        value_digits=int(ev.get("value_digits", 7)), max_new_tokens=ev.get("max_new_tokens"),
        squad_path=ev.get("squad_path"), hotpotqa_path=ev.get("hotpotqa_path"), seed=int(cfg.get("seed", 42)),
    )
    chat = resolve_chat_template(cfg.get("chat_template", "auto"), tokenizer)
    codec = PromptCodec(tokenizer, chat_template=chat)
    log.info("RULER prompts %s the tokenizer's chat template", "in" if chat else "without")
    meta = {**meta, "chat_template": chat, "model_window": model_window(model)}
    records, samples = [], []
    for length in _lengths(ev, model):
        for task in tasks:
            try:
                batch = list(generate_task(task, length, int(ev.num_samples), codec, opts))
            except (MissingData, LengthTooShort) as err:
                # reported, never dropped: a "not run" record keeps the hole visible in every average
                log.warning("%s @%d not run: %s", task, length, err)
                status = NO_DATA if isinstance(err, MissingData) else TOO_SHORT
                records.append(make_record(task=task, length=length, score=None, n=0,
                                           metric=METRICS[RULER_TASKS[task]["family"]], status=status, **meta))
                continue
            haystack = batch[0].haystack
            outs = generate_batched(
                model, tokenizer, [codec.encode(s.prompt) for s in batch],
                max_new_tokens=[s.max_new_tokens for s in batch], batch_size=int(cfg.get("batch_size", 1)),
                max_prompt_tokens=length, truncation="middle", progress=bool(cfg.get("progress", True)),
                desc=f"{task}@{length}",
            )
            scores = []
            for s, o in zip(batch, outs):
                score = score_ruler(s.metric, o["prediction"], s.answers)
                scores.append(score)
                samples.append({"group": meta["group"], "task": task, "length": length, "index": s.index,
                                "depth": s.depth, "prompt_tokens": o["prompt_tokens"], "truncated": o["truncated"],
                                "answers": s.answers, "prediction": o["prediction"], "score": score,
                                "new_tokens": o["new_tokens"], "haystack": s.haystack, "extra": s.extra})
            score = 100.0 * sum(scores) / len(scores)
            records.append(make_record(task=task, length=length, score=score, n=len(scores), metric=batch[0].metric,
                                       haystack=haystack, **binomial_fields(score, len(scores)), **meta))
            r = records[-1]
            log.info("%s @%d: %.2f ± %.2f (n=%d)", task, length, r["score"], r["se"], len(scores))
    if ev.get("aggregate"):
        records += mean_records(records, task=str(ev.aggregate), metric="string_match",
                                by_category=bool(ev.get("by_category", False)), expected=tasks)
    return records, samples


def _run_longbench(cfg, model, tokenizer, meta):
    from longrecipe.evaluation import longbench as lb
    from longrecipe.evaluation.generation import generate_batched
    from longrecipe.evaluation.haystack import PromptCodec, resolve_chat_template
    from longrecipe.evaluation.metrics import score_longbench
    from longrecipe.evaluation.uncertainty import normal_interval, sample_se

    ev = cfg.eval
    subsets = lb.check_subsets(list(ev.subsets))
    max_len = int(ev.get("max_length") or model.config.max_position_embeddings)
    chat = resolve_chat_template(cfg.get("chat_template", "auto"), tokenizer)
    meta = {**meta, "model_window": model_window(model)}
    records, samples = [], []
    for subset in subsets:
        rows = lb.load_subset(subset, data_dir=ev.get("data_dir"), source=str(ev.get("source", "local")),
                              variant=str(ev.get("variant") or ""), limit=ev.get("limit"))
        if rows is None:
            log.warning("LongBench %s not run: no %s%s.jsonl in eval.data_dir", subset, subset, ev.get("variant") or "")
            records.append(make_record(task=subset, length=max_len, score=None, n=0, metric=lb.METRIC[subset],
                                       status=NO_DATA, chat_template=chat and subset not in lb.NO_CHAT, **meta))
            continue
        codec = PromptCodec(tokenizer, chat_template=chat and subset not in lb.NO_CHAT)
        max_new = int(ev.get("max_new_tokens") or lb.MAX_NEW_TOKENS[subset])
        outs = generate_batched(
            model, tokenizer, [codec.encode(codec.format(lb.build_prompt(subset, r), "")) for r in rows],
            max_new_tokens=max_new, batch_size=int(cfg.get("batch_size", 1)), max_prompt_tokens=max_len - max_new,
            truncation="middle", stop_at_newline=subset in lb.FIRST_LINE, progress=bool(cfg.get("progress", True)),
            desc=subset,
        )
        scores = []
        for i, (r, o) in enumerate(zip(rows, outs)):
            score = score_longbench(lb.METRIC[subset], o["prediction"], list(r["answers"]), r.get("all_classes"))
            scores.append(score)
            samples.append({"group": meta["group"], "task": subset, "length": max_len, "index": i,
                            "id": r.get("_id"), "depth": None, "prompt_tokens": o["prompt_tokens"],
                            "truncated": o["truncated"], "answers": list(r["answers"]), "prediction": o["prediction"],
                            "score": score, "new_tokens": o["new_tokens"]})
        score = 100.0 * sum(scores) / len(scores)
        se = sample_se(scores)
        records.append(make_record(task=subset, length=max_len, score=score, n=len(scores), metric=lb.METRIC[subset],
                                   se=se, ci=None if se is None else normal_interval(score, se),
                                   chat_template=codec.chat_template, **meta))
        log.info("LongBench %s: %.2f (n=%d)", subset, records[-1]["score"], len(scores))
    records += mean_records(records, task="longbench", metric="longbench", expected=subsets)
    return records, samples


def _run_general(cfg, model, tokenizer, meta):
    from longrecipe.evaluation.general import run_general
    from longrecipe.evaluation.probe import resolve_local_tasks

    ev = cfg.eval
    max_len = int(ev.get("max_length") or getattr(model.config, "max_position_embeddings", 2048))
    local_tasks = resolve_local_tasks(list(ev.get("local_tasks") or []), Path(str(cfg.output_dir)) / "probe",
                                      n_per_family=int(ev.get("probe_per_family") or 60), seed=int(cfg.get("seed", 42)))
    rows = run_general(
        model, tokenizer, tasks=list(ev.get("tasks") or []), local_tasks=local_tasks,
        include_path=ev.get("include_path"), limit=ev.get("limit"), num_fewshot=ev.get("num_fewshot"),
        batch_size=int(cfg.get("batch_size", 1)), max_length=max_len,
        confirm_run_unsafe_code=bool(ev.get("confirm_run_unsafe_code", False)), seed=int(cfg.get("seed", 42)),
    )
    from longrecipe.evaluation.uncertainty import normal_interval

    records = [make_record(task=r["task"], length=max_len, score=r["score"], n=r["n"], metric=r["metric"],
                           se=r.get("se"), ci=None if r.get("se") is None else normal_interval(
                               r["score"], r["se"], bounds=(0.0, 100.0) if r.get("percent") else None),
                           chat_template=False, model_window=model_window(model), **meta)
               for r in rows]
    return records, [{"group": meta["group"], **r} for r in rows]


def _run_ppl(cfg, model, tokenizer, meta):
    from longrecipe.evaluation.haystack import resolve_essay
    from longrecipe.evaluation.perplexity import positional_perplexity

    ev = cfg.eval
    essay = resolve_essay(ev.get("source") or "synthetic", seed=int(cfg.get("seed", 42)),
                          min_words=int(ev.get("min_words", 20000)), field="eval.source", glob=ev.get("glob"))
    text = essay.text
    lengths = _lengths(ev, model)
    rows = positional_perplexity(
        model, tokenizer, [p for p in text.split("\n\n") if p.strip()], lengths,
        num_windows=int(ev.get("num_windows", 4)), num_buckets=int(ev.get("num_buckets", 8)),
        batch_size=int(cfg.get("batch_size", 1)), chunk_size=int(ev.get("chunk_size", 1024)),
        seed=int(cfg.get("seed", 42)), progress=bool(cfg.get("progress", True)),
    )
    records = []
    for r in rows:
        task = "ppl" if r["bucket_start"] is None else f"ppl[{r['bucket_start']}:{r['bucket_end']}]"
        records.append(make_record(task=task, length=r["length"], score=r["ppl"], n=r["tokens"], metric="ppl",
                                   haystack=essay.label, model_window=model_window(model), **meta))
    return records, [{"group": meta["group"], **r} for r in rows]


def _log_records(cfg, records) -> None:
    """Send scores to the configured Lightning logger (``logger._target_``), if any."""
    node = cfg.get("logger")
    if not node or not isinstance(node, DictConfig) or "_target_" not in node:
        return
    from hydra.utils import instantiate

    logger = instantiate(node)
    metrics = {f"{r['group']}/{r['task']}@{r['length']}": r["score"] for r in records if r["score"] is not None}
    logger.log_metrics(metrics, step=0)
    logger.finalize("success")
