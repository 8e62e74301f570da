"""Merge HF checkpoints tensor by tensor: ``longrecipe-merge`` and the pipeline's ``merge`` stage.

Memory: tensors are read one at a time through memory-mapped ``safe_open`` handles, merged in fp32
and streamed into the output shard, so the peak is a few tensors (the largest one in fp32 times
the number of inputs), not whole models. Everything is validated (architecture, vocab, tensor names,
shapes) before anything is written, and the output folder appears atomically.

The output keeps the (first) tuned model's dtype, ``config.json`` (its ``rope_parameters`` and
extended ``max_position_embeddings``), generation config and tokenizer, and gets a ``longrecipe.json``
recording the merge (method, weights, inputs and their hashes).
"""

from __future__ import annotations

import json
import math
import shutil
import warnings
from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import torch

from longrecipe.merging import methods
from longrecipe.merging.checkpoint import (
    INDEX_FILE,
    SINGLE_FILE,
    TensorInfo,
    TensorReader,
    parse_size,
    plan_shards,
    tensor_index,
    write_safetensors_streaming,
)
from longrecipe.utils.io import atomic_dir, write_json_atomic
from longrecipe.utils.logging import get_logger

log = get_logger(__name__)

# Files copied verbatim from the tuned model (everything a tokenizer / generation config may need).
_COPY_EXCLUDE_SUFFIXES = (".safetensors", ".bin", ".pt", ".pth", ".ckpt", ".msgpack", ".h5")
_COPY_EXCLUDE_NAMES = {INDEX_FILE, "longrecipe.json", "pytorch_model.bin.index.json"}


@dataclass(frozen=True)
class MergeSpec:
    """A validated merge recipe.

    ``weights``: for ``linear`` one weight per model in (original, tuned_1, ...); for ``slerp`` the
    single interpolation factor ``t`` (0 = original, 1 = tuned); for ``task_arithmetic``/``ties`` one
    weight per tuned model's task vector. ``density`` is the fraction TIES keeps.
    """

    method: str
    weights: tuple[float, ...]
    density: float = 1.0
    extra: dict[str, Any] = field(default_factory=dict)


def build_spec(
    method: str,
    n_tuned: int,
    *,
    lam: float | None = None,
    lambdas: Sequence[float] | None = None,
    density: float = 0.2,
) -> MergeSpec:
    """Turn the user's ``merge.method`` / ``merge.lambda`` / ``merge.lambdas`` / ``merge.density`` into a spec.

    ``lambda`` is the weight of the tuned model(s): linear -> ``λ1 = 1 − λ``, ``λ2 = λ`` (split evenly
    over several tuned models); slerp -> ``t = λ``; task arithmetic / TIES -> every task vector's weight.
    ``lambdas`` gives every weight explicitly and wins over ``lambda``.
    """
    if method not in methods.METHODS:
        raise ValueError(f"merge.method must be one of {list(methods.METHODS)}, got {method!r}")
    if n_tuned < 1:
        raise ValueError("tuned must name at least one model folder; give tuned=<dir> or tuned=[<dir>,...]")
    if method == "slerp" and n_tuned != 1:
        raise ValueError(f"merge.method=slerp interpolates exactly two models; got {n_tuned} tuned models. "
                         "Use linear, task_arithmetic or ties for more.")
    if lambdas is not None:
        weights = tuple(float(x) for x in lambdas)
        want = {"linear": n_tuned + 1, "slerp": 1, "task_arithmetic": n_tuned, "ties": n_tuned}[method]
        if method == "slerp" and len(weights) == 2:
            # [λ1, λ2] for slerp: λ2 / (λ1 + λ2) is the interpolation factor
            total = weights[0] + weights[1]
            if not math.isfinite(total) or total == 0:
                raise ValueError(f"merge.lambdas for slerp must not sum to 0, got {list(weights)}")
            weights = (weights[1] / total,)
        if len(weights) != want:
            layout = {"linear": "[λ_original, λ_tuned_1, ...]", "slerp": "[t] or [λ1, λ2]",
                      "task_arithmetic": "[λ_tuned_1, ...]", "ties": "[λ_tuned_1, ...]"}[method]
            raise ValueError(f"merge.lambdas for {method} needs {want} values {layout}, got {list(weights)}; "
                             "or set merge.lambdas=null and use merge.lambda")
        source = "merge.lambdas"
    else:
        if lam is None:
            raise ValueError("set merge.lambda (weight of the tuned model, e.g. 0.5) or merge.lambdas")
        lam = float(lam)
        if method == "linear":
            weights = (1.0 - lam,) + (lam / n_tuned,) * n_tuned
        elif method == "slerp":
            weights = (lam,)
        else:
            weights = (lam,) * n_tuned
        source = "merge.lambda"
    if not all(math.isfinite(w) for w in weights):
        raise ValueError(f"{source} must be finite numbers, got {list(weights)}")
    if all(w == 0 for w in weights) and method != "slerp":
        raise ValueError(f"{source} must not all be 0 (that would zero the model), got {list(weights)}")
    if method == "slerp" and not 0.0 <= weights[0] <= 1.0:
        raise ValueError(f"{source}: slerp's t must be in [0, 1], got {weights[0]}; use linear to extrapolate")
    if method == "linear" and not math.isclose(sum(weights), 1.0, abs_tol=1e-9):
        warnings.warn(
            f"linear merge weights {list(weights)} sum to {sum(weights):g}, not 1: the merged weights are rescaled",
            UserWarning,
            stacklevel=2,
        )
        log.warning("linear merge weights %s sum to %g, not 1", list(weights), sum(weights))
    if method == "ties" and not 0.0 < float(density) <= 1.0:
        raise ValueError(f"merge.density must be in (0, 1] (fraction of task-vector entries kept), got {density}")
    return MergeSpec(method=method, weights=weights, density=float(density) if method == "ties" else 1.0)


def merge_tensor(spec: MergeSpec, original: torch.Tensor, tuned: Sequence[torch.Tensor]) -> torch.Tensor:
    """Apply ``spec`` to one tensor (fp32 result)."""
    if spec.method == "linear":
        return methods.linear([original, *tuned], spec.weights)
    if spec.method == "slerp":
        return methods.slerp(original, tuned[0], spec.weights[0])
    if spec.method == "task_arithmetic":
        return methods.task_arithmetic(original, tuned, spec.weights)
    return methods.ties(original, tuned, spec.weights, density=spec.density)


def _read_config(model_dir: Path) -> dict:
    path = model_dir / "config.json"
    if not path.is_file():
        raise ValueError(f"{model_dir} has no config.json; merge inputs must be HF model folders")
    return json.loads(path.read_text())


def _vocab_size(cfg: dict) -> int | None:
    if "vocab_size" in cfg:
        return cfg["vocab_size"]
    return (cfg.get("text_config") or {}).get("vocab_size")


def check_compatible(original: Path, tuned: Sequence[Path]) -> tuple[dict[str, TensorInfo], list[dict[str, TensorInfo]]]:
    """Refuse models that cannot be merged: different architecture, vocab, tensor names or shapes.

    Returns the tensor indexes (headers only). Raises ``ValueError`` naming the first difference.
    """
    ocfg = _read_config(original)
    oidx = tensor_index(original)
    tidxs = []
    for t in tuned:
        tcfg = _read_config(t)
        for key in ("model_type", "architectures"):
            if ocfg.get(key) != tcfg.get(key):
                raise ValueError(
                    f"cannot merge models of different architectures: {key} is {ocfg.get(key)!r} in {original} "
                    f"but {tcfg.get(key)!r} in {t}; merge a model with its own fine-tuned version"
                )
        if _vocab_size(ocfg) != _vocab_size(tcfg):
            raise ValueError(
                f"cannot merge models with different vocab sizes: vocab_size is {_vocab_size(ocfg)} in {original} "
                f"but {_vocab_size(tcfg)} in {t}; resize the embeddings to the same tokenizer first"
            )
        tidx = tensor_index(t)
        missing, extra = sorted(set(oidx) - set(tidx)), sorted(set(tidx) - set(oidx))
        if missing or extra:
            raise ValueError(
                f"cannot merge: tensor names differ between {original} and {t} "
                f"(only in original: {missing[:5]}{'...' if len(missing) > 5 else ''}; "
                f"only in tuned: {extra[:5]}{'...' if len(extra) > 5 else ''}); the models must share one architecture"
            )
        for name, info in oidx.items():
            if info.shape != tidx[name].shape:
                raise ValueError(
                    f"cannot merge: tensor {name!r} has shape {list(info.shape)} in {original} but "
                    f"{list(tidx[name].shape)} in {t}; the models must have the same sizes (layers, hidden, vocab)"
                )
        tidxs.append(tidx)
    return oidx, tidxs


def _dir_fingerprint(model_dir: Path) -> str:
    """Cheap identity of a checkpoint: hash of its safetensors headers (names, dtypes, shapes, offsets) and sizes."""
    import hashlib

    from longrecipe.merging.checkpoint import checkpoint_files

    h = hashlib.sha256()
    for f in checkpoint_files(model_dir):
        with open(f, "rb") as fh:
            head = fh.read(8)
            h.update(head + fh.read(int.from_bytes(head, "little")))
        h.update(str(f.stat().st_size).encode())
    return h.hexdigest()[:16]


def merge_models(
    original: str | Path,
    tuned: str | Path | Sequence[str | Path],
    output: str | Path,
    *,
    method: str = "linear",
    lam: float | None = 0.5,
    lambdas: Sequence[float] | None = None,
    density: float = 0.2,
    overwrite: bool = False,
    max_shard_size: int | str = "5GB",
    progress: bool = True,
) -> dict[str, Any]:
    """Merge ``original`` with ``tuned`` model folder(s) into ``output``; returns the provenance record.

    See :func:`build_spec` for how ``lam`` / ``lambdas`` / ``density`` map to each method.
    """
    from tqdm.auto import tqdm

    from longrecipe.utils.model_refs import resolve_model_ref

    original = Path(resolve_model_ref(original, "original"))
    tuned_list = [tuned] if isinstance(tuned, (str, Path)) else list(tuned)
    tuned_dirs = [Path(resolve_model_ref(t, "tuned")) for t in tuned_list]
    output = Path(output)
    spec = build_spec(method, len(tuned_dirs), lam=lam, lambdas=lambdas, density=density)
    for d in (original, *tuned_dirs):
        if not d.is_dir():
            raise ValueError(f"model folder {d} does not exist; pass original=<dir> and tuned=<dir> of HF models")
    if output.resolve() in {d.resolve() for d in (original, *tuned_dirs)}:
        raise ValueError(f"output={output} is one of the inputs; choose a new folder")
    if output.exists() and not overwrite:
        raise FileExistsError(f"{output} already exists; pass overwrite=true to replace it or choose another output")
    cap = parse_size(max_shard_size)
    oidx, tidxs = check_compatible(original, tuned_dirs)
    lead = tidxs[0]
    names = list(lead)  # tuned model's order
    specs = [(n, lead[n].dtype, lead[n].shape) for n in names]
    shards = plan_shards(specs, cap)
    spec_by_name = {s[0]: s for s in specs}
    total_bytes = sum(lead[n].nbytes for n in names)

    record: dict[str, Any] = {
        "kind": "merge",
        "method": spec.method,
        "weights": list(spec.weights),
        "density": spec.density if spec.method == "ties" else None,
        "original": {"path": str(original.resolve()), "fingerprint": _dir_fingerprint(original)},
        "tuned": [{"path": str(t.resolve()), "fingerprint": _dir_fingerprint(t)} for t in tuned_dirs],
        "dtype": str(lead[names[0]].dtype).replace("torch.", "") if names else None,
        "n_tensors": len(names),
        "total_bytes": total_bytes,
        "n_shards": len(shards),
    }
    tuned_prov = tuned_dirs[0] / "longrecipe.json"
    if tuned_prov.is_file():
        record["tuned_longrecipe"] = json.loads(tuned_prov.read_text())

    log.info("merging %s (%d tensors, %.1f MB) with method=%s weights=%s into %s",
             [str(t) for t in tuned_dirs], len(names), total_bytes / 1e6, spec.method, list(spec.weights), output)
    readers = [TensorReader(oidx)] + [TensorReader(t) for t in tidxs]
    try:
        with atomic_dir(output, overwrite=overwrite) as tmp:
            bar = tqdm(total=len(names), desc=f"merge[{spec.method}]", unit="tensor", disable=not progress)
            weight_map: dict[str, str] = {}

            def stream(shard_names: list[str]):
                for n in shard_names:
                    o = readers[0].get(n)
                    ts = [r.get(n) for r in readers[1:]]
                    if o.is_floating_point():
                        merged = merge_tensor(spec, o, ts).to(lead[n].dtype)
                    else:  # integer / bool buffers are taken from the tuned model
                        merged = ts[0]
                    del o, ts
                    bar.update(1)
                    yield n, merged

            for i, shard_names in enumerate(shards):
                fname = SINGLE_FILE if len(shards) == 1 else f"model-{i + 1:05d}-of-{len(shards):05d}.safetensors"
                write_safetensors_streaming(tmp / fname, [spec_by_name[n] for n in shard_names], stream(shard_names))
                weight_map.update({n: fname for n in shard_names})
            bar.close()
            if len(shards) > 1:
                write_json_atomic(tmp / INDEX_FILE, {"metadata": {"total_size": total_bytes}, "weight_map": weight_map})
            for f in sorted(tuned_dirs[0].iterdir()):
                if f.is_file() and f.suffix not in _COPY_EXCLUDE_SUFFIXES and f.name not in _COPY_EXCLUDE_NAMES:
                    shutil.copy2(f, tmp / f.name)
            write_json_atomic(tmp / "longrecipe.json", record)
    finally:
        for r in readers:
            r.close()
    log.info("merged model written to %s", output)
    return {**record, "output": str(output)}


def merge_from_config(cfg: Any) -> dict[str, Any]:
    """Run a merge from a composed ``conf/merge.yaml`` (``longrecipe-merge``)."""
    from omegaconf import OmegaConf

    m = cfg.merge
    tuned = cfg.tuned
    if tuned is None or cfg.original is None or cfg.output is None:
        raise ValueError("longrecipe-merge needs original=<dir> tuned=<dir> (output defaults under outputs/merge)")
    tuned_list = OmegaConf.to_container(tuned) if OmegaConf.is_list(tuned) else [tuned]
    lambdas = m.get("lambdas")
    result = merge_models(
        cfg.original,
        [str(t) for t in tuned_list],
        cfg.output,
        method=m.method,
        lam=m.get("lambda"),
        lambdas=None if lambdas is None else [float(x) for x in lambdas],
        density=float(m.get("density", 0.2)),
        overwrite=bool(cfg.overwrite),
        max_shard_size=m.get("max_shard_size", "5GB"),
        progress=bool(cfg.get("progress", True)),
    )
    return result


__all__ = ["MergeSpec", "build_spec", "check_compatible", "merge_from_config", "merge_models", "merge_tensor"]
