"""MFSSD-Pruned's training plan (``detectors.plans``): network slimming (seed 001 §II.C, Fig. 3) as three
checkpointed steps.

1. ``sparse``: training with an L1 sub-gradient on every BN scale (``pruning.sparsity_step``);
2. ``prune``: by the paper's criterion (``mode = "criterion"``, the default) the ``ratio`` of prunable
   channels with the smallest |gamma|, ranked globally, or every channel below ``threshold``
   (``pruning.prune_by_criterion``): the parameter count is measured and recorded (``model.prune_reports``,
   and a note in ``model.notes``, hence in ``info.json`` and the report). In ``mode = "count_target"``
   the ratio is bisected to land on ``target_params`` (``pruning.prune_to_params``), labelled as such: the
   count is then not a result. Deterministic given the sparse weights; the pruned model is saved, so a run
   resumed in ``finetune`` starts from it;
3. ``finetune``: training of the pruned model like any other.

One round: Fig. 3 repeats the three while the accuracy holds, but the runner scores a model only after its
last stage (``bench.suite.spec.PruningRecipe.rounds``). The two training stages share the model's budget
(iterations and time cap): ``finetune_fraction`` of it goes to fine-tuning. The sparse stage starts from
the network the registry builds (ImageNet VGG16 where the suite asks for it), not from a trained MFSSD-BN as
the paper's does: the plan has one budget, split over its stages. The pruning functions are looked up on
``detectors.ssd.pruning`` at call time, so tests can replace them.
"""

from __future__ import annotations

from collections.abc import Callable, Mapping
from pathlib import Path
from typing import IO, Any

import torch
from torch import Tensor, nn

from detectors.base import Detector
from detectors.plans import AfterBackward, Train, TrainingPlan, Transform
from detectors.ssd import pruning

PRUNED_STRUCTURE_SEED = 0
# bench.suite.spec.PruningRecipe's defaults (a plan factory must not import bench); its docstring: the ratio.
DEFAULTS: dict[str, Any] = {"sparsity": 1e-4, "mode": "criterion", "ratio": 0.2, "threshold": None,
                            "target_params": None, "finetune_fraction": 0.5, "rounds": 1}
COUNT_TARGET_LABEL = "count-target mode: the count is not a result"


def _save(model: Detector, fh: IO[bytes]) -> None:
    # The saved base is the model's own registry name: its builder gives the unpruned network to shrink.
    pruning.save_pruned(model, fh, base=model.name)


def _load(path: Path) -> Detector:
    return pruning.load_pruned(path, "cpu")


def _settings(settings: Mapping[str, Any]) -> dict[str, Any]:
    options = {**DEFAULTS, **settings}
    if options["mode"] not in ("criterion", "count_target"):
        raise ValueError(f"unknown pruning mode {options['mode']!r}; choose 'criterion' or 'count_target'")
    if options["rounds"] != 1:
        raise ValueError("the slimming plan runs one round (sparse, prune, fine-tune)")
    return options


def _cut(model: Detector, example: Tensor | None, options: Mapping[str, Any]) -> Detector:
    """The prune step's cut, by the criterion or, in count-target mode, to the target count."""
    if options["mode"] == "count_target":
        return pruning.prune_to_params(model, options["target_params"], example)
    criterion = ({"threshold": options["threshold"]} if options["threshold"] is not None
                 else {"ratio": options["ratio"]})
    pruning.prune_by_criterion(model, example, **criterion)
    return model


def _criterion_text(options: Mapping[str, Any]) -> str:
    if options["mode"] == "count_target":
        target = options["target_params"]
        goal = "Table I's reduction" if target is None else f"{target:,} parameters"
        return f"a global BN-scale cut bisected to {goal} ({COUNT_TARGET_LABEL})"
    if options["threshold"] is not None:
        return f"every channel with |gamma| < {options['threshold']:g} cut (the parameter count is measured)"
    return (f"the {options['ratio']:.0%} of prunable channels with the smallest |gamma| cut, ranked globally "
            f"(the parameter count is measured)")


def make_preview(options: Mapping[str, Any]) -> Callable[[Detector], Detector]:
    """The pruned architecture without training: the plan's cut on seeded stand-in BN scales, then fresh
    BN scales. For listings and the untrained zoo's FLOPs; the trained model's channels come from ``sparse``.
    """

    def preview(model: Detector) -> Detector:
        batch_norms = [m for m in model.modules() if isinstance(m, nn.BatchNorm2d)]
        generator = torch.Generator().manual_seed(PRUNED_STRUCTURE_SEED)
        with torch.no_grad():
            for bn in batch_norms:  # stand-in for the scales that sparse training would leave
                bn.weight.copy_(torch.rand(bn.num_features, generator=generator))
        _cut(model, None, options)
        with torch.no_grad():
            for bn in batch_norms:  # back to a fresh initialisation
                bn.weight.fill_(1.0)
        model.notes.append(f"structure only: {_criterion_text(options)} on BN scales drawn from U(0, 1) with "
                           f"seed {PRUNED_STRUCTURE_SEED}, weights freshly initialised; the trained "
                           f"MFSSD-Pruned comes from its plan (sparse training with L1 on BN scales, the "
                           f"cut, fine-tuning), its count measured after the cut")
        return model

    return preview


def slimming_plan(settings: Mapping[str, Any]) -> TrainingPlan:
    """The plan for the recipe's pruning settings (``bench.suite.spec.PruningRecipe`` as a mapping)."""
    options = _settings(settings)
    finetune = float(options["finetune_fraction"])

    def sparsity_hook(model: Detector, example: Tensor) -> AfterBackward:
        # The pruner traces the model here, where model and example are on the training device.
        pruner = pruning.make_slimming_pruner(model, example, reg=options["sparsity"])
        return lambda: pruning.sparsity_step(pruner, model)

    def prune(model: Detector, example: Tensor) -> Detector:
        return _cut(model, example, options)

    return TrainingPlan(
        steps=(Train("sparse", 1 - finetune, after_backward=sparsity_hook),
               Transform("prune", prune, save=_save, load=_load, output="pruned.pt"),
               Train("finetune", finetune)),
        save_final=_save, preview=make_preview(options),
        notes=(f"network slimming, one round of seed 001 Fig. 3: sparse training (L1 {options['sparsity']:g} "
               f"on BN scales) for {1 - finetune:.0%} of the budget, then {_criterion_text(options)}, then "
               f"fine-tuning for {finetune:.0%}; the measured cut is in the model's notes",))
