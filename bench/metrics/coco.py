"""COCO box metrics, bit-for-bit equal to pycocotools, vectorised with numpy.

Why not faster-coco-eval: its C++ accumulate computes precision as ``tp / (tp + fp)`` while pycocotools uses
``tp / (tp + fp + np.spacing(1))``; on the cocoapi fake-results fixture this changes AP50 in the last digit
(0.6969727247299579 vs 0.6969727247299577) and no option of faster-coco-eval 1.8 turns it off. This module
reproduces pycocotools' ``evaluateImg`` / ``accumulate`` / ``summarize`` operation for operation instead:

* IoU as ``maskApi.c bbIou`` (``x + w`` sums, ``w * h`` areas, crowd regions use the detection area as union);
* matching as ``evaluateImg`` (:mod:`bench.metrics.matching`), for every area range and threshold at once;
* unmatched detections outside the area range are ignored; precision, recall, the interpolated envelope
  and the 101 recall-threshold sampling as ``accumulate`` (:mod:`bench.metrics.accumulate`), the summary
  numbers as ``summarize``.

:class:`CocoParams` generalises pycocotools' ``Params`` (area ranges, maxDets, thresholds, similarity), so
the size-bucket protocols of :mod:`bench.metrics.protocols` (AI-TOD, TinyPerson, TT100K) run on the same
code; with pycocotools given the same ``areaRng`` / ``maxDets`` / ``iouThrs`` the arrays are equal.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

import numpy as np

from bench.data.coco import CocoAnnotations
from bench.data.records import DetectionDataset
from bench.metrics.accumulate import RECALL_THRESHOLDS
from bench.metrics.coco_match import CocoMatch, CocoMatching, match_coco

IOU_THRESHOLDS = np.linspace(0.5, 0.95, int(np.round((0.95 - 0.5) / 0.05)) + 1, endpoint=True)
MAX_DETS = (1, 10, 100)
AREA_RANGES = {"all": (0**2, 1e5**2), "small": (0**2, 32**2), "medium": (32**2, 96**2),
               "large": (96**2, 1e5**2)}
SUMMARY_KEYS = ("AP", "AP50", "AP75", "APs", "APm", "APl", "AR1", "AR10", "AR100", "ARs", "ARm", "ARl")


@dataclass(frozen=True)
class CocoParams:
    """pycocotools ``Params`` for boxes: IoU (or NWD) thresholds, labelled area ranges (``[lo, hi]`` on the
    ground truth's ``area`` and the detection's ``w * h``, both ends inclusive), maxDets per (image,
    class)."""

    iou_thresholds: np.ndarray = field(default_factory=lambda: IOU_THRESHOLDS)
    area_ranges: dict[str, tuple[float, float]] = field(default_factory=lambda: dict(AREA_RANGES))
    max_dets: tuple[int, ...] = MAX_DETS
    similarity: str = "iou"

    def threshold_index(self, value: float) -> int:
        hits = np.flatnonzero(np.isclose(self.iou_thresholds, value, rtol=0, atol=1e-9))
        if not hits.size:
            raise ValueError(f"threshold {value} is not among {np.round(self.iou_thresholds, 3).tolist()}")
        return int(hits[0])


COCO_PARAMS = CocoParams()


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
    def ground_truth_from_coco(cls, data: dict[str, Any] | CocoAnnotations, category_ids: list[int]
                               ) -> CocoBoxes:
        """The annotations of a COCO instances dict (already validated by ``bench.data.coco.read_coco``), or
        the columns ``read_coco_annotations`` parsed from it, with their exact source numbers; category ids
        map to class indices through ``category_ids``."""
        if not isinstance(data, CocoAnnotations):
            anns = data["annotations"]
            xywh = np.asarray([a["bbox"] for a in anns], dtype=np.float64).reshape(-1, 4)
            area = [a.get("area", w * h) for a, (_, _, w, h) in zip(anns, xywh.tolist(), strict=True)]
            data = CocoAnnotations(np.asarray([a["image_id"] for a in anns], dtype=np.int64),
                                   np.asarray([a["category_id"] for a in anns], np.int64), xywh,
                                   np.asarray(area, dtype=np.float64),
                                   np.asarray([bool(a.get("iscrowd", 0)) for a in anns], dtype=bool),
                                   np.asarray([a.get("id", 1) for a in anns], dtype=np.int64))
        cat_ids = np.asarray(category_ids, dtype=np.int64)
        by_id = np.argsort(cat_ids)
        label = by_id[np.searchsorted(cat_ids[by_id], data.category_id)]
        return cls(image_id=data.image_id, label=label.astype(np.int64), xywh=data.bbox, weight=data.area,
                   iscrowd=data.iscrowd, ann_id=data.ann_id)


@dataclass(frozen=True)
class CocoEvaluation:
    """pycocotools' ``eval`` arrays (class axis in the data set's class order) and its 12 summary numbers."""

    precision: np.ndarray  # (T, R, K, A, M), -1 where the class has no ground truth in the area range
    recall: np.ndarray  # (T, K, A, M)
    scores: np.ndarray | None  # (T, R, K, A, M): detection score at each recall threshold (None: not kept)
    stats: dict[str, float]
    params: CocoParams = COCO_PARAMS
    match: CocoMatch | None = None

    def summary(self, rows: np.ndarray | None = None, params: CocoParams | None = None) -> dict[str, float]:
        """:func:`summarize` of the threshold ``rows`` (all by default), over the class axis in pycocotools'
        order (sorted category ids): the mean's summation order, hence its last bit, depends on it."""
        k_order = np.argsort(self.match.k_of_class) if self.match is not None else None
        return summarize(self.precision, self.recall, params or self.params, rows, k_order)

    def class_ap(self, label: int, iou: float | None = None, area: str = "all") -> float:
        """Mean precision of one class over recall (and IoU thresholds unless ``iou``); NaN without ground
        truth."""
        p = self.precision[:, :, label, list(self.params.area_ranges).index(area), -1]
        if iou is not None:
            p = p[self.params.threshold_index(iou)]
        valid = p[p > -1]
        return float(np.mean(valid)) if valid.size else float("nan")


def evaluate_coco(gt: CocoBoxes, det: CocoBoxes, image_ids: np.ndarray, category_ids: list[int],
                  params: CocoParams | None = None, det_in_ignore_region: np.ndarray | None = None
                  ) -> CocoEvaluation:
    """COCOeval(iouType="bbox") over ``image_ids`` and all of ``category_ids``, with pycocotools' default
    parameters unless ``params`` says otherwise (other area ranges, maxDets, thresholds or NWD).

    ``det_in_ignore_region``: detections inside an ignore region (:mod:`bench.metrics.ignore`); when not
    matched they are ignored instead of counted as false positives (TinyPerson, VisDrone, KITTI DontCare).
    """
    params = params or COCO_PARAMS
    ranges = np.array(list(params.area_ranges.values()), dtype=np.float64).reshape(-1, 2)
    matching = match_coco(gt, det, image_ids, category_ids, ranges, params.iou_thresholds,
                          max(params.max_dets), params.similarity, det_in_ignore_region)
    return score_coco(matching, list(range(len(ranges))), params, det_in_ignore_region is not None)


def score_coco(matching: CocoMatching, areas: list[int], params: CocoParams, regions: bool = False,
               keep_scores: bool = True) -> CocoEvaluation:
    """pycocotools' ``accumulate`` and ``summarize`` of one protocol on a shared matching: ``areas`` are the
    matching's range indices of ``params.area_ranges``; ``params.iou_thresholds`` is the matching's grid.
    ``keep_scores=False`` leaves pycocotools' ``scores`` array out (None), which nothing but PR curves reads:
    half the arrays' memory, whose first touch is most of their cost."""
    n_thr, n_rec, n_cls = len(matching.thresholds), len(RECALL_THRESHOLDS), matching.n_classes
    k = matching.k_of_class  # the arrays keep the data set's class order, pycocotools' classes are k
    # built area- and maxDets-major (each cell one contiguous block, written in place by accumulate), returned
    # as views in pycocotools' axes
    # a maxDets at or above the largest (image, class) group keeps every detection: when all of them are,
    # the cells are computed once and the maxDets axis is a read-only broadcast view of them (AI-TOD's
    # 100/300/1500 on COCO-sized groups: a third of the memory, whose first touch is these arrays' cost)
    max_dets = list(params.max_dets)
    if len({min(int(m), matching.most_ranked) for m in max_dets}) == 1:
        max_dets = max_dets[-1:]
    precision = np.empty((len(areas), len(max_dets), n_thr, n_rec, n_cls))
    scores = np.empty_like(precision) if keep_scores else None
    recall = np.empty((*precision.shape[:3], n_cls))
    arrays = [x for x in (precision, scores, recall) if x is not None]
    for i, a in enumerate(areas):
        has_gt = (matching.n_regular(a) > 0)[k]
        for m, max_det in enumerate(max_dets):
            if not has_gt.any():
                for out in arrays:
                    out[i, m] = -1.0
                continue
            cell_scores = None if scores is None else scores[i, m]
            matching.accumulate_into(a, max_det, regions, (precision[i, m], cell_scores, recall[i, m]))
            for out in arrays:
                out[i, m][..., ~has_gt] = -1.0
    if len(max_dets) < len(params.max_dets):
        precision, scores, recall = (None if x is None else
                                     np.broadcast_to(x, (len(areas), len(params.max_dets), *x.shape[2:]))
                                     for x in (precision, scores, recall))
    precision = np.moveaxis(precision, (0, 1), (3, 4))
    scores = None if scores is None else np.moveaxis(scores, (0, 1), (3, 4))
    recall = np.moveaxis(recall, (0, 1), (2, 3))
    stats = summarize(precision, recall, params, class_order=np.argsort(k))
    return CocoEvaluation(precision, recall, scores, stats, params,
                          CocoMatch(matching, tuple(areas), max(params.max_dets), regions))


def summarize(precision: np.ndarray, recall: np.ndarray, params: CocoParams = COCO_PARAMS,
              rows: np.ndarray | None = None, class_order: np.ndarray | None = None) -> dict[str, float]:
    """pycocotools ``summarize``: means over entries > -1 of the same slices, -1 when there are none.

    ``rows``: the arrays' threshold rows that ``params.iou_thresholds`` are (default: all). ``class_order``:
    the class axis' permutation into pycocotools' order (sorted category ids), applied to each slice: the
    mean's summation order, hence its last bit, depends on it.

    The default parameters give pycocotools' 12 numbers under :data:`SUMMARY_KEYS`. Other parameters give
    ``AP`` (all thresholds, first area range, largest maxDets), ``AP<t%>`` at 0.25/0.5/0.75 when evaluated,
    ``AP_<area>`` per other range, ``AR<maxDets>`` and ``AR_<area>`` (as the AI-TOD and TinyPerson forks).
    """
    def mean(s: np.ndarray) -> float:
        valid = s[s > -1]
        return float(np.mean(valid)) if valid.size else -1.0

    thresholds = params.iou_thresholds
    labels = list(params.area_ranges)
    rows = np.arange(len(thresholds)) if rows is None else np.asarray(rows)
    classes = slice(None) if class_order is None else class_order

    def ap(iou: float | None = None, area: int = 0) -> float:
        t = rows if iou is None else rows[np.where(iou == thresholds)[0]]
        return mean(precision[t, :, :, area, -1][:, :, classes])

    def ar(max_det: int = -1, area: int = 0) -> float:
        return mean(recall[rows, :, area, max_det][:, classes])

    if labels == list(AREA_RANGES) and tuple(params.max_dets) == MAX_DETS:
        values = [ap(), ap(0.5), ap(0.75), ap(area=1), ap(area=2), ap(area=3),
                  ar(0), ar(1), ar(2), ar(area=1), ar(area=2), ar(area=3)]
        return dict(zip(SUMMARY_KEYS, values, strict=True))
    stats = {"AP": ap()}
    for t in (0.25, 0.5, 0.75):
        if np.any(t == thresholds):
            stats[f"AP{round(t * 100)}"] = ap(t)
    stats.update({f"AP_{label}": ap(area=a) for a, label in enumerate(labels) if a > 0})
    stats.update({f"AR{m}": ar(i) for i, m in enumerate(params.max_dets)})
    stats.update({f"AR_{label}": ar(area=a) for a, label in enumerate(labels) if a > 0})
    return stats
