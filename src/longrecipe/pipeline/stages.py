"""The recipe's stages, wired to the library functions of each module.

| stage    | runs                                              | input (default: nearest earlier stage)   | output        |
|----------|---------------------------------------------------|------------------------------------------|---------------|
| base     | build the model before extension, save it          | -                                        | model folder  |
| analyze  | ``run_analysis`` (conf/analyze.yaml)              | base model (H); ``analyze.config.long_model`` (H') | analysis dir |
| prepare  | ``prepare_dataset`` (conf/prepare.yaml)            | analysis (anchors) + base tokenizer      | dataset       |
| extend   | ``train`` (conf/train.yaml + ``extend`` block)     | base model; prepared data when present   | model folder  |
| replay   | ``train`` with ``data=replay``, lr 5e-6            | extended model                            | model folder  |
| merge    | ``merge_models`` with θ_orig = the base model      | replayed (or extended) model + base      | model folder  |
| evaluate | ``evaluate`` (conf/evaluate.yaml) per eval group   | merged (or latest) model                  | results dir   |
| report   | ``build_report`` over the run folder              | evaluation results                        | report dir    |

Training stages take ``<stage>.groups`` (config-group choices, ``null`` removes a group) and
``<stage>.config`` (values merged into the composed config) on top of ``train_common``.
"""

from __future__ import annotations

import functools
import os
import time
from collections.abc import Sequence
from pathlib import Path
from typing import Any

from omegaconf import DictConfig, OmegaConf, open_dict

from longrecipe.pipeline.registry import STAGE_ORDER, Stage, StageInput, StageRegistry
from longrecipe.tracking.layout import tracking_settings
from longrecipe.tracking.logs import log_report, log_stage_outputs, stage_run
from longrecipe.utils.logging import get_logger

log = get_logger(__name__)


def _plain(node: Any) -> Any:
    return OmegaConf.to_container(node, resolve=True) if OmegaConf.is_config(node) else node


def compose_stage_config(config_name: str, groups: dict | None, values: dict | None) -> DictConfig:
    """``conf/<config_name>.yaml`` with group choices (``None`` deletes a group) and merged values."""
    from longrecipe.config import compose

    overrides = [f"~{g}" if v is None else f"{g}={v}" for g, v in (groups or {}).items()]
    cfg = compose(config_name, overrides)
    if values:
        with open_dict(cfg):
            cfg = OmegaConf.merge(cfg, OmegaConf.create(values))
    return cfg


def _debug_pause(run_cfg_stage: dict, name: str) -> None:
    """Test hook: ``<stage>.debug_sleep_s`` sleeps inside the stage (so a test can kill the process there)."""
    secs = (run_cfg_stage or {}).get("debug_sleep_s")
    if secs:
        log.info("stage %s: debug sleep %ss", name, secs)
        time.sleep(float(secs))


# ---------------------------------------------------------------------------- configure
def _train_configure(run_cfg: Any, name: str) -> dict:
    common = _plain(run_cfg.get("train_common")) or {}
    block = _plain(run_cfg.get(name)) or {}
    groups = {**(common.get("groups") or {}), **(block.get("groups") or {})}
    values = OmegaConf.merge(OmegaConf.create(common.get("config") or {}), OmegaConf.create(block.get("config") or {}))
    return {"groups": groups, "config": _plain(values), "debug_sleep_s": block.get("debug_sleep_s"),
            "budget_from_extension": block.get("budget_from_extension", False)}


def tracking_context(run_cfg: Any, name: str) -> dict:
    """What a stage needs to open its wandb run (``stage_cfg["tracking"]``, not hashed): the ``wandb`` settings
    (``None`` when off), the run's metadata (group = experiment, tags), the stage name and the resolved run config."""
    return {"stage": name, "wandb": tracking_settings(run_cfg.get("wandb")), "meta": run_meta(run_cfg),
            "config": _plain(run_cfg)}


def _base_configure(run_cfg: Any, name: str) -> dict:
    """Only what defines the model before extension: the model group/values, seed and base_length."""
    cfg = _train_configure(run_cfg, "train_common")
    keep = ("model", "seed", "base_length", "paths")
    return {"groups": {k: v for k, v in cfg["groups"].items() if k in ("model", "paths")},
            "config": {k: v for k, v in cfg["config"].items() if k in keep}}


def _train_cfg(stage_cfg: dict, out_dir: Path, extra: dict) -> DictConfig:
    tracking = stage_cfg.get("tracking") or {}
    settings = tracking.get("wandb")
    groups = dict(stage_cfg["groups"])
    if settings:  # wandb=offline|online on the run: every training stage logs with the wandb logger (+ CSV)
        groups["logger"] = "wandb"
    cfg = compose_stage_config("train", groups, stage_cfg["config"])
    with open_dict(cfg):
        cfg = OmegaConf.merge(cfg, OmegaConf.create(extra))
        cfg.run_dir = str(out_dir / "run")
        cfg.export_dir = str(out_dir / "model")
        # the runner sets resume for an interrupted stage it continues; an export that run finished is replaced
        cfg.resume = cfg.overwrite = bool(stage_cfg.get("resume"))
        cfg.ckpt_path = None
        if tracking and "wandb" in (cfg.get("logger") or {}):  # one layout: group = experiment, job = stage
            node = cfg.logger.wandb
            if settings:
                for key in ("project", "entity", "mode"):
                    node[key] = settings[key]
                node.tags = list(dict.fromkeys([*(node.get("tags") or []), *settings.get("tags", [])]))
            meta = tracking.get("meta") or {}
            if node.get("group") is None:
                node.group = (settings or {}).get("group") or meta.get("experiment")
            node.job_type = tracking.get("stage") or node.job_type
            node.meta = {k: v for k, v in meta.items() if v is not None}
    return cfg


def _tokens_trained(cfg: DictConfig, global_step: int) -> int:
    from longrecipe.data.datamodule import resolve_sample_length

    data = cfg.data
    if "max_length" in data:  # replay data
        per_sample = int(data.max_length)
    else:
        per_sample = resolve_sample_length(data.get("sample_length"), data.get("token_ratio"), int(cfg.target_length))
    accum = int(cfg.trainer.get("accumulate_grad_batches", 1) or 1)
    devices = cfg.trainer.get("devices", 1)
    n_dev = devices if isinstance(devices, int) and devices > 0 else 1
    # Ulysses sequence parallelism: the sp ranks of a group share one sample, so data-parallel replicas = n_dev / sp
    sp = int((cfg.get("strategy") or {}).get("sequence_parallel_size") or 1)
    n_dp = max(1, n_dev // max(sp, 1))
    return int(global_step) * accum * int(data.get("batch_size", 1)) * n_dp * per_sample


def _model_input_tokens(model_dir: Path) -> int | None:
    """Tokens the stage that produced ``model_dir`` trained on (its stage marker), if known."""
    from longrecipe.pipeline.runner import read_marker

    marker = read_marker(model_dir.parent)
    if marker and marker.get("outputs"):
        return marker["outputs"].get("tokens")
    return None


# ---------------------------------------------------------------------------- run functions
def run_base(stage_cfg: dict, inputs: dict[str, Path], out_dir: Path) -> dict:
    """Save the model before extension (the ``model`` group of ``train_common``, seeded) as an HF folder."""
    import torch
    from transformers import AutoModelForCausalLM

    from longrecipe.models.loading import base_model_config, check_vocab, load_tokenizer
    from longrecipe.utils.model_refs import resolve_model_ref

    cfg = compose_stage_config("train", stage_cfg["groups"], stage_cfg["config"])
    model_cfg = _plain(cfg.model)
    tokenizer = load_tokenizer(model_cfg)
    config = base_model_config(model_cfg)
    check_vocab(tokenizer, config)
    torch.manual_seed(int(cfg.seed))
    if model_cfg.get("pretrained"):
        model = AutoModelForCausalLM.from_pretrained(resolve_model_ref(model_cfg["pretrained"]))
    else:
        model = AutoModelForCausalLM.from_config(config)
    path = out_dir / "model"
    model.save_pretrained(str(path))
    tokenizer.save_pretrained(str(path))
    from longrecipe.utils.io import write_json_atomic

    write_json_atomic(path / "longrecipe.json", {"kind": "base", "model": model_cfg, "seed": int(cfg.seed)})
    return {"path": str(path)}


def run_extend(stage_cfg: dict, inputs: dict[str, Path], out_dir: Path) -> dict:
    from longrecipe.training.train import train

    extra: dict[str, Any] = {"model": {"pretrained": str(inputs["model"]), "tokenizer": None}}
    if inputs.get("data") is not None:
        extra["data"] = {"source": str(inputs["data"]), "format": "prepared"}
    cfg = _train_cfg(stage_cfg, out_dir, extra)
    _debug_pause(stage_cfg, "extend")
    result = train(cfg)
    return {"path": result["export_dir"], "global_step": result["global_step"],
            "tokens": _tokens_trained(cfg, result["global_step"]), "metrics": result["metrics"]}


def run_replay(stage_cfg: dict, inputs: dict[str, Path], out_dir: Path) -> dict:
    from longrecipe.training.train import train

    extra: dict[str, Any] = {"model": {"pretrained": str(inputs["model"]), "tokenizer": None}}
    data_cfg = stage_cfg["config"].get("data") or {}
    if data_cfg.get("max_tokens") is None and data_cfg.get("extension_tokens") is None:
        tokens = _model_input_tokens(Path(inputs["model"]))
        if tokens is None:
            raise ValueError(
                f"replay needs the number of extension tokens for its budget and {inputs['model']} was not made by "
                "this run's extend stage; set replay.config.data.extension_tokens=<n> or replay.config.data.max_tokens=<n>"
            )
        extra["data"] = {"extension_tokens": int(tokens)}
    cfg = _train_cfg(stage_cfg, out_dir, extra)
    _debug_pause(stage_cfg, "replay")
    result = train(cfg)
    return {"path": result["export_dir"], "global_step": result["global_step"],
            "tokens": _tokens_trained(cfg, result["global_step"]), "budget_tokens": cfg.data.get("extension_tokens"),
            "metrics": result["metrics"]}


def _merge_configure(run_cfg: Any, name: str) -> dict:
    block = _plain(run_cfg.get(name)) or {}
    return {k: block.get(k) for k in ("method", "lambda", "lambdas", "density", "max_shard_size", "debug_sleep_s")}


def run_merge(stage_cfg: dict, inputs: dict[str, Path], out_dir: Path) -> dict:
    from longrecipe.merging import merge_models

    _debug_pause(stage_cfg, "merge")
    path = out_dir / "model"
    rec = merge_models(inputs["original"], inputs["tuned"], path, method=stage_cfg.get("method") or "linear",
                       lam=stage_cfg.get("lambda"), lambdas=stage_cfg.get("lambdas"),
                       density=float(stage_cfg.get("density") or 0.2),
                       max_shard_size=stage_cfg.get("max_shard_size") or "5GB")
    return {"path": str(path), "method": rec["method"], "weights": rec["weights"]}


def _cmd_configure(run_cfg: Any, name: str) -> dict:
    block = _plain(run_cfg.get(name)) or {}
    out = {"groups": block.get("groups") or {}, "config": block.get("config") or {},
           "evals": block.get("evals"), "debug_sleep_s": block.get("debug_sleep_s")}
    if block.get("per_eval"):  # evaluate: values for one eval only (hashed only when given)
        out["per_eval"] = block["per_eval"]
    return out


def run_analyze(stage_cfg: dict, inputs: dict[str, Path], out_dir: Path) -> dict:
    from longrecipe.analysis.run import run_analysis

    cfg = compose_stage_config("analyze", stage_cfg["groups"], {**stage_cfg["config"],
                               "base_model": str(inputs["model"]), "output_dir": str(out_dir / "analysis")})
    run_analysis(cfg)
    return {"path": str(out_dir / "analysis"), "analysis_json": str(out_dir / "analysis" / "analysis.json")}


def run_prepare(stage_cfg: dict, inputs: dict[str, Path], out_dir: Path) -> dict:
    from longrecipe.selection.prepare import prepare_dataset

    values = {**stage_cfg["config"], "tokenizer": str(inputs["model"]), "output_dir": str(out_dir / "dataset")}
    groups = dict(stage_cfg["groups"])
    if inputs.get("analysis") is not None and groups.get("selection", "anchors") == "anchors":
        values.setdefault("selection", {})
        values["selection"] = {**values["selection"], "analysis_json": str(Path(inputs["analysis"]) / "analysis.json")}
    cfg = compose_stage_config("prepare", groups, values)
    prepare_dataset(cfg)
    return {"path": str(out_dir / "dataset")}


def _eval_tracking(stage_cfg: dict, model: Path) -> dict:
    """The evaluate stage's ``wandb`` values: the run's settings and metadata, the model's stage as ``stage``."""
    tracking = stage_cfg.get("tracking") or {}
    if not tracking.get("wandb"):
        return {}
    meta = dict(tracking.get("meta") or {})
    producer = Path(model).parent.name
    if not meta.get("stage") and producer in STAGE_ORDER:
        meta["stage"] = producer
    return {"wandb": {**tracking["wandb"], "enabled": True, "job_type": "evaluate",
                      "meta": {k: v for k, v in meta.items() if v is not None}}}


def run_evaluate(stage_cfg: dict, inputs: dict[str, Path], out_dir: Path) -> dict:
    from longrecipe.evaluation.runner import evaluate

    evals = stage_cfg.get("evals") or [stage_cfg["groups"].get("eval", "niah_m")]
    scores: dict[str, Any] = {}
    per_eval = stage_cfg.get("per_eval") or {}
    unknown = sorted(set(per_eval) - {str(e) for e in evals})
    if unknown:
        raise ValueError(f"evaluate.per_eval has {unknown}, which evaluate.evals={list(evals)} does not run; "
                         "key per_eval by the names in evals")
    for ev in evals:
        values = OmegaConf.merge(OmegaConf.create(stage_cfg["config"]), OmegaConf.create(per_eval.get(str(ev)) or {}))
        cfg = compose_stage_config("evaluate", {**stage_cfg["groups"], "eval": ev},
                                   {**_plain(values), "model_path": str(inputs["model"]),
                                    "output_dir": str(out_dir / str(ev)),
                                    **_eval_tracking(stage_cfg, inputs["model"])})
        records = evaluate(cfg)
        scores[str(ev)] = len(records)
    return {"path": str(out_dir), "records": scores}


def run_report(stage_cfg: dict, inputs: dict[str, Path], out_dir: Path) -> dict:
    from longrecipe.reporting.report import build_report

    result = build_report([str(inputs["results"])], out_dir / "report")
    tracking = stage_cfg.get("tracking") or {}
    if tracking.get("wandb"):
        log_report({**tracking["wandb"], "job_type": "report"}, result, [str(inputs["results"])], out_dir,
                   config=tracking.get("config"),
                   meta=tracking.get("meta"))
    return {"path": str(out_dir / "report")}


def _tracked(fn):
    """A stage without logging of its own gets a wandb run (job type = stage) with its numeric outputs."""

    @functools.wraps(fn)
    def run(stage_cfg: dict, inputs: dict[str, Path], out_dir: Path) -> dict:
        with stage_run(stage_cfg.get("tracking"), out_dir) as tracked:
            outputs = fn(stage_cfg, inputs, out_dir)
            log_stage_outputs(tracked, outputs)
        return outputs

    return run


def default_registry() -> StageRegistry:
    """Every stage of the recipe, in order."""
    reg = StageRegistry()
    reg.register(Stage("base", _tracked(run_base), _base_configure, produces="base_model",
                       description="save the model before extension"))
    reg.register(Stage("analyze", _tracked(run_analyze), _cmd_configure, produces="analysis",
                       inputs=(StageInput("model", kind="base_model"),), description="impactful token analysis"))
    reg.register(Stage("prepare", _tracked(run_prepare), _cmd_configure, produces="dataset",
                       inputs=(StageInput("analysis", kind="analysis", required=False),
                               StageInput("model", kind="base_model")), description="LongRecipe data selection"))
    reg.register(Stage("extend", run_extend, _train_configure, produces="model",
                       inputs=(StageInput("model", kind="base_model"), StageInput("data", kind="dataset", required=False)),
                       description="context extension training", resumable=True))
    reg.register(Stage("replay", run_replay, _train_configure, produces="model",
                       inputs=(StageInput("model", kind="model"),), description="instruction data replay, lr 5e-6",
                       resumable=True))
    reg.register(Stage("merge", _tracked(run_merge), _merge_configure, produces="model",
                       inputs=(StageInput("tuned", kind="model"), StageInput("original", kind="base_model")),
                       description="λ1·θ_orig + λ2·θ_tuned"))
    reg.register(Stage("evaluate", run_evaluate, _cmd_configure, produces="results",
                       inputs=(StageInput("model", kind="model"),), description="long-context / general evaluation"))
    reg.register(Stage("report", run_report, _cmd_configure, produces="report",
                       inputs=(StageInput("results", kind="results"),), description="tables and figures"))
    return reg


def run_pipeline(cfg: DictConfig, *, registry: StageRegistry | None = None) -> dict[str, Any]:
    """Run ``conf/run.yaml``: the selected stages into ``run_dir``; adds ``base`` when a later stage needs it.

    When ``cfg.driver`` names a function (``module.path.function``, e.g. an experiment's fan-out over methods and
    seeds) that function is called with ``cfg`` instead and its result returned.
    """
    from longrecipe.pipeline.runner import order_stages, run_stages

    if cfg.get("driver"):
        return _driver(str(cfg.driver))(cfg)
    registry = registry or default_registry()
    stages = order_stages(list(cfg.stages))
    from longrecipe.utils.model_refs import PACKAGED_PREFIX, resolve_model_ref

    fixed: dict[str, str] = {}
    needs_base = any(s in registry and any(i.kind == "base_model" for i in registry.get(s).inputs) for s in stages)
    if cfg.get("base_model"):  # an existing model before extension: every base-model input reads it
        fixed = {"base_model": resolve_model_ref(str(cfg.base_model), "base_model")}
        stages = [s for s in stages if s != "base"]
    elif needs_base and "base" not in stages:
        stages = ["base", *stages]
    if cfg.get("dataset"):  # an existing prepared dataset (longrecipe-prepare): every dataset input reads it
        if not Path(str(cfg.dataset)).expanduser().is_dir():
            raise ValueError(f"dataset={cfg.dataset!r} is not a folder; give a longrecipe-prepare output_dir "
                             "or dataset=null")
        fixed["dataset"] = str(cfg.dataset)
    overrides = {k: resolve_model_ref(v, f"inputs.{k}") if str(v).startswith(PACKAGED_PREFIX) else v
                 for k, v in (_plain(cfg.get("inputs")) or {}).items()}
    log.info("longrecipe-run: stages %s into %s", stages, cfg.run_dir)
    os.environ.setdefault("TOKENIZERS_PARALLELISM", "false")
    records = run_stages(cfg, run_dir=cfg.run_dir, stages=stages, registry=registry,
                         force=list(cfg.get("force") or []), input_overrides=overrides, fixed_inputs=fixed,
                         context=tracking_context)
    write_run_meta(cfg, Path(cfg.run_dir).expanduser().resolve(), records, stages)
    return {name: {k: rec.get(k) for k in ("status", "skipped", "config_hash", "outputs")} for name, rec in records.items()}


def _driver(name: str):
    import importlib

    module, _, func = name.rpartition(".")
    try:
        fn = getattr(importlib.import_module(module), func) if module else None
    except ModuleNotFoundError as err:
        raise ValueError(f"driver={name!r}: module {module!r} not found; give module.path.function, "
                         "e.g. driver=longrecipe.experiments.tiny_repro.run_tiny_repro, or driver=null") from err
    if not callable(fn):
        raise ValueError(f"driver={name!r} is not a function; give module.path.function "
                         "(e.g. longrecipe.experiments.tiny_repro.run_tiny_repro) or driver=null")
    return fn


# ---------------------------------------------------------------------------- run metadata (for longrecipe-report)
METHOD_NAMES = {"flt": "FLT", "rpes": "RPES", "pose": "PoSE", "longrecipe": "LongRecipe"}


def run_meta(cfg: Any, done_stages: Sequence[str] = ()) -> dict[str, Any]:
    """``run_meta.json`` keys of a run (see ``longrecipe.reporting.collect.META_KEYS``), derived from the run config;
    ``cfg.meta`` values win. ``method`` is the display name of ``extend.groups.position``. ``done_stages``: stages
    already complete in the run folder (a later ``stages=[evaluate]`` re-run still ran on their outputs)."""
    common = _plain(cfg.get("train_common")) or {}
    extend = _plain(cfg.get("extend")) or {}
    values = {**(common.get("config") or {}), **(extend.get("config") or {})}
    position = (extend.get("groups") or {}).get("position")
    stages = list(cfg.get("stages") or []) + list(done_stages)
    pos_cfg = values.get("position") or {}
    meta: dict[str, Any] = {
        "model_name": (common.get("groups") or {}).get("model"),
        "method": METHOD_NAMES.get(position, position),
        "target_length": values.get("target_length"),
        "token_ratio": values.get("token_ratio"),
        "selection": (_plain(cfg.get("prepare")) or {}).get("groups", {}).get("selection") if "prepare" in stages
        else "none",
        "seed": values.get("seed"),
        "max_skip": pos_cfg.get("max_skip") if position == "longrecipe" else None,
        "merge_lambda": (_plain(cfg.get("merge")) or {}).get("lambda") if "merge" in stages else None,
        "experiment": cfg.get("experiment_name"),
    }
    meta.update(_plain(cfg.get("meta")) or {})
    return meta


def write_run_meta(cfg: Any, run_dir: Path, records: dict[str, Any], stages: list[str]) -> None:
    """``run_dir/run_meta.json`` (the run's keys) and ``<stage>/run_meta.json`` ``{stage}`` for the report; an
    evaluation is labelled with the stage that produced the model it evaluated (``merge``, ``extend``, ...)."""
    from longrecipe.pipeline.runner import read_marker
    from longrecipe.utils.io import write_json_atomic

    done = [s for s in STAGE_ORDER if (read_marker(run_dir / s) or {}).get("status") == "complete"]
    meta = run_meta(cfg, done)
    write_json_atomic(run_dir / "run_meta.json", meta)
    for name, rec in records.items():
        stage_dir = run_dir / name
        if not stage_dir.is_dir():
            continue
        label = name
        if name == "evaluate":
            producer = Path(str((rec.get("inputs") or {}).get("model") or "")).parent
            label = producer.name if producer.parent == run_dir and producer.name in STAGE_ORDER \
                else meta.get("stage") or name
        write_json_atomic(stage_dir / "run_meta.json", {"stage": label})
