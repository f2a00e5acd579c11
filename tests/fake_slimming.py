"""``tiny_pruned``: the tiny fake network with MFSSD-Pruned's plan (sparse training, pruning, fine-tuning),
and ``FakeSlimming``, which stands in for ``detectors.ssd.pruning`` so the plan runs in seconds."""

from __future__ import annotations

import torch

import tests.fake_detector
from detectors.registry import model_names, register
from detectors.ssd.slimming_plan import slimming_plan

PRUNING_FUNCTIONS = ("make_slimming_pruner", "sparsity_step", "prune_by_criterion", "prune_to_params",
                     "save_pruned", "load_pruned")

if "tiny_pruned" not in model_names():
    register("tiny_pruned", family="ssd", input_size=64, plan=slimming_plan)(
        tests.fake_detector._builder(None))


class FakeSlimming:
    """Stands in for ``detectors.ssd.pruning`` on the tiny model: 'pruning' halves the box head's weights,
    so a pruned model is recognisable, and save/load go through weights-only files like the real ones."""

    calls: list[str]

    def __init__(self) -> None:
        self.calls = []

    def make_slimming_pruner(self, model, example_inputs, reg):
        self.calls.append(f"pruner reg={reg}")
        return object()

    def sparsity_step(self, pruner, model) -> None:
        self.calls.append("sparsity_step")

    def prune_by_criterion(self, model, example_inputs=None, *, ratio=None, threshold=None):
        # The plan's default (criterion) mode; without an example input it is the plan's preview.
        self.calls.append(f"{'prune' if example_inputs is not None else 'preview'} ratio={ratio}")
        model.box.weight.data.mul_(0.5)
        return None

    def prune_to_params(self, model, target_params=None, example_inputs=None):
        # Without an example input it is the plan's preview of the pruned architecture (plan.json's FLOPs).
        self.calls.append("prune" if example_inputs is not None else "preview")
        model.box.weight.data.mul_(0.5)
        return model

    def save_pruned(self, model, path, base) -> None:
        torch.save({"base": base, "state_dict": model.state_dict()}, path)

    def load_pruned(self, path, map_location):
        self.calls.append("load_pruned")
        model = tests.fake_detector.TinyDetector(8)
        model.load_state_dict(torch.load(path, weights_only=True)["state_dict"])
        model.name = "tiny_pruned"
        return model


def install(fake: FakeSlimming, setattr_=setattr) -> None:
    """``fake``'s functions in place of ``detectors.ssd.pruning``'s (``setattr_``: e.g. a monkeypatch's)."""
    import detectors.ssd.pruning

    for name in PRUNING_FUNCTIONS:
        setattr_(detectors.ssd.pruning, name, getattr(fake, name))
