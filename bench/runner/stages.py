"""A model's training budget, the data order of its epochs, and what each stage did."""

from __future__ import annotations

from collections.abc import Callable, Iterator
from dataclasses import dataclass
from typing import Any, Protocol

import torch
from torch import Tensor
from torch.utils.data import DataLoader, DistributedSampler

from bench.distributed import DistContext
from bench.suite.spec import Recipe
from detectors.base import Target


class EpochDataset(Protocol):
    """``bench.data.loader.DetectionTorchDataset``: ``(image, Target, ImageMeta)`` items, seeded per epoch."""

    def __len__(self) -> int: ...

    def __getitem__(self, index: int) -> Any: ...

    def set_epoch(self, epoch: int) -> None: ...


@dataclass(frozen=True)
class Stage:
    """One checkpointed training stage (``train``; or ``sparse`` / ``finetune`` for the pruned model)."""

    name: str
    iterations: int
    max_seconds: float | None = None  # wall-clock safety net only: the budget is ``iterations``
    after_backward: Callable[[], None] | None = None  # e.g. the slimming L1 penalty on BN scales


@dataclass(frozen=True)
class TrainOutcome:
    """What a stage actually did (recorded in ``status.json``; the report shows it)."""

    iterations: int
    seconds: float
    stopped_by_time: bool
    planned_iterations: int = 0
    optimizer_steps: int = 0
    skipped_steps: int = 0  # fp16 micro-batches skipped for a non-finite loss

    def as_record(self, stage: str) -> dict[str, Any]:
        return {"stage": stage, "iterations": self.iterations, "planned_iterations": self.planned_iterations,
                "budget_completed": self.iterations >= self.planned_iterations,
                "seconds": round(self.seconds, 3), "stopped_by_time": self.stopped_by_time,
                "optimizer_steps": self.optimizer_steps, "skipped_steps": self.skipped_steps}


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


def stage_iterations(total: int, fractions: list[float]) -> list[int]:
    """Split ``total`` iterations between consecutive stages (at least one each, none of 0: untrained)."""
    if total == 0:
        return [0] * len(fractions)
    counts = [max(1, round(total * f)) for f in fractions[:-1]]
    return [*counts, max(1, total - sum(counts))]


def epoch_batches(dataset: EpochDataset, collate: Callable[[list[Any]], Any], recipe: Recipe,
                  ctx: DistContext, epoch: int, skip: int) -> Iterator[tuple[Tensor, list[Target]]]:
    """This rank's batches of ``epoch`` from batch ``skip`` on; the order depends only on (seed, epoch)."""
    batch = per_rank_batch(recipe, ctx)
    dataset.set_epoch(epoch)
    sampler = DistributedSampler(range(len(dataset)), num_replicas=ctx.world_size, rank=ctx.rank,
                                 shuffle=True, seed=recipe.seed, drop_last=True)
    sampler.set_epoch(epoch)
    order = list(sampler)
    batches = [order[i:i + batch] for i in range(0, len(order) - batch + 1, batch)][skip:]
    loader = DataLoader(dataset, batch_sampler=batches, collate_fn=collate, num_workers=recipe.workers,
                        generator=torch.Generator().manual_seed(recipe.seed * 100_003 + epoch),
                        pin_memory=ctx.device.type == "cuda")  # targets too (``Target.pin_memory``)
    device = ctx.device
    for images, targets, _metas in loader:
        yield images.to(device, non_blocking=True), [t.to(device, non_blocking=True) for t in targets]
