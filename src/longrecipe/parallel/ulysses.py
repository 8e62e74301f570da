"""DeepSpeed-Ulysses attention for HF models, registered as ``attn_implementation="longrecipe_ulysses"``.

Each SP rank runs the model on its shard of the sequence; inside every attention layer DeepSpeed's
``UlyssesSPAttentionHF`` exchanges q/k/v with one all-to-all so that each rank holds the *full*
sequence for ``heads / sp`` heads, runs the core attention (sdpa / flash) and exchanges back.

Simulated positions (PoSE, LongRecipe) have gaps. transformers and DeepSpeed both read a jump in
``position_ids`` as a packed-document boundary (``find_packed_sequence_indices``, flash-attention's
varlen path) -- that would silently stop attention across every gap. Here the core attention
never sees positions: the registered function is unknown to transformers' mask interface, so no
mask (and no packed-sequence detection) is built; an sdpa core (:func:`_full_causal_core`) drops
``position_ids`` / ``cu_seq_lens_*`` and is called with ``attention_mask=None, is_causal=True``, and a flash
core (:func:`_flash_core`) is called under its own name with explicit per-row boundaries: one sample, fully
causal, whatever its positions. RoPE is applied per shard before the exchange
from the true positions; position-dependent RoPE variants (``dynamic``, ``longrope``) see the
group-wide maximum position through a hook on the rotary module, as they would with ``sp = 1``.

Only public registration APIs are used (``AttentionInterface.register``, module hooks,
``set_attn_implementation``); transformers' module globals are left untouched (DeepSpeed's own
``register_with_transformers`` overwrites ``ALL_ATTENTION_FUNCTIONS["sdpa"]``, which we avoid).
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

import torch

from longrecipe.utils.logging import get_logger

log = get_logger(__name__)

ULYSSES_ATTN = "longrecipe_ulysses"
SUPPORTED_CORES = ("sdpa", "flash_attention_2", "flash_attention_3")
# RoPE types whose frequencies depend on the largest position id of the batch
POSITION_DEPENDENT_ROPE = ("dynamic", "longrope")
_PACKED_KWARGS = ("position_ids", "cu_seq_lens_q", "cu_seq_lens_k", "max_length_q", "max_length_k")


def _divisors(n: int) -> list[int]:
    return [d for d in range(1, n + 1) if n % d == 0]


def check_sequence_parallel_heads(config: Any, sp_size: int) -> None:
    """Raise ``ValueError`` unless Ulysses can split this model's heads over ``sp_size`` ranks.

    Query heads must divide evenly; KV heads (GQA) must divide evenly, or ``sp_size`` must be a
    multiple of them (then each KV head is replicated ``sp_size / kv`` times, as DeepSpeed does).
    """
    text = config.get_text_config() if hasattr(config, "get_text_config") else config
    q_heads = int(text.num_attention_heads)
    kv_heads = int(getattr(text, "num_key_value_heads", None) or q_heads)
    if sp_size < 1:
        raise ValueError(f"strategy.sequence_parallel_size must be >= 1, got {sp_size}")
    if q_heads % sp_size != 0:
        raise ValueError(
            f"strategy.sequence_parallel_size={sp_size} does not divide the model's num_attention_heads={q_heads}: "
            f"Ulysses gives each rank heads/sp query heads. Use a sequence_parallel_size in {_divisors(q_heads)}."
        )
    if kv_heads % sp_size != 0 and sp_size % kv_heads != 0:
        allowed = sorted({d for d in _divisors(q_heads) if kv_heads % d == 0 or d % kv_heads == 0})
        raise ValueError(
            f"strategy.sequence_parallel_size={sp_size} and the model's num_key_value_heads={kv_heads} are "
            f"incompatible: KV heads must divide evenly over the SP ranks, or sp must be a multiple of them "
            f"(KV-head replication). Use a sequence_parallel_size in {allowed}."
        )


def check_core_attn_implementation(name: str) -> None:
    """Raise ``ValueError`` naming ``strategy.core_attn_implementation`` unless ``name`` can run here.

    Allowed: ``sdpa``, ``flash_attention_2/3`` and flash kernels ``owner/name`` (e.g. ``longrecipe/torch-flash``);
    flash cores are loaded now, so a missing flash-attn package fails before the first step, not inside it.
    """
    from longrecipe.models.attention import check_attn_usable, is_flash, is_kernel_name

    if name not in SUPPORTED_CORES and not (is_kernel_name(name) and is_flash(name)):
        raise ValueError(
            f"strategy.core_attn_implementation={name!r} is not supported under Ulysses; use one of "
            f"{list(SUPPORTED_CORES)} or a flash kernel 'owner/name' such as 'longrecipe/torch-flash' (eager needs "
            "an O(T^2) mask; 'sdpa' works on CPU and GPU)"
        )
    check_attn_usable(name, "strategy.core_attn_implementation")


def _full_causal_core(core_fn):
    """The sdpa core over the gathered full sequence: plain causal, positions hidden."""

    def core(module, query, key, value, attention_mask, *args, **kwargs):
        for name in _PACKED_KWARGS:
            kwargs.pop(name, None)
        kwargs.pop("is_causal", None)
        return core_fn(module, query, key, value, None, *args, is_causal=True, **kwargs)

    return core


def _flash_core(implementation: str):
    """A flash core over the gathered full sequence, under its real name.

    transformers' ``flash_attention_forward`` picks its kernel from ``module.config._attn_implementation``, which
    says ``longrecipe_ulysses`` here; so the kernel is called through ``_flash_attention_forward`` with
    ``attn_implementation=implementation``, causal, and explicit boundaries: each gathered row is one sequence
    (``cu_seq_lens = [0, T, 2T, ...]``), so no position jump can be read as a document end.
    """
    from transformers.integrations.flash_attention import get_target_dtype
    from transformers.modeling_flash_attention_utils import _flash_attention_forward

    from longrecipe.models.attention import varlen_kwargs

    def core(module, query, key, value, attention_mask, *args, dropout: float = 0.0, scaling: float | None = None,
             **kwargs):
        for name in (*_PACKED_KWARGS, "is_causal", "output_attentions"):
            kwargs.pop(name, None)
        batch, _, seq, _ = query.shape  # [B, H/sp, T, D] after the all-to-all
        cu = torch.arange(0, (batch + 1) * seq, seq, dtype=torch.int32, device=query.device)
        out = _flash_attention_forward(query.transpose(1, 2), key.transpose(1, 2), value.transpose(1, 2), None,
                                       query_length=seq, is_causal=True, dropout=dropout, softmax_scale=scaling,
                                       target_dtype=get_target_dtype(query, module),
                                       attn_implementation=implementation, **varlen_kwargs(cu), **kwargs)
        return out, None

    return core


def _core_for(implementation: str):
    from transformers.modeling_utils import ALL_ATTENTION_FUNCTIONS

    from longrecipe.models.attention import is_flash

    if is_flash(implementation):
        return _flash_core(implementation)
    return _full_causal_core(ALL_ATTENTION_FUNCTIONS[implementation])


@dataclass
class _UlyssesContext:
    group: Any
    sp_size: int
    core_attn_implementation: str
    config: Any
    attention: dict[int, Any] = field(default_factory=dict)  # batch size -> UlyssesSPAttentionHF
    hooks: list[Any] = field(default_factory=list)
    kv_groups: dict[int, tuple[Any, int]] = field(default_factory=dict)
    previous_attn_implementation: str | None = None

    def attention_for(self, batch_size: int):
        if batch_size not in self.attention:
            from deepspeed.runtime.sequence_parallel.ulysses_sp import UlyssesSPAttentionHF

            text = self.config.get_text_config()
            head_dim = getattr(text, "head_dim", None) or text.hidden_size // text.num_attention_heads
            uattn = UlyssesSPAttentionHF(
                attn=_core_for(self.core_attn_implementation),
                batch_size=batch_size,
                attn_head_count=text.num_attention_heads,
                attn_head_size=head_dim,
                kv_head_count=text.num_key_value_heads,
                num_hidden_layers=text.num_hidden_layers,
                process_group=self.group,
                seq_length_is_variable=True,
            )
            uattn.core_attn_implementation = self.core_attn_implementation
            self.attention[batch_size] = uattn
        return self.attention[batch_size]


_CONTEXT: _UlyssesContext | None = None


def ulysses_attention_forward(module, query, key, value, attention_mask, *args, **kwargs):
    """The function registered under :data:`ULYSSES_ATTN` (HF attention-interface signature)."""
    if _CONTEXT is None:
        raise RuntimeError(
            f"attn_implementation={ULYSSES_ATTN!r} is only valid after longrecipe.parallel.enable_ulysses(model, ...) "
            "(the DeepSpeed strategy calls it when strategy.sequence_parallel_size > 1)"
        )
    if kwargs.get("position_ids") is None:
        raise ValueError(
            "Ulysses attention needs position_ids in every forward (each shard's true positions); pass the batch's "
            "position_ids to the model"
        )
    uattn = _CONTEXT.attention_for(int(query.shape[0]))
    # attention_mask is None here (the name has no mask function), and must stay None after the gather.
    return uattn(module, query, key, value, None, *args, **kwargs)


def register_ulysses_attention() -> None:
    """Register :func:`ulysses_attention_forward` with transformers (idempotent)."""
    from transformers import AttentionInterface

    AttentionInterface.register(ULYSSES_ATTN, ulysses_attention_forward)


def _install_rope_hooks(model: torch.nn.Module, group: Any) -> list[Any]:
    """Make position-dependent RoPE see the SP group's maximum position (see module doc)."""
    import torch.distributed as dist

    handles = []
    for rotary in model.modules():
        if not (hasattr(rotary, "inv_freq") and isinstance(getattr(rotary, "rope_type", None), str)):
            continue
        if rotary.rope_type not in POSITION_DEPENDENT_ROPE:
            continue
        appended = {"on": False}

        def pre_hook(mod, args, kwargs, appended=appended):
            if "position_ids" in kwargs:
                position_ids = kwargs["position_ids"]
            else:
                position_ids = args[1]
            top = position_ids.max().reshape(1).to(torch.int64)
            dist.all_reduce(top, op=dist.ReduceOp.MAX, group=group)
            extra = top.to(position_ids.dtype).reshape(1, 1).expand(position_ids.shape[0], 1)
            position_ids = torch.cat([position_ids, extra], dim=1)
            appended["on"] = True
            if "position_ids" in kwargs:
                kwargs = {**kwargs, "position_ids": position_ids}
            else:
                args = (args[0], position_ids, *args[2:])
            return args, kwargs

        def post_hook(mod, args, output, appended=appended):
            if not appended["on"]:
                return output
            appended["on"] = False
            return tuple(t[:, :-1] for t in output)

        handles.append(rotary.register_forward_pre_hook(pre_hook, with_kwargs=True))
        handles.append(rotary.register_forward_hook(post_hook))
    return handles


def _find_hf_model(model: torch.nn.Module):
    from transformers import PreTrainedModel

    if isinstance(model, PreTrainedModel):
        return model
    for module in model.modules():
        if isinstance(module, PreTrainedModel):
            return module
    raise ValueError(f"no transformers PreTrainedModel found inside {type(model).__name__}")


def enable_ulysses(model: torch.nn.Module, *, group: Any = None, core_attn_implementation: str = "sdpa",
                   sync_dynamic_rope: bool = True) -> None:
    """Switch ``model`` (an HF model, or a module holding one) to Ulysses attention over ``group``.

    ``group`` defaults to the SP group of :func:`longrecipe.parallel.init_sequence_parallel`. Raises
    ``ValueError`` for head counts that do not split (before any training step).
    ``sync_dynamic_rope=False`` skips the RoPE hooks (only to demonstrate why they are needed: with a
    ``dynamic`` / ``longrope`` RoPE each shard would otherwise scale its frequencies by its own maximum).
    """
    global _CONTEXT
    import torch.distributed as dist

    from longrecipe.parallel.groups import current_sequence_parallel

    check_core_attn_implementation(core_attn_implementation)
    if group is None:
        state = current_sequence_parallel()
        if state is None:
            raise RuntimeError("enable_ulysses needs init_sequence_parallel(sp) first, or an explicit group")
        group = state.sp_group
    sp_size = dist.get_world_size(group)
    hf_model = _find_hf_model(model)
    check_sequence_parallel_heads(hf_model.config, sp_size)
    if _CONTEXT is not None:
        disable_ulysses(model)
    register_ulysses_attention()
    ctx = _UlyssesContext(group=group, sp_size=sp_size, core_attn_implementation=core_attn_implementation,
                          config=hf_model.config,
                          previous_attn_implementation=hf_model.config._attn_implementation)
    for module in hf_model.modules():
        if hasattr(module, "num_key_value_groups"):  # DeepSpeed rewrites it under KV replication
            ctx.kv_groups[id(module)] = (module, module.num_key_value_groups)
    ctx.hooks = _install_rope_hooks(hf_model, group) if sync_dynamic_rope else []
    hf_model.set_attn_implementation(ULYSSES_ATTN)
    _CONTEXT = ctx
    log.info("Ulysses sequence parallelism on: sp=%d, core=%s, %d RoPE hooks", sp_size, core_attn_implementation,
             len(ctx.hooks) // 2)


def disable_ulysses(model: torch.nn.Module | None = None) -> None:
    """Undo :func:`enable_ulysses`: previous attention implementation, hooks removed, KV groups restored."""
    global _CONTEXT
    ctx = _CONTEXT
    if ctx is None:
        return
    for handle in ctx.hooks:
        handle.remove()
    for module, groups in ctx.kv_groups.values():
        module.num_key_value_groups = groups
    if model is not None and ctx.previous_attn_implementation is not None:
        _find_hf_model(model).set_attn_implementation(ctx.previous_attn_implementation)
    _CONTEXT = None


def ulysses_active() -> bool:
    return _CONTEXT is not None
