"""tidecv's AP (Bolya et al. 2020, tidecv 1.0.1), which TIDE's error deltas are differences of.

Per class, precision ``tp / (tp + fp)`` over the data points in descending score order (ties by insertion
order), its running maximum, sampled at recall x/100 for x = 0..100; the mean over classes with ground truth
or points, in percent (:mod:`bench.metrics.tide` says why tidecv's definition).
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from bench.metrics.accumulate import segmented_suffix_max
from bench.metrics.groups import ordered_by


@dataclass(frozen=True)
class Points:
    """tidecv's data points, in its insertion order (which breaks its score ties)."""

    cls: np.ndarray
    score_rank: np.ndarray  # groups.descending_rank of the points' scores (0: the highest)
    correct: np.ndarray


def tide_ap(points: Points, n_classes: int, gt_positives: np.ndarray) -> float:
    """tidecv's mAP (percent) of data points; classes with neither points nor positives are skipped."""
    order = ordered_by([points.cls], points.score_rank)
    return sorted_ap(points.cls[order], points.correct[order], n_classes, gt_positives)


def sorted_ap(cls: np.ndarray, correct: np.ndarray, n_classes: int, gt_positives: np.ndarray) -> float:
    """:func:`tide_ap` of points already in tidecv's order (class, descending score, insertion order)."""
    bounds = np.searchsorted(cls, np.arange(n_classes + 1))
    tp = np.flatnonzero(correct)
    return ap_at_true_positives(cls[tp], tp - bounds[:-1][cls[tp]] + 1, np.diff(bounds), n_classes,
                                 gt_positives)


def ap_at_true_positives(tp_cls: np.ndarray, tp_position: np.ndarray, n_points: np.ndarray, n_classes: int,
                          gt_positives: np.ndarray) -> float:
    """tidecv's mAP from its true positives alone: class, 1-based position among the class's points (both in
    tidecv's order) and the number of points per class. Every recall sample lands on a true positive (the
    true count grows only there), and between two true positives precision only falls, so the precision
    envelope at a true positive is the running maximum over the later true positives; recall 0 takes the
    class's first point, whose envelope is the class maximum (0 without a true positive)."""
    present = (n_points > 0) | (gt_positives > 0)
    if not present.any():
        return 0.0
    tp_bounds = np.searchsorted(tp_cls, np.arange(n_classes + 1))
    n_tp = np.diff(tp_bounds)
    true_here = np.arange(len(tp_cls)) - tp_bounds[:-1][tp_cls] + 1
    precision = segmented_suffix_max(true_here / tp_position, tp_cls)
    x = np.array([i / 100 for i in range(101)])
    npos = np.maximum(gt_positives, 1).astype(np.float64)
    needed = np.ceil(x[None, :] * npos[:, None])
    needed = np.where((needed > 0) & ((needed - 1) / npos[:, None] >= x[None, :]), needed - 1, needed)
    needed = np.where(needed / npos[:, None] < x[None, :], needed + 1, needed).astype(np.int64)
    # the needed-th true positive of the class (the first one for recall 0)
    where = tp_bounds[:-1, None] + np.maximum(needed, 1) - 1
    inside = np.where(needed > 0, needed <= n_tp[:, None], (n_points > 0)[:, None]) & (n_tp > 0)[:, None]
    y = np.where(inside, precision[np.minimum(where, max(len(tp_cls) - 1, 0))] if len(tp_cls) else 0.0, 0.0)
    return mean_ap(y, n_points, gt_positives)


def mean_ap(y: np.ndarray, n_points: np.ndarray, gt_positives: np.ndarray) -> float:
    """tidecv's mAP (percent) from the recall samples ``y`` ``(K, 101)`` of every class: the mean over
    classes with points or positives, 0 for a class without positives."""
    present = (n_points > 0) | (gt_positives > 0)
    if not present.any():
        return 0.0
    ap = np.where(gt_positives > 0, y.sum(axis=1) / 101 * 100, 0.0)
    return float(ap[present].mean())
