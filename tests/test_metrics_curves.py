"""Confusion matrix, PR and ROC curves, and the files the result is saved to and read back from."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest

from bench.data.records import DetectionDataset, ImageRecord
from bench.metrics import DetectionResults, evaluate, load_result
from bench.metrics.confusion import confusion_matrix

CAT, DOG, BG = 0, 1, 2


def confusion(det_boxes: list, det_label: list, det_score: list, *, score: float = 0.25, iou: float = 0.5,
              ignored: tuple[bool, bool] = (False, False)) -> np.ndarray:
    gt_boxes = np.array([[0, 0, 10, 10], [20, 0, 30, 10]], dtype=float)  # a cat and a dog in one image
    return confusion_matrix(["cat", "dog"], gt_boxes, np.array([CAT, DOG]), np.zeros(2), np.array(ignored),
                            np.array(det_boxes, dtype=float).reshape(-1, 4), np.array(det_label),
                            np.zeros(len(det_label)), np.array(det_score, dtype=float),
                            score_thresh=score, iou_thresh=iou).matrix


def test_confusion_cells() -> None:
    m = confusion([[0, 0, 10, 10], [20, 0, 30, 10], [50, 50, 60, 60], [0, 0, 10, 10]],
                  [CAT, CAT, DOG, CAT], [0.9, 0.8, 0.7, 0.1])
    expected = np.zeros((3, 3), int)
    expected[CAT, CAT] = 1  # cat found
    expected[DOG, CAT] = 1  # dog taken for a cat
    expected[BG, DOG] = 1  # a dog where there is nothing; the 0.1 detection is below the score threshold
    np.testing.assert_array_equal(m, expected)


def test_confusion_is_class_aware_first_then_score_ordered() -> None:
    # a cat detection scores higher on the dog box, but the dog detection gets it in the class-aware pass
    m = confusion([[20, 0, 30, 10], [20, 0, 30, 10]], [CAT, DOG], [0.9, 0.6])
    assert m[DOG, DOG] == 1 and m[BG, CAT] == 1 and m[CAT, BG] == 1 and m.sum() == 3
    # two dog detections on one dog box: one-to-one, the higher score wins, the other is background
    m = confusion([[20, 0, 30, 10], [21, 0, 30, 10]], [DOG, DOG], [0.5, 0.7])
    assert m[DOG, DOG] == 1 and m[BG, DOG] == 1


def test_confusion_thresholds_and_ignored_ground_truth() -> None:
    half = [[0, 0, 10, 5]]  # IoU 0.5 with the cat
    assert confusion(half, [CAT], [0.9], iou=0.5)[CAT, CAT] == 1
    assert confusion(half, [CAT], [0.9], iou=0.51)[BG, CAT] == 1
    assert confusion(half, [CAT], [0.9], score=0.95)[CAT, BG] == 1
    m = confusion(half, [CAT], [0.9], ignored=(True, False))  # detections on crowd/difficult boxes: dropped
    assert m[BG].sum() == 0 and m[CAT].sum() == 0 and m[DOG, BG] == 1


def small_problem() -> tuple[DetectionDataset, DetectionResults]:
    rng = np.random.default_rng(0)
    records, det_rows = [], []
    for i in range(6):
        xy = rng.uniform(0, 60, (3, 2))
        boxes = np.c_[xy, xy + rng.uniform(5, 30, (3, 2))]
        records.append(ImageRecord(i, f"{i}.jpg", 100, 100, boxes=boxes, labels=[0, 1, i % 2],
                                   difficult=[False, False, i == 0]))
        for box, label in zip(boxes, [0, 1, i % 2], strict=True):
            det_rows.append((i, label if rng.random() < 0.8 else 1 - label, box + rng.normal(0, 2, 4),
                             np.round(rng.random(), 1)))
        det_rows.append((i, 2, np.array([1.0, 1, 9, 9]), 0.5))
    ds = DetectionDataset(["a", "b", "never"], records, Path("."))
    image, label, boxes, score = zip(*det_rows, strict=True)
    return ds, DetectionResults(image, label, np.array(boxes), score)


def test_pr_curve_means_are_the_coco_ap() -> None:
    ds, dets = small_problem()
    result = evaluate(ds, dets)
    pr = result.pr_curves
    assert set(np.unique(pr.label)) == {0, 1}  # the class without ground truth has no curve
    for c in (0, 1):
        for iou, key in ((0.5, "AP50"), (0.75, "AP75")):
            sel = (pr.label == c) & (pr.columns["iou"] == iou)
            assert sel.sum() == 101
            assert np.mean(pr.columns["precision"][sel]) == result.per_class[c][key]


def test_roc_curve_ends_at_voc_recall() -> None:
    ds, dets = small_problem()
    result = evaluate(ds, dets)
    roc = result.roc_curves
    for c in (0, 1):
        sel = roc.label == c
        miss, fppi, score = (roc.columns[k][sel] for k in ("miss_rate", "fppi", "score"))
        assert np.all(np.diff(score) < 0) and np.all(np.diff(fppi) >= 0) and np.all(np.diff(miss) <= 0)
        n_pos = sum(int(((r.labels == c) & ~r.difficult).sum()) for r in ds.records)
        n_det = int((dets.label == c).sum())
        # detections on difficult boxes are neither TP nor FP
        assert fppi[-1] * len(ds) + (1 - miss[-1]) * n_pos <= n_det
        assert 0 < miss[0] <= 1


def test_save_and_load_round_trip(tmp_path: Path) -> None:
    ds, dets = small_problem()
    result = evaluate(ds, dets, confusion_score=0.3, confusion_iou=0.4)
    result.save(tmp_path)
    metrics = json.loads((tmp_path / "metrics.json").read_text())
    assert {"coco", "voc", "per_class", "engine", "settings", "files", "roc_definition"} <= set(metrics)
    assert metrics["per_class"][2]["AP"] is None and metrics["per_class"][2]["n_gt"] == 0
    assert "miss rate = 1 - recall at IoU 0.5" in metrics["roc_definition"]
    confusion_file = json.loads((tmp_path / "confusion.json").read_text())
    assert confusion_file["classes"][-1] == "background"
    assert (confusion_file["score_thresh"], confusion_file["iou_thresh"]) == (0.3, 0.4)
    assert "rows = ground truth, columns = prediction" in confusion_file["definition"]
    rows = np.array(confusion_file["matrix"]).sum(axis=1)
    norm = np.array(confusion_file["normalized"], dtype=float)
    np.testing.assert_allclose(np.nansum(norm, axis=1)[rows > 0], 1.0)
    assert (tmp_path / "pr_curves.csv").read_text().splitlines()[0] == "class,iou,recall,precision,score"
    assert (tmp_path / "roc_curves.csv").read_text().splitlines()[0] == "class,fppi,miss_rate,score"

    loaded = load_result(tmp_path)
    assert loaded.coco == pytest.approx(result.coco, nan_ok=True) and loaded.voc == result.voc
    np.testing.assert_array_equal(loaded.confusion.matrix, result.confusion.matrix)
    for name in ("pr_curves", "roc_curves"):
        ours, theirs = getattr(loaded, name), getattr(result, name)
        np.testing.assert_array_equal(ours.label, theirs.label)
        for key, values in theirs.columns.items():
            np.testing.assert_array_equal(ours.columns[key], values)  # repr floats round-trip exactly



def reference_confusion(gt_boxes: np.ndarray, gt_label: np.ndarray, gt_image: np.ndarray,
                        ignored: np.ndarray, det_boxes: np.ndarray, det_label: np.ndarray,
                        det_image: np.ndarray, score: np.ndarray, n_cls: int, score_thresh: float,
                        iou_thresh: float) -> np.ndarray:
    """The definition, one detection at a time."""
    def iou(a: np.ndarray, b: np.ndarray) -> float:
        iw = max(min(a[2], b[2]) - max(a[0], b[0]), 0)
        ih = max(min(a[3], b[3]) - max(a[1], b[1]), 0)
        return iw * ih / ((a[2] - a[0]) * (a[3] - a[1]) + (b[2] - b[0]) * (b[3] - b[1]) - iw * ih)

    matrix = np.zeros((n_cls + 1, n_cls + 1), int)
    used = ignored.copy()
    for image in np.unique(np.r_[gt_image, det_image]):
        dets = [d for d in np.argsort(-score, kind="stable")
                if det_image[d] == image and score[d] >= score_thresh]
        gts = np.flatnonzero(gt_image == image)
        matched = set()
        for class_aware in (True, False):
            for d in dets:
                if d in matched:
                    continue
                ok = [(iou(det_boxes[d], gt_boxes[g]), -k, g) for k, g in enumerate(gts)
                      if not used[g] and (not class_aware or gt_label[g] == det_label[d])
                      and iou(det_boxes[d], gt_boxes[g]) >= iou_thresh]
                if ok:
                    g = max(ok)[2]  # highest IoU, the first box on ties
                    used[g] = True
                    matched.add(d)
                    matrix[gt_label[g], det_label[d]] += 1
        for d in dets:
            if d not in matched and not any(ignored[g] and iou(det_boxes[d], gt_boxes[g]) >= iou_thresh
                                            for g in gts):
                matrix[n_cls, det_label[d]] += 1
    for g in np.flatnonzero(~used):
        matrix[gt_label[g], n_cls] += 1
    return matrix


@pytest.mark.parametrize("seed", range(4))
def test_confusion_equals_one_detection_at_a_time(seed: int) -> None:
    rng = np.random.default_rng(seed)
    n_gt, n_det, n_cls = 40, 90, 3
    gt_image = rng.integers(0, 6, n_gt)
    gt_image[:12] = 0  # one crowded image: exercises a wider padding bucket
    xy = rng.uniform(0, 50, (n_gt, 2))
    gt_boxes = np.c_[xy, xy + rng.uniform(5, 25, (n_gt, 2))]
    gt_label = rng.integers(0, n_cls, n_gt)
    ignored = rng.random(n_gt) < 0.1
    src = rng.integers(0, n_gt, n_det)
    det_boxes = gt_boxes[src] + rng.normal(0, 3, (n_det, 4))
    det_boxes[:, 2:] = np.maximum(det_boxes[:, 2:], det_boxes[:, :2] + 1)
    det_label = np.where(rng.random(n_det) < 0.7, gt_label[src], rng.integers(0, n_cls, n_det))
    det_image = np.where(rng.random(n_det) < 0.1, rng.integers(0, 8, n_det), gt_image[src])
    score = np.round(rng.random(n_det), 1)
    for score_thresh, iou_thresh in ((0.25, 0.5), (0.0, 0.3)):
        args = (gt_boxes, gt_label, gt_image, ignored, det_boxes, det_label, det_image, score)
        ours = confusion_matrix([f"c{i}" for i in range(n_cls)], *args, score_thresh=score_thresh,
                                iou_thresh=iou_thresh)
        reference = reference_confusion(*args, n_cls, score_thresh, iou_thresh)
        np.testing.assert_array_equal(ours.matrix, reference)


def test_pr_curves_at_other_coco_thresholds() -> None:
    ds, dets = small_problem()
    result = evaluate(ds, dets, iou_pr=(0.6, 0.95))
    assert set(result.pr_curves.columns["iou"]) == {0.6, 0.95}
    with pytest.raises(ValueError, match="not among the COCO thresholds"):
        evaluate(ds, dets, iou_pr=(0.42,))
