"""``evaluate``: every metric of the suite from one ground truth and one set of detections.

COCO numbers come from :mod:`bench.metrics.coco` (equal to pycocotools), VOC numbers from
:mod:`bench.metrics.voc` (the devkit at IoU 0.5), curves and the confusion matrix from the same matchings.
Means run over classes that have ground truth only, so detections of a class absent from the ground truth
cannot lower the mAP. The devkit knows no crowd regions: for VOC AP, ROC curves and the confusion matrix they
are ignored like difficult boxes (COCO ignores them its own way; COCO counts difficult boxes as ordinary).
``n_gt`` counts every box but crowd regions.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

import numpy as np

from bench.data.coco import CocoAnnotations
from bench.data.records import DetectionDataset
from bench.metrics import native
from bench.metrics.coco import (
    AREA_RANGES,
    COCO_PARAMS,
    IOU_THRESHOLDS,
    MAX_DETS,
    RECALL_THRESHOLDS,
    CocoBoxes,
    CocoEvaluation,
    iou_index,
)
from bench.metrics.confusion import ConfusionMatrix, confusion_matrix
from bench.metrics.detections import DetectionResults
from bench.metrics.groups import descending_rank, position_in
from bench.metrics.ignore import dataset_ignore_regions, in_ignore_regions
from bench.metrics.parallel import reaped, run_beside
from bench.metrics.protocols import get_protocol
from bench.metrics.result import ROC_COLUMNS, Curves, EvaluationResult
from bench.metrics.small_objects import (
    DEFAULT_SETTINGS,
    SmallObjectSettings,
    protocol_rows,
    protocol_run,
    shared_matching,
    small_object_metrics,
    tide_section,
)
from bench.metrics.voc import VocAP, VocMatches, devkit_ap, match_devkit, to_devkit

VOC_IOU = 0.5


@dataclass(frozen=True)
class _GroundTruth:
    """All records' boxes concatenated, with each box's image index (position in ``image_ids``)."""

    image_ids: np.ndarray
    image: np.ndarray
    boxes: np.ndarray
    label: np.ndarray
    difficult: np.ndarray
    iscrowd: np.ndarray

    @classmethod
    def of(cls, ds: DetectionDataset) -> _GroundTruth:
        records = ds.records
        counts = np.array([len(r.boxes) for r in records], dtype=np.int64)

        def cat(name: str, empty: np.ndarray) -> np.ndarray:
            return np.concatenate([getattr(r, name) for r in records]) if records else empty

        return cls(np.array([r.image_id for r in records], dtype=np.int64),
                   np.repeat(np.arange(len(records)), counts), cat("boxes", np.zeros((0, 4))),
                   cat("labels", np.zeros(0, np.int64)), cat("difficult", np.zeros(0, bool)),
                   cat("iscrowd", np.zeros(0, bool)))


def evaluate(gt: DetectionDataset, dets: DetectionResults, *, iou_pr: tuple[float, ...] = (0.5, 0.75),
             confusion_score: float = 0.25, confusion_iou: float = 0.5,
             coco_gt: dict[str, Any] | CocoAnnotations | None = None,
             small_objects: SmallObjectSettings | None = DEFAULT_SETTINGS) -> EvaluationResult:
    """Score ``dets`` against ``gt``.

    ``coco_gt``: the COCO instances dict ``gt`` was read from, or the columns ``read_coco_annotations``
    parsed from it, if any. COCO metrics then use its ``bbox`` numbers as written (what pycocotools reads)
    instead of ``xyxy`` converted back, which can differ in the last bit. ``small_objects``: the size-bucket
    protocols, tolerance curves, TIDE and bootstrap intervals (:mod:`bench.metrics.small_objects`); None
    skips them.

    The parts that share no intermediate result with the IoU matching (VOC, ROC curves, the confusion
    matrix, TIDE) run beside it in a forked process where two cores are usable
    (:mod:`bench.metrics.parallel`); the numbers do not depend on it. The NWD run stays with the IoU
    matching, whose detection order it reuses (and which balances the two halves).
    """
    pr_thresholds = [iou_index(t) for t in iou_pr]  # fails early on an IoU COCO does not evaluate
    truth = _GroundTruth.of(gt)
    coco_truth = CocoBoxes.ground_truth(gt) if coco_gt is None else \
        CocoBoxes.ground_truth_from_coco(coco_gt, list(gt.category_ids or []))
    coco_dets = CocoBoxes.detections(dets.image_id, dets.label, dets.xywh, dets.score)
    category_ids = list(gt.category_ids or [])
    region_image, region_boxes = dataset_ignore_regions(gt.records)
    in_region = in_ignore_regions(dets.image_id, dets.boxes, region_image, region_boxes) \
        if len(region_image) else None
    score_rank = descending_rank(dets.score)  # the one sort of the scores; every ordering below reuses it
    side = run_beside(_side_metrics, gt, truth, dets, score_rank, coco_truth, coco_dets, small_objects,
                      in_region, confusion_score, confusion_iou)
    coco_protocol = get_protocol("coco")
    protocols = [coco_protocol] + ([get_protocol(name, (small_objects.max_dets or {}).get(name))
                                    for name in small_objects.protocols] if small_objects is not None else [])
    with reaped(side):
        # one IoU matching on the tolerance grid 0.10:0.95 for every protocol; its COCO run's last ten rows
        # are pycocotools' arrays, bit for bit
        iou = shared_matching(coco_truth, coco_dets, truth.image_ids, category_ids, protocols, in_region,
                              score_rank=score_rank)
        small = small_object_metrics(coco_truth, coco_dets, truth.image_ids, category_ids, small_objects,
                                     in_region, iou, lambda: side()[3]) if small_objects is not None else {}
        coco_run = protocol_run(iou, coco_protocol)  # memoised in ``iou``: the COCO protocol's run
        rows = protocol_rows(coco_protocol)
        # consecutive rows (0.50:0.95 on the grid) are taken as views, not copies
        own = slice(int(rows[0]), int(rows[-1]) + 1) if (np.diff(rows) == 1).all() else rows
        coco = CocoEvaluation(coco_run.precision[own], coco_run.recall[own], coco_run.scores[own],
                              coco_run.summary(rows, COCO_PARAMS), COCO_PARAMS)
        voc_aps, roc_curves, confusion, _, engine = side()
    scored = np.array([np.isfinite(ap.ap_11pt) for ap in voc_aps], dtype=bool)
    return EvaluationResult(
        classes=list(gt.classes),
        coco={k: float("nan") if v == -1 else v for k, v in coco.stats.items()},
        voc={"mAP_11pt": _mean_where(np.array([ap.ap_11pt for ap in voc_aps]), scored),
             "mAP_allpt": _mean_where(np.array([ap.ap_allpt for ap in voc_aps]), scored)},
        per_class=_per_class(gt, truth, dets, coco, voc_aps),
        pr_curves=_pr_curves(coco, iou_pr, pr_thresholds),
        roc_curves=roc_curves,
        confusion=confusion,
        small_objects=small,
        engine=engine,
        settings={"coco": {"iou_thresholds": IOU_THRESHOLDS.tolist(), "max_dets": list(MAX_DETS),
                           "area_ranges": {k: list(v) for k, v in AREA_RANGES.items()}},
                  "voc": {"iou": VOC_IOU, "tp_rule": "IoU >= threshold (VOCevaldet.m)",
                          "plus_one_pixel": True},
                  "iou_pr": list(iou_pr), "confusion_score": confusion_score, "confusion_iou": confusion_iou,
                  "n_images": len(gt.records), "n_detections": len(dets), "dataset": gt.name},
    )


def _side_metrics(gt: DetectionDataset, truth: _GroundTruth, dets: DetectionResults, score_rank: np.ndarray,
                  coco_truth: CocoBoxes, coco_dets: CocoBoxes, small_objects: SmallObjectSettings | None,
                  in_region: np.ndarray | None, confusion_score: float, confusion_iou: float
                  ) -> tuple[list[VocAP], Curves, ConfusionMatrix, dict[str, Any], dict[str, str]]:
    """VOC APs, ROC curves, the confusion matrix, the TIDE of ``small_objects``, and the engine's record
    (package versions: ``importlib.metadata`` costs 15 ms, spent here beside the matching)."""
    n_cls = gt.num_classes
    det_image = position_in(truth.image_ids, dets.image_id)
    ignored = truth.difficult | truth.iscrowd  # VOC has no crowd regions: they count like difficult boxes
    matches = match_devkit(to_devkit(truth.boxes), truth.label * len(truth.image_ids) + truth.image, ignored,
                           to_devkit(dets.boxes), dets.label * len(truth.image_ids) + det_image, dets.score,
                           VOC_IOU, score_rank=score_rank)
    n_positive = np.bincount(truth.label[~ignored], minlength=n_cls)
    in_class = _split_by_class(dets.label[matches.order], n_cls)
    voc_aps = [devkit_ap(matches.tp[idx], matches.fp[idx], int(n_positive[c]))
               for c, idx in enumerate(in_class)]
    roc = _roc_curves(matches, dets, in_class, n_positive, len(truth.image_ids))
    roc.csv_text(list(gt.classes), ROC_COLUMNS)  # its file's text too (the largest file), kept in ``roc``
    confusion = confusion_matrix(gt.classes, truth.boxes, truth.label, truth.image, ignored, dets.boxes,
                                 dets.label, det_image, dets.score, score_thresh=confusion_score,
                                 iou_thresh=confusion_iou, score_rank=score_rank)
    done: dict[str, Any] = {}
    if small_objects is not None:
        category_ids = list(gt.category_ids or [])
        done["tide"] = tide_section(coco_truth, coco_dets, truth.image_ids, len(category_ids), small_objects,
                                    score_rank)
    return voc_aps, roc, confusion, done, _engine()


def _mean_where(values: np.ndarray, mask: np.ndarray) -> float:
    return float(np.mean(values[mask])) if mask.any() else float("nan")


def _per_class(gt: DetectionDataset, truth: _GroundTruth, dets: DetectionResults, coco: CocoEvaluation,
               voc_aps: list[VocAP]) -> list[dict[str, Any]]:
    n_gt = np.bincount(truth.label[~truth.iscrowd], minlength=gt.num_classes)
    n_det = np.bincount(dets.label, minlength=gt.num_classes)
    aps = _class_aps(coco)
    return [{"class": name, "n_gt": int(n_gt[c]), "n_det": int(n_det[c]),
             **{key: float(values[c]) for key, values in aps.items()},
             "voc_ap_11pt": voc_aps[c].ap_11pt, "voc_ap_allpt": voc_aps[c].ap_allpt}
            for c, name in enumerate(gt.classes)]


def _class_aps(coco: CocoEvaluation) -> dict[str, np.ndarray]:
    """AP, AP50, AP75, APs, APm, APl of every class (:meth:`CocoEvaluation.class_ap`, NaN without ground
    truth) at once. A class's (area range) block of the arrays is all -1 or all valid, so each value is the
    mean of one row of a contiguous copy: the same pairwise sum over the same values as ``class_ap``."""
    areas = list(coco.params.area_ranges)
    wanted = {"AP": (None, "all"), "AP50": (0.5, "all"), "AP75": (0.75, "all"), "APs": (None, "small"),
              "APm": (None, "medium"), "APl": (None, "large")}
    p = np.ascontiguousarray(np.moveaxis(coco.precision[..., -1], (2, 3), (0, 1)))  # (K, A, T, R)
    valid = p > -1
    if not (valid.all(axis=(2, 3)) | ~valid.any(axis=(2, 3))).all():  # not pycocotools' arrays: one by one
        return {key: np.array([coco.class_ap(c, iou, area) for c in range(p.shape[0])])
                for key, (iou, area) in wanted.items()}
    out = {}
    for key, (iou, area) in wanted.items():
        block = p[:, areas.index(area)]
        block = block.reshape(len(p), -1) if iou is None else block[:, coco.params.threshold_index(iou)]
        with np.errstate(invalid="ignore", divide="ignore"):
            out[key] = np.where(valid[:, areas.index(area)].any(axis=(1, 2)),
                                np.add.reduce(block, axis=1) / block.shape[1], np.nan)
    return out


def _split_by_class(labels_in_order: np.ndarray, n_cls: int) -> list[np.ndarray]:
    """Positions (into the evaluation order) of each class's detections, keeping the order (16-bit labels
    take NumPy's radix sort)."""
    labels = labels_in_order.astype(np.int16) if n_cls < 2**15 else labels_in_order
    by_class = np.argsort(labels, kind="stable")
    bounds = np.searchsorted(labels_in_order[by_class], np.arange(n_cls + 1))
    return [by_class[bounds[c]:bounds[c + 1]] for c in range(n_cls)]


def _pr_curves(coco: CocoEvaluation, iou_pr: tuple[float, ...], thresholds: list[int]) -> Curves:
    """COCO's interpolated PR curve (area all, maxDets 100) of every class with ground truth, per IoU."""
    t = np.array(thresholds, dtype=np.int64)
    precision = coco.precision[t][:, :, :, 0, -1]  # (len(iou_pr), R, K)
    scores = coco.scores[t][:, :, :, 0, -1]
    has_gt = (precision > -1).all(axis=(0, 1))
    i, r, k = np.meshgrid(np.arange(len(t)), np.arange(len(RECALL_THRESHOLDS)), np.flatnonzero(has_gt),
                          indexing="ij")
    i, r, k = (np.moveaxis(a, 2, 0).ravel() for a in (i, r, k))  # class-major rows
    return Curves(k, {"iou": np.asarray(iou_pr, dtype=np.float64)[i], "recall": RECALL_THRESHOLDS[r],
                      "precision": precision[i, r, k], "score": scores[i, r, k]})


def _roc_curves(matches: VocMatches, dets: DetectionResults, in_class: list[np.ndarray],
                n_positive: np.ndarray, n_images: int) -> Curves:
    """Miss rate vs false positives per image, one point per distinct score, for classes with ground truth."""
    labels, fppi, miss, scores = [], [], [], []
    for c, idx in enumerate(in_class):
        if n_positive[c] == 0 or len(idx) == 0:
            continue
        score = dets.score[matches.order[idx]]
        # the last detection of each score: every point (reports/operating_point.py interpolates them)
        points = np.flatnonzero(np.r_[score[1:] != score[:-1], True])
        labels.append(np.full(len(points), c))
        fppi.append(np.cumsum(matches.fp[idx])[points] / n_images)
        miss.append(1.0 - np.cumsum(matches.tp[idx])[points] / n_positive[c])
        scores.append(score[points])

    def cat(parts: list[np.ndarray], dtype: type) -> np.ndarray:
        return np.concatenate(parts).astype(dtype) if parts else np.zeros(0, dtype)

    return Curves(cat(labels, np.int64), {"fppi": cat(fppi, np.float64), "miss_rate": cat(miss, np.float64),
                                          "score": cat(scores, np.float64)})


def _engine() -> dict[str, str]:
    from bench.environment import package_version

    def version(package: str) -> str:
        return package_version(package) or "not installed"

    return {"name": "bench.metrics", "version": version("smallobj-bench"),
            "coco": "numpy reimplementation of pycocotools COCOeval (bbox), equal to it bit for bit; checked "
                    f"against pycocotools {version('pycocotools')} in the tests",
            "voc": "numpy reimplementation of the PASCAL VOC devkit (VOCevaldet.m) AP",
            "kernels": native.engine()}
