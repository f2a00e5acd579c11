"""Network slimming (Liu et al., ICCV 2017) of an SSD-family model with torch-pruning, as MFSSD-Pruned does.

Seed 001 (Fig. 3, §II.C): sparse-train MFSSD-BN with L1 on the BN scales, cut the channels with the smaller
scales at "a suitable compression ratio (or pruning rate)", fine-tune, and repeat while the accuracy meets
the requirement. The pieces:

1. sparse training: ``pruner = make_slimming_pruner(model, example_inputs)``, then
   ``sparsity_step(pruner, model)`` on unscaled gradients before ``optimizer.step()`` (an L1 sub-gradient on
   every BN scale);
2. pruning by the paper's criterion, ``prune_by_criterion(model, example, ratio=...)`` (the share of
   channels with the smallest |gamma|, ranked globally) or ``threshold=...`` (every channel with |gamma|
   below it): the parameter count is then a measured outcome, in the returned ``PruneReport``, set against
   Table I's 22,785,625;
   or, labelled as such, the count-target mode ``prune_to_params(model, target_params)``: the global ratio
   that lands on a given count (Table I's by default), where the count is the input, not a result;
3. fine-tuning the pruned model like any other; ``accuracy_holds`` is the test for another round.

``save_pruned`` / ``load_pruned`` (``detectors.ssd.pruned_io``) store a pruned model as tensors and plain
values, so it loads with ``torch.load(weights_only=True)``.
"""

from __future__ import annotations

import math
from collections import defaultdict
from collections.abc import Iterable
from dataclasses import asdict, dataclass
from typing import Any, Literal

import torch
import torch_pruning as tp
from torch import Tensor, nn

from detectors.base import BATCH_NORMS
from detectors.complexity import count_params
from detectors.ssd.detector import SSDDetector
from detectors.ssd.pruned_io import load_pruned, save_pruned

__all__ = ["MFSSD_BN_PARAMS", "MFSSD_PRUNED_PARAMS", "PruneReport", "accuracy_holds", "load_pruned",
           "make_slimming_pruner", "prune_by_criterion", "prune_to_params", "save_pruned", "sparsity_step"]

MFSSD_BN_PARAMS = 33_713_888  # MFSSD Table I, 20 classes: before pruning
MFSSD_PRUNED_PARAMS = 22_785_625  # and after
_BISECTION_STEPS = 24  # the ratio to within 6e-8, far below one channel


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
    """Add ``reg * sign(gamma)`` to every BN scale gradient; call on unscaled gradients before ``step``.

    torch-pruning's ``regularize`` does the same for ``BatchNorm1d/2d/3d`` only, so under multi-GPU DDP,
    where the trainer converts them to ``SyncBatchNorm``, it would skip every scale: this covers every
    ``detectors.base.BATCH_NORMS`` layer (the pruner's ignored layers aside, as torch-pruning does).
    """
    ignored = set(pruner.ignored_layers)
    with torch.no_grad():
        for module in model.modules():
            if (isinstance(module, BATCH_NORMS) and module.affine and module not in ignored
                    and module.weight.grad is not None):
                module.weight.grad.add_(pruner.reg * torch.sign(module.weight))


def prune_to_params(model: SSDDetector, target_params: int | None = None,
                    example_inputs: Tensor | None = None, *, tolerance: float = 0.01) -> SSDDetector:
    """Count-target mode: prune ``model`` in place to ``target_params`` parameters (within ``tolerance``).

    The parameter count is the input here, not an outcome: use ``prune_by_criterion`` to measure it.

    ``target_params=None`` applies Table I's reduction (33,713,888 -> 22,785,625) to ``model``'s own size:
    exactly Table I's count for MFSSD-BN with 20 classes, the same shrinkage for other class counts.
    The global ratio is bisected on dry runs whose channel plans are counted analytically, so the graph is
    traced once and the weights are cut once, at the ratio closest to the target. Deterministic given the BN
    scales (tied scales are pruned or kept together). Raises ``ValueError`` when no ratio is within tolerance.
    """
    if target_params is None:
        target_params = round(count_params(model) * MFSSD_PRUNED_PARAMS / MFSSD_BN_PARAMS)
    if example_inputs is None:
        example_inputs = _example(model)
    params_before = count_params(model)
    pruner = make_slimming_pruner(model, example_inputs)
    channels_before = sum(len(imp) for _, _, imp in _scored_groups(pruner))
    low, high = 0.0, 1.0
    best_ratio, best_count = 0.0, count_params(model)
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
    channels_after = sum(len(imp) for _, _, imp in _scored_groups(pruner))
    report = PruneReport("count_target", target_params, None, 1 - channels_after / channels_before,
                         channels_before, channels_after, params_before, count_params(model))
    _record(model, report)
    return model


@dataclass(frozen=True)
class PruneReport:
    """What one slimming cut did; in ``ratio`` and ``threshold`` mode the parameter count is measured.

    ``mode`` is ``"ratio"``, ``"threshold"`` or ``"count_target"`` (the parameter count was the input);
    ``requested`` the ratio, threshold or target count asked for; ``threshold`` the |gamma| below which
    channels went (None in count-target mode, where the ratio is bisected); ``ratio`` the share of prunable
    channels (those with a BN scale) removed; ``paper_params`` Table I's MFSSD-Pruned count.
    """

    mode: Literal["ratio", "threshold", "count_target"]
    requested: float
    threshold: float | None
    ratio: float
    channels_before: int
    channels_after: int
    params_before: int
    params_after: int
    paper_params: int = MFSSD_PRUNED_PARAMS

    @property
    def params_kept(self) -> float:
        return self.params_after / self.params_before

    def to_dict(self) -> dict[str, Any]:
        return {**asdict(self), "params_kept": self.params_kept}

    def note(self) -> str:
        method = "network slimming (torch-pruning, global |gamma| ranking, heads kept)"
        if self.mode == "count_target":
            head = (f"{method}, COUNT-TARGET mode: pruned to a given {self.requested:,.0f} parameters, so "
                    f"the count is not a result")
        else:
            cut = {"ratio": "<=", "threshold": "<"}[self.mode]
            bound = f" (|gamma| {cut} {self.threshold:.4g})" if self.threshold is not None else ""
            head = f"{method} by {self.mode} {self.requested:g}{bound}"
        removed = self.channels_before - self.channels_after
        return (f"{head}: {removed:,} of {self.channels_before:,} channels ({self.ratio:.1%}) removed, "
                f"{self.params_before:,} -> {self.params_after:,} parameters "
                f"({self.params_kept:.1%} kept; Table I: {self.paper_params:,})")


def prune_by_criterion(model: SSDDetector, example_inputs: Tensor | None = None, *,
                       ratio: float | None = None, threshold: float | None = None,
                       min_channels: int = 1) -> PruneReport:
    """Prune ``model`` in place by the paper's γ criterion and report what came out.

    Give exactly one of ``ratio`` (the share of all prunable channels to cut, those with the smallest
    |gamma| across the network: the paper's "suitable compression ratio (or pruning rate)") or ``threshold``
    (cut every channel whose |gamma| is below it: network slimming's global threshold). A channel's |gamma|
    is averaged over the BNs coupled to it (concatenated fusion branches), as torch-pruning ranks it. Every
    layer keeps at least ``min_channels`` channels, its largest-|gamma| ones (a layer cannot vanish). The
    head is never pruned. The returned report is also appended to ``model.prune_reports`` and its note to
    ``model.notes``.
    """
    if (ratio is None) == (threshold is None):
        raise ValueError("give exactly one of ratio and threshold")
    if ratio is not None and not 0 <= ratio < 1:
        raise ValueError(f"ratio is the share of channels to cut, in [0, 1), got {ratio}")
    if min_channels < 1:
        raise ValueError("min_channels must be at least 1")
    example_inputs = _example(model) if example_inputs is None else example_inputs
    params_before = count_params(model)
    pruner = make_slimming_pruner(model, example_inputs)
    scored = _scored_groups(pruner)
    scores = torch.cat([imp for _, _, imp in scored])
    if ratio is not None:
        count = math.floor(ratio * len(scores))
        cut = torch.zeros(len(scores), dtype=torch.bool)
        cut[torch.sort(scores, stable=True).indices[:count]] = True
        effective = float(scores[cut].max()) if count else None
    else:
        cut, effective = scores < threshold, threshold
    start = 0
    for module, handler, imp in scored:  # groups are disjoint: cutting one leaves the others' indices valid
        mine, start = cut[start:start + len(imp)], start + len(imp)
        spare = torch.argsort(imp, descending=True, stable=True)[:min_channels]
        mine = mine.clone()
        mine[spare] = False
        idxs = mine.nonzero().flatten().tolist()
        if idxs:
            pruner.DG.get_pruning_group(module, handler, idxs).prune()
    after = sum(len(imp) for _, _, imp in _scored_groups(pruner))
    mode, requested = ("ratio", ratio) if ratio is not None else ("threshold", threshold)
    report = PruneReport(mode, requested, effective, 1 - after / len(scores), len(scores), after,
                         params_before, count_params(model))
    _record(model, report)
    return report


def accuracy_holds(reference: float, current: float, max_drop: float) -> bool:
    """Fig. 3's test for another slimming round: the fine-tuned accuracy is within ``max_drop`` of the
    unpruned ``reference`` (same metric and units, e.g. mAP points)."""
    return current >= reference - max_drop


def _example(model: SSDDetector) -> Tensor:
    return torch.zeros(1, 3, model.input_size, model.input_size, device=model.priors.device)


def _scored_groups(pruner: tp.pruner.BNScalePruner) -> list[tuple[nn.Module, Any, Tensor]]:
    """(root module, pruning function, per-channel |gamma|) of every group the pruner may cut."""
    out = []
    for group in pruner.DG.get_all_groups(ignored_layers=pruner.ignored_layers,
                                          root_module_types=pruner.root_module_types):
        imp = pruner.importance(group)
        if imp is not None:
            out.append((group[0].dep.target.module, group[0].dep.handler, imp.detach().cpu()))
    return out


def _record(model: SSDDetector, report: PruneReport) -> None:
    model.features.out_channels = [conv.in_channels for conv in model.head.loc]
    model.prune_reports = [*getattr(model, "prune_reports", []), report.to_dict()]
    model.notes.append(report.note())


def _plan(pruner: tp.pruner.BNScalePruner, ratio: float) -> list[tp.Group]:
    """The pruning groups a one-shot global step at ``ratio`` would execute, without executing them."""
    pruner.reset()
    pruner.per_step_pruning_ratio = [0.0, ratio]  # as ``pruning_ratio=ratio, iterative_steps=1`` would set
    return list(pruner.step(interactive=True))


def _count_after(model: nn.Module, pruner: tp.pruner.BNScalePruner, groups: Iterable[tp.Group]) -> int:
    """Parameters of ``model`` once ``groups`` are pruned, from channel indices alone."""
    removed_out: dict[nn.Module, set[int]] = defaultdict(set)
    removed_in: dict[nn.Module, set[int]] = defaultdict(set)
    for group in groups:
        for dep, idxs in group:
            layer = dep.target.module
            if isinstance(layer, BATCH_NORMS) or pruner.DG.is_out_channel_pruning_fn(dep.handler):
                removed_out[layer].update(idxs)
            else:
                removed_in[layer].update(idxs)
    total = 0
    for layer in model.modules():
        params = list(layer.parameters(recurse=False))  # all parameters, as count_params counts
        if not params or (layer not in removed_out and layer not in removed_in):
            total += sum(p.numel() for p in params)
        elif isinstance(layer, BATCH_NORMS):
            total += len(params) * (layer.num_features - len(removed_out[layer]))
        elif isinstance(layer, nn.Conv2d) and layer.groups == 1:
            out = layer.out_channels - len(removed_out[layer])
            total += out * (layer.in_channels - len(removed_in[layer])) * layer.weight[0, 0].numel()
            total += out if layer.bias is not None else 0
        else:
            raise NotImplementedError(f"parameter count after pruning a {type(layer).__name__}")
    return total
