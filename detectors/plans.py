"""Training plans: how a registered model becomes the trained model of its name, as data the runner executes.

Most models train in one stage; MFSSD-Pruned is MFSSD-BN sparse-trained, pruned and fine-tuned. The plan
belongs to the model's registry entry (``ModelSpec.plan``), so the runner (``bench.runner``) knows no
model:

- ``Train`` is one checkpointed training stage; the stages share the model's budget (iterations and time cap)
  by ``share``. Its optional ``after_backward`` hook is created right before the stage, with the model already
  on its training device and with plain BatchNorm layers, from the model and an example input on that device;
- ``Transform`` changes the model between stages (pruning). It must be deterministic given the weights. Its
  output is saved (``save`` / ``load``), so a run resumed in a later stage starts from it instead of repeating
  the earlier stages;
- ``save_final`` writes the model that comes out (``final.pt``), loadable with
  ``torch.load(weights_only=True)``;
- ``preview`` gives the architecture the plan ends in without training (listings, FLOPs of the untrained zoo).

A plan factory receives the recipe's plan settings (``PruningRecipe`` as a mapping) and returns
the plan; it must not import ``bench`` (dependencies run detectors <- bench).
"""

from __future__ import annotations

from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import IO, Any

import torch
from torch import Tensor

from detectors.base import Detector

AfterBackward = Callable[[], None]  # runs on unscaled gradients, before clipping and the optimizer step
HookFactory = Callable[[Detector, Tensor], AfterBackward]
SaveModel = Callable[[Detector, IO[bytes]], None]


@dataclass(frozen=True)
class Train:
    """One checkpointed training stage with ``share`` of the model's iterations and time cap."""

    name: str
    share: float = 1.0
    after_backward: HookFactory | None = None


@dataclass(frozen=True)
class Transform:
    """A deterministic change of the model between stages; its output is saved to ``output_file``."""

    name: str
    apply: Callable[[Detector, Tensor], Detector]  # (eval-mode model on its device, example input) -> model
    save: SaveModel
    load: Callable[[Path], Detector]  # reads what ``save`` wrote, on the CPU
    output: str = ""  # file name in the model's directory (default ``<name>.pt``)

    @property
    def output_file(self) -> str:
        return self.output or f"{self.name}.pt"


def save_weights(model: Detector, fh: IO[bytes]) -> None:
    """``final.pt`` of a model whose builder fixes its architecture: the state dict and its identity."""
    torch.save({"name": model.name, "num_classes": model.num_classes, "input_size": model.input_size,
                "model": model.state_dict()}, fh)


@dataclass(frozen=True)
class TrainingPlan:
    steps: tuple[Train | Transform, ...] = (Train("train"),)
    save_final: SaveModel = save_weights
    preview: Callable[[Detector], Detector] | None = None
    notes: tuple[str, ...] = field(default=())  # how the plan works, for the report

    def __post_init__(self) -> None:
        trains = [s for s in self.steps if isinstance(s, Train)]
        if not trains or any(s.share <= 0 for s in trains) or abs(sum(s.share for s in trains) - 1) > 1e-9:
            raise ValueError("a plan needs training stages whose shares are positive and sum to 1")
        names = [s.name for s in self.steps]
        if len(set(names)) != len(names):
            raise ValueError(f"plan step names must be unique, got {names}")


PlanFactory = Callable[[Mapping[str, Any]], TrainingPlan]


def single_stage(settings: Mapping[str, Any]) -> TrainingPlan:
    """The default plan: one stage named ``train`` with the whole budget."""
    return TrainingPlan()
