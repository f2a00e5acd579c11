"""Ultralytics' optimizer parameter groups, for both YOLOv5 families (``Detector.param_groups``).

The rule of ``ultralytics.engine.trainer.BaseTrainer.build_optimizer`` (and of v5's ``smart_optimizer``):
every parameter whose dotted name contains "bias" goes to an undecayed bias group, the weights of
normalisation layers (every ``torch.nn`` class with "Norm" in its name) to an undecayed group, every other
weight to the decayed group. Groups come in ultralytics' order (weight, bn, bias) and the same parameter
order, so the same SGD settings give bit-identical steps; ``"kind"`` names each group, and the runner's
warm-up gives the ``"bias"`` group its own learning rate, as both trainers do.
"""

from __future__ import annotations

from typing import Any

from torch import nn

_NORMS = tuple(v for k, v in nn.__dict__.items() if "Norm" in k)


def ultralytics_param_groups(model: nn.Module, weight_decay: float) -> list[dict[str, Any]]:
    """[decayed weights, norm weights, biases] as optimizer parameter groups with their weight decay."""
    weights, norms, biases = [], [], []
    for module_name, module in model.named_modules():
        for param_name, param in module.named_parameters(recurse=False):
            full_name = f"{module_name}.{param_name}" if module_name else param_name
            if "bias" in full_name:
                biases.append(param)
            elif isinstance(module, _NORMS):
                norms.append(param)
            else:
                weights.append(param)
    return [{"params": weights, "weight_decay": weight_decay, "kind": "weight"},
            {"params": norms, "weight_decay": 0.0, "kind": "bn"},
            {"params": biases, "weight_decay": 0.0, "kind": "bias"}]
