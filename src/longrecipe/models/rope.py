"""RoPE scaling for context extension, written in the transformers 5 ``rope_parameters`` format.

``apply_rope_scaling`` is pure: it reads the model config and a rope config (``conf/rope/*.yaml``) and
returns the new ``rope_parameters`` dict; ``scaled_config`` returns a copy of the model config with that
dict and ``max_position_embeddings = target_length`` so the exported model loads in plain
``AutoModelForCausalLM`` with its extended window.

Supported ``type`` values (``conf/rope/``):

=============== ======================= =============================================================
type            HF ``rope_type``        keys
=============== ======================= =============================================================
``none``        unchanged               (only ``max_position_embeddings`` is raised)
``theta``       ``default``             ``rope_theta`` (required, the new base)
``linear``      ``linear``              ``factor``, optional ``rope_theta``
``dynamic``     ``dynamic``             ``factor``, optional ``rope_theta`` (paper Table 4: Llama-3-8B
                                        80k: 48.9M / 10; 128k: 131.5M / 16; Qwen2-7B: 13.5M / 4)
``yarn``        ``yarn``                ``factor``, ``original_max_position_embeddings``,
                                        optional ``attention_factor``, ``beta_fast``, ``beta_slow``
``llama3``      ``llama3``              ``factor``, ``original_max_position_embeddings``,
                                        ``low_freq_factor``, ``high_freq_factor``
=============== ======================= =============================================================

``factor: null`` means ``target_length / original_max_position_embeddings``; ``rope_theta: null`` keeps the
model's base and ``rope_theta: ntk`` uses the NTK-aware base ``theta * factor ** (d / (d - 2))``.
"""

from __future__ import annotations

import copy
from collections.abc import Mapping
from typing import Any

ROPE_TYPES = ("none", "theta", "linear", "dynamic", "yarn", "llama3")
_ALIASES = {"dynamic_ntk": "dynamic", "ntk": "dynamic", "default": "none"}
_YARN_OPTIONAL = ("attention_factor", "beta_fast", "beta_slow", "mscale", "mscale_all_dim", "truncate")


def _get(rope_cfg: Mapping[str, Any] | None, key: str, default: Any = None) -> Any:
    if rope_cfg is None:
        return default
    value = rope_cfg.get(key, default)
    return default if value is None else value


def head_dim_of(hf_config: Any) -> int:
    """Rotary dimension of ``hf_config`` (``head_dim`` or ``hidden_size // num_attention_heads``)."""
    head_dim = getattr(hf_config, "head_dim", None) or hf_config.hidden_size // hf_config.num_attention_heads
    return int(head_dim)


def base_rope_theta(hf_config: Any) -> float:
    """The model's current RoPE base (``rope_parameters['rope_theta']``, legacy ``rope_theta`` attribute)."""
    params = getattr(hf_config, "rope_parameters", None) or {}
    theta = params.get("rope_theta", getattr(hf_config, "rope_theta", None))
    if theta is None:
        raise ValueError(
            f"model config {type(hf_config).__name__} has no rope_theta: longrecipe only extends RoPE models "
            "(Llama, Mistral, Qwen2, ...); pick a RoPE model or set rope.type=none"
        )
    return float(theta)


def ntk_theta(base_theta: float, factor: float, head_dim: int) -> float:
    """NTK-aware base: ``base_theta * factor ** (head_dim / (head_dim - 2))`` (bloc97)."""
    if head_dim <= 2:
        raise ValueError(f"head_dim must be > 2 for the NTK base, got {head_dim}")
    return float(base_theta * factor ** (head_dim / (head_dim - 2)))


def normalise_rope_type(rope_type: str | None) -> str:
    """Canonical rope type name (``dynamic_ntk`` → ``dynamic``); raises ``ValueError`` for unknown types."""
    name = "none" if rope_type is None else str(rope_type).lower()
    name = _ALIASES.get(name, name)
    if name not in ROPE_TYPES:
        raise ValueError(
            f"rope.type must be one of {list(ROPE_TYPES)} (or aliases {sorted(_ALIASES)}), got {rope_type!r}; "
            "choose a preset with rope=<none|theta|linear|dynamic_ntk|yarn|llama3>"
        )
    return name


def apply_rope_scaling(hf_config: Any, rope_cfg: Mapping[str, Any] | None, target_length: int) -> dict[str, Any]:
    """The ``rope_parameters`` dict extending ``hf_config`` to ``target_length`` with ``rope_cfg``.

    Pure: ``hf_config`` is not modified. Raises ``ValueError`` naming the field for an unknown type,
    ``factor <= 1``, a non-positive theta or a target not longer than the original window.
    """
    if int(target_length) < 1:
        raise ValueError(f"target_length must be >= 1, got {target_length}")
    target_length = int(target_length)
    rope_type = normalise_rope_type(_get(rope_cfg, "type", "none"))
    current = dict(getattr(hf_config, "rope_parameters", None) or {})
    old_theta = base_rope_theta(hf_config)
    if rope_type == "none":
        current.setdefault("rope_type", "default")
        current.setdefault("rope_theta", old_theta)
        return current

    original = int(_get(rope_cfg, "original_max_position_embeddings", hf_config.max_position_embeddings))
    if original < 1:
        raise ValueError(f"rope.original_max_position_embeddings must be >= 1, got {original}")
    theta_cfg = _get(rope_cfg, "rope_theta")

    factor: float | None = None
    if rope_type != "theta":
        raw = _get(rope_cfg, "factor")
        factor = float(raw) if raw is not None else target_length / original
        if not factor > 1.0:
            raise ValueError(
                f"rope.factor must be > 1 for rope.type={rope_type!r}, got {factor:g}"
                + ("" if raw is not None else f" (= target_length {target_length} / original {original})")
                + "; raise the factor or target_length, or use rope=none / rope=theta"
            )

    if theta_cfg is None:
        theta = old_theta
    elif isinstance(theta_cfg, str) and theta_cfg.lower() == "ntk":
        if factor is None:
            raise ValueError("rope.rope_theta='ntk' needs a factor; give rope.rope_theta a number for rope=theta")
        theta = ntk_theta(old_theta, factor, head_dim_of(hf_config))
    else:
        try:
            theta = float(theta_cfg)
        except (TypeError, ValueError) as err:
            raise ValueError(f"rope.rope_theta must be a number, null or 'ntk', got {theta_cfg!r}") from err
    if not theta > 0:
        raise ValueError(f"rope.rope_theta must be > 0, got {theta:g}")
    if rope_type == "theta" and theta_cfg is None:
        raise ValueError("rope.rope_theta is required for rope.type='theta' (e.g. rope.rope_theta=48.9e6)")

    params: dict[str, Any] = {"rope_theta": theta}
    if rope_type == "theta":
        params["rope_type"] = "default"
    elif rope_type in ("linear", "dynamic"):
        params.update(rope_type=rope_type, factor=factor)
    elif rope_type == "yarn":
        params.update(rope_type="yarn", factor=factor, original_max_position_embeddings=original)
        for key in _YARN_OPTIONAL:
            value = _get(rope_cfg, key)
            if value is not None:
                params[key] = float(value) if key != "truncate" else bool(value)
    elif rope_type == "llama3":
        low = float(_get(rope_cfg, "low_freq_factor", 1.0))
        high = float(_get(rope_cfg, "high_freq_factor", 4.0))
        if not high > low > 0:
            raise ValueError(
                f"rope.high_freq_factor must be > rope.low_freq_factor > 0, got high={high:g}, low={low:g} "
                "(Llama-3.1 uses low_freq_factor=1, high_freq_factor=4)"
            )
        if original >= target_length:
            raise ValueError(
                f"rope.original_max_position_embeddings ({original}) must be < target_length ({target_length}) "
                "for rope.type='llama3'"
            )
        params.update(rope_type="llama3", factor=factor, original_max_position_embeddings=original,
                      low_freq_factor=low, high_freq_factor=high)
    if "partial_rotary_factor" in current:
        params["partial_rotary_factor"] = current["partial_rotary_factor"]
    return params


def scaled_config(hf_config: Any, rope_cfg: Mapping[str, Any] | None, target_length: int):
    """A deep copy of ``hf_config`` with the scaled ``rope_parameters`` and ``max_position_embeddings``.

    The result is checked with transformers' own ``validate_rope``.
    """
    params = apply_rope_scaling(hf_config, rope_cfg, target_length)
    new = copy.deepcopy(hf_config)
    new.rope_parameters = params
    new.max_position_embeddings = int(target_length)
    if hasattr(new, "rope_theta") and "rope_theta" in params:
        new.rope_theta = params["rope_theta"]
    validate = getattr(new, "validate_rope", None)
    if callable(validate):
        try:
            validate()
        except KeyError as err:  # transformers reports missing/unexpected keys as KeyError
            raise ValueError(f"rope parameters {params} rejected by transformers: {err}") from err
    return new
