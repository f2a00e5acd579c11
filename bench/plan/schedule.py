"""The lr and momentum of a stage at every phase, read off the trainer's own schedule function.

``apply_schedule`` (bench.training) sets the groups of a stand-in optimizer (a bias group, one for every other
parameter, as the YOLOv5 adapter asks for) exactly as the trainer calls it: at ``iteration`` with
``progress = iteration / iterations`` over a stage of ``iterations / per_epoch`` epochs.
"""

from __future__ import annotations

import math
from typing import Any

import torch

from bench.suite.spec import Recipe
from bench.training.schedule import apply_schedule, warmup_length


def _stand_in(recipe: Recipe) -> torch.optim.Optimizer:
    groups = [{"params": [torch.zeros(1, requires_grad=True)], "kind": "bias"},
              {"params": [torch.zeros(1, requires_grad=True)], "kind": "all"}]
    if recipe.optimizer == "sgd":
        return torch.optim.SGD(groups, lr=recipe.lr, momentum=recipe.momentum, nesterov=recipe.nesterov)
    return torch.optim.AdamW(groups, lr=recipe.lr)


def schedule_at(recipe: Recipe, iteration: int, iterations: int, per_epoch: int) -> dict[str, Any]:
    """lr of the bias group and of the others, momentum and accumulation at ``iteration`` of a stage."""
    optimizer = _stand_in(recipe)
    accumulate = apply_schedule(optimizer, recipe, iteration, iteration / iterations, iterations / per_epoch,
                                per_epoch)
    bias, other = optimizer.param_groups
    return {"lr": other["lr"], "bias_lr": bias["lr"], "momentum": other.get("momentum"),
            "accumulate": accumulate}


def warmup_end(recipe: Recipe, per_epoch: int | None) -> int | None:
    """The first iteration at the post-warm-up lr (``None`` when it needs the unknown epoch length)."""
    if recipe.warmup_epochs is not None:
        return None if per_epoch is None else warmup_length(recipe, per_epoch)
    return recipe.warmup_iterations


def lr_phases(recipe: Recipe, iterations: int, per_epoch: int | None) -> list[dict[str, Any]] | None:
    """Warm-up start, end of warm-up (the peak), each step and the last iteration of a stage."""
    if per_epoch is None:
        if recipe.warmup_epochs is not None or recipe.schedule == "linear":
            return None  # ultralytics' warm-up and linear decay are defined in epochs
        per_epoch = iterations  # unused by the iteration-based warm-up and the step/cosine decay
    points: list[tuple[str, int]] = [("warm-up start", 0)]
    end = warmup_end(recipe, per_epoch)
    if end:
        points.append(("end of warm-up (peak)", min(end, iterations - 1)))
    if recipe.schedule == "step":
        for k, milestone in enumerate(recipe.milestones, 1):
            at = math.ceil(milestone * iterations - 1e-9)
            if at < iterations:
                points.append((f"step {k} (x{recipe.gamma:g}^{k})", at))
    points.append(("last iteration", iterations - 1))
    out = []
    for phase, at in sorted(dict.fromkeys(points), key=lambda p: p[1]):
        row = {"phase": phase, "iteration": at, "epoch": at / per_epoch, **schedule_at(recipe, at, iterations,
                                                                                     per_epoch)}
        if row["bias_lr"] == row["lr"]:
            row.pop("bias_lr")
        out.append(row)
    return out


def warmup_section(recipe: Recipe, per_epoch: int | None) -> dict[str, Any]:
    if recipe.warmup_epochs is not None:
        return {"kind": "epochs (ultralytics train.py)", "epochs": recipe.warmup_epochs,
                "iterations": warmup_end(recipe, per_epoch),
                "rule": "max(round(warmup_epochs x iterations per epoch), 100); lr from 0 (bias group: from "
                        "warmup_bias_lr) and momentum from warmup_momentum, interpolated",
                "bias_lr_start": recipe.warmup_bias_lr, "momentum_start": recipe.warmup_momentum,
                "accumulation_ramp": recipe.nominal_batch is not None}
    return {"kind": "iterations", "iterations": recipe.warmup_iterations,
            "start_factor": recipe.warmup_factor,
            "rule": "lr x (start_factor x (1 - i / iterations) + i / iterations)"}
