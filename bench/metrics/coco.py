"""COCO box metrics, bit-for-bit equal to pycocotools, vectorised with numpy.

Why not faster-coco-eval: its C++ accumulate computes precision as ``tp / (tp + fp)`` while pycocotools uses
``tp / (tp + fp + np.spacing(1))``; on the cocoapi fake-results fixture this changes AP50 in the last digit
(0.6969727247299579 vs 0.6969727247299577) and no option of faster-coco-eval 1.8 turns it off. This module
reproduces pycocotools' ``evaluateImg`` / ``accumulate`` / ``summarize`` operation for operation instead:

* IoU as ``maskApi.c bbIou`` (``x + w`` sums, ``w * h`` areas, crowd regions use the detection area as union);
* per (image, class): detections in stable descending-score order, at most 100; each takes, among the ground
  truth still free (crowd regions never get used up), the best IoU >= t, preferring regular over ignored
  (crowd or out-of-area-range) ground truth, ties going to the later box as pycocotools' ``>=`` scan does;
* unmatched detections outside the area range are ignored; precision, recall, the interpolated envelope
  and the 101 recall-threshold sampling as ``accumulate``; the 12 summary numbers as ``summarize``.

Detections of one rank are matched for all (image, class) pairs, IoU thresholds and area ranges at once, so
the Python loop runs over ranks (at most 100), never over images or detections.
"""

from __future__ import annotations

import itertools
from dataclasses import dataclass
from typing import Any

import numpy as np

from bench.data.records import DetectionDataset
from bench.metrics.groups import (
    Columns,
    columns,
    group_sizes,
    group_slots,
    pow2_buckets,
    rank_within_group,
    sort_by_group_then_score,
)

IOU_THRESHOLDS = np.linspace(0.5, 0.95, int(np.round((0.95 - 0.5) / 0.05)) + 1, endpoint=True)
RECALL_THRESHOLDS = np.linspace(0.0, 1.00, int(np.round((1.00 - 0.0) / 0.01)) + 1, endpoint=True)
MAX_DETS = (1, 10, 100)
AREA_RANGES = {"all": (0**2, 1e5**2), "small": (0**2, 32**2), "medium": (32**2, 96**2),
               "large": (96**2, 1e5**2)}
SUMMARY_KEYS = ("AP", "AP50", "AP75", "APs", "APm", "APl", "AR1", "AR10", "AR100", "ARs", "ARm", "ARl")


def iou_index(iou: float) -> int:
    """Position of ``iou`` among the COCO thresholds 0.5:0.05:0.95 (``0.6`` finds ``0.6000000000000001``)."""
    hits = np.flatnonzero(np.isclose(IOU_THRESHOLDS, iou, rtol=0, atol=1e-9))
    if not hits.size:
        raise ValueError(f"IoU {iou} is not among the COCO thresholds {np.round(IOU_THRESHOLDS, 2).tolist()}")
    return int(hits[0])


@dataclass(frozen=True)
class CocoBoxes:
    """Boxes as pycocotools sees them: COCO image ids, class indices, ``x, y, w, h`` exactly as written.

    ``weight`` is the ground truth's ``area`` field or the detections' score; ``iscrowd`` is all False for
    detections. ``ann_id`` matters for one pycocotools quirk reproduced here: it stores a match as the ground
    truth's annotation id, so a match to annotation id 0 is never credited as a true positive.
    """

    image_id: np.ndarray  # (N,) int64
    label: np.ndarray  # (N,) int64 contiguous class index
    xywh: np.ndarray  # (N, 4) float64
    weight: np.ndarray  # (N,) float64
    iscrowd: np.ndarray  # (N,) bool
    ann_id: np.ndarray  # (N,) int64

    @classmethod
    def ground_truth(cls, ds: DetectionDataset) -> CocoBoxes:
        """The ground truth ``bench.data.coco.to_coco_dict(ds)`` writes (``w = x2 - x1``, area or ``w*h``)."""
        records = ds.records
        counts = np.array([len(r.boxes) for r in records], dtype=np.int64)
        boxes = np.concatenate([r.boxes for r in records]) if records else np.zeros((0, 4))
        return cls(
            image_id=np.repeat(np.array([r.image_id for r in records], dtype=np.int64), counts),
            label=np.concatenate([r.labels for r in records]) if records else np.zeros(0, np.int64),
            xywh=np.concatenate([boxes[:, :2], boxes[:, 2:] - boxes[:, :2]], axis=1),
            weight=np.concatenate([r.box_area for r in records]) if records else np.zeros(0),
            iscrowd=np.concatenate([r.iscrowd for r in records]) if records else np.zeros(0, bool),
            ann_id=np.arange(1, int(counts.sum()) + 1),
        )

    @classmethod
    def detections(cls, image_id: np.ndarray, label: np.ndarray, xywh: np.ndarray, score: np.ndarray
                   ) -> CocoBoxes:
        """Detections as ``loadRes`` numbers them (ids 1..N in input order)."""
        return cls(image_id, label, xywh, score, np.zeros(len(score), bool), np.arange(1, len(score) + 1))

    @classmethod
    def ground_truth_from_coco(cls, data: dict[str, Any], category_ids: list[int]) -> CocoBoxes:
        """The annotations of a COCO instances dict with their exact source numbers (already validated by
        ``bench.data.coco.read_coco``); category ids map to class indices through ``category_ids``."""
        anns = data["annotations"]
        xywh = np.asarray([a["bbox"] for a in anns], dtype=np.float64).reshape(-1, 4)
        cat_ids = np.asarray(category_ids, dtype=np.int64)
        by_id = np.argsort(cat_ids)
        label = by_id[np.searchsorted(cat_ids[by_id], np.asarray([a["category_id"] for a in anns], np.int64))]
        area = [a.get("area", w * h) for a, (_, _, w, h) in zip(anns, xywh.tolist(), strict=True)]
        return cls(
            image_id=np.asarray([a["image_id"] for a in anns], dtype=np.int64),
            label=label.astype(np.int64),
            xywh=xywh,
            weight=np.asarray(area, dtype=np.float64),
            iscrowd=np.asarray([bool(a.get("iscrowd", 0)) for a in anns], dtype=bool),
            ann_id=np.asarray([a.get("id", 1) for a in anns], dtype=np.int64),
        )


@dataclass(frozen=True)
class CocoEvaluation:
    """pycocotools' ``eval`` arrays (class axis in the data set's class order) and its 12 summary numbers."""

    precision: np.ndarray  # (T, R, K, A, M), -1 where the class has no ground truth in the area range
    recall: np.ndarray  # (T, K, A, M)
    scores: np.ndarray  # (T, R, K, A, M): detection score at each recall threshold
    stats: dict[str, float]

    def class_ap(self, label: int, iou: float | None = None, area: str = "all") -> float:
        """Mean precision of one class over recall (and IoU thresholds unless ``iou``); NaN without ground
        truth."""
        p = self.precision[:, :, label, list(AREA_RANGES).index(area), -1]
        if iou is not None:
            p = p[iou_index(iou)]
        valid = p[p > -1]
        return float(np.mean(valid)) if valid.size else float("nan")


def coco_iou(det: Columns, gt: Columns, gt_crowd: np.ndarray) -> np.ndarray:
    """``maskApi.c bbIou`` on broadcast ``x, y, w, h`` columns: same operations, same floats."""
    dx, dy, dw, dh = det
    gx, gy, gw, gh = gt
    w = np.minimum(dw + dx, gw + gx) - np.maximum(dx, gx)
    h = np.minimum(dh + dy, gh + gy) - np.maximum(dy, gy)
    inter = w * h
    det_area = dw * dh
    union = np.where(gt_crowd, det_area, det_area + gw * gh - inter)
    with np.errstate(divide="ignore", invalid="ignore"):
        return np.where((w > 0) & (h > 0), inter / union, 0.0)


def _match(gt: CocoBoxes, det: CocoBoxes, pair_gt: np.ndarray, pair_det: np.ndarray, rank: np.ndarray,
           gt_ignored: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """Greedy COCO matching of the detections of rank < 100, for every area range and IoU threshold.

    Returns (A, T, N) masks: credited (matched, pycocotools' ``dtm != 0``) and matched to an ignored box.
    """
    n_area, n_iou = gt_ignored.shape[0], len(IOU_THRESHOLDS)
    thresholds = np.minimum(IOU_THRESHOLDS, 1 - 1e-10)[None, :, None, None]
    credited = np.zeros((n_area, n_iou, len(det.label)), dtype=bool)
    matched_ignored = np.zeros_like(credited)
    gt_taken = np.zeros((n_area, n_iou, len(gt.label)), dtype=bool)
    sizes = group_sizes(pair_gt, pair_det)
    active = (rank < MAX_DETS[-1]) & (sizes > 0)
    widths = pow2_buckets(sizes)
    for width in np.unique(widths[active]):
        members = np.flatnonzero(active & (widths == width))
        members = members[np.argsort(rank[members], kind="stable")]
        slots = group_slots(pair_gt, pair_det[members], int(width))
        iou = coco_iou(columns(det.xywh, members[:, None]), columns(gt.xywh, slots.slots),
                       gt.iscrowd[slots.slots])
        bounds = np.searchsorted(rank[members], np.arange(rank[members].max() + 2))
        for lo, hi in itertools.pairwise(bounds):
            if lo == hi:
                continue
            rows = members[lo:hi]
            slot, valid, overlap = slots.slots[lo:hi], slots.valid[lo:hi], iou[lo:hi]
            ignored = gt_ignored[:, slot][:, None]  # (A, 1, n, w)
            free = ~gt_taken[:, :, slot] | gt.iscrowd[slot]
            candidate = free & valid & (overlap >= thresholds)  # (A, T, n, w)
            regular = candidate & ~ignored
            chosen_set = np.where(regular.any(-1, keepdims=True), regular, candidate)
            hit = chosen_set.any(-1)
            last_best = width - 1 - np.argmax(np.where(chosen_set, overlap, -np.inf)[..., ::-1], axis=-1)
            credited[:, :, rows] = hit & (np.take(gt.ann_id, slot[np.arange(len(rows)), last_best]) != 0)
            matched_ignored[:, :, rows] = hit & np.take_along_axis(
                np.broadcast_to(ignored, (*hit.shape, int(width))), last_best[..., None], -1)[..., 0]
            a, t, n = np.nonzero(hit)
            gt_taken[a, t, slot[n, last_best[a, t, n]]] = True
    return credited, matched_ignored


def evaluate_coco(gt: CocoBoxes, det: CocoBoxes, image_ids: np.ndarray, category_ids: list[int]
                  ) -> CocoEvaluation:
    """COCOeval(iouType="bbox") with default parameters over ``image_ids`` and all of ``category_ids``."""
    image_ids = np.unique(np.asarray(image_ids, dtype=np.int64))
    n_cls = len(category_ids)
    class_of_k = np.argsort(np.asarray(category_ids), kind="stable")  # pycocotools orders classes by id
    k_of_class = np.empty(n_cls, dtype=np.int64)
    k_of_class[class_of_k] = np.arange(n_cls)
    pair_gt = np.searchsorted(image_ids, gt.image_id) * n_cls + k_of_class[gt.label]
    pair_det = np.searchsorted(image_ids, det.image_id) * n_cls + k_of_class[det.label]
    rank = rank_within_group(pair_det, sort_by_group_then_score(pair_det, det.weight))

    ranges = np.array(list(AREA_RANGES.values()))[:, :, None]
    gt_ignored = gt.iscrowd[None] | (gt.weight[None] < ranges[:, 0]) | (gt.weight[None] > ranges[:, 1])
    det_area = det.xywh[:, 2] * det.xywh[:, 3]
    det_outside = (det_area[None] < ranges[:, 0]) | (det_area[None] > ranges[:, 1])
    credited, matched_ignored = _match(gt, det, pair_gt, pair_det, rank, gt_ignored)
    det_ignored = matched_ignored | (~credited & det_outside[:, None, :])
    tps = credited & ~det_ignored
    fps = ~credited & ~det_ignored

    n_regular = np.stack([np.bincount(k_of_class[gt.label][~ign], minlength=n_cls) for ign in gt_ignored])
    det_k = k_of_class[det.label]
    # accumulate's order: class, then descending score, ties by image (sorted ids), then input order
    order = np.lexsort((np.arange(len(det_k)), np.searchsorted(image_ids, det.image_id), -det.weight, det_k))
    order = order[rank[order] < MAX_DETS[-1]]
    tps, fps, rank, det_scores = tps[:, :, order], fps[:, :, order], rank[order], det.weight[order]
    bounds = np.searchsorted(det_k[order], np.arange(n_cls + 1))
    shape = (len(IOU_THRESHOLDS), len(RECALL_THRESHOLDS), n_cls, len(AREA_RANGES), len(MAX_DETS))
    precision, scores = -np.ones(shape), -np.ones(shape)
    recall = -np.ones((shape[0], n_cls, shape[3], shape[4]))
    for k in range(n_cls):
        previous = -1
        for m, max_det in enumerate(MAX_DETS):
            kept = bounds[k] + np.flatnonzero(rank[bounds[k]:bounds[k + 1]] < max_det)
            if len(kept) == previous:  # the same detections as for the smaller maxDets: the same numbers
                for cells in (precision, scores, recall):
                    cells[..., k, :, m] = cells[..., k, :, m - 1]
                continue
            previous = len(kept)
            for a in np.flatnonzero(n_regular[:, k]):
                _accumulate(tps[a][:, kept], fps[a][:, kept], det_scores[kept], int(n_regular[a, k]),
                            precision[:, :, k, a, m], scores[:, :, k, a, m], recall[:, k, a, m])
    stats = _summarize(precision, recall)
    return CocoEvaluation(precision[:, :, k_of_class], recall[:, k_of_class], scores[:, :, k_of_class], stats)


def _accumulate(tps: np.ndarray, fps: np.ndarray, det_scores: np.ndarray, n_regular: int,
                precision_out: np.ndarray, scores_out: np.ndarray, recall_out: np.ndarray) -> None:
    """pycocotools ``accumulate`` for one (class, area, maxDets) cell, all IoU thresholds at once."""
    tp_count = np.cumsum(tps, axis=1)
    tp, fp = tp_count.astype(float), np.cumsum(fps, axis=1).astype(float)
    n_iou, n_det = tp.shape
    rc = tp / n_regular
    pr = tp / (fp + tp + np.spacing(1))
    recall_out[:] = rc[:, -1] if n_det else 0
    if n_det == 0:
        precision_out[:], scores_out[:] = 0, 0
        return
    pr = np.maximum.accumulate(pr[:, ::-1], axis=1)[:, ::-1]
    # pycocotools: searchsorted(rc[t], recThrs, "left") per t. Recall c / n_regular grows with the TP count c,
    # so the same index is the first position whose TP count reaches the fewest TPs with recall >= threshold;
    # on integers, all T rows are searched at once by offsetting each row past the previous one.
    needed = np.searchsorted(np.arange(n_regular + 1) / n_regular, RECALL_THRESHOLDS, side="left")
    offsets = np.arange(n_iou)[:, None] * (n_det + 1)
    flat = np.searchsorted((tp_count + offsets).ravel(), (np.minimum(needed, n_det + 1) + offsets).ravel())
    inds = flat.reshape(n_iou, -1) - np.arange(n_iou)[:, None] * n_det
    inside = inds < n_det
    safe = np.minimum(inds, n_det - 1)
    precision_out[:] = np.where(inside, np.take_along_axis(pr, safe, axis=1), 0)
    scores_out[:] = np.where(inside, det_scores[safe], 0)


def _summarize(precision: np.ndarray, recall: np.ndarray) -> dict[str, float]:
    """pycocotools ``summarize``: means over entries > -1 of the same slices, -1 when there are none."""
    def mean(s: np.ndarray) -> float:
        valid = s[s > -1]
        return float(np.mean(valid)) if valid.size else -1.0

    def ap(iou: float | None = None, area: int = 0) -> float:
        s = precision if iou is None else precision[np.where(iou == IOU_THRESHOLDS)[0]]
        return mean(s[:, :, :, area, -1])

    def ar(max_det: int = 2, area: int = 0) -> float:
        return mean(recall[:, :, area, max_det])

    values = [ap(), ap(0.5), ap(0.75), ap(area=1), ap(area=2), ap(area=3),
              ar(0), ar(1), ar(2), ar(area=1), ar(area=2), ar(area=3)]
    return dict(zip(SUMMARY_KEYS, values, strict=True))
