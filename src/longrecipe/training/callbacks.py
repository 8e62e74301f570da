"""Lightning callbacks: training telemetry (tokens/s, MFU, memory, a crash-safe JSONL step log) and a
debug crash switch used to test resume."""

from __future__ import annotations

import json
import math
import os
import time
from pathlib import Path
from typing import Any

import lightning as L
import torch

from longrecipe.parallel.groups import current_sequence_parallel
from longrecipe.training.telemetry import flops_per_token, matmul_params, peak_flops_for_device, peak_memory_bytes
from longrecipe.utils.io import write_text_atomic
from longrecipe.utils.logging import get_logger

log = get_logger(__name__)


class SimulatedCrash(RuntimeError):
    """Raised by ``CrashAfterStep`` (``debug.crash_after_step``) to test resume."""


class CrashAfterStep(L.Callback):
    """Kill the run once ``step`` optimizer steps are done, as a preemption would: the crash happens when
    the next batch starts, so checkpoints written at ``step`` exist and later work is lost."""

    def __init__(self, step: int) -> None:
        if int(step) < 1:
            raise ValueError(f"debug.crash_after_step must be >= 1, got {step}")
        self.step = int(step)
        self._start = 0

    def on_train_start(self, trainer, pl_module) -> None:
        self._start = trainer.global_step

    def on_train_batch_start(self, trainer, pl_module, batch, batch_idx) -> None:
        if trainer.global_step >= self.step and trainer.global_step > self._start:
            raise SimulatedCrash(f"debug.crash_after_step={self.step}: simulated crash after step {trainer.global_step}")


class TrainingTelemetry(L.Callback):
    """Logs ``perf/tokens_per_s``, ``perf/samples_per_s``, ``perf/tflops_per_device``, ``perf/mfu`` (when a
    peak is known) and ``perf/peak_mem_gb`` every batch (tokens/s also on the progress bar), the compute spent so
    far — ``compute/tokens`` (tokens seen, all ranks), ``compute/flops`` (training FLOPs, all ranks) and
    ``compute/wall_s`` (seconds in the training loop) — so methods can be compared at equal compute, and appends one
    JSON line per batch to ``log_file`` (``{"step", "batch", "loss", "lr", "tokens", "tokens_per_s", ...}``),
    flushed immediately so a killed run keeps its history. On resume, lines after the restored optimizer
    step are dropped (they are replayed) and the compute counters continue from the last kept line.

    Args:
        log_file: JSONL path (rank 0 writes); null disables the file.
        peak_tflops: peak per device for MFU; null → table for known GPUs, no MFU on CPU.
        causal: count causal attention FLOPs (see ``training.telemetry``).
    """

    def __init__(self, log_file: str | os.PathLike | None = None, peak_tflops: float | None = None,
                 causal: bool = True) -> None:
        self.log_file = Path(log_file) if log_file else None
        self.peak_tflops = peak_tflops
        self.causal = causal
        self._t_last: float | None = None
        self._n_params = 0
        self._peak: float | None = None
        self.compute = {"tokens": 0, "flops": 0.0, "wall_s": 0.0}

    def on_train_start(self, trainer, pl_module) -> None:
        self._n_params = matmul_params(pl_module.hf_model)
        self._peak = peak_flops_for_device(pl_module.device, self.peak_tflops)
        self.compute = {"tokens": 0, "flops": 0.0, "wall_s": 0.0}
        if self.log_file is not None and trainer.is_global_zero:
            self._truncate_after(trainer.global_step)
            self._restore_compute()
        self._t_last = None

    def _restore_compute(self) -> None:
        """Continue the compute counters of a resumed run from the last kept line of ``log_file``."""
        if not self.log_file.is_file():
            return
        lines = [x for x in self.log_file.read_text(encoding="utf-8").splitlines() if x.strip()]
        if lines:
            last = json.loads(lines[-1])
            self.compute = {"tokens": int(last.get("tokens_seen") or 0), "flops": float(last.get("flops_total") or 0),
                            "wall_s": float(last.get("wall_s") or 0)}

    def _truncate_after(self, step: int) -> None:
        """Keep the records up to the batch that completed optimizer step ``step`` (the restored state).

        With gradient accumulation several batches share a ``step`` value; the first batch logged with
        ``step == s`` is the one that finished step ``s``; later ones belong to step ``s + 1`` and are replayed.
        """
        if not self.log_file.is_file():
            return
        kept, seen_boundary = [], False
        for line in self.log_file.read_text(encoding="utf-8").splitlines():
            if not line.strip():
                continue
            rec_step = json.loads(line).get("step", 0)
            if rec_step < step or (rec_step == step and step > 0 and not seen_boundary):
                kept.append(line)
                seen_boundary = seen_boundary or rec_step == step
        write_text_atomic(self.log_file, "".join(f"{x}\n" for x in kept))

    def on_train_batch_start(self, trainer, pl_module, batch, batch_idx) -> None:
        if self._t_last is None:
            self._t_last = time.perf_counter()

    def on_train_batch_end(self, trainer, pl_module, outputs, batch, batch_idx) -> None:
        if pl_module.device.type == "cuda":
            torch.cuda.synchronize(pl_module.device)
        now = time.perf_counter()
        dt = max(now - (self._t_last or now), 1e-9)
        self._t_last = now
        ids = batch["input_ids"]
        world = max(1, trainer.world_size)
        # under sequence parallelism each rank holds a 1/sp shard of one sample: count samples once and use the
        # whole sample length for the attention FLOPs
        sp_state = current_sequence_parallel()
        sp = sp_state.sp_size if sp_state is not None else 1
        tokens = int(ids.numel()) * world
        samples = int(ids.shape[0]) * world // sp
        seq_len = int(ids.shape[1]) * sp
        tok_s = tokens / dt
        metrics: dict[str, float] = {"perf/tokens_per_s": tok_s, "perf/samples_per_s": samples / dt,
                                     "perf/peak_mem_gb": peak_memory_bytes(pl_module.device) / 2**30}
        fpt = flops_per_token(pl_module.hf_model.config, seq_len, self._n_params, causal=self.causal)
        metrics["perf/tflops_per_device"] = fpt * tok_s / world / 1e12
        if self._peak:
            metrics["perf/mfu"] = fpt * tok_s / (self._peak * world)
        self.compute = {"tokens": self.compute["tokens"] + tokens, "flops": self.compute["flops"] + fpt * tokens,
                        "wall_s": self.compute["wall_s"] + dt}
        metrics.update({f"compute/{k}": float(v) for k, v in self.compute.items()})
        bsz = int(ids.shape[0])
        pl_module.log("tok/s", tok_s, prog_bar=True, on_step=True, on_epoch=False, batch_size=bsz, logger=False)
        pl_module.log_dict(metrics, on_step=True, on_epoch=False, batch_size=bsz)
        if self.log_file is not None and trainer.is_global_zero:
            loss = outputs if not isinstance(outputs, dict) else next(
                (outputs[k] for k in ("sp_loss", "raw_loss", "loss") if outputs.get(k) is not None), None)
            lr = trainer.optimizers[0].param_groups[0]["lr"] if trainer.optimizers else None
            rec = {"step": trainer.global_step, "batch": int(trainer.fit_loop.total_batch_idx),
                   "epoch": trainer.current_epoch,
                   "loss": None if loss is None else float(loss.detach().float().item()), "lr": lr,
                   "tokens": tokens, "seq_len": seq_len, "time_s": dt,
                   **{k.split("/", 1)[1]: v for k, v in metrics.items() if k.startswith("perf/")},
                   "tokens_seen": self.compute["tokens"], "flops_total": self.compute["flops"],
                   "wall_s": self.compute["wall_s"]}
            rec = {k: (None if isinstance(v, float) and not math.isfinite(v) else v) for k, v in rec.items()}
            self.log_file.parent.mkdir(parents=True, exist_ok=True)
            with open(self.log_file, "a", encoding="utf-8") as fh:
                fh.write(json.dumps(rec) + "\n")
                fh.flush()


def read_step_log(path: str | os.PathLike) -> list[dict[str, Any]]:
    """The records of a ``TrainingTelemetry`` JSONL file."""
    return [json.loads(line) for line in Path(path).read_text(encoding="utf-8").splitlines() if line.strip()]
