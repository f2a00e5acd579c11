"""Saving and loading pruned SSD models as tensors and plain values (``torch.load(weights_only=True)``).

The loader builds the unpruned registry model and shrinks every layer to the saved tensor shapes before
loading the weights; what slimming measured (``model.prune_reports``) travels with the weights.
"""

from __future__ import annotations

from dataclasses import asdict
from pathlib import Path
from typing import IO

import torch
from torch import Tensor, nn

from detectors.base import BATCH_NORMS, PostprocessConfig
from detectors.registry import build_model
from detectors.ssd.detector import SSDDetector
from detectors.ssd.priors import PriorLevel

_FORMAT = "smallobj-bench/pruned-ssd/1"


def save_pruned(model: SSDDetector, path: str | Path | IO[bytes], base: str = "mfssd300_bn") -> None:
    """Save a pruned model as tensors and plain values; ``base`` is the registry model it was pruned from."""
    torch.save({"format": _FORMAT, "base": base, "name": model.name, "num_classes": model.num_classes,
                "postprocess": asdict(model.postprocess_config), "notes": list(model.notes),
                "levels": [(lv.feature_size, lv.step, lv.shapes) for lv in model.levels],
                "prune_reports": list(getattr(model, "prune_reports", [])),
                "priors": model.priors.cpu(), "state_dict": model.state_dict()}, path)


def load_pruned(path: str | Path, map_location: str | torch.device = "cpu") -> SSDDetector:
    """Rebuild a model saved by ``save_pruned``; the file is read with ``weights_only=True``."""
    saved = torch.load(path, map_location=map_location, weights_only=True)
    if saved.get("format") != _FORMAT:
        raise ValueError(f"{path}: not a pruned-model file of this project (format {saved.get('format')!r})")
    model = build_model(saved["base"], saved["num_classes"],
                        postprocess=PostprocessConfig(**saved["postprocess"]))
    _shrink_to(model, saved["state_dict"])
    model.load_state_dict(saved["state_dict"])
    model.features.out_channels = [conv.in_channels for conv in model.head.loc]
    model.levels = [PriorLevel(size, step, tuple(map(tuple, shapes)))
                    for size, step, shapes in saved["levels"]]
    model.priors = saved["priors"]
    model.name = saved["name"]
    model.notes[:] = saved["notes"]
    model.prune_reports = list(saved.get("prune_reports", []))
    return model.to(map_location)


def _shrink_to(model: nn.Module, state_dict: dict[str, Tensor]) -> None:
    """Give every conv and BN of ``model`` the channel counts of its tensors in ``state_dict``."""
    for name, layer in model.named_modules():
        prefix = f"{name}." if name else ""
        weight = state_dict.get(f"{prefix}weight")
        if weight is None or weight.shape == layer.weight.shape:
            continue
        if isinstance(layer, nn.Conv2d):
            layer.out_channels, layer.in_channels = weight.shape[0], weight.shape[1] * layer.groups
        elif isinstance(layer, BATCH_NORMS):
            layer.num_features = weight.shape[0]
        else:
            raise NotImplementedError(f"{name}: cannot resize a {type(layer).__name__}")
        for attr, tensor in [*layer.named_parameters(recurse=False), *layer.named_buffers(recurse=False)]:
            empty = torch.empty_like(state_dict[f"{prefix}{attr}"])
            setattr(layer, attr, nn.Parameter(empty, tensor.requires_grad) if isinstance(tensor, nn.Parameter)
                    else empty)
