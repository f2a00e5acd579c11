"""The one training loop every detector goes through: ``model.loss(images, targets)["loss"]``, nothing else.

Exact resumption is a design constraint, not an afterthought:
- the data order of epoch ``e`` is a pure function of ``(seed, e)`` (``DistributedSampler`` seeded per epoch,
  the loader's augmentation re-seeded by ``set_epoch``), so resuming at iteration ``i`` only needs ``i``;
- the learning rate is a pure function of (iteration, training seconds), both checkpointed;
- the DataLoader gets its own generator, so creating an iterator mid-epoch does not advance the global RNG;
- model, optimizer, scaler, EMA and every RNG state are restored from the checkpoint.
On CPU with a fixed seed, a run killed at any moment and resumed ends with an uninterrupted run's weights.
"""

from __future__ import annotations

import csv
import math
import time
from collections.abc import Callable, Iterator, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Protocol

import torch
from torch import Tensor, nn
from torch.nn.parallel import DistributedDataParallel
from torch.optim.swa_utils import AveragedModel, get_ema_multi_avg_fn
from torch.utils.data import DataLoader, DistributedSampler
from tqdm import tqdm

from bench import checkpoint
from bench.distributed import DistContext, broadcast_from_main
from bench.suite import Recipe
from detectors.base import Detector, Target

TIMED_BAR = "{l_bar}{bar}| {n:.0f}/{total:.0f} s of training [{elapsed}<{remaining}{postfix}]"


class EpochDataset(Protocol):
    """``bench.data.loader.DetectionTorchDataset``: ``(image, Target, ImageMeta)`` items, seeded per epoch."""

    def __len__(self) -> int: ...

    def __getitem__(self, index: int) -> Any: ...

    def set_epoch(self, epoch: int) -> None: ...


class NonFiniteLossError(RuntimeError):
    """The loss became NaN or Inf: the model is recorded as failed instead of training on garbage."""


@dataclass(frozen=True)
class Stage:
    """One checkpointed training stage (``train``; or ``sparse`` / ``finetune`` for the pruned model)."""

    name: str
    iterations: int
    max_seconds: float | None = None  # equal-compute wall-clock cap for this stage
    after_backward: Callable[[], None] | None = None  # e.g. the slimming L1 penalty on BN scales


@dataclass(frozen=True)
class TrainOutcome:
    iterations: int
    seconds: float
    stopped_by_time: bool


def per_rank_batch(recipe: Recipe, ctx: DistContext) -> int:
    """``recipe.batch_size`` is the global batch, so results do not depend on the number of processes."""
    if recipe.batch_size % ctx.world_size:
        raise ValueError(f"batch_size {recipe.batch_size} is not divisible by world size {ctx.world_size}")
    return recipe.batch_size // ctx.world_size


def iterations_per_epoch(n_images: int, recipe: Recipe, ctx: DistContext) -> int:
    n = n_images // ctx.world_size // per_rank_batch(recipe, ctx)
    if n == 0:
        raise ValueError(f"{n_images} training images are fewer than one batch of {recipe.batch_size}")
    return n


def total_iterations(n_images: int, recipe: Recipe, ctx: DistContext) -> int:
    if recipe.iterations is not None:
        return recipe.iterations
    return int(recipe.epochs or 0) * iterations_per_epoch(n_images, recipe, ctx)


def lr_at(recipe: Recipe, iteration: int, progress: float) -> float:
    """Linear warm-up in iterations, then step or cosine decay over ``progress`` in [0, 1]."""
    if recipe.schedule == "step":
        factor = recipe.gamma ** sum(progress >= m for m in recipe.milestones)
    else:
        floor = recipe.min_lr_fraction
        factor = floor + (1 - floor) * 0.5 * (1 + math.cos(math.pi * min(progress, 1.0)))
    if iteration < recipe.warmup_iterations:
        alpha = iteration / recipe.warmup_iterations
        factor *= recipe.warmup_factor * (1 - alpha) + alpha
    return recipe.lr * factor


def uses_amp(recipe: Recipe, device: torch.device) -> bool:
    """fp16 autocast with loss scaling on CUDA only: on CPU it brings no speed-up, so CPU runs stay fp32."""
    return recipe.precision == "amp" and device.type == "cuda"


def build_optimizer(model: nn.Module, recipe: Recipe) -> torch.optim.Optimizer:
    params = [p for p in model.parameters() if p.requires_grad]
    if recipe.optimizer == "sgd":
        return torch.optim.SGD(params, lr=recipe.lr, momentum=recipe.momentum,
                               weight_decay=recipe.weight_decay)
    return torch.optim.AdamW(params, lr=recipe.lr, weight_decay=recipe.weight_decay)


def build_ema(model: nn.Module, recipe: Recipe) -> AveragedModel | None:
    if recipe.ema_decay is None:
        return None
    return AveragedModel(model, multi_avg_fn=get_ema_multi_avg_fn(recipe.ema_decay), use_buffers=True)


class _LossModule(nn.Module):
    """DDP synchronises gradients only through ``forward``; this routes ``forward`` to ``Detector.loss``."""

    def __init__(self, detector: Detector):
        super().__init__()
        self.detector = detector

    def forward(self, images: Tensor, targets: list[Target]) -> dict[str, Tensor]:
        return self.detector.loss(images, targets)


class TrainLog:
    """``train_log.csv``: one row per logging interval; rows after a resumed checkpoint are dropped."""

    fixed = ("stage", "epoch", "iteration", "lr", "loss")

    def __init__(self, path: Path):
        self.path = path

    def truncate_after(self, stage: str, iteration: int) -> None:
        if not self.path.exists():
            return
        with self.path.open(newline="") as fh:
            rows = list(csv.DictReader(fh))
        keep = [r for r in rows if r["stage"] != stage or int(r["iteration"]) <= iteration]
        if keep:
            self._write(keep, "w")
        else:
            self.path.unlink()

    def append(self, row: dict[str, Any]) -> None:
        self._write([row], "a")

    def _write(self, rows: list[dict[str, Any]], mode: str) -> None:
        new = mode == "w" or not self.path.exists()
        if new:
            extra = sorted(k for k in rows[0] if k not in (*self.fixed, "seconds"))
            columns = [*self.fixed, *extra, "seconds"]
        else:
            with self.path.open(newline="") as fh:
                columns = next(csv.reader(fh))
        with self.path.open(mode, newline="") as fh:
            writer = csv.DictWriter(fh, columns, extrasaction="ignore")
            if new:
                writer.writeheader()
            writer.writerows(rows)


@dataclass
class Trainer:
    """Owns the optimisation state of one model for one stage and checkpoints it atomically.

    A stage that changes the parameter set (fine-tuning after pruning) gets a new ``Trainer``: a fresh
    optimizer, scaler and EMA, as network slimming prescribes.
    """

    model: Detector
    recipe: Recipe
    ctx: DistContext
    checkpoint_path: Path
    log: TrainLog

    def __post_init__(self) -> None:
        self.model.to(self.ctx.device)
        self.amp = uses_amp(self.recipe, self.ctx.device)
        self.window: dict[str, Tensor] = {}  # loss sums since the last log row (checkpointed: exact logs)
        self.window_steps = 0
        self.optimizer = build_optimizer(self.model, self.recipe)
        self.scaler = torch.amp.GradScaler(self.ctx.device.type, enabled=self.amp)
        self.ema = build_ema(self.model, self.recipe)
        wrapped = _LossModule(self.model)
        if self.ctx.enabled:
            ids = [self.ctx.device.index] if self.ctx.device.type == "cuda" else None
            wrapped = DistributedDataParallel(wrapped, device_ids=ids)
        self.loss_module: nn.Module = wrapped

    @property
    def eval_model(self) -> Detector:
        """The EMA weights when EMA is on, otherwise the trained model."""
        return self.model if self.ema is None else self.ema.module

    def state_dict(self, stage: str, iteration: int, seconds: float, done: bool) -> dict[str, Any]:
        return {
            "stage": stage, "iteration": iteration, "seconds": seconds, "stage_done": done,
            "model": self.model.state_dict(), "optimizer": self.optimizer.state_dict(),
            "scaler": self.scaler.state_dict(), "ema": None if self.ema is None else self.ema.state_dict(),
            # The schedule is lr_at(iteration, progress): its whole state is the iteration and the seconds.
            "scheduler": {"iteration": iteration, "seconds": seconds},
            "log_window": {"sums": dict(self.window), "steps": self.window_steps},
            "rng": checkpoint.rng_state(),
        }

    def load_state_dict(self, state: dict[str, Any]) -> None:
        self.model.load_state_dict(state["model"])
        self.optimizer.load_state_dict(state["optimizer"])
        self.scaler.load_state_dict(state["scaler"])
        if self.ema is not None and state["ema"] is not None:
            self.ema.load_state_dict(state["ema"])
        self.window, self.window_steps = dict(state["log_window"]["sums"]), state["log_window"]["steps"]
        checkpoint.set_rng_state(state["rng"])

    def save(self, stage: str, iteration: int, seconds: float, done: bool = False) -> None:
        if self.ctx.is_main:
            checkpoint.save_atomic(self.state_dict(stage, iteration, seconds, done), self.checkpoint_path)

    def train(self, dataset: EpochDataset, collate: Callable[[list[Any]], Any], stage: Stage,
              resume: dict[str, Any] | None = None) -> TrainOutcome:
        """Run ``stage`` (from ``resume``, a checkpoint of this stage, when given) and checkpoint it."""
        recipe, ctx = self.recipe, self.ctx
        iteration, seconds = 0, 0.0
        if resume is not None:
            self.load_state_dict(resume)
            iteration, seconds = int(resume["iteration"]), float(resume["seconds"])
        if ctx.is_main:
            self.log.truncate_after(stage.name, iteration)
        per_epoch = iterations_per_epoch(len(dataset), recipe, ctx)
        self.model.train()
        last_save = time.monotonic()
        # Under a time cap the bar counts training seconds, so its ETA is the real one.
        timed = bool(stage.max_seconds)
        bar = tqdm(total=stage.max_seconds if timed else stage.iterations,
                   initial=seconds if timed else iteration, desc=f"{self.model.name} [{stage.name}]",
                   unit="s" if timed else "it", disable=not ctx.is_main, dynamic_ncols=True,
                   bar_format=TIMED_BAR if timed else None)
        stopped_by_time = False
        start_iteration, start_seconds = iteration, seconds
        while iteration < stage.iterations and not stopped_by_time:
            epoch = iteration // per_epoch
            for images, targets in self._epoch_batches(dataset, collate, epoch, iteration % per_epoch):
                started = time.perf_counter()
                progress = iteration / stage.iterations
                if stage.max_seconds:
                    progress = max(progress, seconds / stage.max_seconds)
                for group in self.optimizer.param_groups:
                    group["lr"] = lr_at(recipe, iteration, progress)
                losses = self._step(images, targets, stage, iteration)
                for key, value in losses.items():
                    self.window[key] = self.window.get(key, 0) + value.detach()
                self.window_steps += 1
                iteration += 1
                step_seconds = self._synchronised_seconds(time.perf_counter() - started, stage)
                seconds += step_seconds
                bar.update(min(step_seconds, bar.total - bar.n) if timed else 1)
                if iteration % recipe.log_every == 0 or iteration == stage.iterations:
                    self._log_window(stage.name, iteration, per_epoch, seconds, bar)
                # Stop when the next step would end past the cap (at the mean step time), so no model
                # overshoots it by one of its steps: a 15 s step of a 512 model would otherwise be free.
                mean_step = (seconds - start_seconds) / (iteration - start_iteration)
                stopped_by_time = timed and seconds + mean_step > stage.max_seconds
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
        return TrainOutcome(iteration, seconds, stopped_by_time)

    def _epoch_batches(self, dataset: EpochDataset, collate: Callable[[list[Any]], Any], epoch: int,
                       skip: int) -> Iterator[tuple[Tensor, list[Target]]]:
        """Batches of ``epoch`` from batch ``skip`` on; the order depends only on (seed, epoch)."""
        ctx, recipe = self.ctx, self.recipe
        batch = per_rank_batch(recipe, ctx)
        dataset.set_epoch(epoch)
        sampler = DistributedSampler(range(len(dataset)), num_replicas=ctx.world_size, rank=ctx.rank,
                                     shuffle=True, seed=recipe.seed, drop_last=True)
        sampler.set_epoch(epoch)
        order = list(sampler)
        batches = [order[i:i + batch] for i in range(0, len(order) - batch + 1, batch)][skip:]
        loader = DataLoader(dataset, batch_sampler=batches, collate_fn=collate, num_workers=recipe.workers,
                            generator=torch.Generator().manual_seed(recipe.seed * 100_003 + epoch),
                            pin_memory=ctx.device.type == "cuda")
        device = ctx.device
        for images, targets, _metas in loader:
            yield images.to(device, non_blocking=True), [t.to(device) for t in targets]

    def _step(self, images: Tensor, targets: list[Target], stage: Stage, iteration: int) -> dict[str, Tensor]:
        with torch.autocast(self.ctx.device.type, dtype=torch.float16, enabled=self.amp):
            losses = self.loss_module(images, targets)
        loss = losses["loss"]
        if not torch.isfinite(loss):
            values = {k: float(v.detach()) for k, v in losses.items()}
            raise NonFiniteLossError(f"non-finite loss at iteration {iteration} ({stage.name}): {values}")
        self.scaler.scale(loss).backward()
        if stage.after_backward is not None:
            stage.after_backward()
        if self.recipe.grad_clip is not None:
            self.scaler.unscale_(self.optimizer)
            nn.utils.clip_grad_norm_(self.model.parameters(), self.recipe.grad_clip)
        self.scaler.step(self.optimizer)
        self.scaler.update()
        self.optimizer.zero_grad(set_to_none=True)
        if self.ema is not None:
            self.ema.update_parameters(self.model)
        return losses

    def _synchronised_seconds(self, elapsed: float, stage: Stage) -> float:
        """Rank 0's step time on every rank, so a time cap and a time-based schedule agree across ranks."""
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


def stage_iterations(total: int, fractions: Sequence[float]) -> list[int]:
    """Split ``total`` iterations between consecutive stages (at least one each)."""
    counts = [max(1, round(total * f)) for f in fractions[:-1]]
    return [*counts, max(1, total - sum(counts))]
