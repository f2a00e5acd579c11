"""TIDE error breakdown (Bolya et al. 2020) following tidecv, the authors' reference implementation.

Definitions, all as tidecv 1.0.1 has them (and why this module follows tidecv rather than hotcoco: tidecv is
the paper's own code, so its numbers are the ones papers quote; hotcoco's TIDE, e.g. Cls 16.8 against
tidecv's 22.2 on coco-val2014-100, re-scores with pycocotools-style AP and per-(image, class) maxDets):

* per image, the 100 highest-scoring detections (any class) are matched class-aware in score order, each to
  the unused same-class box of highest IoU (first on ties) if IoU >= 0.5; crowd boxes are ignore regions: an
  unmatched detection with crowd IoU (intersection / detection area) > 0.5 to a same-class one is ignored;
* every unmatched or ignored detection gets the first error that applies: **Loc** (best same-class IoU in
  [0.1, 0.5]), **Cls** (IoU >= 0.5 with another class), **Dupe** (IoU >= 0.5 with a used same-class box),
  **Bkg** (IoU <= 0.1 with every box, or an image without boxes), else **Both**; a box left unused that no
  Loc/Cls error points at is **Miss**;
* AP is tidecv's: per class, precision ``tp / (tp + fp)`` over detections in descending score order, its
  running maximum, sampled at recall x/100 for x = 0..100; the mean over classes with ground truth or
  detections. ΔAP of an error type = AP with those errors fixed - AP (clipped at 0): Loc/Cls become true
  positives (one per box, the highest-scoring claimant; a Cls fix moves to the box's class), Dupe/Bkg/Both
  are removed, Miss boxes leave the positives. FalsePos: every false positive scored 0; FalseNeg: every
  unused box removed;
* per size bucket, only the errors whose box (Loc, Cls, Miss) or detection (Dupe, Bkg, Both) falls in the
  bucket (by ``w * h``, ``lo < area <= hi``) are fixed, and ΔAP is measured on the overall AP (tidecv's
  qualifiers).
"""

from __future__ import annotations

import itertools
from dataclasses import dataclass

import numpy as np

from bench.metrics import native
from bench.metrics.groups import (
    columns,
    descending_rank,
    group_sizes,
    group_slots,
    group_table,
    ordered_by,
    pow2_buckets,
    rank_within_group,
)
from bench.metrics.matching import coco_iou
from bench.metrics.tide_ap import Points, ap_at_true_positives, mean_ap, tide_ap

ERROR_TYPES = ("Cls", "Loc", "Both", "Dupe", "Bkg", "Miss")
SPECIAL_TYPES = ("FalsePos", "FalseNeg")
_CODE = {name: i for i, name in enumerate(ERROR_TYPES)}
POS, BG, MAX_DETS = 0.5, 0.1, 100


@dataclass(frozen=True)
class _Errors:
    kind: np.ndarray  # error type code
    det: np.ndarray  # detection index, -1 for Miss
    gt: np.ndarray  # ground-truth index for Loc / Cls / Miss, else -1
    fixable: np.ndarray  # Loc / Cls: the box is unused and this is its highest-scoring claimant


def _match_images(gt_xywh: np.ndarray, gt_label: np.ndarray, gt_image: np.ndarray, det_xywh: np.ndarray,
                  det_label: np.ndarray, det_image: np.ndarray, det_rank: np.ndarray
                  ) -> tuple:
    """Class-aware greedy matching per image: matched gt per detection, used boxes, per-detection maxima
    {"cls", "noncls", "all": (IoU, box)} and the highest IoU with a used same-class box. Detections come in
    tidecv's visit order (images in order, by rank inside an image), which the compiled kernel follows."""
    if native.available():
        order, start, count = group_table(gt_image, det_image)
        matched, used, best_iou, best_gt, used_cls = native.tide_match(
            det_xywh, det_label, start, count, order, gt_xywh, gt_label, POS)
        best = {name: (best_iou[i], best_gt[i]) for i, name in enumerate(("cls", "noncls", "all"))}
        return matched, used, best, used_cls
    n_det = len(det_label)
    matched = np.full(n_det, -1, dtype=np.int64)
    best = {name: (np.zeros(n_det), np.full(n_det, -1, dtype=np.int64)) for name in ("cls", "noncls", "all")}
    sizes = group_sizes(gt_image, det_image)
    widths = pow2_buckets(sizes)
    blocks = []
    for width in np.unique(widths[sizes > 0]):
        members = np.flatnonzero((sizes > 0) & (widths == width))
        slots = group_slots(gt_image, det_image[members], int(width))
        iou = coco_iou(columns(det_xywh, members[:, None]), columns(gt_xywh, slots.slots),
                       np.zeros(slots.slots.shape, bool))
        iou = np.where(slots.valid, iou, 0.0)
        same = gt_label[slots.slots] == det_label[members, None]
        for name, mask in (("cls", same), ("noncls", ~same), ("all", np.ones_like(same))):
            masked = np.where(mask & slots.valid, iou, 0.0)
            arg = np.argmax(masked, axis=1)
            best[name][0][members] = masked[np.arange(len(members)), arg]
            best[name][1][members] = slots.slots[np.arange(len(members)), arg]
        blocks.append((members, slots.slots, iou, same & slots.valid))
    used = np.zeros(len(gt_label), dtype=bool)
    for members, slots, iou, same in blocks:
        can_match = np.flatnonzero((same & (iou >= POS)).any(axis=1))  # the others never take a box
        order = can_match[np.argsort(det_rank[members[can_match]], kind="stable")]
        if not len(order):
            continue
        members, slots, iou, same = members[order], slots[order], iou[order], same[order]
        ranks = det_rank[members]
        for lo, hi in itertools.pairwise(np.searchsorted(ranks, np.arange(ranks.max() + 2))):
            if lo == hi:
                continue
            buffer = np.where(same[lo:hi] & ~used[slots[lo:hi]], iou[lo:hi], 0.0)
            arg = np.argmax(buffer, axis=1)
            rows = np.arange(hi - lo)
            hit = buffer[rows, arg] >= POS
            chosen = slots[lo:hi][rows, arg][hit]
            matched[members[lo:hi][hit]] = chosen
            used[chosen] = True
    used_cls = np.zeros(n_det)
    for members, slots, iou, same in blocks:
        used_cls[members] = np.where(same & used[slots], iou, 0.0).max(axis=1)
    return matched, used, best, used_cls


def tide(gt_xywh: np.ndarray, gt_label: np.ndarray, gt_image: np.ndarray, gt_crowd: np.ndarray,
         det_xywh: np.ndarray, det_label: np.ndarray, det_image: np.ndarray, det_score: np.ndarray,
         n_classes: int, buckets: dict[str, tuple[float, float]] | None = None, *,
         score_rank: np.ndarray | None = None) -> dict:
    """TIDE at IoU 0.5: AP50 (tidecv's), ΔAP per error type and special error, error counts, and the same
    ΔAPs per size bucket (``label -> (lo, hi)`` areas). ``*_image`` are image positions (0..I-1).
    ``score_rank``: :func:`~bench.metrics.groups.descending_rank` of ``det_score`` where the caller has it
    (TIDE orders by score only)."""
    score_rank = descending_rank(det_score) if score_rank is None else score_rank
    # tidecv's visit order: images in order, detections by score inside an image, the first MAX_DETS of each
    # (dropping later ranks changes no kept one). Every detection array takes it here, so the matching walks
    # memory front to back (5x faster than visiting the input order's positions); a detection's index is
    # its place in the visit from here on.
    by_image = ordered_by([det_image], score_rank)
    rank = rank_within_group(det_image, by_image)
    visit = by_image[rank[by_image] < MAX_DETS]
    det_xywh = np.take(det_xywh, visit, axis=0)
    det_label, det_image, score_rank, det_rank = (np.take(x, visit)
                                                  for x in (det_label, det_image, score_rank, rank))
    regular = np.flatnonzero(~gt_crowd)
    crowd = np.flatnonzero(gt_crowd)
    r_xywh, r_label, r_image = gt_xywh[regular], gt_label[regular], gt_image[regular]
    matched, used, best, used_cls = _match_images(r_xywh, r_label, r_image, det_xywh, det_label, det_image,
                                                  det_rank)
    ignored = np.zeros(len(det_label), dtype=bool)
    if len(crowd):
        det_group = det_image * n_classes + det_label
        crowd_group = gt_image[crowd] * n_classes + gt_label[crowd]
        ignored = (matched < 0) & _in_crowd_region(det_xywh, det_group, gt_xywh[crowd], crowd_group)
    has_gt = np.bincount(r_image, minlength=int(det_image.max(initial=-1)) + 1)[det_image] > 0 \
        if len(det_image) else np.zeros(0, bool)
    errors = _classify(matched, has_gt, best, used_cls, used, score_rank, len(r_label))
    points = Points(det_label[~ignored], score_rank[~ignored], matched[~ignored] >= 0)
    positives = np.bincount(r_label, minlength=n_classes)
    base = tide_ap(points, n_classes, positives)
    fixes = _Fixes(errors, det_label, score_rank, matched, ignored, r_label, positives, n_classes)
    main = {name: max(fixes.ap(np.asarray(errors.kind == code)) - base, 0.0) for name, code in _CODE.items()}
    no_fix = np.zeros(len(errors.kind), dtype=bool)
    unused = np.bincount(r_label[~used], minlength=n_classes)
    special = {"FalsePos": fixes.ap(no_fix, perfect_scores=True) - base,
               "FalseNeg": fixes.ap(no_fix, positives=positives - unused) - base}
    result = {"AP50": base, "main": main, "special": special,
              "counts": {name: int((errors.kind == code).sum()) for name, code in _CODE.items()},
              "n_detections": len(det_label), "n_ground_truth": len(r_label)}
    if buckets:
        gt_area = np.prod(np.take(r_xywh[:, 2:], np.maximum(errors.gt, 0), axis=0), axis=1) \
            if len(r_label) else 0.0
        det_area = np.prod(np.take(det_xywh[:, 2:], np.maximum(errors.det, 0), axis=0), axis=1) \
            if len(det_label) else 0.0
        area = np.where(errors.gt >= 0, gt_area, det_area)
        result["buckets"] = {label: {name: max(fixes.ap((errors.kind == code) & (area > lo) & (area <= hi))
                                               - base, 0.0) for name, code in _CODE.items()}
                             for label, (lo, hi) in buckets.items()}
    return result


def _in_crowd_region(det_xywh: np.ndarray, det_group: np.ndarray, crowd_xywh: np.ndarray,
                     crowd_group: np.ndarray) -> np.ndarray:
    """Whether each detection covers more than ``POS`` of its own area with a crowd box of its group (image
    and class); compiled, at the threshold just above ``POS`` (tidecv's strict >)."""
    if native.available():
        order, start, count = group_table(crowd_group, det_group)
        above = np.nextafter(POS, np.inf)
        return native.overlaps_any(det_xywh, start, count, order, crowd_xywh, above, "iou")
    slots = group_slots(crowd_group, det_group, int(group_sizes(crowd_group, det_group).max(initial=0)))
    overlap = coco_iou(columns(det_xywh, np.arange(len(det_group))[:, None]),
                       columns(crowd_xywh, slots.slots), np.ones(slots.slots.shape, bool))
    return ((overlap > POS) & slots.valid).any(axis=1)


def _classify(matched: np.ndarray, has_gt: np.ndarray, best: dict,
              used_cls: np.ndarray, used: np.ndarray, score_rank: np.ndarray, n_gt: int) -> _Errors:
    """The error of every unmatched or ignored detection, then the misses, in tidecv's construction order."""
    cls_iou, cls_gt = best["cls"]
    noncls_iou, noncls_gt = best["noncls"]
    all_iou, _ = best["all"]
    wrong = np.flatnonzero(matched < 0)  # in tidecv's visit order, as the detections are
    kind = np.full(len(wrong), _CODE["Both"])
    gt = np.full(len(wrong), -1, dtype=np.int64)
    no_gt = ~has_gt[wrong]
    loc = ~no_gt & (cls_iou[wrong] >= BG) & (cls_iou[wrong] <= POS)
    cls = ~no_gt & ~loc & (noncls_iou[wrong] >= POS)
    dupe = ~no_gt & ~loc & ~cls & (used_cls[wrong] >= POS)
    bkg = no_gt | (~loc & ~cls & ~dupe & (all_iou[wrong] <= BG))
    kind[loc], kind[cls], kind[dupe], kind[bkg] = _CODE["Loc"], _CODE["Cls"], _CODE["Dupe"], _CODE["Bkg"]
    gt[loc], gt[cls] = cls_gt[wrong[loc]], noncls_gt[wrong[cls]]
    # one fix per unused box: the first highest-scoring Loc/Cls claimant (tidecv's BestGTMatch, strict >)
    claim = np.flatnonzero((loc | cls) & ~used[np.maximum(gt, 0)])
    fixable = np.zeros(len(wrong), dtype=bool)
    if len(claim):
        pick = np.lexsort((claim, score_rank[wrong[claim]], gt[claim]))
        first = np.r_[True, gt[claim][pick][1:] != gt[claim][pick][:-1]]
        fixable[claim[pick][first]] = True
    usable = np.zeros(n_gt, dtype=bool)
    usable[gt[claim]] = True
    missed = np.flatnonzero(~used & ~usable)
    return _Errors(np.r_[kind, np.full(len(missed), _CODE["Miss"])], np.r_[wrong, np.full(len(missed), -1)],
                   np.r_[gt, missed], np.r_[fixable, np.zeros(len(missed), bool)])


class _Fixes:
    """Every data point any fix can lay down, sorted once in tidecv's order; a fix selects a subset, whose
    order is the same (the points of a fix are errors in their original or fixed form, then the true
    positives, in that insertion order)."""

    def __init__(self, errors: _Errors, det_label: np.ndarray, score_rank: np.ndarray, matched: np.ndarray,
                 ignored: np.ndarray, gt_label: np.ndarray, positives: np.ndarray, n_classes: int) -> None:
        self.errors, self.gt_label, self.positives, self.n_classes = errors, gt_label, positives, n_classes
        self.empty = len(det_label) == 0
        if self.empty:  # no detection: AP stays 0 whatever is fixed (a fixed miss only drops a GT)
            return
        d = np.maximum(errors.det, 0)
        self.original = (errors.det >= 0) & ~ignored[d]  # an ignored detection has no original data point
        self.fixable_tp = errors.fixable & np.isin(errors.kind, (_CODE["Loc"], _CODE["Cls"]))
        fixed_cls = np.where(errors.kind == _CODE["Cls"], gt_label[np.maximum(errors.gt, 0)], det_label[d])
        tp = np.flatnonzero(matched >= 0)
        n_err = len(errors.kind)
        # candidates in insertion order: each error as it is, then fixed into a true positive; then the true
        # positives (the two forms of an error are never both chosen)
        self.cls = np.r_[_pairs(det_label[d], fixed_cls), det_label[tp]].astype(np.int64)
        self.score_rank = np.r_[_pairs(score_rank[d], score_rank[d]), score_rank[tp]]
        self.correct = np.r_[_pairs(np.zeros(n_err, bool), np.ones(n_err, bool)), np.ones(len(tp), bool)]
        self.order = ordered_by([self.cls], self.score_rank)
        self.sorted_cls = self.cls[self.order]
        self.sorted_correct = self.correct[self.order]
        self.sorted_tp = np.flatnonzero(self.sorted_correct)  # positions of the order that are correct
        self.class_bounds = np.searchsorted(self.sorted_cls, np.arange(n_classes + 1))
        self.n_err, self.n_tp = n_err, len(tp)

    def ap(self, fix: np.ndarray, *, positives: np.ndarray | None = None, perfect_scores: bool = False
           ) -> float:
        """tidecv's ``fix_errors``: errors in ``fix`` take their fixed form, the others their original."""
        if self.empty:
            return 0.0
        positives = (self.positives if positives is None else positives).copy()
        miss_fixed = fix & (self.errors.kind == _CODE["Miss"])
        np.subtract.at(positives, self.gt_label[self.errors.gt[miss_fixed]], 1)
        chosen = np.r_[_pairs(~fix & self.original, fix & self.fixable_tp), np.ones(self.n_tp, bool)]
        if perfect_scores:  # FalsePositiveError.fix: true positives score 1, false positives 0
            correct = self.correct[chosen]  # (score rank 0: the true positives)
            points = Points(self.cls[chosen], (~correct).astype(np.int64), correct)
            return tide_ap(points, self.n_classes, positives)
        if native.available():  # the loop over the sorted points, in tide.c
            return mean_ap(*native.tide_fix_ap(self.class_bounds, self.order, self.sorted_correct, chosen,
                                                positives), positives)
        in_order = chosen[self.order]
        n_chosen = np.r_[0, np.cumsum(in_order)]  # chosen points before each position of the order
        tp = self.sorted_tp[in_order[self.sorted_tp]]
        cls = self.sorted_cls[tp]
        before_class = n_chosen[self.class_bounds]
        return ap_at_true_positives(cls, n_chosen[tp + 1] - before_class[:-1][cls], np.diff(before_class),
                                     self.n_classes, positives)


def _pairs(first: np.ndarray, second: np.ndarray) -> np.ndarray:
    """``first[0], second[0], first[1], second[1], ...``."""
    out = np.empty(2 * len(first), dtype=np.result_type(first, second))
    out[0::2], out[1::2] = first, second
    return out
