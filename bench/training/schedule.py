"""Optimizer, learning-rate/momentum schedule, gradient accumulation and EMA of the one training loop.

Two warm-ups exist. The default one scales the lr linearly from ``warmup_factor`` over ``warmup_iterations``.
With ``warmup_epochs`` set, the recipe follows ultralytics/yolov5 ``train.py`` exactly instead: over
``nw = max(round(warmup_epochs * iterations_per_epoch), 100)`` iterations (``ni <= nw``), ``np.interp`` takes
the bias group's lr from ``warmup_bias_lr`` and every other group's from 0 to ``lr * lf(epoch)``, the momentum
from ``warmup_momentum`` to ``momentum``, and the accumulation from 1 to ``nominal_batch / batch_size``.

The schedule is a pure function of (iteration, progress, epoch), so a resumed run needs only the iteration
and the training seconds.
"""

from __future__ import annotations

import math
from typing import Any

import numpy as np
import torch
from torch import nn
from torch.optim.swa_utils import AveragedModel, get_ema_multi_avg_fn

from bench.suite.spec import Recipe
from detectors.base import Detector


def base_accumulation(recipe: Recipe) -> int:
    """Micro-batches per optimizer step: ``max(round(nominal_batch / batch_size), 1)`` (ultralytics)."""
    if recipe.nominal_batch is None:
        return 1
    return max(round(recipe.nominal_batch / recipe.batch_size), 1)


def effective_weight_decay(recipe: Recipe) -> float:
    """``weight_decay * batch_size * accumulate / nominal_batch`` under a nominal batch (ultralytics)."""
    if recipe.nominal_batch is None:
        return recipe.weight_decay
    return recipe.weight_decay * recipe.batch_size * base_accumulation(recipe) / recipe.nominal_batch


def warmup_length(recipe: Recipe, per_epoch: int) -> int:
    """Warm-up iterations: ultralytics' ``max(round(warmup_epochs * nb), 100)``, or ``warmup_iterations``."""
    if recipe.warmup_epochs is not None:
        return max(round(recipe.warmup_epochs * per_epoch), 100)
    return recipe.warmup_iterations


def decay_factor(recipe: Recipe, progress: float, epochs: float) -> float:
    """The lr factor after warm-up at ``progress`` in [0, 1] of a stage of ``epochs`` epochs.

    ``step``: ``gamma`` per milestone passed; ``cosine``: down to ``min_lr_fraction``; ``linear``:
    ultralytics' ``lf(e) = (1 - e / epochs) * (1 - lrf) + lrf`` per whole epoch ``e``, ``lrf`` being
    ``min_lr_fraction``.
    """
    floor = recipe.min_lr_fraction
    if recipe.schedule == "step":
        return recipe.gamma ** sum(progress >= m for m in recipe.milestones)
    if recipe.schedule == "linear":
        epoch = math.floor(min(progress, 1.0) * epochs + 1e-9)
        return (1 - epoch / epochs) * (1 - floor) + floor
    return floor + (1 - floor) * 0.5 * (1 + math.cos(math.pi * min(progress, 1.0)))


def lr_at(recipe: Recipe, iteration: int, progress: float, epochs: float = 1.0) -> float:
    """The lr of a group without its own warm-up start, under the default warm-up (module doc)."""
    factor = decay_factor(recipe, progress, epochs)
    if iteration < recipe.warmup_iterations:
        alpha = iteration / recipe.warmup_iterations
        factor *= recipe.warmup_factor * (1 - alpha) + alpha
    return recipe.lr * factor


def apply_schedule(optimizer: torch.optim.Optimizer, recipe: Recipe, iteration: int, progress: float,
                   epochs: float, per_epoch: int) -> int:
    """Set every group's lr (and momentum) for ``iteration``; returns the accumulation for this iteration."""
    accumulate = base_accumulation(recipe)
    if recipe.warmup_epochs is None:
        lr = lr_at(recipe, iteration, progress, epochs)
        for group in optimizer.param_groups:
            group["lr"] = lr
        return accumulate
    target = recipe.lr * decay_factor(recipe, progress, epochs)
    nw = warmup_length(recipe, per_epoch)
    warming = iteration <= nw
    if warming and recipe.nominal_batch is not None:
        accumulate = max(1, int(np.interp(iteration, [0, nw], [1, recipe.nominal_batch / recipe.batch_size])
                                .round()))
    for group in optimizer.param_groups:
        if not warming:
            group["lr"] = target
            if "momentum" in group:
                group["momentum"] = recipe.momentum
            continue
        bias = group.get("kind") == "bias" and recipe.warmup_bias_lr is not None
        start = recipe.warmup_bias_lr if bias else 0.0
        group["lr"] = float(np.interp(iteration, [0, nw], [start, target]))
        if "momentum" in group and recipe.warmup_momentum is not None:
            group["momentum"] = float(np.interp(iteration, [0, nw],
                                                [recipe.warmup_momentum, recipe.momentum]))
    return accumulate


def build_optimizer(model: Detector, recipe: Recipe) -> torch.optim.Optimizer:
    """SGD (momentum, optional Nesterov) or AdamW over ``model.param_groups(weight decay)``."""
    groups = model.param_groups(effective_weight_decay(recipe))
    if recipe.optimizer == "sgd":
        return torch.optim.SGD(groups, lr=recipe.lr, momentum=recipe.momentum, nesterov=recipe.nesterov)
    return torch.optim.AdamW(groups, lr=recipe.lr)


class UltralyticsEMA:
    """ultralytics' ``ModelEMA`` (decay ramp ``d = decay * (1 - exp(-updates / tau))``) with the interface
    of ``AveragedModel`` that the trainer uses: ``module``, ``update_parameters``, state dicts."""

    def __init__(self, model: nn.Module, decay: float, tau: float) -> None:
        from ultralytics.utils.torch_utils import ModelEMA

        self._ema = ModelEMA(model, decay=decay, tau=tau)

    @property
    def module(self) -> nn.Module:
        return self._ema.ema

    def update_parameters(self, model: nn.Module) -> None:
        self._ema.update(model)

    def state_dict(self) -> dict[str, Any]:
        return {"model": self._ema.ema.state_dict(), "updates": self._ema.updates}

    def load_state_dict(self, state: dict[str, Any]) -> None:
        self._ema.ema.load_state_dict(state["model"])
        self._ema.updates = int(state["updates"])


def build_ema(model: nn.Module, recipe: Recipe) -> AveragedModel | UltralyticsEMA | None:
    """EMA of parameters and buffers, updated once per optimizer step: a constant ``ema_decay``
    (``AveragedModel``), or ultralytics' ramp when ``ema_tau`` is set."""
    if recipe.ema_decay is None:
        return None
    if recipe.ema_tau is not None:
        return UltralyticsEMA(model, recipe.ema_decay, recipe.ema_tau)
    return AveragedModel(model, multi_avg_fn=get_ema_multi_avg_fn(recipe.ema_decay), use_buffers=True)
