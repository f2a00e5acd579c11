"""Detection confusion matrix: one-to-one, score-ordered matching, class-aware first, with a background class.

Per image, detections scoring at least ``score_threshold`` are visited in descending score order (stable).
Pass 1 gives each one the unused ground-truth box *of its own class* with the highest IoU >=
``iou_threshold``; pass 2 gives the still unmatched detections the unused box *of any class* with the highest
IoU (the off-diagonal confusions). What is left is background: a detection with no box is a
row-``background`` false positive, a box with no detection a column-``background`` miss. Ignored ground truth
(COCO crowd regions, VOC difficult objects) is no row: a leftover detection that overlaps one by
``iou_threshold`` is dropped rather than counted.

The greedy passes step through detection ranks, matching the rank-``r`` detection of every image at once.
"""

from __future__ import annotations

import itertools
from dataclasses import dataclass

import numpy as np

from bench.metrics.groups import (
    Columns,
    columns,
    group_sizes,
    group_slots,
    pow2_buckets,
    rank_within_group,
    sort_by_group_then_score,
)

DEFINITION = ("rows = ground truth, columns = prediction; last row/column = background. One-to-one matching "
              "per image in descending score order, same-class pairs first, then any class; detections below "
              "score_thresh are discarded; a pair needs IoU >= iou_thresh; unmatched detections count in the "
              "background row, unmatched ground truth in the background column; detections on ignored ground "
              "truth (crowd/difficult) are dropped.")


@dataclass(frozen=True)
class ConfusionMatrix:
    """``matrix[i, j]``: ground truth of class ``i`` predicted as class ``j`` (index ``C`` = background)."""

    classes: list[str]  # class names followed by "background"
    matrix: np.ndarray  # (C + 1, C + 1) int64
    score_thresh: float
    iou_thresh: float

    @property
    def normalized(self) -> np.ndarray:
        """Rows divided by their sums (NaN for an empty row, e.g. background without false positives)."""
        sums = self.matrix.sum(axis=1, keepdims=True)
        with np.errstate(divide="ignore", invalid="ignore"):
            return np.where(sums > 0, self.matrix / np.maximum(sums, 1), np.nan)


def box_iou(a: Columns, b: Columns) -> np.ndarray:
    """Plain IoU of broadcast continuous ``x1, y1, x2, y2`` columns."""
    ax1, ay1, ax2, ay2 = a
    bx1, by1, bx2, by2 = b
    inter = (np.clip(np.minimum(ax2, bx2) - np.maximum(ax1, bx1), 0, None)
             * np.clip(np.minimum(ay2, by2) - np.maximum(ay1, by1), 0, None))
    union = (ax2 - ax1) * (ay2 - ay1) + (bx2 - bx1) * (by2 - by1) - inter
    with np.errstate(divide="ignore", invalid="ignore"):
        return np.where(union > 0, inter / union, 0.0)


def confusion_matrix(classes: list[str], gt_boxes: np.ndarray, gt_label: np.ndarray, gt_image: np.ndarray,
                     gt_ignored: np.ndarray, det_boxes: np.ndarray, det_label: np.ndarray,
                     det_image: np.ndarray, det_score: np.ndarray, *, score_thresh: float = 0.25,
                     iou_thresh: float = 0.5) -> ConfusionMatrix:
    """Build the matrix; boxes are continuous ``xyxy``, ``*_image`` any per-image key."""
    n_cls = len(classes)
    gt_ignored = np.asarray(gt_ignored, dtype=bool)
    keep = np.flatnonzero(det_score >= score_thresh)
    rank = rank_within_group(det_image[keep], sort_by_group_then_score(det_image[keep], det_score[keep]))
    by_rank = np.argsort(rank, kind="stable")  # visiting order: rank 0 of every image, then rank 1, ...
    keep, rank = keep[by_rank], rank[by_rank]
    label = det_label[keep]
    matched_gt = np.full(len(keep), -1, dtype=np.int64)
    on_ignored = np.zeros(len(keep), dtype=bool)
    used = gt_ignored.copy()  # ignored boxes are never matched nor missed
    widths = pow2_buckets(group_sizes(gt_image, det_image[keep]))
    for width in np.unique(widths[widths > 0]):  # images of similar crowding together: little padding
        members = np.flatnonzero(widths == width)
        slots = group_slots(gt_image, det_image[keep[members]], int(width))
        overlap = box_iou(columns(det_boxes, keep[members, None]), columns(gt_boxes, slots.slots))
        overlap = np.where(slots.valid, overlap, -np.inf)
        reachable = overlap >= iou_thresh
        on_ignored[members] = (reachable & gt_ignored[slots.slots]).any(axis=1)
        reachable &= ~gt_ignored[slots.slots]
        same_class = gt_label[slots.slots] == label[members, None]
        for allowed in (reachable & same_class, reachable):  # class-aware pass, then any class
            matched_gt[members] = _greedy_by_rank(allowed, overlap, slots.slots, rank[members],
                                                  matched_gt[members], used)
    is_match = matched_gt >= 0
    false_pos = ~is_match & ~on_ignored
    missed = ~used
    rows = np.concatenate([gt_label[matched_gt[is_match]], np.full(false_pos.sum(), n_cls), gt_label[missed]])
    cols = np.concatenate([label[is_match], label[false_pos], np.full(missed.sum(), n_cls)])
    matrix = np.bincount(rows * (n_cls + 1) + cols, minlength=(n_cls + 1) ** 2).reshape(n_cls + 1, n_cls + 1)
    return ConfusionMatrix([*classes, "background"], matrix.astype(np.int64), float(score_thresh),
                           float(iou_thresh))


def _greedy_by_rank(allowed: np.ndarray, overlap: np.ndarray, slots: np.ndarray, rank: np.ndarray,
                    matched_gt: np.ndarray, used: np.ndarray) -> np.ndarray:
    """Give each unmatched detection, rank by rank, its best allowed unused box (``used`` is updated)."""
    matched = matched_gt.copy()
    pending = np.flatnonzero(allowed.any(axis=1) & (matched < 0))
    bounds = np.searchsorted(rank[pending], np.arange(rank.max(initial=-1) + 2))
    for lo, hi in itertools.pairwise(bounds):
        rows = pending[lo:hi]
        slot = slots[rows]
        ok = allowed[rows] & ~used[slot]
        hit = ok.any(axis=1)
        best = np.argmax(np.where(ok, overlap[rows], -np.inf), axis=1)
        chosen = slot[np.arange(len(rows)), best][hit]
        matched[rows[hit]] = chosen
        used[chosen] = True
    return matched
