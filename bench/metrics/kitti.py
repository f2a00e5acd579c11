"""KITTI 2D object evaluation: the official devkit protocol, and DF-SSD Table 3's VOC-style mAP.

**Official protocol** (``evaluate_object.cpp`` of the KITTI object devkit, ``eval_class`` /
``computeStatistics``; the same rules as the kitti-object-eval-python port of SECOND and OpenPCDet), image
boxes only:

* classes Car, Pedestrian, Cyclist; a detection matches at IoU > 0.7 (Car) or > 0.5 (Pedestrian, Cyclist),
  strictly greater, IoU without the +1 pixel;
* difficulties easy / moderate / hard: ground truth of height > 40 / 25 / 25 px, occlusion <= 0 / 1 / 2 and
  truncation <= 0.15 / 0.3 / 0.5; other ground truth of the class is ignored (it may absorb a detection but
  is never missed), as are the neighbouring classes Van (for Car) and Person_sitting (for Pedestrian);
  detections lower than the minimum height are ignored whatever their class;
* ground truth is visited in file order and takes, among the free detections, the one of highest score
  (first pass, which collects the scores of the true positives) or of highest overlap, preferring
  non-ignored detections (the passes at each score threshold);
* an unmatched detection whose intersection with a ``DontCare`` box exceeds the class's overlap threshold
  times the detection's own area is neither TP nor FP;
* 41 score thresholds chosen at evenly spaced recalls, precision made monotone, and AP the mean precision at
  recalls 1/40..1 (**R40**, the benchmark since 2019) or at 0, 0.1..1 (**R11**, every point 4th of the 41).

**Table 3** (``voc_map_with_ignore``): the VOC devkit's AP at IoU >= 0.5 over the data set's classes (the 3
merged ones in the ``kitti`` suite), plus the suite's one rule for ignore regions (``bench.metrics.ignore``,
also VisDrone's and TinyPerson's): a detection that is a false positive under the devkit rules and whose
intersection with a ``DontCare`` box is at least half of its own area (``IGNORE_COVER``) counts neither as
TP nor as FP. (The official protocol keeps the devkit's own "more than the class's overlap threshold".)

Scores are fractions (the devkit prints percentages).
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np

from bench.data.kitti import DONT_CARE, KittiObjects, parse_label_file
from bench.data.records import DetectionDataset
from bench.metrics.detections import DetectionResults
from bench.metrics.ignore import dataset_ignore_regions, in_ignore_regions
from bench.metrics.voc import devkit_ap, match_devkit, to_devkit

EVAL_CLASSES = ("Car", "Pedestrian", "Cyclist")
MIN_OVERLAP = {"Car": 0.7, "Pedestrian": 0.5, "Cyclist": 0.5}
NEIGHBOUR = {"Car": "van", "Pedestrian": "person_sitting"}
DIFFICULTIES = ("easy", "moderate", "hard")
MIN_HEIGHT = (40.0, 25.0, 25.0)
MAX_OCCLUSION = (0, 1, 2)
MAX_TRUNCATION = (0.15, 0.3, 0.5)
N_SAMPLE_PTS = 41
IGNORE_COVER = 0.5  # Table 3: intersection over detection area with an ignore region that makes it ignored
_CHUNK = 256  # images per vectorised block


@dataclass(frozen=True)
class Frame:
    """One image for the official protocol: every labelled object (DontCare included) and the detections."""

    gt_types: np.ndarray  # (G,) lower-case type names
    gt_boxes: np.ndarray  # (G, 4) x1 y1 x2 y2
    truncated: np.ndarray
    occluded: np.ndarray
    det_types: np.ndarray  # (D,) lower-case class names
    det_boxes: np.ndarray
    det_scores: np.ndarray

    @classmethod
    def of(cls, gt: KittiObjects, det_types: Sequence[str], det_boxes: np.ndarray, det_scores: np.ndarray
           ) -> Frame:
        return cls(np.array([t.lower() for t in gt.types], dtype=object).reshape(-1), gt.boxes, gt.truncated,
                   gt.occluded, np.array([t.lower() for t in det_types], dtype=object).reshape(-1),
                   np.asarray(det_boxes, dtype=np.float64).reshape(-1, 4),
                   np.asarray(det_scores, dtype=np.float64).reshape(-1))


def overlap(a: np.ndarray, b: np.ndarray, over_a: bool = False) -> np.ndarray:
    """``(len(a), len(b))`` IoU (or intersection over ``a``'s area), ``imageBoxOverlap``'s arithmetic."""
    x1 = np.maximum(a[:, None, 0], b[None, :, 0])
    y1 = np.maximum(a[:, None, 1], b[None, :, 1])
    w = np.minimum(a[:, None, 2], b[None, :, 2]) - x1
    h = np.minimum(a[:, None, 3], b[None, :, 3]) - y1
    inter = w * h
    area_a = ((a[:, 2] - a[:, 0]) * (a[:, 3] - a[:, 1]))[:, None]
    area_b = ((b[:, 2] - b[:, 0]) * (b[:, 3] - b[:, 1]))[None, :]
    with np.errstate(divide="ignore", invalid="ignore"):
        out = inter / area_a if over_a else inter / (area_a + area_b - inter)
    return np.where((w > 0) & (h > 0), out, 0.0)


@dataclass(frozen=True)
class _Block:
    """A chunk of images padded to the same numbers of ground truth and detections."""

    ov: np.ndarray  # (I, D, G) IoU
    ignored_gt: np.ndarray  # (I, G) -1 / 0 / 1 (padding -1)
    ignored_det: np.ndarray  # (I, D) -1 / 0 / 1 (padding -1)
    score: np.ndarray  # (I, D)
    in_dont_care: np.ndarray  # (I, D) covered by a DontCare box beyond the class's overlap threshold


def _block(frames: Sequence[Frame], cls: str, difficulty: int) -> tuple[_Block, int]:
    name = cls.lower()
    n_g = max([len(f.gt_types) for f in frames], default=0)
    n_d = max([len(f.det_types) for f in frames], default=0)
    block = _Block(np.zeros((len(frames), n_d, n_g)), np.full((len(frames), n_g), -1, np.int8),
                   np.full((len(frames), n_d), -1, np.int8), np.zeros((len(frames), n_d)),
                   np.zeros((len(frames), n_d), bool))
    n_gt = 0
    for i, f in enumerate(frames):
        height = f.gt_boxes[:, 3] - f.gt_boxes[:, 1]
        valid = np.where(f.gt_types == name, 1, np.where(f.gt_types == NEIGHBOUR.get(cls, "\0"), 0, -1))
        hard = ((f.occluded > MAX_OCCLUSION[difficulty]) | (f.truncated > MAX_TRUNCATION[difficulty])
                | (height <= MIN_HEIGHT[difficulty]))
        ignored = np.where((valid == 1) & ~hard, 0, np.where((valid == 0) | ((valid == 1) & hard), 1, -1))
        block.ignored_gt[i, :len(ignored)] = ignored
        n_gt += int((ignored == 0).sum())
        det_height = np.abs(f.det_boxes[:, 1] - f.det_boxes[:, 3])
        block.ignored_det[i, :len(det_height)] = np.where(det_height < MIN_HEIGHT[difficulty], 1,
                                                          np.where(f.det_types == name, 0, -1))
        block.score[i, :len(det_height)] = f.det_scores
        block.ov[i, :len(det_height), :len(ignored)] = overlap(f.det_boxes, f.gt_boxes)
        dont_care = f.gt_boxes[f.gt_types == DONT_CARE.lower()]
        if len(dont_care) and len(det_height):
            cover = overlap(f.det_boxes, dont_care, over_a=True)
            block.in_dont_care[i, :len(det_height)] = (cover > MIN_OVERLAP[cls]).any(axis=1)
    return block, n_gt


def _true_positive_scores(b: _Block, min_overlap: float) -> np.ndarray:
    """First pass (``compute_fp = false``): each ground truth takes the free candidate of highest score."""
    n_img, n_det, n_gt = b.ov.shape
    assigned = np.zeros((n_img, n_det), bool)
    scores = []
    rows = np.arange(n_img)
    for g in range(n_gt):
        cand = (b.ignored_det != -1) & ~assigned & (b.ov[:, :, g] > min_overlap)
        found = cand.any(axis=1) & (b.ignored_gt[:, g] != -1)
        j = np.argmax(np.where(cand, b.score, -np.inf), axis=1)
        assigned[rows[found], j[found]] = True
        counted = found & (b.ignored_gt[:, g] == 0) & (b.ignored_det[rows, j] == 0)
        scores.append(b.score[rows[counted], j[counted]])
    return np.concatenate(scores) if scores else np.zeros(0)


def _statistics(b: _Block, min_overlap: float, thresholds: np.ndarray) -> np.ndarray:
    """``(T, 3)`` summed tp, fp, fn at every threshold (``compute_fp = true``), all thresholds at once."""
    n_img, n_det, n_gt = b.ov.shape
    below = b.score[:, None, :] < thresholds[None, :, None]  # (I, T, D) ignored_threshold
    assigned = np.zeros((n_img, len(thresholds), n_det), bool)
    tp = np.zeros((n_img, len(thresholds)), np.int64)
    fn = np.zeros_like(tp)
    usable = (b.ignored_det != -1)[:, None, :] & ~below
    i_idx, t_idx = np.meshgrid(np.arange(n_img), np.arange(len(thresholds)), indexing="ij")
    for g in range(n_gt):
        cand = usable & ~assigned & (b.ov[:, None, :, g] > min_overlap)
        regular = cand & (b.ignored_det == 0)[:, None, :]
        has_regular = regular.any(axis=2)
        fallback = cand & (b.ignored_det == 1)[:, None, :]
        j = np.where(has_regular, np.argmax(np.where(regular, b.ov[:, None, :, g], -np.inf), axis=2),
                     np.argmax(fallback, axis=2))
        active = (b.ignored_gt[:, g] != -1)[:, None]
        found = (has_regular | fallback.any(axis=2)) & active
        fn += ~found & (b.ignored_gt[:, g] == 0)[:, None]
        tp += found & has_regular & (b.ignored_gt[:, g] == 0)[:, None]
        assigned[i_idx[found], t_idx[found], j[found]] = True
    counted = ~assigned & (b.ignored_det == 0)[:, None, :] & ~below
    fp = (counted & ~b.in_dont_care[:, None, :]).sum(axis=2)
    return np.stack([tp.sum(0), fp.sum(0), fn.sum(0)], axis=1)


def thresholds_for_recall(scores: np.ndarray, n_gt: int) -> np.ndarray:
    """``getThresholds``: the true-positive scores closest to recalls 0, 1/40, ..., 1 (at most 41)."""
    v = np.sort(scores)[::-1]
    chosen, current = [], 0.0
    for i, score in enumerate(v.tolist()):
        left = (i + 1) / n_gt
        right = (i + 2) / n_gt if i < len(v) - 1 else left
        if right - current < current - left and i < len(v) - 1:
            continue
        chosen.append(score)
        current += 1.0 / (N_SAMPLE_PTS - 1.0)
    return np.asarray(chosen[:N_SAMPLE_PTS], dtype=np.float64)  # the devkit's array has 41 slots


def class_precision(frames: Sequence[Frame], cls: str, difficulty: int) -> np.ndarray:
    """The devkit's 41 monotone precision values of one class and difficulty (``eval_class``)."""
    chunks = [frames[k:k + _CHUNK] for k in range(0, len(frames), _CHUNK)]
    blocks = [_block(chunk, cls, difficulty) for chunk in chunks]
    n_gt = sum(n for _, n in blocks)
    scores = np.concatenate([_true_positive_scores(b, MIN_OVERLAP[cls]) for b, _ in blocks] or [np.zeros(0)])
    thresholds = thresholds_for_recall(scores, n_gt) if n_gt else np.zeros(0)
    precision = np.zeros(N_SAMPLE_PTS)
    if len(thresholds):
        stats = sum(_statistics(b, MIN_OVERLAP[cls], thresholds) for b, _ in blocks)
        tp, fp = stats[:, 0].astype(np.float64), stats[:, 1].astype(np.float64)
        with np.errstate(divide="ignore", invalid="ignore"):
            precision[:len(thresholds)] = np.where(tp + fp > 0, tp / (tp + fp), 0.0)
        precision = np.maximum.accumulate(precision[::-1])[::-1]
    return precision


def ap_r40(precision: np.ndarray) -> float:
    return float(np.sum(precision[1:N_SAMPLE_PTS]) / 40)


def ap_r11(precision: np.ndarray) -> float:
    return float(np.sum(precision[0:N_SAMPLE_PTS:4]) / 11)


def evaluate_official(frames: Sequence[Frame], classes: Sequence[str] = EVAL_CLASSES) -> dict[str, Any]:
    """AP (R40 and R11) per class and difficulty, and their means over ``classes`` (fractions)."""
    per_class = {}
    for cls in classes:
        curves = [class_precision(frames, cls, d) for d in range(len(DIFFICULTIES))]
        per_class[cls] = {"min_overlap": MIN_OVERLAP[cls],
                          "AP_R40": dict(zip(DIFFICULTIES, map(ap_r40, curves), strict=True)),
                          "AP_R11": dict(zip(DIFFICULTIES, map(ap_r11, curves), strict=True))}
    means = {f"mAP_{r}_{d}": float(np.mean([per_class[c][f"AP_{r}"][d] for c in classes])) if classes
             else float("nan") for r in ("R40", "R11") for d in DIFFICULTIES}
    return {"protocol": "KITTI 2D object devkit (evaluate_object.cpp), image boxes", "classes": per_class,
            **means}


def frames_from(gt: DetectionDataset, dets: DetectionResults) -> list[Frame]:
    """One ``Frame`` per record, ground truth re-read from its KITTI label file (every type, as the devkit
    reads it, whatever the suite's class merge) and detections named by the data set's class names."""
    root = Path(gt.source or gt.image_root)
    order = np.argsort(dets.image_id, kind="stable")
    ids = dets.image_id[order]
    names = np.array(gt.classes, dtype=object)
    frames = []
    for record in gt.records:
        lo, hi = np.searchsorted(ids, record.image_id, "left"), np.searchsorted(ids, record.image_id, "right")
        sel = order[lo:hi]
        objects = parse_label_file(root / record.label_file)
        frames.append(Frame.of(objects, names[dets.label[sel]].tolist(), dets.boxes[sel], dets.score[sel]))
    return frames


def voc_map_with_ignore(gt: DetectionDataset, dets: DetectionResults, iou: float = 0.5,
                        cover: float = IGNORE_COVER) -> dict[str, Any]:
    """Table 3's number: VOC devkit AP per class with ignore regions (see the module docstring)."""
    image_ids = np.array([r.image_id for r in gt.records], dtype=np.int64)
    by_id = np.argsort(image_ids)
    det_image = by_id[np.searchsorted(image_ids[by_id], dets.image_id)]
    counts = [len(r.boxes) for r in gt.records]
    gt_image = np.repeat(np.arange(len(gt.records)), counts)

    def cat(key: str, empty: np.ndarray) -> np.ndarray:
        return np.concatenate([getattr(r, key) for r in gt.records]) if gt.records else empty

    boxes, labels = cat("boxes", np.zeros((0, 4))), cat("labels", np.zeros(0, np.int64))
    ignored = cat("difficult", np.zeros(0, bool)) | cat("iscrowd", np.zeros(0, bool))
    region_image, region_boxes = dataset_ignore_regions(gt.records)
    in_region = in_ignore_regions(dets.image_id, dets.boxes, region_image, region_boxes, cover)
    per_class, ap11, apall = [], [], []
    for c, name in enumerate(gt.classes):
        g, d = labels == c, dets.label == c
        m = match_devkit(to_devkit(boxes[g]), gt_image[g], ignored[g], to_devkit(dets.boxes[d]),
                         det_image[d], dets.score[d], iou)
        fp = m.fp & ~in_region[np.flatnonzero(d)[m.order]]
        n_pos = int((~ignored[g]).sum())
        ap = devkit_ap(m.tp, fp, n_pos)
        per_class.append({"class": name, "n_gt": n_pos, "ap_11pt": ap.ap_11pt, "ap_allpt": ap.ap_allpt,
                          "ignored_in_regions": int((m.fp & ~fp).sum())})
        if n_pos:
            ap11.append(ap.ap_11pt)
            apall.append(ap.ap_allpt)
    return {"mAP_11pt": float(np.mean(ap11)) if ap11 else float("nan"),
            "mAP_allpt": float(np.mean(apall)) if apall else float("nan"), "per_class": per_class,
            "rule": f"VOC devkit AP at IoU >= {iou}; an unmatched detection with at least {cover:.0%} of "
                    "its area inside an ignore region (DontCare) is neither TP nor FP"}


def kitti_metrics(gt: DetectionDataset, dets: DetectionResults) -> dict[str, Any]:
    """Everything a KITTI run reports: Table 3's mAP on the data set's classes, and the official protocol on
    those of Car, Pedestrian and Cyclist the model has by name (case-insensitive). With DF-SSD's merge that is
    Pedestrian alone, and validly so: the merged "pedestrian" adds Person_sitting, which the devkit ignores
    (as Pedestrian's neighbour class) either way."""
    out: dict[str, Any] = {"table3": voc_map_with_ignore(gt, dets)}
    lower = {c.lower() for c in gt.classes}
    official = [c for c in EVAL_CLASSES if c.lower() in lower]
    if official and all(r.label_file for r in gt.records):
        out["official"] = evaluate_official(frames_from(gt, dets), official)
    else:
        out["official"] = None
        out["official_skipped"] = ("none of the model's classes is Car, Pedestrian or Cyclist, the classes "
                                   "the official protocol scores")
    return out
