"""PASCAL VOC average precision, following the devkit (``VOCevaldet.m`` / py-faster-rcnn ``voc_eval.py``).

Conventions, all as the devkit has them:

* boxes in devkit coordinates (1-based inclusive pixels): areas and intersections add one pixel,
  ``(xmax - xmin + 1) * (ymax - ymin + 1)``. Continuous ``xyxy`` boxes map to them as ``xmin = x1 + 1,
  xmax = x2`` (:func:`to_devkit`);
* detections of a class, over all images, in descending score order, STABLE sort (ties keep input order);
* each detection looks at the ground truth of its class in its image and takes the one of maximum IoU (the
  first on ties), whether or not it is already used. IoU >= threshold: a difficult box makes the detection
  neither TP nor FP; otherwise the first detection to reach the box is a TP and later ones are FPs. Below
  threshold: FP.
  The ``>=`` is the MATLAB devkit's (``ovmax >= minoverlap``); py-faster-rcnn writes ``>``, which differs only
  when an IoU equals the threshold exactly; the published numbers of the shared fixtures need ``>=``;
* recall over non-difficult ground truth; the 11-point (VOC2007) and all-point (VOC2010+) AP.

Because the detection takes its max-IoU box regardless of use, greedy matching reduces to "first detection, in
score order, per ground-truth box", which numpy does for all images and classes at once.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from bench.metrics import native
from bench.metrics.groups import (
    Columns,
    columns,
    descending_rank,
    group_sizes,
    group_slots,
    group_table,
    ordered_by,
)

_CHUNK_ELEMENTS = 1 << 22  # detections x group width per IoU block: bounds memory on crowded images


def to_devkit(boxes: np.ndarray) -> np.ndarray:
    """Continuous ``xyxy`` pixels to devkit coordinates (``xmin = x1 + 1``, ``xmax = x2``)."""
    return np.asarray(boxes, dtype=np.float64) + np.array([1.0, 1.0, 0.0, 0.0])


def devkit_iou(det: Columns, gt: Columns) -> np.ndarray:
    """IoU of broadcast devkit ``xmin, ymin, xmax, ymax`` columns with the +1-pixel areas, in the devkit's
    order of operations."""
    dx1, dy1, dx2, dy2 = det
    gx1, gy1, gx2, gy2 = gt
    iw = np.maximum(np.minimum(gx2, dx2) - np.maximum(gx1, dx1) + 1.0, 0.0)
    ih = np.maximum(np.minimum(gy2, dy2) - np.maximum(gy1, dy1) + 1.0, 0.0)
    inters = iw * ih
    uni = (dx2 - dx1 + 1.0) * (dy2 - dy1 + 1.0) + (gx2 - gx1 + 1.0) * (gy2 - gy1 + 1.0) - inters
    return inters / uni


@dataclass(frozen=True)
class VocMatches:
    """Detections in evaluation order (``order``: stable descending score) with their TP / FP flags."""

    order: np.ndarray  # (N,) indices into the detection arrays
    tp: np.ndarray  # (N,) bool, in ``order``
    fp: np.ndarray  # (N,) bool, in ``order``; a detection on a difficult box is neither


def match_devkit(gt_boxes: np.ndarray, gt_group: np.ndarray, gt_difficult: np.ndarray, det_boxes: np.ndarray,
                 det_group: np.ndarray, det_score: np.ndarray, iou_threshold: float, *,
                 score_rank: np.ndarray | None = None) -> VocMatches:
    """Devkit matching of detections to ground truth in devkit coordinates (``score_rank``:
    :func:`~bench.metrics.groups.descending_rank` of ``det_score`` where the caller has it).

    ``*_group`` say which boxes may match: the image for one class, or an (image, class) key to evaluate every
    class in one pass (the per-class sequences of a stable global sort are the per-class stable sorts).
    """
    order = ordered_by([], descending_rank(det_score) if score_rank is None else score_rank)  # stable
    if native.available():  # the same overlaps as a loop (native/voc.c)
        gt_order, start, count = group_table(gt_group, det_group[order])
        best_iou, best_gt = native.devkit_best_overlap(np.take(np.asarray(det_boxes), order, axis=0), start,
                                                       count, gt_order, gt_boxes)
        return _claims(order, best_iou, best_gt, gt_difficult, iou_threshold)
    best_iou = np.full(len(order), -np.inf)
    best_gt = np.zeros(len(order), dtype=np.int64)
    width = int(group_sizes(gt_group, det_group).max(initial=0))
    step = max(1, _CHUNK_ELEMENTS // max(width, 1))
    for lo in range(0, len(order) if width else 0, step):
        sel = order[lo:lo + step]
        group = group_slots(gt_group, det_group[sel], width)
        slots, valid = group.slots, group.valid
        iou = np.where(valid, devkit_iou(columns(det_boxes, sel[:, None]), columns(gt_boxes, slots)), -np.inf)
        first_max = np.argmax(iou, axis=1)
        rows = np.arange(len(sel))
        best_iou[lo:lo + step] = iou[rows, first_max]
        best_gt[lo:lo + step] = slots[rows, first_max]
    return _claims(order, best_iou, best_gt, gt_difficult, iou_threshold)


def _claims(order: np.ndarray, best_iou: np.ndarray, best_gt: np.ndarray, gt_difficult: np.ndarray,
            iou_threshold: float) -> VocMatches:
    """TP / FP from each detection's highest-overlap box: the first claimant of a box is the TP."""
    hit = best_iou >= iou_threshold
    # a detection meeting no box has best IoU -inf (no hit), whatever best_gt holds
    on_difficult = hit & np.asarray(gt_difficult, dtype=bool)[best_gt] if len(gt_difficult) else \
        np.zeros_like(hit)
    claims = np.flatnonzero(hit & ~on_difficult)
    _, first_claim = np.unique(best_gt[claims], return_index=True)
    tp = np.zeros(len(order), dtype=bool)
    tp[claims[first_claim]] = True
    fp = ~tp & ~on_difficult
    return VocMatches(order, tp, fp)


@dataclass(frozen=True)
class VocAP:
    """One class's devkit precision/recall sequence and both APs (NaN without non-difficult ground truth)."""

    recall: np.ndarray
    precision: np.ndarray
    ap_11pt: float
    ap_allpt: float


def devkit_ap(tp: np.ndarray, fp: np.ndarray, n_positive: int) -> VocAP:
    """11-point and all-point AP of detections already in score order, as ``voc_eval.py`` computes them."""
    tp_sum = np.cumsum(tp, dtype=np.float64)
    fp_sum = np.cumsum(fp, dtype=np.float64)
    if n_positive == 0:
        nan = float("nan")
        return VocAP(np.full(len(tp_sum), nan), np.full(len(tp_sum), nan), nan, nan)
    rec = tp_sum / float(n_positive)
    prec = tp_sum / np.maximum(tp_sum + fp_sum, np.finfo(np.float64).eps)
    # 11-point: max precision at recall >= t (the suffix max, since recall never decreases), summed in order
    suffix_max = np.maximum.accumulate(prec[::-1])[::-1]
    first = np.searchsorted(rec, np.arange(0.0, 1.1, 0.1), side="left")
    at_t = np.where(first < len(rec), suffix_max[np.minimum(first, len(rec) - 1)], 0.0) if len(rec) else \
        np.zeros(11)
    ap_11pt = float(np.cumsum(at_t / 11.0)[-1])
    # all-point: area under the monotone precision envelope
    mrec = np.concatenate(([0.0], rec, [1.0]))
    mpre = np.maximum.accumulate(np.concatenate(([0.0], prec, [0.0]))[::-1])[::-1]
    i = np.where(mrec[1:] != mrec[:-1])[0]
    ap_allpt = float(np.sum((mrec[i + 1] - mrec[i]) * mpre[i + 1]))
    return VocAP(rec, prec, ap_11pt, ap_allpt)
