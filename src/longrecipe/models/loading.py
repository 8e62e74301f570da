"""Load (or build) the tokenizer and the HF causal LM that ``LongContextLM`` extends.

Model config keys (``conf/model/*.yaml``): ``pretrained`` (local folder / hub id, or null to build from
``config``), ``config`` (a ``_target_`` returning a ``PretrainedConfig``, e.g. ``longrecipe.tiny.tiny_model_config``),
``tokenizer`` (null → the one saved with ``pretrained``; a path / hub id; or a ``_target_`` factory),
``scratch_tokenizer`` (factory used when both ``pretrained`` and ``tokenizer`` are null), ``attn_implementation``
(``auto`` | ``sdpa`` | ``eager`` | ``flash_attention_2`` | ``flex_attention``), ``dtype``, ``trust_remote_code``.
Nothing is downloaded or built when a config is composed; these functions run at fit time.
"""

from __future__ import annotations

import importlib.util
from collections.abc import Mapping
from typing import Any

import torch

from longrecipe.models.attention import REFERENCE_FLASH, TORCH_FLASH, check_attn_usable, is_kernel_name
from longrecipe.utils.logging import get_logger
from longrecipe.utils.model_refs import resolve_model_ref

log = get_logger(__name__)

ATTN_IMPLEMENTATIONS = ("auto", "sdpa", "eager", "flash_attention_2", "flash_attention_3", "flex_attention")
DTYPES = {"float32": torch.float32, "fp32": torch.float32, "bfloat16": torch.bfloat16, "bf16": torch.bfloat16,
          "float16": torch.float16, "fp16": torch.float16}
SUPPORTED_MODEL_TYPES = ("llama", "mistral", "qwen2")


def _plain(node: Any) -> Any:
    try:
        from omegaconf import DictConfig, ListConfig, OmegaConf

        if isinstance(node, (DictConfig, ListConfig)):
            return OmegaConf.to_container(node, resolve=True)
    except ImportError:  # pragma: no cover
        pass
    return node


def _is_factory(node: Any) -> bool:
    return isinstance(node, Mapping) and "_target_" in node


def resolve_dtype(name: str | None) -> torch.dtype:
    """``float32`` / ``bfloat16`` / ``float16`` (and short forms) → ``torch.dtype``; null → float32."""
    if name is None:
        return torch.float32
    key = str(name).lower().replace("torch.", "")
    if key not in DTYPES:
        raise ValueError(f"model.dtype must be one of {sorted(DTYPES)}, got {name!r}")
    return DTYPES[key]


def resolve_attn_implementation(name: str | None, *, cuda: bool | None = None) -> str:
    """``auto`` → ``flash_attention_2`` on CUDA when ``flash_attn`` is installed, else ``sdpa``.

    Besides the named implementations, an attention kernel ``owner/name`` is accepted (transformers loads it
    through the ``kernels`` package), including the bundled ``longrecipe/flash-reference`` and
    ``longrecipe/torch-flash`` (see :mod:`longrecipe.models.attention`); flash kernels are checked loadable here.
    """
    name = "auto" if name is None else str(name)
    if name not in ATTN_IMPLEMENTATIONS and not is_kernel_name(name):
        raise ValueError(f"model.attn_implementation must be one of {list(ATTN_IMPLEMENTATIONS)} or an attention "
                         f"kernel 'owner/name' (e.g. {REFERENCE_FLASH!r}, {TORCH_FLASH!r}), got {name!r}")
    cuda = torch.cuda.is_available() if cuda is None else cuda
    have_fa = importlib.util.find_spec("flash_attn") is not None
    if name == "auto":
        return "flash_attention_2" if cuda and have_fa else "sdpa"
    if name == "flash_attention_2" and not (cuda and have_fa):
        raise ValueError(
            "model.attn_implementation='flash_attention_2' needs a CUDA GPU and the flash-attn package "
            f"(pip install longrecipe[gpu]); use model.attn_implementation=sdpa on CPU, or {TORCH_FLASH!r} on a GPU "
            "without flash-attn"
        )
    if is_kernel_name(name):
        check_attn_usable(name, "model.attn_implementation")
    return name


def _check_pretrained(ref: str) -> str:
    return resolve_model_ref(ref, "model.pretrained")


def base_model_config(model_cfg: Mapping[str, Any]):
    """The un-scaled ``PretrainedConfig``: from ``model.pretrained`` or built from ``model.config``."""
    from transformers import AutoConfig

    model_cfg = _plain(model_cfg)
    pretrained = model_cfg.get("pretrained")
    if pretrained:
        ref = _check_pretrained(str(pretrained))
        try:
            config = AutoConfig.from_pretrained(ref, trust_remote_code=bool(model_cfg.get("trust_remote_code", False)))
        except OSError as err:
            raise ValueError(f"model.pretrained={pretrained!r} could not be loaded (offline, or not a model): {err}; "
                             "download it first or give a local folder") from err
    else:
        spec = model_cfg.get("config")
        if spec is None:
            raise ValueError("model.pretrained and model.config are both null; set model.pretrained=<folder or hub "
                             "id> or model.config (e.g. model=tiny_llama)")
        if _is_factory(spec):
            from hydra.utils import instantiate

            config = instantiate(spec)
        else:
            raise ValueError(f"model.config must be a mapping with _target_ returning a PretrainedConfig, got {spec!r}")
    if getattr(config, "model_type", None) not in SUPPORTED_MODEL_TYPES:
        log.warning("model_type %r is not one of the tested %s; it must use RoPE and accept position_ids",
                    getattr(config, "model_type", None), SUPPORTED_MODEL_TYPES)
    return config


def load_tokenizer(model_cfg: Mapping[str, Any]):
    """Tokenizer for ``model_cfg``: explicit ``tokenizer`` → ``pretrained`` folder → ``scratch_tokenizer``."""
    from transformers import AutoTokenizer

    model_cfg = _plain(model_cfg)
    trust = bool(model_cfg.get("trust_remote_code", False))
    spec = model_cfg.get("tokenizer")
    if spec is None and model_cfg.get("pretrained"):
        spec = _check_pretrained(str(model_cfg["pretrained"]))
    if spec is None:
        spec = model_cfg.get("scratch_tokenizer")
    if spec is None:
        raise ValueError("no tokenizer: set model.tokenizer (path, hub id or _target_), model.pretrained, or "
                         "model.scratch_tokenizer")
    if _is_factory(spec):
        from hydra.utils import instantiate

        return instantiate(spec)
    try:
        return AutoTokenizer.from_pretrained(str(spec), trust_remote_code=trust)
    except OSError as err:
        raise ValueError(f"model.tokenizer={spec!r} could not be loaded: {err}") from err


def check_vocab(tokenizer: Any, hf_config: Any) -> None:
    """Refuse a tokenizer with ids beyond the model's embedding table (``len(tokenizer) > vocab_size``)."""
    n_tok = len(tokenizer)
    vocab = int(hf_config.vocab_size)
    if n_tok > vocab:
        raise ValueError(
            f"tokenizer has {n_tok} tokens but model vocab_size is {vocab}: ids >= {vocab} would index past the "
            "embedding table; use the tokenizer saved with the model (model.tokenizer=null) or a model with "
            f"vocab_size >= {n_tok}"
        )


def build_model(
    model_cfg: Mapping[str, Any],
    rope_cfg: Mapping[str, Any] | None,
    target_length: int,
    *,
    tokenizer: Any | None = None,
):
    """The HF causal LM with RoPE scaled to ``target_length`` (``max_position_embeddings = target_length``)."""
    from transformers import AutoModelForCausalLM

    from longrecipe.models.rope import scaled_config

    model_cfg = _plain(model_cfg)
    rope_cfg = _plain(rope_cfg)
    base = base_model_config(model_cfg)
    if tokenizer is not None:
        check_vocab(tokenizer, base)
    if getattr(base, "logit_scale", None) not in (None, 1, 1.0):
        raise ValueError(f"model.pretrained: model_type {base.model_type!r} scales its logits (logit_scale="
                         f"{base.logit_scale}), which none of our losses (model.loss_impl) implement; use a Llama / "
                         "Mistral / Qwen2-style model without logit scaling")
    config = scaled_config(base, rope_cfg, target_length)
    attn = resolve_attn_implementation(model_cfg.get("attn_implementation", "sdpa"))
    dtype = resolve_dtype(model_cfg.get("dtype"))
    trust = bool(model_cfg.get("trust_remote_code", False))
    config.use_cache = False
    if model_cfg.get("pretrained"):
        ref = _check_pretrained(str(model_cfg["pretrained"]))
        model = AutoModelForCausalLM.from_pretrained(ref, config=config, dtype=dtype, attn_implementation=attn,
                                                     trust_remote_code=trust)
    else:
        model = AutoModelForCausalLM.from_config(config, dtype=dtype, attn_implementation=attn,
                                                 trust_remote_code=trust)
    log.info("model %s (%s, attn=%s, dtype=%s): rope_parameters=%s max_position_embeddings=%d",
             model_cfg.get("pretrained") or "from config", config.model_type, attn, dtype, config.rope_parameters,
             config.max_position_embeddings)
    return model
