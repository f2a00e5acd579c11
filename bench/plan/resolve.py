"""``python -m bench.run --suite S --plan``: the fully resolved plan of every model, as JSON, untrained.

Everything a model will train with, after the suite's inheritance and overrides and the trainer's own rules:
data and splits, input, schedule length in iterations and epochs, batch and gradient accumulation, optimizer
and weight decay as applied, the lr at every phase, warm-up, EMA, augmentation, precision, pretrained weights,
seed, the iterations the budget rule gives and the expected training cost. The lr and momentum values come
from the trainer's ``bench.training.schedule.apply_schedule`` on a stand-in optimizer, so the plan is what the
trainer does rather than a second description of it. The runner trains the planned iterations
(``budgeted_recipe``) and stores the same plan in the run directory (``plan.json``).
"""

from __future__ import annotations

import dataclasses
import json
import math
import sys
from pathlib import Path
from typing import IO, Any

from bench.errors import BenchInputError
from bench.io import json_safe
from bench.plan.cost import (
    COST_DEFINITION,
    StageCost,
    architecture_options,
    build_cheaply,
    end_network,
    param_group_summary,
    parameter_counts,
    stage_costs,
    train_flops_per_iteration,
)
from bench.plan.data import COCO_CLASSES, data_section
from bench.plan.schedule import lr_phases, warmup_section
from bench.runner.stages import stage_iterations
from bench.suite.spec import SUITES_DIR, Recipe, Suite
from bench.training.schedule import base_accumulation, effective_weight_decay
from detectors.registry import ModelSpec, model_names, model_spec

PLAN_FORMAT = 1
PAPER_CLASSES = (20,)  # VOC's object classes: the papers' parameter tables (seed 001 Table I) count at 20 + 1
RESIZE = {"ssd": "stretch to size x size", "yolov5": "letterbox to size x size (pad 114)"}


def plan_for(suite: Suite, models: list[str] | None = None, *, train_images: int | None = None,
             num_classes: int | None = None, with_cost: bool = True, world_size: int = 1) -> dict[str, Any]:
    """The resolved plan of ``models`` (default: the suite's) as plain JSON-ready data.

    ``train_images`` and ``num_classes`` are the run's data set's (the runner knows them); without them the
    plan uses the suite's documented split size and class list, or leaves epoch-derived numbers out.
    ``with_cost`` counts FLOPs (a second or so per model; always done under the equal-compute rule).
    """
    names = list(models or suite.models)
    check_targets(suite)
    data = data_section(suite, train_images, num_classes)
    need_flops = with_cost or suite.budget.rule == "equal_compute"
    plans = {name: model_plan(suite, name, data, need_flops, world_size) for name in names}
    return json_safe({
        "format": PLAN_FORMAT,
        "suite": {"name": suite.name, "protocol": suite.protocol, "description": suite.description,
                  "path": None if suite.path is None else str(suite.path), "sha256": suite.sha256,
                  "files": [_short(f) for f in suite.files]},
        "data": data,
        "budget": dataclasses.asdict(suite.budget),
        "models": plans,
    })


def print_plan(suite: Suite, models: list[str] | None = None, file: IO[str] | None = None,
               **kwargs: Any) -> dict[str, Any]:
    """Print ``plan_for(...)`` as indented JSON (``--plan``) and return it."""
    plan = plan_for(suite, models, **kwargs)
    out = file or sys.stdout
    json.dump(plan, out, indent=2, allow_nan=False)
    out.write("\n")
    return plan


def budgeted_recipe(suite: Suite, name: str, plan: dict[str, Any]) -> Recipe:
    """The recipe the runner trains ``name`` with: the suite's, with the planned iterations when the budget
    rule derives them (equal compute); the recipe itself otherwise."""
    recipe = suite.recipe_for(name)
    iterations = plan["models"][name]["budget"]["iterations"]
    if suite.budget.rule == "schedule" or iterations is None:
        return recipe
    return dataclasses.replace(recipe, iterations=int(iterations), epochs=None)


def check_targets(suite: Suite) -> None:
    """Every model, family and group member the suite names must exist: a typo fails before training."""
    known = set(model_names())
    families = {model_spec(n).family for n in known}
    for index, name in enumerate(suite.models):
        if name not in known:
            raise BenchInputError(suite.path, f"unknown model {name!r}; registered: "
                                              f"{', '.join(sorted(known))}", field=f"models[{index}]")
    for o in suite.overrides:
        unknown = ([o.target] if o.kind == "model" and o.target not in known else
                   [o.target] if o.kind == "family" and o.target not in families else
                   [m for m in o.models if m not in known])
        if unknown:
            what = "family" if o.kind == "family" else "model"
            raise BenchInputError(o.source or suite.path, f"names no registered {what} {unknown[0]!r}",
                                  field=f"overrides.{o.label.replace(' ', '.')}")


def model_plan(suite: Suite, name: str, data: dict[str, Any], with_flops: bool, world_size: int
               ) -> dict[str, Any]:
    spec = model_spec(name)
    recipe = suite.recipe_for(name, spec.family)
    classes = data["num_classes"] or COCO_CLASSES
    options = architecture_options(spec, recipe)
    model = build_cheaply(spec, classes, options)
    end = end_network(spec, recipe, classes, model)
    per_epoch = _iterations_per_epoch(data["train_images"], recipe, world_size)
    length = recipe.iterations if recipe.iterations is not None else (
        None if per_epoch is None else int(recipe.epochs or 0) * per_epoch)
    stages = stage_costs(spec, recipe, model, end, with_flops)
    iterations, why = _budget_iterations(suite, stages, recipe, length)
    counts = stage_iterations(iterations, [s.share for s in stages]) if iterations is not None \
        else [None] * len(stages)
    accumulate = base_accumulation(recipe)
    decay = effective_weight_decay(recipe)
    out: dict[str, Any] = {
        "family": spec.family,
        "variant": _variant(suite, name),
        "training_plan": _training_plan(spec, recipe),
        "overrides": [_override_dict(o) for o in suite.overrides_for(name, spec.family)],
        "input": {"size": model.input_size, "resize": RESIZE.get(spec.family, model.input_spec.resize)},
        "schedule": _schedule(recipe, per_epoch, length, iterations, accumulate),
        "stages": [_stage_dict(s, n, recipe, per_epoch, accumulate)
                   for s, n in zip(stages, counts, strict=True)],
        "optimizer": {"name": recipe.optimizer,
                      "momentum": recipe.momentum if recipe.optimizer == "sgd" else None,
                      "nesterov": recipe.nesterov, "weight_decay": recipe.weight_decay,
                      "weight_decay_applied": decay, "loss_reduction": recipe.loss_reduction,
                      "grad_clip": recipe.grad_clip, "param_groups": param_group_summary(model, decay)},
        "lr": {"base": recipe.lr, "per_image_step": _per_image_step(recipe, accumulate),
               "phases": None},  # the first stage's; every stage runs the schedule over its own iterations
        "warmup": warmup_section(recipe, per_epoch),
        "ema": None if recipe.ema_decay is None else {"decay": recipe.ema_decay, "tau": recipe.ema_tau},
        "augmentation": _augmentation(recipe, spec.family),
        "precision": {"requested": recipe.precision, "amp_dtype": recipe.amp_dtype,
                      "note": "autocast on CUDA only; CPU runs train in fp32"},
        "pretrained": _pretrained(spec, recipe),
        "seed": recipe.seed,
        "max_train_seconds": recipe.max_train_seconds,
        "budget": {"rule": suite.budget.rule, "iterations": iterations, "why": why},
        "cost": _cost(stages, counts, recipe.batch_size),
        "params": parameter_counts(spec, recipe, classes, end, PAPER_CLASSES if with_flops else ()),
        "recipe": dataclasses.asdict(recipe),
    }
    out["lr"]["phases"] = out["stages"][0]["lr_phases"] if out["stages"] else None
    return out


def _iterations_per_epoch(train_images: int | None, recipe: Recipe, world_size: int) -> int | None:
    """``bench.runner.stages.iterations_per_epoch`` without a process group: whole global batches."""
    if train_images is None:
        return None
    per_rank = recipe.batch_size // world_size
    return max(train_images // world_size // per_rank, 0) or None


def _budget_iterations(suite: Suite, stages: list[StageCost], recipe: Recipe, length: int | None
                       ) -> tuple[int | None, str]:
    budget = suite.budget
    if budget.rule == "schedule":
        source = (f"{recipe.iterations} iterations" if recipe.iterations is not None else
                  f"{recipe.epochs} epochs")
        unknown = "" if length is not None else " (needs the data set's size)"
        return length, f"the recipe's {source}{unknown}"
    per_iteration = sum(s.share * (train_flops_per_iteration(s.forward_gflops, recipe.batch_size) or math.nan)
                        for s in stages)
    if not per_iteration or math.isnan(per_iteration):
        raise BenchInputError(suite.path, "the equal-compute budget needs every model's FLOPs",
                              field="budget")
    derived = math.floor(budget.train_flops / per_iteration)
    iterations = max(budget.min_iterations, derived)
    why = (f"equal compute: {budget.train_flops:.3g} training FLOPs / {per_iteration:.3g} per iteration = "
           f"{budget.train_flops / per_iteration:.1f}")
    if iterations != derived:
        why += f", raised to min_iterations {budget.min_iterations}"
    if length is not None and iterations > length:
        iterations, why = length, why + f", capped at the recipe's {length}"
    return iterations, why


def _schedule(recipe: Recipe, per_epoch: int | None, length: int | None, iterations: int | None,
              accumulate: int) -> dict[str, Any]:
    epochs = None if per_epoch is None or iterations is None else iterations / per_epoch
    return {"kind": recipe.schedule, "recipe_length": ({"iterations": recipe.iterations}
                                                       if recipe.iterations is not None else
                                                       {"epochs": recipe.epochs}),
            "iterations": iterations, "iterations_per_epoch": per_epoch, "epochs": epochs,
            "batch_size": recipe.batch_size, "nominal_batch": recipe.nominal_batch, "accumulate": accumulate,
            "images_per_step": recipe.batch_size * accumulate,
            "milestones": recipe.milestones if recipe.schedule == "step" else None,
            "gamma": recipe.gamma if recipe.schedule == "step" else None,
            "final_lr_fraction": recipe.min_lr_fraction if recipe.schedule in ("cosine", "linear") else None,
            "recipe_length_iterations": length}


def _stage_dict(stage: StageCost, iterations: int | None, recipe: Recipe, per_epoch: int | None,
                accumulate: int) -> dict[str, Any]:
    return {"name": stage.name, "share": stage.share, "iterations": iterations,
            "epochs": None if iterations is None or per_epoch is None else iterations / per_epoch,
            "optimizer_steps_approx": None if iterations is None else math.ceil(iterations / accumulate),
            "forward_gflops": stage.forward_gflops,
            "lr_phases": None if not iterations else lr_phases(recipe, iterations, per_epoch)}


def _per_image_step(recipe: Recipe, accumulate: int) -> float | None:
    """SGD's lr multiplying one image's gradient at the peak: ``lr`` on a summed loss, else ``lr`` over the
    images of an optimizer step; equal values are the same update per image. None for AdamW (it normalises
    the gradient, so the loss scale does not set the step)."""
    if recipe.optimizer != "sgd":
        return None
    if recipe.loss_reduction == "sum":
        return recipe.lr
    return recipe.lr / (recipe.batch_size * accumulate)


def _augmentation(recipe: Recipe, family: str) -> dict[str, Any]:
    policy = recipe.augment.get(family)
    out: dict[str, Any] = {"policy": policy}
    if policy == "mosaic":
        out["params"] = dataclasses.asdict(recipe.mosaic)
    elif policy == "ssd":
        out["params"] = dataclasses.asdict(recipe.ssd_augment)
    return out


def _training_plan(spec: ModelSpec, recipe: Recipe) -> dict[str, Any]:
    """The registry plan's steps and notes for the recipe's plan settings (MFSSD-Pruned: how it prunes)."""
    plan = spec.plan(dataclasses.asdict(recipe.pruning))
    return {"steps": [s.name for s in plan.steps], "notes": list(plan.notes)}


def _variant(suite: Suite, name: str) -> dict[str, Any] | None:
    """A suite variant's definition (``bench.suite.variants``); ``None`` for a registry model."""
    variant = suite.variants.get(name)
    if variant is None:
        return None
    out = variant.to_dict()
    if variant.learned_priors is not None:
        out["learned_priors"]["note"] = ("shapes learned from the training boxes when the model is built; "
                                         "the parameter and FLOP counts here are the base layout's")
    return out


def _pretrained(spec: ModelSpec, recipe: Recipe) -> dict[str, Any]:
    if "pretrained_backbone" in spec.options and recipe.pretrained_backbone:
        return {"backbone": True, "weights": "ImageNet VGG16 backbone (torchvision weights API)"}
    return {"backbone": False, "weights": "none: trained from random initialisation"}


def _cost(stages: list[StageCost], counts: list[int | None], batch: int) -> dict[str, Any]:
    per_stage = [train_flops_per_iteration(s.forward_gflops, batch) for s in stages]
    total = None
    if all(f is not None for f in per_stage) and all(n is not None for n in counts):
        total = sum(f * n for f, n in zip(per_stage, counts, strict=True))  # type: ignore[operator]
    return {"forward_gflops": stages[0].forward_gflops if stages else None,
            "train_flops_per_iteration": per_stage[0] if per_stage else None,
            "total_train_flops": total, "definition": COST_DEFINITION}


def _override_dict(o: Any) -> dict[str, Any]:
    return {"kind": o.kind, "target": o.target, "models": o.models or None, "reason": o.reason,
            "values": o.values, "source": _short(o.source)}


def _short(path: str | Path) -> str:
    path = Path(path)
    try:
        return str(path.resolve().relative_to(SUITES_DIR))
    except ValueError:
        return str(path)
