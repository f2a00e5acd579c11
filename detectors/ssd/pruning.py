"""Network slimming (Liu et al., ICCV 2017) of an SSD-family model with torch-pruning, as MFSSD-Pruned does.

The runner drives three checkpointed stages:

1. sparse training: ``pruner = make_slimming_pruner(model, example_inputs)``, then
   ``sparsity_step(pruner, model)`` between ``loss.backward()`` and ``optimizer.step()`` (an L1 sub-gradient
   on every BN scale);
2. ``prune_to_params(model, target_params)``: remove the channels with the smallest BN scales, ranked
   globally, until the parameter count reaches the target (MFSSD Table I: 22,785,625) within a tolerance;
3. fine-tuning the pruned model like any other.

``save_pruned`` / ``load_pruned`` store the pruned model as tensors and plain values only, so it loads with
``torch.load(weights_only=True)``: the loader builds the unpruned registry model and shrinks every layer to
the saved tensor shapes before loading the weights.
"""

from __future__ import annotations

from collections import defaultdict
from collections.abc import Iterable
from dataclasses import asdict
from pathlib import Path

import torch
import torch_pruning as tp
from torch import Tensor, nn

from detectors.base import PostprocessConfig
from detectors.registry import build_model
from detectors.ssd.detector import SSDDetector
from detectors.ssd.priors import PriorLevel

MFSSD_BN_PARAMS = 33_713_888  # MFSSD Table I, 20 classes: before pruning
MFSSD_PRUNED_PARAMS = 22_785_625  # and after
_BISECTION_STEPS = 24  # the ratio to within 6e-8, far below one channel
_FORMAT = "smallobj-bench/pruned-ssd/1"
_BATCH_NORMS = nn.modules.batchnorm._BatchNorm


def make_slimming_pruner(model: SSDDetector, example_inputs: Tensor,
                         reg: float = 1e-4) -> tp.pruner.BNScalePruner:
    """A global BN-scale pruner for ``model``; ``reg`` is the L1 weight ``s`` of the sparse-training stage.

    The head convs are ignored, so every level keeps its box and class outputs (their input channels follow
    the pruned features). Importance is the raw |gamma|, averaged over coupled BNs (``normalizer=None``), so
    one global threshold compares scales across layers as network slimming does; torch-pruning's default
    would rank each layer's scales relative to their own mean. 1e-4 is the s dlyldxwl/fssd.pytorch used.
    """
    importance = tp.importance.BNScaleImportance(normalizer=None)
    heads = [*model.head.loc, *model.head.conf]
    was_training = model.training
    model.eval()  # tracing must not update the BN running statistics (nor fail on a batch of one)
    pruner = tp.pruner.BNScalePruner(model, example_inputs, importance=importance, reg=reg,
                                     global_pruning=True, ignored_layers=heads)
    model.train(was_training)
    return pruner


def sparsity_step(pruner: tp.pruner.BNScalePruner, model: nn.Module) -> None:
    """Add ``reg * sign(gamma)`` to every BN scale gradient; call after ``backward`` and before ``step``."""
    pruner.regularize(model)


def prune_to_params(model: SSDDetector, target_params: int | None = None,
                    example_inputs: Tensor | None = None, *, tolerance: float = 0.01) -> SSDDetector:
    """Prune ``model`` in place to ``target_params`` trainable parameters (within ``tolerance``); return it.

    ``target_params=None`` applies Table I's reduction (33,713,888 -> 22,785,625) to ``model``'s own size:
    exactly Table I's count for MFSSD-BN with 20 classes, the same shrinkage for other class counts.
    The global ratio is bisected on dry runs whose channel plans are counted analytically, so the graph is
    traced once and the weights are cut once, at the ratio closest to the target. Deterministic given the BN
    scales (tied scales are pruned or kept together). Raises ``ValueError`` when no ratio is within tolerance.
    """
    if target_params is None:
        target_params = round(_trainable(model) * MFSSD_PRUNED_PARAMS / MFSSD_BN_PARAMS)
    if example_inputs is None:
        example_inputs = torch.zeros(1, 3, model.input_size, model.input_size, device=model.priors.device)
    pruner = make_slimming_pruner(model, example_inputs)
    low, high = 0.0, 1.0
    best_ratio, best_count = 0.0, _trainable(model)
    for _ in range(_BISECTION_STEPS):
        ratio = (low + high) / 2
        count = _count_after(model, pruner, _plan(pruner, ratio))
        if abs(count - target_params) < abs(best_count - target_params):
            best_ratio, best_count = ratio, count
        low, high = (ratio, high) if count > target_params else (low, ratio)
    if abs(best_count - target_params) > tolerance * target_params:
        raise ValueError(f"no global pruning ratio brings {type(model.features).__name__} to "
                         f"{target_params:,} parameters within {tolerance:.1%} (closest: {best_count:,})")
    for group in _plan(pruner, best_ratio):
        group.prune()
    model.features.out_channels = [conv.in_channels for conv in model.head.loc]
    model.notes.append(f"network slimming (torch-pruning BNScalePruner, global |gamma| ranking, heads kept): "
                       f"{_trainable(model):,} parameters (target {target_params:,}) at a global channel "
                       f"ratio of {best_ratio:.4f}")
    return model


def _trainable(model: nn.Module) -> int:
    return sum(p.numel() for p in model.parameters() if p.requires_grad)


def _plan(pruner: tp.pruner.BNScalePruner, ratio: float) -> list[tp.Group]:
    """The pruning groups a one-shot global step at ``ratio`` would execute, without executing them."""
    pruner.reset()
    pruner.per_step_pruning_ratio = [0.0, ratio]  # as ``pruning_ratio=ratio, iterative_steps=1`` would set
    return list(pruner.step(interactive=True))


def _count_after(model: nn.Module, pruner: tp.pruner.BNScalePruner, groups: Iterable[tp.Group]) -> int:
    """Trainable parameters of ``model`` once ``groups`` are pruned, from the channel indices alone."""
    removed_out: dict[nn.Module, set[int]] = defaultdict(set)
    removed_in: dict[nn.Module, set[int]] = defaultdict(set)
    for group in groups:
        for dep, idxs in group:
            layer = dep.target.module
            if isinstance(layer, _BATCH_NORMS) or pruner.DG.is_out_channel_pruning_fn(dep.handler):
                removed_out[layer].update(idxs)
            else:
                removed_in[layer].update(idxs)
    total = 0
    for layer in model.modules():
        params = [p for p in layer.parameters(recurse=False) if p.requires_grad]
        if not params or (layer not in removed_out and layer not in removed_in):
            total += sum(p.numel() for p in params)
        elif isinstance(layer, _BATCH_NORMS):
            total += len(params) * (layer.num_features - len(removed_out[layer]))
        elif isinstance(layer, nn.Conv2d) and layer.groups == 1:
            out = layer.out_channels - len(removed_out[layer])
            total += out * (layer.in_channels - len(removed_in[layer])) * layer.weight[0, 0].numel()
            total += out if layer.bias is not None else 0
        else:
            raise NotImplementedError(f"parameter count after pruning a {type(layer).__name__}")
    return total


def save_pruned(model: SSDDetector, path: str | Path, base: str = "mfssd300_bn") -> None:
    """Save a pruned model as tensors and plain values; ``base`` is the registry model it was pruned from."""
    torch.save({"format": _FORMAT, "base": base, "name": model.name, "num_classes": model.num_classes,
                "postprocess": asdict(model.postprocess_config), "notes": list(model.notes),
                "levels": [(lv.feature_size, lv.step, lv.shapes) for lv in model.levels],
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
        elif isinstance(layer, _BATCH_NORMS):
            layer.num_features = weight.shape[0]
        else:
            raise NotImplementedError(f"{name}: cannot resize a {type(layer).__name__}")
        for attr, tensor in [*layer.named_parameters(recurse=False), *layer.named_buffers(recurse=False)]:
            empty = torch.empty_like(state_dict[f"{prefix}{attr}"])
            setattr(layer, attr, nn.Parameter(empty, tensor.requires_grad) if isinstance(tensor, nn.Parameter)
                    else empty)
