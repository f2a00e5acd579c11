"""The one training loop every detector goes through: ``model.loss(images, targets)["loss"]``, nothing else.

Exact resumption is a design constraint, not an afterthought:
- the data order of epoch ``e`` is a pure function of ``(seed, e)`` (``DistributedSampler`` seeded per epoch,
  the loader's augmentation re-seeded by ``set_epoch``), so resuming at iteration ``i`` only needs ``i``;
- the schedule (``bench.training.schedule``) is a pure function of the iteration (never of the clock: a
  wall-clock cap, ``max_train_seconds``, is only a safety net that stops a stage, reported as such);
- the DataLoader gets its own generator, so creating an iterator mid-epoch does not advance the global RNG;
- model, optimizer, scaler, EMA, gradients accumulated since the last step and every RNG state are restored.
On CPU with a fixed seed, a run killed at any moment and resumed ends with an uninterrupted run's weights.
On a GPU the claim does not hold (cuDNN autotuning and atomics make kernels non-deterministic): a resumed GPU
run continues the same schedule, data order and state, but not bit for bit.

One optimizer step (every ``accumulate`` micro-batches, ultralytics' gradient accumulation): the gradients
are unscaled once, right after the last backward (a no-op without AMP); then the stage's ``after_backward``
hook (e.g. the slimming L1 term, which must see true gradients), clipping, the step, and the EMA update.
"""

from __future__ import annotations

import dataclasses
import time
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import torch
from torch import Tensor, nn
from torch.nn.parallel import DistributedDataParallel
from tqdm import tqdm

from bench.distributed import (
    DistContext,
    all_reduce_mean,
    all_true,
    broadcast_from_main,
    from_sync_batchnorm,
    to_sync_batchnorm,
)
from bench.runner.stages import EpochDataset, Stage, TrainOutcome, epoch_batches, iterations_per_epoch
from bench.suite.spec import Recipe
from bench.training import checkpoint
from bench.training.log import TrainLog
from bench.training.schedule import apply_schedule, build_ema, build_optimizer
from bench.training.tblog import NullLogger, TrainingLogger, open_logger
from detectors.base import Detector, Target, replica_mean

MAX_CONSECUTIVE_SKIPS = 20  # fp16 forward overflows in a row before the model is given up


class NonFiniteLossError(RuntimeError):
    """The loss became NaN or Inf: the model is recorded as failed instead of training on garbage."""


def uses_amp(recipe: Recipe, device: torch.device) -> bool:
    """Autocast on CUDA only: on CPU it brings no speed-up, so CPU runs stay fp32."""
    return recipe.precision == "amp" and device.type == "cuda"


def autocast_dtype(recipe: Recipe, device: torch.device) -> torch.dtype:
    """float16 (with loss scaling) or bfloat16 (without); bfloat16 only where the GPU supports it."""
    if recipe.amp_dtype == "bfloat16":
        if device.type == "cuda" and not torch.cuda.is_bf16_supported():
            raise ValueError(f"amp_dtype = 'bfloat16' but {torch.cuda.get_device_name(device)} does not "
                             f"support bfloat16; use 'float16'")
        return torch.bfloat16
    return torch.float16


class _LossModule(nn.Module):
    """DDP synchronises gradients only through ``forward``; this routes ``forward`` to ``Detector.loss``."""

    def __init__(self, detector: Detector):
        super().__init__()
        self.detector = detector

    def forward(self, images: Tensor, targets: list[Target]) -> dict[str, Tensor]:
        return self.detector.loss(images, targets)


@dataclass
class Trainer:
    """Owns the optimisation state of one model for one stage and checkpoints it atomically.

    A stage that changes the parameter set (fine-tuning after pruning) gets a new ``Trainer``: a fresh
    optimizer, scaler and EMA, as network slimming prescribes. Under multi-GPU DDP the model trains with
    ``SyncBatchNorm``, converted back to plain BatchNorm when the stage ends.
    """

    model: Detector
    recipe: Recipe
    ctx: DistContext
    checkpoint_path: Path
    log: TrainLog

    def __post_init__(self) -> None:
        device = self.ctx.device
        self.model.to(device)
        self.amp = uses_amp(self.recipe, device)
        self.amp_dtype = autocast_dtype(self.recipe, device) if self.amp else torch.float16
        self.window: dict[str, Tensor] = {}  # loss sums since the last log row (checkpointed: exact logs)
        self.window_steps = 0
        self.optimizer = build_optimizer(self.model, self.recipe)
        self.scaler = torch.amp.GradScaler(device.type, enabled=self.amp and self.amp_dtype == torch.float16)
        self.ema = build_ema(self.model, self.recipe)  # before SyncBN: the EMA copy keeps plain BatchNorm
        self.last_step = -1  # iteration of the last optimizer step (gradient accumulation)
        self.optimizer_steps = self.skipped_steps = self.consecutive_skips = 0
        self.sync_batchnorm = self.ctx.enabled and device.type == "cuda"
        self.live: TrainingLogger = NullLogger()  # TensorBoard (and W&B / MLflow) while a stage trains

    @property
    def eval_model(self) -> Detector:
        """The EMA weights when EMA is on, otherwise the trained model."""
        return self.model if self.ema is None else self.ema.module

    def state_dict(self, stage: str, iteration: int, seconds: float, done: bool) -> dict[str, Any]:
        pending = iteration - 1 - self.last_step > 0  # micro-batches accumulated since the last step
        return {
            "stage": stage, "iteration": iteration, "seconds": seconds, "stage_done": done,
            "model": self.model.state_dict(), "optimizer": self.optimizer.state_dict(),
            "scaler": self.scaler.state_dict(), "ema": None if self.ema is None else self.ema.state_dict(),
            # The schedule is a function of (iteration, progress): its state is the iteration and seconds.
            "scheduler": {"iteration": iteration, "seconds": seconds},
            "steps": {"last_step": self.last_step, "optimizer_steps": self.optimizer_steps,
                      "skipped_steps": self.skipped_steps},
            "pending_grads": [p.grad for p in self.model.parameters()] if pending else None,
            "log_window": {"sums": dict(self.window), "steps": self.window_steps},
            "rng": checkpoint.rng_state(),
        }

    def load_state_dict(self, state: dict[str, Any]) -> None:
        """Restore a checkpoint read onto the CPU (``checkpoint.load``); tensors move to the model's device.
        """
        self.model.load_state_dict(state["model"])
        self.optimizer.load_state_dict(state["optimizer"])
        if state["scaler"] or not self.scaler.is_enabled():
            self.scaler.load_state_dict(state["scaler"])
        # else: a checkpoint of an fp32 (CPU) run resumed with AMP: the scaler starts fresh.
        if self.ema is not None and state["ema"] is not None:
            self.ema.load_state_dict(state["ema"])
        steps = state.get("steps") or {}
        self.last_step = int(steps.get("last_step", int(state["iteration"]) - 1))
        self.optimizer_steps = int(steps.get("optimizer_steps", 0))
        self.skipped_steps = int(steps.get("skipped_steps", 0))
        if state.get("pending_grads") is not None:
            for param, grad in zip(self.model.parameters(), state["pending_grads"], strict=True):
                param.grad = None if grad is None else grad.to(param.device)
        self.window, self.window_steps = dict(state["log_window"]["sums"]), state["log_window"]["steps"]
        checkpoint.set_rng_state(state["rng"])

    def outcome(self, iteration: int, seconds: float, stopped_by_time: bool, stage: Stage) -> TrainOutcome:
        return TrainOutcome(iteration, seconds, stopped_by_time, stage.iterations, self.optimizer_steps,
                            self.skipped_steps)

    def save(self, stage: str, iteration: int, seconds: float, done: bool = False) -> None:
        if self.ctx.is_main:
            checkpoint.save_atomic(self.state_dict(stage, iteration, seconds, done), self.checkpoint_path)

    def train(self, dataset: EpochDataset, collate: Callable[[list[Any]], Any], stage: Stage,
              resume: dict[str, Any] | None = None) -> TrainOutcome:
        """Run ``stage`` (from ``resume``, a checkpoint of this stage, when given) and checkpoint it."""
        iteration, seconds = 0, 0.0
        if resume is not None:
            self.load_state_dict(resume)
            iteration, seconds = int(resume["iteration"]), float(resume["seconds"])
        if self.ctx.is_main:
            self.log.truncate_after(stage.name, iteration)
        self.live = open_logger(self.checkpoint_path.parent, stage.name, batch_size=self.recipe.batch_size,
                                start_step=iteration, start_seconds=seconds,
                                config=dataclasses.asdict(self.recipe), enabled=self.ctx.is_main)
        originals = to_sync_batchnorm(self.model) if self.sync_batchnorm else {}
        reduce = (lambda value: all_reduce_mean(value, self.ctx)) if self.ctx.enabled else None
        try:
            with replica_mean(reduce):
                return self._loop(dataset, collate, stage, iteration, seconds)
        finally:
            from_sync_batchnorm(self.model, originals)
            self.live.close()
            self.live = NullLogger()

    def _loop(self, dataset: EpochDataset, collate: Callable[[list[Any]], Any], stage: Stage, iteration: int,
              seconds: float) -> TrainOutcome:
        recipe, ctx = self.recipe, self.ctx
        loss_module: nn.Module = _LossModule(self.model)
        if ctx.enabled:
            ids = [ctx.device.index] if ctx.device.type == "cuda" else None
            loss_module = DistributedDataParallel(loss_module, device_ids=ids)
        per_epoch = iterations_per_epoch(len(dataset), recipe, ctx)
        epochs = stage.iterations / per_epoch
        self.model.train()
        last_save = time.monotonic()
        capped = bool(stage.max_seconds)  # the wall-clock safety net; the budget is stage.iterations
        bar = tqdm(total=stage.iterations, initial=iteration, desc=f"{self.model.name} [{stage.name}]",
                   unit="it", disable=not ctx.is_main, dynamic_ncols=True)
        stopped_by_time = False
        start_iteration, start_seconds = iteration, seconds
        while iteration < stage.iterations and not stopped_by_time:
            epoch = iteration // per_epoch
            if iteration % per_epoch == 0:  # as ultralytics: an accumulation unfinished at epoch end is lost
                self.optimizer.zero_grad(set_to_none=True)
            for images, targets in epoch_batches(dataset, collate, recipe, ctx, epoch, iteration % per_epoch):
                started = self._clock()
                # The schedule follows iterations only, never the clock: the same command trains the same
                # weights on an idle and on a loaded machine (only a triggered safety net cuts it short).
                progress = iteration / stage.iterations
                accumulate = apply_schedule(self.optimizer, recipe, iteration, progress, epochs, per_epoch)
                losses = self._step(loss_module, images, targets, stage, iteration, accumulate)
                for key, value in (losses or {}).items():
                    self.window[key] = self.window.get(key, 0) + value.detach()
                self.window_steps += losses is not None
                iteration += 1
                step_seconds = self._synchronised_seconds(self._clock() - started, stage)
                seconds += step_seconds
                bar.update(1)
                if self.window_steps and (iteration % recipe.log_every == 0 or iteration == stage.iterations):
                    self._log_window(stage.name, iteration, per_epoch, seconds, bar)
                # Stop when the next step would end past the cap (at the mean step time), so no model
                # overshoots it by one of its steps: a 15 s step of a 512 model would otherwise be free.
                mean_step = (seconds - start_seconds) / (iteration - start_iteration)
                stopped_by_time = capped and iteration < stage.iterations and \
                    seconds + mean_step > stage.max_seconds
                finished = iteration >= stage.iterations or stopped_by_time
                due = (iteration % recipe.checkpoint_every == 0 or iteration % per_epoch == 0
                       or time.monotonic() - last_save >= 60 * recipe.checkpoint_minutes)
                if finished or due:
                    if self.window_steps and finished:
                        self._log_window(stage.name, iteration, per_epoch, seconds, bar)
                    self.save(stage.name, iteration, seconds, done=finished)
                    last_save = time.monotonic()
                if finished:
                    break
        bar.close()
        return self.outcome(iteration, seconds, stopped_by_time, stage)

    def _step(self, loss_module: nn.Module, images: Tensor, targets: list[Target], stage: Stage,
              iteration: int, accumulate: int) -> dict[str, Tensor] | None:
        """Forward and backward of one micro-batch, and the optimizer step when it completes an accumulation.

        Returns the losses, or ``None`` for an fp16 micro-batch skipped because its loss overflowed.
        """
        with torch.autocast(self.ctx.device.type, dtype=self.amp_dtype, enabled=self.amp):
            losses = loss_module(images, targets)
        loss = losses["loss"]
        if self.recipe.loss_reduction == "sum":  # ultralytics: loss * batch size (* WORLD_SIZE under DDP)
            loss = loss * self.recipe.batch_size
        finite = torch.isfinite(loss)
        if not all_true(finite, self.ctx):  # every rank decides the same
            if self.scaler.is_enabled() and self.consecutive_skips < MAX_CONSECUTIVE_SKIPS:
                self.skipped_steps += 1  # an fp16 overflow in the forward: skip this micro-batch
                self.consecutive_skips += 1
                return None
            values = {k: float(v.detach()) for k, v in losses.items()}
            where = f": {values}" if not finite else " on another rank"
            raise NonFiniteLossError(f"non-finite loss at iteration {iteration} ({stage.name}){where}")
        self.consecutive_skips = 0
        self.scaler.scale(loss).backward()
        if iteration - self.last_step >= accumulate:
            self.scaler.unscale_(self.optimizer)  # once, before anything reads the gradients
            if stage.after_backward is not None:
                stage.after_backward()
            if self.recipe.grad_clip is not None:
                nn.utils.clip_grad_norm_(self.model.parameters(), self.recipe.grad_clip)
            self.scaler.step(self.optimizer)
            self.scaler.update()
            self.optimizer.zero_grad(set_to_none=True)
            if self.ema is not None:
                self.ema.update_parameters(self.model)
            self.last_step = iteration
            self.optimizer_steps += 1
        return losses

    def _clock(self) -> float:
        """``perf_counter`` after the device's queued work has finished (CUDA runs asynchronously)."""
        if self.ctx.device.type == "cuda":
            torch.cuda.synchronize(self.ctx.device)
        return time.perf_counter()

    def _synchronised_seconds(self, elapsed: float, stage: Stage) -> float:
        """Rank 0's step time on every rank, so every rank stops at the same step if the cap triggers."""
        if not (self.ctx.enabled and stage.max_seconds):
            return elapsed
        return float(broadcast_from_main(elapsed, self.ctx))

    def _log_window(self, stage: str, iteration: int, per_epoch: int, seconds: float, bar: tqdm) -> None:
        means = {k: float(v) / self.window_steps for k, v in self.window.items()}
        self.window, self.window_steps = {}, 0
        lr = self.optimizer.param_groups[0]["lr"]
        bar.set_postfix(loss=f"{means['loss']:.3f}", lr=f"{lr:.2e}")
        if self.ctx.is_main:
            self.log.append({"stage": stage, "epoch": (iteration - 1) // per_epoch, "iteration": iteration,
                             "lr": lr, **means, "seconds": round(seconds, 3)})
            self.live.log_train(iteration, {"lr": lr, **means}, seconds=seconds)
