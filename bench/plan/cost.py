"""What a model's architecture costs, for the resolved plan: forward FLOPs per stage and optimizer groups.

Models are built on the meta device where their constructor allows it (no weights are materialised, so even
the 100M-parameter ones cost milliseconds); a constructor that needs real tensors (ultralytics runs a forward
pass to find its strides) is built on the CPU instead. FLOPs are ``detectors.complexity.count_flops``: 2 x
multiply-accumulates of one image at the model's input size, conv+BN fused. Training FLOPs per image are taken
as 3 x the forward FLOPs (the backward pass costs about twice the forward), the convention of the scaling
literature; an iteration trains ``batch_size`` images.
"""

from __future__ import annotations

from dataclasses import asdict, dataclass
from typing import Any

from bench.suite.spec import Recipe
from detectors.base import Detector
from detectors.complexity import count_flops, count_params
from detectors.plans import Train, Transform
from detectors.registry import ModelSpec, build_model, build_without_weights, builders_quiet

TRAIN_FLOPS_PER_FORWARD = 3.0
COST_DEFINITION = ("training FLOPs = 3 x forward FLOPs (2 x MACs, thop, conv+BN fused, one image at the "
                   "model's input size) x images per iteration x iterations")


@dataclass(frozen=True)
class StageCost:
    """One training stage of a model's plan: its share of the iterations and the network it trains."""

    name: str
    share: float
    forward_gflops: float | None


def build_cheaply(spec: ModelSpec, num_classes: int, options: dict[str, Any], preview: bool = False
                  ) -> Detector:
    """``registry.build_without_weights`` for a spec: the untrained network, on the meta device if it can."""
    return build_without_weights(spec.name, num_classes, preview=preview, **options)


def architecture_options(spec: ModelSpec, recipe: Recipe) -> dict[str, Any]:
    """The build options that shape the network (input size, prior set), never weights to download."""
    offered = {"input_size": recipe.input_size.get(spec.family), "prior_set": recipe.prior_set}
    return {k: v for k, v in offered.items() if k in spec.options and v is not None}


def end_network(spec: ModelSpec, recipe: Recipe, num_classes: int, start: Detector) -> Detector:
    """The architecture the model's plan ends in (MFSSD-Pruned: the pruned network, by the recipe's pruning
    settings); ``start`` itself for plans that do not change it."""
    preview = spec.plan(asdict(recipe.pruning)).preview
    if preview is None:
        return start
    with builders_quiet():  # on the CPU: a preview ranks real (stand-in) weights
        return preview(build_model(spec.name, num_classes, **architecture_options(spec, recipe)))


def stage_costs(spec: ModelSpec, recipe: Recipe, start: Detector, end: Detector, with_flops: bool
                ) -> list[StageCost]:
    """The training stages of the model's plan with the forward GFLOPs of the network each trains: ``start``
    (the one the plan starts from) until a ``Transform``, ``end`` after it."""
    current = start
    out = []
    for step in spec.plan(asdict(recipe.pruning)).steps:
        if isinstance(step, Transform):
            current = end
        elif isinstance(step, Train):
            gflops = None
            if with_flops:
                with builders_quiet():
                    gflops = count_flops(current, current.input_size)
            out.append(StageCost(step.name, step.share, gflops))
    return out


def parameter_counts(spec: ModelSpec, recipe: Recipe, num_classes: int, end: Detector,
                     paper_classes: tuple[int, ...]) -> dict[str, Any]:
    """Parameters of the end architecture at the run's class count and at the papers' (VOC's 20 object
    classes: seed 001 Table I counts 21 with the background), whatever data the run trains on."""
    counts = {str(num_classes): count_params(end)}
    for k in paper_classes:
        if str(k) not in counts:
            counts[str(k)] = count_params(end_network(spec, recipe, k, build_cheaply(
                spec, k, architecture_options(spec, recipe))))
    return {"run": counts[str(num_classes)], "at_num_classes": counts,
            "definition": "every nn.Parameter element of the network the model's plan ends in"}


def train_flops_per_iteration(forward_gflops: float | None, batch_size: int) -> float | None:
    if forward_gflops is None:
        return None
    return TRAIN_FLOPS_PER_FORWARD * forward_gflops * 1e9 * batch_size


def param_group_summary(model: Detector, weight_decay: float) -> list[dict[str, Any]]:
    """The optimizer groups the model asks for (``Detector.param_groups``): kind, decay and size."""
    groups = model.param_groups(weight_decay)
    return [{"kind": g.get("kind", "all"), "weight_decay": g.get("weight_decay", weight_decay),
             "tensors": len(g["params"]), "parameters": sum(p.numel() for p in g["params"])} for g in groups]
