"""Detection confusion matrix: one-to-one, score-ordered matching, class-aware first, with a background class.

Per image, detections scoring at least ``score_threshold`` are visited in descending score order (stable).
Pass 1 gives each one the unused ground-truth box *of its own class* with the highest IoU >=
``iou_threshold``; pass 2 gives the still unmatched detections the unused box *of any class* with the highest
IoU (the off-diagonal confusions). What is left is background: a detection with no box is a
row-``background`` false positive, a box with no detection a column-``background`` miss. Ignored ground truth
(COCO crowd regions, VOC difficult objects) is no row: a leftover detection that overlaps one by
``iou_threshold`` is dropped rather than counted.

The greedy passes are the COCO evaluator's matcher (:mod:`bench.metrics.matching`), so the matrix's diagonal
and background cells reconcile with it (tested).
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from bench.metrics import native
from bench.metrics.groups import (
    Columns,
    columns,
    dense_ids,
    descending_rank,
    group_slots,
    group_table,
    ordered_by,
    rank_within_group,
)
from bench.metrics.matching import greedy_match

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
                     iou_thresh: float = 0.5, score_rank: np.ndarray | None = None) -> ConfusionMatrix:
    """Build the matrix; boxes are continuous ``xyxy``, ``*_image`` any per-image key. ``score_rank``:
    :func:`~bench.metrics.groups.descending_rank` of ``det_score`` where the caller has it.

    Both passes run on the COCO evaluator's greedy matcher (:func:`bench.metrics.matching.greedy_match`):
    pass 1 per (image, class), pass 2 per image on what pass 1 left. Its rules are this module's (score
    order, highest IoU >= the threshold, boxes used once) except that IoU ties go to the later box, so the
    ground truth is handed over in reverse order and ties go to the first box, as the definition says.
    """
    n_cls = len(classes)
    gt_ignored = np.asarray(gt_ignored, dtype=bool)
    keep = np.flatnonzero(det_score >= score_thresh)
    score_rank = descending_rank(det_score) if score_rank is None else score_rank
    image = dense_ids(np.r_[np.asarray(gt_image), np.asarray(det_image)[keep]])
    gt_img, det_img = image[:len(gt_image)], image[len(gt_image):]
    regular = np.flatnonzero(~gt_ignored)[::-1]  # reversed: the matcher's ties go to the later box
    label = np.asarray(det_label)[keep]
    matched = np.full(len(keep), -1, dtype=np.int64)  # index into ``regular``
    threshold = np.array([iou_thresh], dtype=np.float64)
    for group_of_gt, group_of_det, pending in (
            (gt_img[regular] * n_cls + gt_label[regular], det_img * n_cls + label, np.arange(len(keep))),
            (gt_img[regular], det_img, None)):  # class-aware pass, then any class on what is left
        free = np.ones(len(regular), dtype=bool)
        if pending is None:
            pending = np.flatnonzero(matched < 0)
            free[matched[matched >= 0]] = False
        dets, boxes = keep[pending], np.flatnonzero(free)
        found_det, found_gt = _greedy(np.take(det_boxes, dets, axis=0), group_of_det[pending],
                                      score_rank[dets], np.take(gt_boxes, regular[boxes], axis=0),
                                      group_of_gt[boxes], threshold)
        matched[pending[found_det]] = boxes[found_gt]
    is_match = matched >= 0
    on_ignored = np.zeros(len(keep), dtype=bool)
    ignored = np.flatnonzero(gt_ignored)
    if len(ignored) and (~is_match).any():
        loose = np.flatnonzero(~is_match)
        on_ignored[loose] = _overlaps_any(np.take(det_boxes, keep[loose], axis=0), det_img[loose],
                                          np.take(gt_boxes, ignored, axis=0), gt_img[ignored], iou_thresh)
    false_pos = ~is_match & ~on_ignored
    used = np.zeros(len(gt_label), dtype=bool)
    used[regular[matched[is_match]]] = True
    missed = ~used & ~gt_ignored
    rows = np.concatenate([gt_label[regular[matched[is_match]]], np.full(false_pos.sum(), n_cls),
                           gt_label[missed]])
    cols = np.concatenate([label[is_match], label[false_pos], np.full(missed.sum(), n_cls)])
    matrix = np.bincount(rows * (n_cls + 1) + cols, minlength=(n_cls + 1) ** 2).reshape(n_cls + 1, n_cls + 1)
    return ConfusionMatrix([*classes, "background"], matrix.astype(np.int64), float(score_thresh),
                           float(iou_thresh))


def _greedy(det_boxes: np.ndarray, det_group: np.ndarray, score_rank: np.ndarray, gt_boxes: np.ndarray,
            gt_group: np.ndarray, threshold: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """(detection, box) of every match of the greedy scan at one IoU threshold: the compiled matcher
    (``native/match.c``, plain IoU, detections visited group by group in score order) or its NumPy form."""
    n_gt = len(gt_group)
    if not (n_gt and len(det_group)):  # (pass 2 on a dense image set: every box taken by pass 1)
        return np.zeros(0, np.int64), np.zeros(0, np.int64)
    visit = ordered_by([det_group], score_rank)
    if native.available():
        order, start, count = group_table(gt_group, det_group[visit])
        no_gt, no_det = np.zeros((1, n_gt), dtype=bool), np.zeros((1, len(visit)), dtype=bool)
        _, det, gt, _ = native.greedy_match(  # no crowd, nothing ignored, every box credited, one range
            np.take(det_boxes, visit, axis=0), np.ones(len(visit), bool), start, count, order, gt_boxes,
            no_gt[0], no_gt, np.ones(n_gt, bool), no_det, np.minimum(threshold, 1 - 1e-10), "plain_iou",
            0.0)  # (the NumPy matcher's min(t, 1 - 1e-10))
        return visit[det], gt.astype(np.int64)
    found = greedy_match(det_boxes, det_group, rank_within_group(det_group, visit), len(det_group) + 1,
                         gt_boxes, gt_group, np.zeros(n_gt, bool), np.zeros((1, n_gt), bool), threshold,
                         _plain_iou)
    return found.det, found.gt


def _overlaps_any(det_boxes: np.ndarray, det_group: np.ndarray, gt_boxes: np.ndarray, gt_group: np.ndarray,
                  iou_thresh: float) -> np.ndarray:
    """Whether each detection has IoU >= ``iou_thresh`` with some box of its group (compiled where built)."""
    if native.available():
        order, start, count = group_table(gt_group, det_group)
        return native.overlaps_any(det_boxes, start, count, order, gt_boxes, iou_thresh, "plain_iou")
    slots = group_slots(gt_group, det_group)
    overlap = box_iou(columns(det_boxes, np.arange(len(det_group))[:, None]), columns(gt_boxes, slots.slots))
    return (slots.valid & (overlap >= iou_thresh)).any(axis=1)


def _plain_iou(det: Columns, gt: Columns, _crowd: np.ndarray) -> np.ndarray:
    """:func:`box_iou` in the matcher's similarity signature (no crowd rule: ignored boxes never match)."""
    return box_iou(det, gt)
