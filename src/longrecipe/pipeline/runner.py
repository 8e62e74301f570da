"""Run named stages into ``${run_dir}/<stage>/`` with completion markers; resumable and change-aware.

Marker ``${run_dir}/<stage>/.longrecipe_stage.json``::

    {stage, status: running|complete, config_hash, inputs, upstream, started, finished, outputs, run_id}

``config_hash`` = ``config_hash({stage, config, inputs})`` over the stage's resolved config and its input
paths. On a re-run a stage is

* skipped when complete and the hash is unchanged (its recorded outputs feed later stages);
* redone when it was interrupted (marker ``running``, or a folder without marker) — the old folder is
  moved aside and deleted first — or when an input stage was re-run since (``upstream`` ids differ);
* continued, for a ``resumable`` stage (training: extend, replay) interrupted with the same config, inputs and
  upstream: the folder is kept and the stage runs with ``resume: true`` (from its last checkpoint; the marker
  counts the resumptions and keeps the first start);
* refused when complete with a *different* hash, unless listed in ``force=[...]``.
"""

from __future__ import annotations

import os
import shutil
import time
import uuid
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import Any

from longrecipe.pipeline.registry import STAGE_ORDER, Stage, StageRegistry
from longrecipe.utils.confighash import config_hash
from longrecipe.utils.io import write_json_atomic, write_text_atomic
from longrecipe.utils.logging import get_logger

log = get_logger(__name__)

MARKER = ".longrecipe_stage.json"


class StageConfigChangedError(ValueError):
    """A completed stage's config (or inputs) changed; re-running it needs ``force=[stage]``."""


def read_marker(stage_dir: Path) -> dict | None:
    import json

    path = Path(stage_dir) / MARKER
    if not path.is_file():
        return None
    return json.loads(path.read_text())


def _now() -> str:
    return time.strftime("%Y-%m-%dT%H:%M:%S%z")


def _clear(stage_dir: Path) -> None:
    """Move an interrupted / forced stage folder aside, then delete it (a crash mid-delete leaves no half stage)."""
    if not stage_dir.exists():
        return
    aside = stage_dir.with_name(f".{stage_dir.name}.stale-{uuid.uuid4().hex[:8]}")
    os.replace(stage_dir, aside)
    shutil.rmtree(aside, ignore_errors=True)


def order_stages(stages: Sequence[str]) -> list[str]:
    """Validate stage names and put them in recipe order (duplicates dropped)."""
    bad = [s for s in stages if s not in STAGE_ORDER]
    if bad:
        raise ValueError(f"stages has unknown names {bad}; allowed: {list(STAGE_ORDER)} (e.g. stages=[extend,merge])")
    return [s for s in STAGE_ORDER if s in set(stages)]


def _hashed(stage_cfg: dict) -> dict:
    """The stage config with its test hooks neutral (``debug_sleep_s`` as null, no ``config.debug``): a run
    stopped by one is the same run, so it can be continued without the hook. Configs without a hook hash as
    before (stages configure ``debug_sleep_s: null`` by default)."""
    out = dict(stage_cfg)
    if out.get("debug_sleep_s") is not None:
        out["debug_sleep_s"] = None
    if isinstance(out.get("config"), dict) and "debug" in out["config"]:
        out["config"] = {k: v for k, v in out["config"].items() if k != "debug"}
    return out


def _can_resume(stage: Stage, marker: dict | None, config_hash_now: str, upstream: dict) -> bool:
    """An interrupted (``running``) run of a resumable stage with the same config, inputs and upstream."""
    return bool(stage.resumable and marker and marker.get("status") == "running"
                and marker.get("config_hash") == config_hash_now and marker.get("upstream", {}) == upstream)


def _completed_outputs(run_dir: Path, name: str) -> dict | None:
    marker = read_marker(run_dir / name)
    if marker and marker.get("status") == "complete":
        return marker
    return None


def resolve_inputs(
    stage: Stage,
    selected: list[str],
    produced: dict[str, dict],
    run_dir: Path,
    registry: StageRegistry,
    overrides: dict[str, Any],
    fixed: dict[str, str],
) -> tuple[dict[str, Path], dict[str, str | None]]:
    """Inputs of ``stage``: the override path (primary input), else a fixed path for the input's kind
    (``fixed={"base_model": <dir>}``), else the output of the nearest earlier stage producing that kind.

    Returns ``(inputs, upstream)`` where ``upstream[name]`` is the ``run_id`` of the producing stage run.
    """
    inputs: dict[str, Path] = {}
    upstream: dict[str, str | None] = {}
    pos = STAGE_ORDER.index(stage.name)
    for i, spec in enumerate(stage.inputs):
        if i == 0 and overrides.get(stage.name):
            inputs[spec.name] = Path(str(overrides[stage.name])).expanduser()
            upstream[spec.name] = None
            continue
        if spec.kind is not None and fixed.get(spec.kind):
            inputs[spec.name] = Path(str(fixed[spec.kind])).expanduser()
            upstream[spec.name] = None
            continue
        found = None
        for prev in reversed(STAGE_ORDER[:pos]):
            if spec.stage is not None and prev != spec.stage:
                continue
            if spec.kind is not None and (prev not in registry or registry.get(prev).produces != spec.kind):
                continue
            rec = produced.get(prev) or (_completed_outputs(run_dir, prev) if prev not in selected else None)
            if rec is not None:
                found = (prev, rec)
                break
        if found is None:
            if spec.required:
                what = f"stage {spec.stage!r}" if spec.stage else f"a stage producing {spec.kind!r}"
                raise ValueError(
                    f"stage {stage.name!r} needs input {spec.name!r} from {what}, but none ran or completed in "
                    f"{run_dir}; add it to stages=[...] or give inputs.{stage.name}=<path>"
                )
            continue
        prev, rec = found
        inputs[spec.name] = Path(rec["outputs"]["path"])
        upstream[spec.name] = rec.get("run_id")
    return inputs, upstream


def run_stages(
    run_cfg: Any,
    *,
    run_dir: str | Path,
    stages: Sequence[str],
    registry: StageRegistry,
    force: Sequence[str] = (),
    input_overrides: dict[str, Any] | None = None,
    fixed_inputs: dict[str, str] | None = None,
    context: Callable[[Any, str], dict] | None = None,
) -> dict[str, Any]:
    """Run ``stages`` (recipe order) of ``registry`` for ``run_cfg``; returns ``{stage: record}``.

    ``fixed_inputs``: input kind -> path (e.g. ``{"base_model": <dir>}``), used instead of a producing stage.
    ``context(run_cfg, stage)``: extra values a stage reads as ``stage_cfg["tracking"]`` (the wandb run layout);
    they are not part of the config hash, so turning tracking on or off never invalidates a completed stage.
    """
    run_dir = Path(run_dir).expanduser().resolve()
    selected = order_stages(stages)
    force_set = set(order_stages(force)) if force else set()
    overrides = dict(input_overrides or {})
    bad = sorted(set(overrides) - set(STAGE_ORDER))
    if bad:
        raise ValueError(f"inputs has unknown stage names {bad}; use inputs.<stage>=<path> with a stage of {list(STAGE_ORDER)}")
    for name in selected:
        registry.get(name)  # fail early, before anything runs, on an unavailable stage
    run_dir.mkdir(parents=True, exist_ok=True)
    produced: dict[str, dict] = {}
    records: dict[str, Any] = {}
    for name in selected:
        stage = registry.get(name)
        inputs, upstream = resolve_inputs(stage, selected, produced, run_dir, registry, overrides, fixed_inputs or {})
        stage_cfg = stage.configure(run_cfg, name)
        inputs_json = {k: str(v) for k, v in inputs.items()}
        h = config_hash({"stage": name, "config": _hashed(stage_cfg), "inputs": inputs_json})
        stage_dir = run_dir / name
        marker = read_marker(stage_dir)
        if marker and marker.get("status") == "complete" and name not in force_set:
            if marker.get("config_hash") != h:
                raise StageConfigChangedError(
                    f"stage {name!r} in {stage_dir} was completed with a different config or inputs "
                    f"(hash {marker.get('config_hash')} != {h}); pass force=[{name}] to redo it (and what depends "
                    f"on it), choose another run_dir, or leave it out with stages=[...]"
                )
            if marker.get("upstream", {}) == upstream:
                log.info("stage %s: complete with the same config (hash %s), skipping", name, h)
                produced[name] = marker
                records[name] = {**marker, "skipped": True}
                continue
            log.info("stage %s: an input stage was re-run since, redoing", name)
        resume = _can_resume(stage, marker, h, upstream) and name not in force_set
        if resume:
            log.info("stage %s: interrupted run with the same config (hash %s), continuing it", name, h)
            marker = {**marker, "pid": os.getpid(), "resumed": int(marker.get("resumed") or 0) + 1,
                      "resumed_at": [*(marker.get("resumed_at") or []), _now()]}
        else:
            if marker and marker.get("status") != "complete":
                log.info("stage %s: interrupted run found (status %s), redoing it", name, marker.get("status"))
            elif stage_dir.exists() and marker is None:
                log.info("stage %s: folder without completion marker (interrupted), redoing it", name)
            _clear(stage_dir)
            stage_dir.mkdir(parents=True)
            marker = {"stage": name, "status": "running", "config_hash": h, "inputs": inputs_json,
                      "upstream": upstream, "started": _now(), "finished": None, "outputs": None,
                      "run_id": uuid.uuid4().hex[:12], "pid": os.getpid()}
        write_json_atomic(stage_dir / MARKER, marker)
        write_json_atomic(stage_dir / "stage_config.json", stage_cfg)
        log.info("stage %s: running (hash %s) -> %s", name, h, stage_dir)
        t0 = time.time()
        run_cfg_stage = {**stage_cfg, "tracking": context(run_cfg, name)} if context is not None else dict(stage_cfg)
        if resume:
            run_cfg_stage["resume"] = True
        outputs = stage.run(run_cfg_stage, inputs, stage_dir)
        if not isinstance(outputs, dict) or "path" not in outputs:
            raise ValueError(f"stage {name!r} must return a dict with a 'path' output, got {outputs!r}")
        marker.update(status="complete", finished=_now(), outputs=outputs, seconds=round(time.time() - t0, 3))
        write_json_atomic(stage_dir / MARKER, marker)
        produced[name] = marker
        records[name] = {**marker, "skipped": False}
    _write_summary(run_dir, records)
    return records


def _write_summary(run_dir: Path, records: dict[str, Any]) -> None:
    write_json_atomic(run_dir / "pipeline.json", records)
    lines = ["# longrecipe-run", "", f"run dir: `{run_dir}`", "", "| stage | status | hash | seconds | output |",
             "|---|---|---|---|---|"]
    for name, rec in records.items():
        status = "skipped (complete)" if rec.get("skipped") else rec.get("status")
        lines.append(f"| {name} | {status} | {rec.get('config_hash')} | {rec.get('seconds', '')} | "
                     f"`{(rec.get('outputs') or {}).get('path')}` |")
    write_text_atomic(run_dir / "pipeline.md", "\n".join(lines) + "\n")
