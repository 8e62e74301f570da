"""Model/tokenizer loading, RoPE scaling, chunked loss, ``LongContextLM`` and HF export."""

from longrecipe.models.export import check_export_target, export_hf_model
from longrecipe.models.loading import base_model_config, build_model, check_vocab, load_tokenizer
from longrecipe.models.loss import causal_lm_loss, chunked_causal_lm_loss, full_causal_lm_loss
from longrecipe.models.module import LongContextLM, NonFiniteLossError, model_inputs
from longrecipe.models.rope import ROPE_TYPES, apply_rope_scaling, ntk_theta, scaled_config

__all__ = [
    "ROPE_TYPES",
    "LongContextLM",
    "NonFiniteLossError",
    "apply_rope_scaling",
    "base_model_config",
    "build_model",
    "causal_lm_loss",
    "check_export_target",
    "check_vocab",
    "chunked_causal_lm_loss",
    "export_hf_model",
    "full_causal_lm_loss",
    "load_tokenizer",
    "model_inputs",
    "ntk_theta",
    "scaled_config",
]
