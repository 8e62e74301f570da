"""``LongContextLM``: the LightningModule that trains any HF RoPE causal LM on long-context batches.

Every forward passes the batch's ``position_ids`` and its ``attention_mask`` (all ones for single-sequence
samples; built when a batch has none): transformers reads any jump in ``position_ids`` as a packed-document
boundary when no mask is given, which would silently cut a PoSE / LongRecipe sample into pieces. The loss
is computed from the base model's hidden states with ``causal_lm_loss`` (chunked, or Liger on GPU), so the
full ``tokens x vocab`` logits never exist.
"""

from __future__ import annotations

import math
import random
from collections.abc import Mapping
from pathlib import Path
from typing import Any

import lightning as L
import numpy as np
import torch

from longrecipe.models.attention import flash_inputs, is_flash
from longrecipe.models.loading import _plain, build_model
from longrecipe.models.loss import causal_lm_loss
from longrecipe.utils.logging import get_logger

log = get_logger(__name__)

MODEL_INPUT_KEYS = ("input_ids", "attention_mask", "position_ids")
# batch keys never forwarded to the model (metadata of the data pipeline)
NON_MODEL_KEYS = frozenset({"labels", "shift_labels", "seq_lens", "doc_ids", "segment_starts", "index", "indices", "sample_index",
                            "num_items_in_batch"})


class NonFiniteLossError(FloatingPointError):
    """Raised when the training loss is NaN/inf; the message names the step and the checkpoint written."""


def _transformers_extra_kwargs() -> frozenset[str]:
    try:
        from transformers.utils.generic import TransformersKwargs

        return frozenset(TransformersKwargs.__annotations__)
    except (ImportError, AttributeError):  # pragma: no cover - older transformers
        return frozenset({"cu_seq_lens_q", "cu_seq_lens_k", "max_length_q", "max_length_k"})


def model_inputs(batch: Mapping[str, Any], attn_implementation: str | None = None) -> dict[str, Any]:
    """The keyword arguments for the base model: ids, positions, mask, plus extra keys it accepts.

    A missing ``attention_mask`` becomes all ones and missing ``position_ids`` ``arange(T)`` so the model
    never infers packed documents from position gaps. 4-D masks (packed replay) pass through unchanged,
    as do the transformers attention kwargs (``cu_seq_lens_q`` ...). Other keys are dropped.
    For a flash ``attn_implementation`` the batch is flattened to one row with explicit sequence boundaries
    (:func:`longrecipe.models.attention.flash_inputs`): position jumps are never read as document ends, and
    packed documents stay apart at any batch size.
    """
    if "input_ids" not in batch:
        raise ValueError(f"batch must contain input_ids, got keys {sorted(batch)}")
    ids = batch["input_ids"]
    if ids.dim() != 2:
        raise ValueError(f"batch['input_ids'] must be [batch, seq], got shape {tuple(ids.shape)}")
    pos = batch.get("position_ids")
    if pos is None:
        pos = torch.arange(ids.shape[1], device=ids.device).unsqueeze(0).expand_as(ids)
    elif tuple(pos.shape) != tuple(ids.shape):
        raise ValueError(f"batch['position_ids'] must match input_ids {tuple(ids.shape)}, got {tuple(pos.shape)}")
    if is_flash(attn_implementation):
        return flash_inputs(batch, ids, pos)
    out: dict[str, Any] = {"input_ids": ids}
    mask = batch.get("attention_mask")
    if mask is None and "cu_seqlens" in batch:
        # packed replay without a mask (data.mask_format=none): transformers isolates the documents from the
        # restarting position_ids (an all-ones mask here would let documents see each other)
        out["attention_mask"] = None
    else:
        out["attention_mask"] = torch.ones_like(ids) if mask is None else mask
    out["position_ids"] = pos
    allowed = _transformers_extra_kwargs()
    for key, value in batch.items():
        if key in out or key in NON_MODEL_KEYS:
            continue
        if key in allowed:
            out[key] = value
    return out


def _rng_state() -> dict[str, Any]:
    np_state = np.random.get_state()
    py_state = random.getstate()
    state: dict[str, Any] = {
        "torch": torch.get_rng_state(),
        "numpy": {"key": torch.from_numpy(np_state[1].astype(np.int64)), "pos": int(np_state[2]),
                  "has_gauss": int(np_state[3]), "cached_gaussian": float(np_state[4])},
        "python": {"version": int(py_state[0]), "state": list(py_state[1]),
                   "gauss": None if py_state[2] is None else float(py_state[2])},
    }
    if torch.cuda.is_available():
        state["cuda"] = torch.cuda.get_rng_state_all()
    return state


def _set_rng_state(state: Mapping[str, Any]) -> None:
    torch.set_rng_state(state["torch"])
    npk = state["numpy"]
    np.random.set_state(("MT19937", npk["key"].numpy().astype(np.uint32), npk["pos"], npk["has_gauss"],
                         npk["cached_gaussian"]))
    py = state["python"]
    random.setstate((py["version"], tuple(py["state"]), py["gauss"]))
    if "cuda" in state and torch.cuda.is_available():
        torch.cuda.set_rng_state_all(state["cuda"])


class LongContextLM(L.LightningModule):
    """Context-extension training of an HF causal LM (Llama / Mistral / Qwen2 and other RoPE models).

    Args:
        model: the ``conf/model`` node (``pretrained``, ``config``, ``attn_implementation``, ``dtype``,
            ``gradient_checkpointing``, ``loss_chunk_size``, ``loss_impl``, ...).
        rope: the ``conf/rope`` node; ``target_length``: the extended window.
        optim: the ``conf/optim`` node (see ``longrecipe.training.optim``).
        tokenizer: checked against the model vocabulary at build time.
        hf_model: an already-built HF model (tests); otherwise built lazily in ``configure_model``.
    """

    def __init__(
        self,
        model: Mapping[str, Any],
        rope: Mapping[str, Any] | None = None,
        target_length: int = 1024,
        optim: Mapping[str, Any] | None = None,
        *,
        tokenizer: Any | None = None,
        hf_model: torch.nn.Module | None = None,
    ) -> None:
        super().__init__()
        self.model_cfg = dict(_plain(model) or {})
        self.rope_cfg = _plain(rope)
        self.target_length = int(target_length)
        self.optim_cfg = dict(_plain(optim) or {})
        self.save_hyperparameters({"model": self.model_cfg, "rope": self.rope_cfg, "target_length": self.target_length,
                                   "optim": self.optim_cfg})
        self.tokenizer = tokenizer
        self.model = hf_model
        self.loss_chunk_size = int(self.model_cfg.get("loss_chunk_size") or 1024)
        self.loss_impl = str(self.model_cfg.get("loss_impl") or "auto")
        self.ignore_index = int(self.model_cfg.get("ignore_index", -100))
        if self.model is not None:
            self._prepare_model()

    # ------------------------------------------------------------------ model
    def configure_model(self) -> None:
        """Build the HF model (lazily: composing a config never loads weights)."""
        if self.model is None:
            self.model = build_model(self.model_cfg, self.rope_cfg, self.target_length, tokenizer=self.tokenizer)
            self._prepare_model()

    def _prepare_model(self) -> None:
        cfg = self.model.config
        cfg.use_cache = False
        self.model.train()  # from_pretrained returns eval mode; Lightning would warn and dropout would be off
        if self.model_cfg.get("gradient_checkpointing", False):
            kwargs = {"use_reentrant": False}
            if hasattr(self.model, "activation_checkpointing_enable"):
                self.model.activation_checkpointing_enable(activation_checkpointing_kwargs=kwargs)
            else:  # pragma: no cover - transformers < 5.x
                self.model.gradient_checkpointing_enable(gradient_checkpointing_kwargs=kwargs)
        softcap = getattr(cfg, "final_logit_softcapping", None)
        self.logit_softcap = float(softcap) if softcap else None

    @property
    def hf_model(self):
        if self.model is None:
            raise RuntimeError("the HF model is not built yet; call configure_model() (Trainer.fit does)")
        return self.model

    def _zero3(self) -> bool:
        trainer = self._trainer
        return bool(trainer is not None and getattr(trainer.strategy, "zero_stage_3", False))

    # ------------------------------------------------------------------ loss
    def hidden_states(self, batch: Mapping[str, Any]) -> torch.Tensor:
        """Final hidden states ``[B, T, D]`` of the base model for ``batch``."""
        base = self.hf_model.base_model
        ids = batch["input_ids"]
        out = base(**model_inputs(batch, self.hf_model.config._attn_implementation), use_cache=False)
        return out.last_hidden_state.reshape(*ids.shape, -1)  # flash inputs run as one flattened row

    def compute_loss(self, batch: Mapping[str, Any]) -> tuple[torch.Tensor, torch.Tensor]:
        """``(mean next-token loss, n_tokens)`` for ``batch`` (labels ``-100`` ignored).

        Targets: ``labels`` (aligned with ``input_ids``; shifted here), or ``shift_labels`` (already shifted,
        e.g. a sequence-parallel shard), or ``input_ids`` when neither is present.
        """
        shifted = "shift_labels" in batch
        labels = batch["shift_labels"] if shifted else batch.get("labels")
        if labels is None:
            labels = batch["input_ids"]
        hidden = self.hidden_states(batch)
        head = self.hf_model.get_output_embeddings()
        zero3 = self._zero3()
        impl = "chunked" if zero3 and self.loss_impl in ("auto", "liger") else self.loss_impl
        weight = head if zero3 else head.weight
        bias = None if zero3 else getattr(head, "bias", None)
        return causal_lm_loss(hidden, weight, labels, impl=impl, chunk_size=self._chunk_size(hidden.shape[1]),
                              ignore_index=self.ignore_index, lm_head_bias=bias, softcap=self.logit_softcap,
                              shifted=shifted)

    def _chunk_size(self, seq_len: int) -> int:
        """``model.loss_chunk_size``, or ``ceil(T / tiles)`` when the strategy asks for tiled logits."""
        trainer = self._trainer
        tiles = getattr(trainer.strategy, "tiled_logits_shards", None) if trainer is not None else None
        if tiles:
            return max(1, math.ceil(seq_len / int(tiles)))
        return self.loss_chunk_size

    def forward(self, batch: Mapping[str, Any]) -> tuple[torch.Tensor, torch.Tensor]:
        return self.compute_loss(batch)

    # ------------------------------------------------------------------ steps
    def training_step(self, batch: Mapping[str, Any], batch_idx: int) -> dict[str, torch.Tensor]:
        loss, n_tokens = self.compute_loss(batch)
        self._stop_if_not_finite(loss, batch_idx)
        bsz = int(batch["input_ids"].shape[0])
        detached = self._group_loss(loss.detach(), n_tokens)
        self.log("train/loss", detached, prog_bar=True, on_step=True, on_epoch=False, batch_size=bsz)
        self.log("train/ppl", torch.exp(detached.clamp(max=50.0)), on_step=True, on_epoch=False, batch_size=bsz)
        self.log("train/n_tokens", n_tokens.float(), on_step=True, on_epoch=False, batch_size=bsz,
                 reduce_fx="sum")
        if self._trainer is not None and self.trainer.optimizers:
            lr = self.trainer.optimizers[0].param_groups[0]["lr"]
            self.log("train/lr", float(lr), on_step=True, on_epoch=False, batch_size=bsz)
        return {"loss": loss, "n_tokens": n_tokens, "raw_loss": detached}

    @staticmethod
    def _group_loss(loss: torch.Tensor, n_tokens: torch.Tensor) -> torch.Tensor:
        """The loss to log: under sequence parallelism the token-weighted loss of the whole SP group,
        not this rank's shard mean; otherwise ``loss`` itself."""
        from longrecipe.parallel.groups import current_sequence_parallel

        state = current_sequence_parallel()
        if state is None or state.sp_size <= 1:
            return loss
        from longrecipe.parallel.loss import sequence_parallel_loss

        return sequence_parallel_loss(loss * n_tokens.to(loss.dtype), n_tokens, group=state.sp_group,
                                      sp_size=state.sp_size)[1]

    def validation_step(self, batch: Mapping[str, Any], batch_idx: int) -> torch.Tensor:
        loss, n_tokens = self.compute_loss(batch)
        bsz = int(batch["input_ids"].shape[0])
        loss = self._group_loss(loss.detach(), n_tokens)  # under SP: the token-weighted loss of the whole sample
        self.log("val/loss", loss, on_step=False, on_epoch=True, batch_size=bsz, sync_dist=True)
        self.log("val/ppl", torch.exp(loss.clamp(max=50.0)), on_step=False, on_epoch=True, batch_size=bsz,
                 sync_dist=True)
        return loss

    def _stop_if_not_finite(self, loss: torch.Tensor, batch_idx: int) -> None:
        bad = not bool(torch.isfinite(loss.detach()).item())
        if self._trainer is None:
            if bad:
                raise NonFiniteLossError(f"non-finite loss {loss.item()} at batch {batch_idx}")
            return
        trainer = self.trainer
        bad = trainer.strategy.reduce_boolean_decision(bad, all=False)
        if not bad:
            return
        step = trainer.global_step + 1
        ckpt_cb = trainer.checkpoint_callback
        ckpt_dir = Path(getattr(ckpt_cb, "dirpath", None) or trainer.default_root_dir)
        path = ckpt_dir / f"nonfinite-step{step}.ckpt"
        trainer.save_checkpoint(str(path))
        raise NonFiniteLossError(
            f"non-finite training loss ({loss.detach().item()}) at optimizer step {step} (batch {batch_idx}); "
            f"weights before this step saved to {path}. Lower optim.lr, raise optim.warmup_steps or check the data "
            "(labels out of range, empty samples)"
        )

    def on_before_optimizer_step(self, optimizer: torch.optim.Optimizer) -> None:
        grads = [p.grad for p in self.parameters() if p.grad is not None]
        if not grads:  # DeepSpeed keeps gradients inside its engine
            return
        norm = torch.linalg.vector_norm(torch.stack([torch.linalg.vector_norm(g.detach().float()) for g in grads]))
        self.log("train/grad_norm", norm, on_step=True, on_epoch=False, batch_size=1)

    # ------------------------------------------------------------------ optimisation
    def configure_optimizers(self):
        from longrecipe.training.optim import build_optimizer, build_scheduler

        strategy = self.trainer.strategy if self._trainer is not None else None
        optimizer = build_optimizer(self, self.optim_cfg, strategy=strategy)
        total = int(self.trainer.estimated_stepping_batches) if self._trainer is not None else 1
        if not math.isfinite(total) or total <= 0:
            total = int(self.optim_cfg.get("total_steps") or 1)
        scheduler = build_scheduler(optimizer, self.optim_cfg, total_steps=total)
        return {"optimizer": optimizer, "lr_scheduler": {"scheduler": scheduler, "interval": "step", "frequency": 1}}

    # ------------------------------------------------------------------ checkpoints
    def on_save_checkpoint(self, checkpoint: dict[str, Any]) -> None:
        checkpoint["longrecipe_rng"] = _rng_state()

    def on_load_checkpoint(self, checkpoint: dict[str, Any]) -> None:
        state = checkpoint.get("longrecipe_rng")
        if state is not None:
            _set_rng_state(state)
