"""Flash-style attention: which implementations are flash, the explicit varlen boundaries we give them, and the
flash kernels bundled with the package.

transformers' flash path (``integrations/flash_attention.py`` -> ``_flash_attention_forward``) reads sequence
boundaries from, in order: a 2-D padding mask, explicit ``cu_seq_lens_q/k`` + ``max_length_q/k``, or -- when
neither is given and the batch has one row -- any non-increasing step of ``position_ids``. That last heuristic
must never decide where a PoSE / LongRecipe sample ends, so :func:`flash_inputs` always passes explicit
boundaries: the batch is flattened to one row and ``cu_seq_lens`` marks every sample (unpacked rows) or every
packed document (``cu_seqlens`` of a packed replay batch). Position jumps then only change RoPE.

Two kernels ship with the package, loaded through transformers' attention-kernel mechanism (the ``kernels``
package resolves ``LOCAL_KERNELS=<repo id>=<folder>`` before the hub, so nothing is patched):

* ``longrecipe/flash-reference`` -- a pure-PyTorch reference of ``flash_attn_func`` / ``flash_attn_varlen_func``
  (scores and softmax written out, any device and dtype). With it the real transformers flash code path runs on a
  CPU; the tests use it.
* ``longrecipe/torch-flash`` -- the same two functions on PyTorch's own FlashAttention-2 kernel (CUDA, fp16/bf16),
  for GPU machines without the flash-attn package.

``model.attn_implementation=longrecipe/flash-reference`` (or ``longrecipe/torch-flash``) selects one; the loader
calls :func:`register_bundled_kernels` first.
"""

from __future__ import annotations

import os
from collections.abc import Mapping
from pathlib import Path
from typing import Any

import torch

REFERENCE_FLASH = "longrecipe/flash-reference"
TORCH_FLASH = "longrecipe/torch-flash"
_KERNELS_DIR = Path(__file__).resolve().parents[1] / "kernels"
BUNDLED_KERNELS = {REFERENCE_FLASH: _KERNELS_DIR / "flash_reference", TORCH_FLASH: _KERNELS_DIR / "torch_flash"}
FLASH_KWARGS = ("cu_seq_lens_q", "cu_seq_lens_k", "max_length_q", "max_length_k")


def is_flash(attn_implementation: str | None) -> bool:
    """True for flash-attention implementations (flash_attention_2/3/4 and flash kernels such as ours)."""
    return attn_implementation is not None and "flash" in str(attn_implementation)


def is_kernel_name(attn_implementation: str) -> bool:
    """An attention kernel given as ``owner/name`` (hub or ``LOCAL_KERNELS``), as transformers accepts."""
    parts = str(attn_implementation).split("/")
    return len(parts) == 2 and all(parts) and ":" not in parts[0]


def register_bundled_kernels(environ: dict[str, str] | None = None) -> str:
    """Add the bundled kernels to ``LOCAL_KERNELS`` (kept: entries already there) and return the new value."""
    env = os.environ if environ is None else environ
    entries = [e for e in env.get("LOCAL_KERNELS", "").split(":") if e]
    known = {e.split("=", 1)[0] for e in entries}
    entries += [f"{name}={path}" for name, path in BUNDLED_KERNELS.items() if name not in known]
    env["LOCAL_KERNELS"] = ":".join(entries)
    return env["LOCAL_KERNELS"]


def check_attn_usable(attn_implementation: str, field: str) -> None:
    """Raise ``ValueError`` naming ``field`` unless transformers can load the flash kernel of this name here.

    Non-flash implementations (sdpa, eager, flex) are always usable; flash ones are imported the way transformers
    imports them at the first forward (flash-attn package, or a kernel), so a missing package fails now.
    """
    if not is_flash(attn_implementation):
        return
    if attn_implementation in BUNDLED_KERNELS:
        register_bundled_kernels()
    from transformers.modeling_flash_attention_utils import lazy_import_flash_attention

    try:
        (flash_fn, varlen_fn, *_), _ = lazy_import_flash_attention(attn_implementation)
    except (ImportError, ValueError, OSError, RuntimeError) as err:
        raise ValueError(
            f"{field}={attn_implementation!r} cannot be used on this machine ({type(err).__name__}: {err}). "
            f"Install flash-attn on a CUDA GPU, use {TORCH_FLASH!r} (PyTorch's flash kernel, CUDA), "
            f"{REFERENCE_FLASH!r} (pure-PyTorch reference, any device, slow) or sdpa"
        ) from err
    if varlen_fn is None:
        raise ValueError(f"{field}={attn_implementation!r} has no flash_attn_varlen_func; longrecipe passes explicit "
                         "sequence boundaries and needs it")


def varlen_kwargs(cu_seqlens: torch.Tensor) -> dict[str, Any]:
    """``cu_seq_lens_q/k`` and ``max_length_q/k`` for sequences concatenated in one row (``cu_seqlens`` ``[N+1]``)."""
    cu = cu_seqlens.to(torch.int32)
    max_len = int(cu.diff().max()) if cu.numel() > 1 else 0
    return {"cu_seq_lens_q": cu, "cu_seq_lens_k": cu, "max_length_q": max_len, "max_length_k": max_len}


def flash_inputs(batch: Mapping[str, Any], input_ids: torch.Tensor, position_ids: torch.Tensor) -> dict[str, Any]:
    """Model kwargs for a flash implementation: one flattened row with explicit sequence boundaries.

    Unpacked rows (no ``cu_seqlens``) are one sequence each, whatever their positions; a packed replay batch
    keeps its documents apart with its ``cu_seqlens`` (over the flattened batch, padding its own "document").
    A 2-D padding mask with zeros is passed through unflattened (transformers unpads by the mask).
    """
    b, t = input_ids.shape
    mask = batch.get("attention_mask")
    cu = batch.get("cu_seqlens")
    if cu is None:
        if mask is not None and mask.dim() == 2 and not bool(mask.all()):
            return {"input_ids": input_ids, "attention_mask": mask, "position_ids": position_ids}
        if mask is not None and mask.dim() != 2:
            raise ValueError(f"a flash attention implementation takes no {mask.dim()}-D attention_mask; packed "
                             "batches must carry cu_seqlens (data.mask_format=none)")
        cu = torch.arange(0, (b + 1) * t, t, dtype=torch.int32, device=input_ids.device)
    else:
        cu = cu.to(device=input_ids.device)
        if int(cu[0]) != 0 or int(cu[-1]) != b * t or bool((cu.diff() < 0).any()):
            raise ValueError(f"batch['cu_seqlens'] must rise from 0 to batch*seq={b * t}, got {cu.tolist()}")
    return {"input_ids": input_ids.reshape(1, b * t), "attention_mask": None,
            "position_ids": position_ids.reshape(1, b * t), **varlen_kwargs(cu)}
