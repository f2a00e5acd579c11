"""SSD's prior-to-ground-truth matching, for a whole batch at once.

Rule (Liu et al. 2016; Caffe ``MatchBBox``, amdegroot and lufficc ``match``, torchvision ``SSDMatcher``):
every ground truth claims its best prior, then every other prior takes its highest-IoU ground truth when that
IoU is at least the threshold (all of these implementations mark ``iou < threshold`` as background, i.e.
``>=`` is positive). Targets are padded to ``(B, M, 4)`` once per batch; the IoU matrices are per image, so
their memory stays that of one image.
"""

from __future__ import annotations

from dataclasses import dataclass

import torch
from torch import Tensor
from torch.nn.utils.rnn import pad_sequence
from torchvision.ops import box_convert, box_iou

from detectors.base import Target

_FORCED_IOU = 2.0  # above any real IoU, so a forced match survives the threshold


@dataclass
class PaddedTargets:
    boxes: Tensor  # (B, M, 4) xyxy, zeros where padded
    labels: Tensor  # (B, M) int64, 0-based; 0 where padded
    valid: Tensor  # (B, M) bool: a real box with positive width and height


@dataclass
class MatchResult:
    labels: Tensor  # (B, P) int64: 0 = background, k + 1 = class k
    boxes: Tensor  # (B, P, 4) xyxy of the matched ground truth (meaningful where labels > 0)


def pad_targets(targets: list[Target]) -> PaddedTargets:
    """Stack per-image targets into ``(B, M, ...)``; ``M >= 1`` (all padding when no image has boxes)."""
    device = targets[0].boxes.device
    sentinel = Target(torch.zeros(1, 4, device=device), torch.zeros(1, dtype=torch.long, device=device))
    padded = [*targets, sentinel]  # guarantees M >= 1; dropped below
    boxes = pad_sequence([t.boxes.float() for t in padded], batch_first=True)[:-1]
    labels = pad_sequence([t.labels.long() for t in padded], batch_first=True)[:-1]
    counts = torch.tensor([len(t.labels) for t in targets], device=device)
    valid = torch.arange(boxes.shape[1], device=device) < counts[:, None]
    # A box without area has no regression target (log 0) and overlaps nothing: it is ignored, not a NaN.
    valid &= (boxes[..., 2] > boxes[..., 0]) & (boxes[..., 3] > boxes[..., 1])
    return PaddedTargets(boxes, labels, valid)


def match_priors(priors: Tensor, targets: PaddedTargets, iou_threshold: float = 0.5) -> MatchResult:
    """Match ``(P, 4)`` cxcywh priors to padded xyxy ground truths (both normalised).

    One image at a time: the IoU matrix of an image is ``(G, P)`` for its ``G`` real boxes, where a batched
    ``(B, M, P)`` matrix would take about 1 GB for MDSSD512's 90,096 priors at batch 32. The outputs are
    identical to the batched computation's.
    """
    b, p = targets.valid.shape[0], priors.shape[0]
    device = priors.device
    prior_boxes = box_convert(priors, "cxcywh", "xyxy")
    labels = torch.zeros((b, p), dtype=torch.long, device=device)
    boxes = torch.zeros((b, p, 4), dtype=targets.boxes.dtype, device=device)
    for i in range(b):
        gt_boxes = targets.boxes[i][targets.valid[i]]  # (G, 4), in the original order
        if len(gt_boxes) == 0:
            continue
        iou = box_iou(gt_boxes, prior_boxes)  # (G, P)
        best_gt_iou, best_gt = iou.max(dim=0)  # (P,)
        # Each ground truth claims its best prior. When two claim the same prior the later one wins, as in the
        # sequential loop of the reference ports; "amax" over the ground-truth index makes that deterministic.
        gt_index = torch.arange(len(gt_boxes), device=device)
        forced = torch.full((p,), -1, dtype=torch.long, device=device).scatter_reduce(
            0, iou.argmax(dim=1), gt_index, reduce="amax")
        is_forced = forced >= 0
        best_gt = torch.where(is_forced, forced, best_gt)
        best_gt_iou = best_gt_iou.masked_fill(is_forced, _FORCED_IOU)
        image_labels = targets.labels[i][targets.valid[i]][best_gt] + 1
        labels[i] = image_labels.masked_fill(best_gt_iou < iou_threshold, 0)
        boxes[i] = gt_boxes[best_gt]
    return MatchResult(labels, boxes)
