"""Model references -> loadable folders, with one clear error for every command that takes a model.

Kept import-light (no torch, no transformers) so that commands such as ``longrecipe-merge`` can check their inputs
without loading the training stack; packaged models (``packaged:<name>``) pull in :mod:`longrecipe.models.packaged`.
"""

from __future__ import annotations

import json
from pathlib import Path

PACKAGED_PREFIX = "packaged:"


def _looks_local(ref: str) -> bool:
    """A hub id is ``name`` or ``owner/name``; anything else (absolute, ./, ~, deeper paths) is a local path."""
    return ref.startswith(("/", ".", "~")) or ref.count("/") > 1 or "\\" in ref


def resolve_model_ref(ref: str, field: str = "model.pretrained") -> str:
    """A model reference made loadable, with one clear error for every command that takes a model.

    ``packaged:<name>`` -> the cached HF folder of a model shipped in an offline package (converted on first use,
    :mod:`longrecipe.models.packaged`); an existing folder must hold ``config.json`` and must not be a GGUF-quantised
    load (it could not be exported after training); a path that does not exist is refused here, never sent to the
    hub; anything else is a hub id (``owner/name``).
    """
    ref = str(ref)
    if ref.startswith(PACKAGED_PREFIX):
        from longrecipe.models.packaged import PACKAGED_MODELS, ensure_packaged_model

        name = ref[len(PACKAGED_PREFIX):]
        if name not in PACKAGED_MODELS:
            raise ValueError(f"{field}={ref!r}: unknown packaged model; known: "
                             f"{[PACKAGED_PREFIX + n for n in sorted(PACKAGED_MODELS)]}")
        return str(ensure_packaged_model(name))
    path = Path(ref).expanduser()
    if path.exists():
        config = path / "config.json"
        if not config.is_file():
            raise ValueError(f"{field}={ref!r} is a folder without config.json; point it at a saved HF model folder "
                             f"(save_pretrained), a hub id, or a packaged model ({PACKAGED_PREFIX}smollm2_135m_instruct)")
        try:
            quant = (json.loads(config.read_text()).get("quantization_config") or {})
        except json.JSONDecodeError as err:
            raise ValueError(f"{field}={ref!r}: config.json is not valid JSON ({err}); re-export the model") from err
        if str(quant.get("quant_method", "")).lower() == "gguf":
            raise ValueError(f"{field}={ref!r} still carries a GGUF quantization_config: transformers cannot save such "
                             "a model, so nothing trained from it could be exported; convert it to a plain HF folder "
                             f"first (packaged models do this: {PACKAGED_PREFIX}<name>), or delete quantization_config")
        return str(path)
    if _looks_local(ref) or not _hub_reachable(ref):
        raise ValueError(f"{field}={ref!r} does not exist; give an existing HF model folder, a hub id like "
                         f"meta-llama/Meta-Llama-3-8B-Instruct (online, or already in the HF cache), or a packaged "
                         f"model ({PACKAGED_PREFIX}smollm2_135m_instruct)")
    return ref


def _hub_reachable(repo_id: str) -> bool:
    """False when the hub is off (``HF_HUB_OFFLINE``) and ``repo_id`` is not in the local HF cache."""
    from huggingface_hub import constants, try_to_load_from_cache

    if not constants.HF_HUB_OFFLINE:
        return True
    try:
        return isinstance(try_to_load_from_cache(repo_id, "config.json"), str)
    except ValueError:  # not a valid repo id either
        return False
