"""DeepSpeed ZeRO strategies that also run on CPU, with DeepSpeed-Ulysses sequence parallelism.

``LongRecipeDeepSpeedStrategy`` is Lightning's ``DeepSpeedStrategy`` plus:

* **CPU**: Lightning refuses DeepSpeed without CUDA; here a CPU accelerator is accepted and the
  process group uses gloo (tests: ZeRO-3 on 2 CPU processes). On GPU the stock behaviour runs
  unchanged (NCCL, CUDA checks).
* **Optimizer**: ``optimizer: auto`` keeps ``conf/optim``'s choice on GPU (``DeepSpeedCPUAdam`` when
  the optimizer state is offloaded, ``FusedAdam`` otherwise); on CPU it uses ``torch.optim.AdamW`` as a
  client optimizer (``zero_force_ds_cpu_optimizer: false``) because DeepSpeed JIT-compiles CPUAdam
  with g++ on first use (~100 s).
* **Sequence parallelism** (``sequence_parallel_size = sp > 1``): world = dp x sp; the ranks of one SP
  group read the same sample (``distributed_sampler_kwargs`` count data-parallel replicas only),
  :meth:`batch_to_device` keeps this rank's contiguous shard (labels pre-shifted as ``shift_labels``),
  the model runs ``longrecipe_ulysses`` attention, and the training-step loss is reduced
  token-weighted over the group (see ``longrecipe.parallel.loss``).
* **Long-sequence memory switches**: ``tiled_mlp``, ``tiled_logits`` (read by the LightningModule
  through :attr:`tiled_logits_shards`), ``checkpoint_offload``.
* ``longrecipe_full_state_dict(module)``: the consolidated HF state dict for export under ZeRO-3.
"""

from __future__ import annotations

from collections.abc import Iterator, Mapping
from contextlib import contextmanager
from datetime import timedelta
from typing import Any

import torch
from lightning.pytorch.strategies import DeepSpeedStrategy

from longrecipe.utils.logging import get_logger

log = get_logger(__name__)

OPTIMIZER_CHOICES = ("auto", "adamw", "deepspeed_cpu_adam", "fused_adam")


def _is_cuda(strategy: DeepSpeedStrategy) -> bool:
    from lightning.pytorch.accelerators.cuda import CUDAAccelerator

    return isinstance(strategy.accelerator, CUDAAccelerator)


def _check_choice(field: str, value: Any, allowed: tuple) -> None:
    if value not in allowed:
        raise ValueError(f"strategy.{field} must be one of {list(allowed)}, got {value!r}")


class LongRecipeDeepSpeedStrategy(DeepSpeedStrategy):
    """DeepSpeed ZeRO (stage 3 by default) on CPU or GPU, optionally with Ulysses sequence parallelism.

    Args:
        zero_stage: ZeRO stage (1, 2 or 3).
        offload_optimizer: keep optimizer states (and the Adam step) in CPU memory (ZeRO-Offload).
        offload_parameters: keep fp32/bf16 parameters in CPU memory between uses (stage 3 only).
        pin_memory: pin the offload buffers (faster host<->device copies, GPU only).
        sequence_parallel_size: Ulysses degree ``sp``; must divide the world size and the head counts.
        core_attn_implementation: attention run inside Ulysses on the gathered sequence (``sdpa``,
            ``flash_attention_2``, ``flash_attention_3`` or a flash kernel such as ``longrecipe/torch-flash``);
            checked loadable when Ulysses is switched on, before the first step.
        tiled_mlp / tiled_mlp_shards: run decoder MLPs in sequence tiles (``null`` = ``ceil(T / hidden)``).
        tiled_logits / tiled_logits_shards: ask the LightningModule for a tiled logits+loss with this many tiles.
        checkpoint_offload: keep saved activations (checkpoint inputs with gradient checkpointing) on CPU.
        optimizer: ``auto`` (see module doc) or a registered optimizer name forced for this strategy.
        check_sp_batches: verify every step that the ranks of an SP group received the same sample.
        process_group_backend: ``null`` = NCCL on GPU, gloo on CPU.
        **deepspeed_kwargs: passed to Lightning's ``DeepSpeedStrategy`` (``allgather_bucket_size``, ...).
    """

    def __init__(
        self,
        *,
        zero_stage: int = 3,
        offload_optimizer: bool = False,
        offload_parameters: bool = False,
        pin_memory: bool = True,
        sequence_parallel_size: int = 1,
        core_attn_implementation: str = "sdpa",
        tiled_mlp: bool = False,
        tiled_mlp_shards: int | None = None,
        tiled_logits: bool = False,
        tiled_logits_shards: int = 8,
        checkpoint_offload: bool = False,
        optimizer: str = "auto",
        check_sp_batches: bool = True,
        process_group_backend: str | None = None,
        timeout_minutes: int = 30,
        logging_batch_size_per_gpu: int | str = "auto",
        **deepspeed_kwargs: Any,
    ) -> None:
        from longrecipe.models.attention import is_flash, is_kernel_name
        from longrecipe.parallel.ulysses import SUPPORTED_CORES

        _check_choice("zero_stage", int(zero_stage), (1, 2, 3))
        _check_choice("optimizer", optimizer, OPTIMIZER_CHOICES)
        if not (is_kernel_name(core_attn_implementation) and is_flash(core_attn_implementation)):
            _check_choice("core_attn_implementation", core_attn_implementation, SUPPORTED_CORES)
        if int(sequence_parallel_size) < 1:
            raise ValueError(f"strategy.sequence_parallel_size must be >= 1, got {sequence_parallel_size}")
        if offload_parameters and int(zero_stage) != 3:
            raise ValueError(
                f"strategy.offload_parameters=true needs strategy.zero_stage=3, got zero_stage={zero_stage}; "
                "set zero_stage: 3 or offload_parameters: false"
            )
        if tiled_mlp_shards is not None and int(tiled_mlp_shards) < 1:
            raise ValueError(f"strategy.tiled_mlp_shards must be >= 1 or null (auto), got {tiled_mlp_shards}")
        if int(tiled_logits_shards) < 1:
            raise ValueError(f"strategy.tiled_logits_shards must be >= 1, got {tiled_logits_shards}")
        super().__init__(
            stage=int(zero_stage),
            offload_optimizer=bool(offload_optimizer),
            offload_parameters=bool(offload_parameters),
            pin_memory=bool(pin_memory),
            process_group_backend=process_group_backend,
            timeout=timedelta(minutes=int(timeout_minutes)),
            logging_batch_size_per_gpu=logging_batch_size_per_gpu,
            **deepspeed_kwargs,
        )
        self.sequence_parallel_size = int(sequence_parallel_size)
        self.core_attn_implementation = core_attn_implementation
        self.tiled_mlp = bool(tiled_mlp)
        self.tiled_mlp_shards = None if tiled_mlp_shards is None else int(tiled_mlp_shards)
        self.tiled_logits = bool(tiled_logits)
        self._tiled_logits_shards = int(tiled_logits_shards)
        self.checkpoint_offload = bool(checkpoint_offload)
        self.optimizer_choice = optimizer
        self.check_sp_batches = bool(check_sp_batches)
        self._sp_state = None
        self._ulysses_model: torch.nn.Module | None = None

    # ------------------------------------------------------------------ hooks read by other modules
    @property
    def longrecipe_optimizer(self) -> str | None:
        """Optimizer name for ``optim.name: auto`` (read by ``longrecipe.training.optim.select_optimizer``)."""
        if self.optimizer_choice != "auto":
            return self.optimizer_choice
        if self.accelerator is not None and not _is_cuda(self):
            return "adamw"  # client optimizer on CPU: no g++ build of DeepSpeedCPUAdam
        return None

    @property
    def tiled_logits_shards(self) -> int | None:
        """Tiles for the logits+loss when ``tiled_logits`` is on, else ``None`` (read by the LightningModule)."""
        return self._tiled_logits_shards if self.tiled_logits else None

    @property
    def sequence_parallel(self):
        """The live :class:`~longrecipe.parallel.groups.SequenceParallelState`, ``None`` when ``sp == 1``."""
        return self._sp_state

    # ------------------------------------------------------------------ environment
    def setup_environment(self) -> None:
        if _is_cuda(self):
            super().setup_environment()
            return
        # Lightning's DeepSpeedStrategy refuses non-CUDA accelerators; skip only that check.
        from lightning.pytorch.strategies import DDPStrategy

        DDPStrategy.setup_environment(self)

    def _get_process_group_backend(self) -> str:
        if self._process_group_backend:
            return self._process_group_backend
        return "nccl" if self.root_device.type == "cuda" else "gloo"

    def setup_distributed(self) -> None:
        if _is_cuda(self):
            super().setup_distributed()
        else:  # the stock method validates CUDA device indices, which CPU devices do not have
            from lightning.fabric.utilities.seed import reset_seed

            reset_seed()
            self.set_world_ranks()
            self._init_deepspeed_distributed()
        if self.sequence_parallel_size > 1:
            from longrecipe.parallel.groups import init_sequence_parallel

            self._sp_state = init_sequence_parallel(self.sequence_parallel_size)

    def setup(self, trainer) -> None:
        self._init_config_if_needed()
        if self.longrecipe_optimizer == "adamw" and "zero_optimization" in self.config:
            # torch AdamW as the client optimizer is fine with offload when DeepSpeed is told so
            self.config["zero_force_ds_cpu_optimizer"] = False
        self._prepare_model_for_long_sequences()
        super().setup(trainer)

    def _setup_model_and_optimizer(self, model, optimizer, lr_scheduler=None):
        if _is_cuda(self):
            return super()._setup_model_and_optimizer(model, optimizer, lr_scheduler)
        # CPU devices have no index; DeepSpeed wants the local rank as ``device_rank``
        import argparse

        import deepspeed

        engine, ds_optimizer, _, _ = deepspeed.initialize(
            args=argparse.Namespace(device_rank=self.local_rank),
            config=self.config,
            model=model,
            model_parameters=[p for p in model.parameters() if p.requires_grad],
            optimizer=optimizer,
            lr_scheduler=lr_scheduler,
            dist_init_required=False,
        )
        return engine, ds_optimizer

    def _prepare_model_for_long_sequences(self) -> None:
        from longrecipe.parallel.tiling import enable_tiled_mlp
        from longrecipe.parallel.ulysses import _find_hf_model, check_sequence_parallel_heads, enable_ulysses

        module = self.lightning_module
        if module is None:
            return
        hf_model = _find_hf_model(module)
        if self.sequence_parallel_size > 1:
            check_sequence_parallel_heads(hf_model.config, self.sequence_parallel_size)
            enable_ulysses(hf_model, group=self._sp_state.sp_group,
                           core_attn_implementation=self.core_attn_implementation)
            self._ulysses_model = hf_model
        if self.tiled_mlp:
            n = enable_tiled_mlp(hf_model, shards=self.tiled_mlp_shards)
            log.info("tiled MLP on %d modules (shards=%s)", n, self.tiled_mlp_shards or "auto")

    @contextmanager
    def model_sharded_context(self) -> Iterator[None]:
        """Build the model unpartitioned; ``deepspeed.initialize`` partitions it (ZeRO-3) right after.

        Lightning's default wraps ``configure_model`` in a bare ``deepspeed.zero.Init``, which breaks HF
        weight initialisation (it indexes already-partitioned, empty weights); transformers' own
        ZeRO-3 integration (``HfDeepSpeedConfig``) needs ``accelerate``. Cost: each rank holds one full
        copy of the weights in host memory while the model is built (16 GB for an 8B model in bf16).
        """
        self._init_config_if_needed()
        yield

    def teardown(self) -> None:
        from longrecipe.parallel.tiling import disable_tiled_mlp
        from longrecipe.parallel.ulysses import disable_ulysses

        if self._ulysses_model is not None:
            disable_ulysses(self._ulysses_model)
            self._ulysses_model = None
        module = self.lightning_module
        if module is not None:
            disable_tiled_mlp(module)
        super().teardown()

    # ------------------------------------------------------------------ data
    @property
    def distributed_sampler_kwargs(self) -> dict[str, int]:
        """Data-parallel replicas only: the ``sp`` ranks of one SP group read the same samples."""
        sp = self.sequence_parallel_size
        if self.world_size % sp != 0:
            from longrecipe.parallel.groups import SequenceParallelLayout

            SequenceParallelLayout(self.world_size, sp)  # raises the explanatory ValueError
        return {"num_replicas": self.world_size // sp, "rank": self.global_rank // sp}

    def batch_to_device(self, batch: Any, device: torch.device | None = None, dataloader_idx: int = 0) -> Any:
        batch = super().batch_to_device(batch, device=device, dataloader_idx=dataloader_idx)
        if self._sp_state is None or not isinstance(batch, Mapping):
            return batch
        from longrecipe.parallel.sharding import shard_batch

        if self.check_sp_batches:
            self._check_same_sample(batch)
        return shard_batch(batch, self._sp_state.sp_rank, self._sp_state.sp_size)

    def _check_same_sample(self, batch: Mapping[str, Any]) -> None:
        import torch.distributed as dist

        ids = batch["input_ids"].to(torch.int64)
        weights = torch.arange(1, ids.numel() + 1, dtype=torch.int64, device=ids.device).reshape(ids.shape)
        fingerprint = torch.stack([(ids * weights).sum() % 1_000_000_007, torch.tensor(ids.numel(), device=ids.device)])
        extremes = torch.stack([fingerprint, -fingerprint])
        dist.all_reduce(extremes, op=dist.ReduceOp.MAX, group=self._sp_state.sp_group)
        if not torch.equal(extremes[0], -extremes[1]):
            raise RuntimeError(
                "the ranks of one sequence-parallel group received different samples; the DataModule's sampler must "
                "shard by trainer.strategy.distributed_sampler_kwargs (data-parallel replicas = world / "
                "sequence_parallel_size), not by world size"
            )

    # ------------------------------------------------------------------ steps
    def training_step(self, *args: Any, **kwargs: Any):
        from longrecipe.parallel.tiling import activation_offload

        with activation_offload(self.checkpoint_offload):
            output = super().training_step(*args, **kwargs)
        if self._sp_state is None:
            return output
        return self._reduce_sp_output(output)

    def _reduce_sp_output(self, output: Any):
        """Turn the module's shard-mean loss into the token-weighted SP objective (see ``parallel.loss``)."""
        from longrecipe.parallel.loss import sequence_parallel_loss

        if isinstance(output, Mapping) and "loss" in output and "n_tokens" in output:
            loss, n_tokens = output["loss"], output["n_tokens"]
        else:
            raise ValueError(
                "with strategy.sequence_parallel_size > 1 the training_step must return a dict with 'loss' (mean over "
                "its shard's targets) and 'n_tokens' (their count), so the loss can be reduced token-weighted"
            )
        objective, group_loss = sequence_parallel_loss(loss * n_tokens.to(loss.dtype), n_tokens,
                                                       group=self._sp_state.sp_group,
                                                       sp_size=self._sp_state.sp_size)
        return {**output, "loss": objective, "sp_loss": group_loss}

    # ------------------------------------------------------------------ export
    def longrecipe_full_state_dict(self, module: torch.nn.Module) -> dict[str, torch.Tensor] | None:
        """The full HF state dict of ``module``'s model on rank 0 (``None`` elsewhere); collective under ZeRO-3."""
        from longrecipe.parallel.ulysses import _find_hf_model

        hf_model = _find_hf_model(module)
        params = list(hf_model.parameters())
        if self.zero_stage_3 and any(hasattr(p, "ds_id") for p in params):
            import deepspeed

            with deepspeed.zero.GatheredParameters(params, modifier_rank=None):
                state = ({k: v.detach().cpu().clone() for k, v in hf_model.state_dict().items()}
                         if self.is_global_zero else None)
            return state
        return {k: v.detach().cpu().clone() for k, v in hf_model.state_dict().items()} if self.is_global_zero else None


def deepspeed_zero3(**kwargs: Any) -> LongRecipeDeepSpeedStrategy:
    """Factory for ``conf/strategy/deepspeed_zero3*.yaml`` (``_target_``)."""
    return LongRecipeDeepSpeedStrategy(**kwargs)
