"""The curves and the confusion matrix reconciled with independent matchers: the confusion matrix with the
COCO matcher, ROC end points with a one-detection-at-a-time devkit count, PR curves with pycocotools."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest

from bench.data.coco import read_coco
from bench.metrics import DetectionResults, evaluate
from bench.metrics.coco import CocoBoxes, CocoParams, evaluate_coco
from bench.metrics.confusion import confusion_matrix
from bench.metrics.voc import to_devkit
from tests.test_metrics_coco import pycocotools_eval, random_problem
from tests.test_metrics_curves import small_problem


def _clean_problem(seed: int) -> tuple[np.ndarray, ...]:
    """Continuous random boxes (no IoU ties), no crowd or difficult boxes, some clutter and wrong classes."""
    rng = np.random.default_rng(seed)
    n_gt, n_det, n_cls = 60, 160, 3
    gt_image = rng.integers(0, 8, n_gt)
    xy = rng.uniform(0, 80, (n_gt, 2))
    gt_boxes = np.c_[xy, xy + rng.uniform(5, 30, (n_gt, 2))]
    gt_label = rng.integers(0, n_cls, n_gt)
    src = rng.integers(0, n_gt, n_det)
    det_boxes = gt_boxes[src] + rng.normal(0, 3, (n_det, 4))
    det_boxes[:, 2:] = np.maximum(det_boxes[:, 2:], det_boxes[:, :2] + 1)
    det_label = np.where(rng.random(n_det) < 0.75, gt_label[src], rng.integers(0, n_cls, n_det))
    det_image = np.where(rng.random(n_det) < 0.15, rng.integers(0, 8, n_det), gt_image[src])
    score = rng.random(n_det)
    return gt_boxes, gt_label, gt_image, det_boxes, det_label, det_image, score


@pytest.mark.parametrize("seed", range(4))
def test_confusion_matrix_reconciles_with_the_coco_matcher(seed: int) -> None:
    gt_boxes, gt_label, gt_image, det_boxes, det_label, det_image, score = _clean_problem(seed)
    n_cls, thresh = 3, 0.3
    matrix = confusion_matrix([f"c{i}" for i in range(n_cls)], gt_boxes, gt_label, gt_image,
                              np.zeros(len(gt_label), bool), det_boxes, det_label, det_image, score,
                              score_thresh=thresh, iou_thresh=0.5).matrix
    above = score >= thresh
    # every detection above the score threshold lands in exactly one cell of its predicted column
    per_class = np.bincount(det_label[above], minlength=n_cls)
    np.testing.assert_array_equal(matrix[:, :n_cls].sum(axis=0), per_class)
    assert matrix[n_cls, n_cls] == 0
    # every box lands in exactly one cell of its row
    np.testing.assert_array_equal(matrix[:n_cls].sum(axis=1), np.bincount(gt_label, minlength=n_cls))
    # the COCO matcher at IoU 0.5 (area all, no maxDets cut) on the detections above the threshold
    keep = np.flatnonzero(above)
    gt_wh, det_wh = gt_boxes[:, 2:] - gt_boxes[:, :2], det_boxes[keep, 2:] - det_boxes[keep, :2]
    truth = CocoBoxes(gt_image + 1, gt_label, np.c_[gt_boxes[:, :2], gt_wh], np.prod(gt_wh, axis=1),
                      np.zeros(len(gt_label), bool), np.arange(1, len(gt_label) + 1))
    dets = CocoBoxes.detections(det_image[keep] + 1, det_label[keep], np.c_[det_boxes[keep, :2], det_wh],
                                score[keep])
    params = CocoParams(iou_thresholds=np.array([0.5]), area_ranges={"all": (0.0, 1e10)}, max_dets=(1000,))
    run = evaluate_coco(truth, dets, np.arange(1, 9), list(range(n_cls)), params)
    status, matched = run.match.outcome(0, 0)
    true_pos = status == 1
    cls_of = det_label[keep][run.match.matching.order]  # outcome() is in the matcher's order
    # TP: the diagonal per class; FP: the rest of each predicted column; FN: the rest of each true row
    np.testing.assert_array_equal(np.diag(matrix)[:n_cls], np.bincount(cls_of[true_pos], minlength=n_cls))
    fp = matrix[:, :n_cls].sum(axis=0) - np.diag(matrix)[:n_cls]
    np.testing.assert_array_equal(fp, np.bincount(cls_of[~true_pos], minlength=n_cls))
    fn = matrix[:n_cls].sum(axis=1) - np.diag(matrix)[:n_cls]
    used = np.zeros(len(gt_label), bool)
    used[matched[true_pos]] = True
    np.testing.assert_array_equal(fn, np.bincount(gt_label[~used], minlength=n_cls))


def _devkit_true_positives(ds, dets, c: int) -> tuple[int, int]:  # type: ignore[no-untyped-def]
    """(TP, non-difficult positives) of class ``c`` at IoU 0.5, one detection at a time (VOCevaldet.m)."""
    boxes = {r.image_id: (to_devkit(r.boxes[r.labels == c]), r.difficult[r.labels == c]) for r in ds.records}
    used = {k: np.zeros(len(v[1]), bool) for k, v in boxes.items()}
    tp = 0
    for k in np.argsort(-dets.score, kind="stable"):
        if dets.label[k] != c:
            continue
        gt, difficult = boxes[int(dets.image_id[k])]
        if not len(gt):
            continue
        d = to_devkit(dets.boxes[k:k + 1])[0]
        iw = np.maximum(np.minimum(gt[:, 2], d[2]) - np.maximum(gt[:, 0], d[0]) + 1, 0)
        ih = np.maximum(np.minimum(gt[:, 3], d[3]) - np.maximum(gt[:, 1], d[1]) + 1, 0)
        inter = iw * ih
        union = (d[2] - d[0] + 1) * (d[3] - d[1] + 1) + (gt[:, 2] - gt[:, 0] + 1) * (gt[:, 3] - gt[:, 1] + 1)
        overlap = inter / (union - inter)
        j = int(np.argmax(overlap))
        if overlap[j] >= 0.5 and not difficult[j] and not used[int(dets.image_id[k])][j]:
            used[int(dets.image_id[k])][j] = True
            tp += 1
    return tp, sum(int(((r.labels == c) & ~r.difficult).sum()) for r in ds.records)


def test_roc_end_point_is_the_devkit_recall_per_class() -> None:
    ds, dets = small_problem()
    roc = evaluate(ds, dets, small_objects=None).roc_curves
    for c in (0, 1):
        tp, n_pos = _devkit_true_positives(ds, dets, c)
        miss = roc.columns["miss_rate"][roc.label == c]
        assert tp > 0 and 1 - miss[-1] == pytest.approx(tp / n_pos, abs=1e-12)  # not tp / (n_pos + 1)


@pytest.mark.parametrize("seed", range(3))
def test_pr_curves_equal_pycocotools_precision_arrays(seed: int, tmp_path: Path) -> None:
    gt, dts = random_problem(seed + 20)
    (tmp_path / "gt.json").write_text(json.dumps(gt))
    (tmp_path / "dt.json").write_text(json.dumps(dts))
    reference = pycocotools_eval(tmp_path / "gt.json", tmp_path / "dt.json")
    ds = read_coco(tmp_path / "gt.json")
    result = evaluate(ds, DetectionResults.from_coco_json(tmp_path / "dt.json", ds), coco_gt=gt,
                      small_objects=None)
    pr = result.pr_curves
    sorted_ids = sorted(ds.category_ids)
    for c, cat in enumerate(ds.category_ids):
        k = sorted_ids.index(cat)  # pycocotools' class axis: sorted category ids
        for t, iou in ((0, 0.5), (5, 0.75)):
            expected = reference.eval["precision"][t, :, k, 0, 2]
            sel = (pr.label == c) & (pr.columns["iou"] == iou)
            if (expected == -1).all():
                assert not sel.any()  # no ground truth: no curve
                continue
            np.testing.assert_array_equal(pr.columns["precision"][sel], expected)
            np.testing.assert_array_equal(pr.columns["score"][sel], reference.eval["scores"][t, :, k, 0, 2])
            np.testing.assert_array_equal(pr.columns["recall"][sel], reference.params.recThrs)
