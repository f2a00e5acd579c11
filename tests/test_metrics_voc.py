"""VOC devkit AP: the shared fixtures' published numbers, a line-by-line devkit port, and sanity checks."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest

from bench.data.records import DetectionDataset, ImageRecord
from bench.data.voc import read_voc
from bench.metrics import DetectionResults, devkit_ap, evaluate, match_devkit
from bench.metrics.voc import to_devkit


def reference_voc_eval(gt: dict[int, tuple[np.ndarray, np.ndarray]], image: np.ndarray, score: np.ndarray,
                       boxes: np.ndarray, threshold: float) -> tuple[float, float]:
    """py-faster-rcnn ``voc_eval.py`` for one class, per detection, stable sort and ``>=`` (VOCevaldet.m)."""
    npos = sum(int((~difficult).sum()) for _, difficult in gt.values())
    used = {i: np.zeros(len(b), bool) for i, (b, _) in gt.items()}
    order = np.argsort(-score, kind="stable")
    tp, fp = np.zeros(len(order)), np.zeros(len(order))
    for d, k in enumerate(order):
        bb = boxes[k]
        bbgt, difficult = gt.get(int(image[k]), (np.zeros((0, 4)), np.zeros(0, bool)))
        ovmax = -np.inf
        if len(bbgt):
            ixmin = np.maximum(bbgt[:, 0], bb[0])
            iymin = np.maximum(bbgt[:, 1], bb[1])
            ixmax = np.minimum(bbgt[:, 2], bb[2])
            iymax = np.minimum(bbgt[:, 3], bb[3])
            iw = np.maximum(ixmax - ixmin + 1.0, 0.0)
            ih = np.maximum(iymax - iymin + 1.0, 0.0)
            inters = iw * ih
            uni = ((bb[2] - bb[0] + 1.0) * (bb[3] - bb[1] + 1.0)
                   + (bbgt[:, 2] - bbgt[:, 0] + 1.0) * (bbgt[:, 3] - bbgt[:, 1] + 1.0) - inters)
            overlaps = inters / uni
            ovmax, jmax = np.max(overlaps), np.argmax(overlaps)
        if ovmax >= threshold:
            if not difficult[jmax]:
                if not used[int(image[k])][jmax]:
                    tp[d] = 1.0
                    used[int(image[k])][jmax] = True
                else:
                    fp[d] = 1.0
        else:
            fp[d] = 1.0
    fp, tp = np.cumsum(fp), np.cumsum(tp)
    rec = tp / float(npos)
    prec = tp / np.maximum(tp + fp, np.finfo(np.float64).eps)
    ap11 = 0.0
    for t in np.arange(0.0, 1.1, 0.1):
        p = 0 if np.sum(rec >= t) == 0 else np.max(prec[rec >= t])
        ap11 = ap11 + p / 11.0
    mrec = np.concatenate(([0.0], rec, [1.0]))
    mpre = np.concatenate(([0.0], prec, [0.0]))
    for i in range(mpre.size - 1, 0, -1):
        mpre[i - 1] = np.maximum(mpre[i - 1], mpre[i])
    i = np.where(mrec[1:] != mrec[:-1])[0]
    return float(ap11), float(np.sum((mrec[i + 1] - mrec[i]) * mpre[i + 1]))


def read_txt_boxes(folder: Path, with_score: bool) -> tuple[np.ndarray, list[str], np.ndarray, np.ndarray]:
    """``name [score] a b c d`` files (sorted by name, lines in order): image index, names, scores, boxes."""
    image, names, scores, numbers = [], [], [], []
    for i, path in enumerate(sorted(folder.glob("*.txt"))):
        for line in path.read_text().splitlines():
            if line.strip():
                parts = line.split()
                image.append(i)
                names.append(parts[0])
                scores.append(float(parts[1]) if with_score else 1.0)
                numbers.append([float(v) for v in parts[1 + with_score:]])
    return np.array(image), names, np.array(scores), np.array(numbers).reshape(-1, 4)


@pytest.mark.parametrize("iou", [0.1, 0.3, 0.5, 0.75])
def test_padilla_case1_published_values(shared_data: Path, iou: float) -> None:
    """Tied scores: only a stable sort, +1-pixel IoU and TP iff IoU >= t give the published APs."""
    folder = shared_data / "voc-tiny-padilla-case1"
    expected = json.loads((folder / "expected.json").read_text())
    gi, _, _, g = read_txt_boxes(folder / "gts", with_score=False)
    di, _, ds, d = read_txt_boxes(folder / "dets", with_score=True)
    gt_devkit = np.c_[g[:, :2], g[:, :2] + g[:, 2:]]  # x y w h -> x1 y1 x2 y2, as the helper fed voc_eval
    det_devkit = np.c_[d[:, :2], d[:, :2] + d[:, 2:]]
    m = match_devkit(gt_devkit, gi, np.zeros(len(gi), bool), det_devkit, di, ds, iou)
    ap = devkit_ap(m.tp, m.fp, len(gi))
    assert ap.ap_11pt == expected["variant_mAP_stable_sort"][f"iou{iou}_voc07_11pt"]
    assert ap.ap_allpt == expected["variant_mAP_stable_sort"][f"iou{iou}_allpoint"]
    assert ap.ap_11pt == pytest.approx(expected["upstream_expected"][f"iou{iou}_voc07_11pt"], abs=1e-10)
    assert ap.ap_allpt == pytest.approx(expected["upstream_expected"][f"iou{iou}_allpoint"], abs=1e-10)


@pytest.mark.parametrize("iou", [0.5, 0.75])
def test_toy_cats_published_values(shared_data: Path, iou: float) -> None:
    folder = shared_data / "voc-toy-cats-padilla"
    expected = json.loads((folder / "expected.json").read_text())["per_class_AP"]
    ds = read_voc(folder / "gts_vocpascal_format")
    files = [Path(r.file_name).stem for r in ds.records]
    gt_image = np.repeat(np.arange(len(ds)), [len(r.boxes) for r in ds.records])
    gt_boxes = to_devkit(np.concatenate([r.boxes for r in ds.records]))
    di, _, scores, det_boxes = read_txt_boxes(folder / "dets_classname_abs_xyx2y2", with_score=True)
    det_files = [p.stem for p in sorted((folder / "dets_classname_abs_xyx2y2").glob("*.txt"))]
    det_image = np.array([files.index(det_files[i]) for i in di])
    m = match_devkit(gt_boxes, gt_image, np.zeros(len(gt_image), bool), det_boxes, det_image, scores, iou)
    ap = devkit_ap(m.tp, m.fp, len(gt_image))
    assert (ap.ap_11pt, ap.ap_allpt) == (expected[f"iou{iou}_voc07_11pt"]["cat"],
                                         expected[f"iou{iou}_allpoint"]["cat"])


@pytest.mark.parametrize("seed", range(5))
def test_random_problems_equal_devkit_port(seed: int) -> None:
    rng = np.random.default_rng(seed)
    n_gt, n_det = 60, 150
    gt_image = rng.integers(0, 12, n_gt)
    xy = rng.integers(1, 80, (n_gt, 2)).astype(float)
    gt_boxes = np.c_[xy, xy + rng.integers(4, 40, (n_gt, 2))]
    difficult = rng.random(n_gt) < 0.15
    src = rng.integers(0, n_gt, n_det)
    det_boxes = gt_boxes[src] + rng.integers(-6, 7, (n_det, 4))  # integer jitter: IoUs exactly at t happen
    det_boxes[:, 2:] = np.maximum(det_boxes[:, 2:], det_boxes[:, :2] + 1)
    det_image = np.where(rng.random(n_det) < 0.2, rng.integers(0, 14, n_det), gt_image[src])
    score = np.round(rng.random(n_det), 1)  # many ties
    gt = {int(i): (gt_boxes[gt_image == i], difficult[gt_image == i]) for i in np.unique(gt_image)}
    for t in (0.3, 0.5, 0.7):
        m = match_devkit(gt_boxes, gt_image, difficult, det_boxes, det_image, score, t)
        ap = devkit_ap(m.tp, m.fp, int((~difficult).sum()))
        assert (ap.ap_11pt, ap.ap_allpt) == reference_voc_eval(gt, det_image, score, det_boxes, t)


def test_difficult_duplicates_and_threshold_equality() -> None:
    gt_boxes = np.array([[1, 1, 10, 10], [21, 1, 30, 10]], dtype=float)  # 10x10 devkit boxes
    difficult = np.array([False, True])
    det_boxes = np.array([[1, 1, 10, 10], [1, 1, 10, 10], [21, 1, 30, 10], [1, 1, 10, 5], [50, 50, 60, 60]],
                         dtype=float)
    m = match_devkit(gt_boxes, np.zeros(2), difficult, det_boxes, np.zeros(5), np.array([.9, .8, .7, .6, .5]),
                     0.5)
    # TP, repeat = FP, on a difficult box = neither, IoU exactly 0.5 but box used = FP, no overlap = FP
    assert m.tp.tolist() == [True, False, False, False, False]
    assert m.fp.tolist() == [False, True, False, True, True]
    fresh = match_devkit(gt_boxes[:1], np.zeros(1), difficult[:1], det_boxes[3:4], np.zeros(1), np.ones(1),
                         0.5)
    assert fresh.tp.tolist() == [True]  # IoU (10*5)/(10*10) = 0.5 exactly: a TP under >=


def test_class_without_detections_scores_zero_and_without_gt_is_excluded() -> None:
    records = [ImageRecord(0, "a.jpg", 50, 50, boxes=[[0, 0, 10, 10], [20, 20, 30, 30]], labels=[0, 1])]
    ds = DetectionDataset(["a", "b", "c"], records, Path("."))
    dets = DetectionResults([0, 0], [0, 2], [[0, 0, 10, 10], [0, 0, 5, 5]], [0.9, 0.8])
    result = evaluate(ds, dets)
    per_class = {r["class"]: r for r in result.per_class}
    # the devkit sums 11 x (1/11) in order, which is 1.0000000000000002
    assert per_class["a"]["voc_ap_11pt"] == pytest.approx(1.0, abs=1e-15)
    assert per_class["a"]["voc_ap_allpt"] == 1
    assert per_class["b"]["voc_ap_11pt"] == per_class["b"]["voc_ap_allpt"] == 0.0
    assert np.isnan(per_class["c"]["voc_ap_11pt"]) and per_class["c"]["n_det"] == 1
    assert result.voc == pytest.approx({"mAP_11pt": 0.5, "mAP_allpt": 0.5}, abs=1e-15)


def _gt_as_detections(ds: DetectionDataset) -> DetectionResults:
    boxes = np.concatenate([r.boxes for r in ds.records])
    return DetectionResults(np.repeat([r.image_id for r in ds.records], [len(r.boxes) for r in ds.records]),
                            np.concatenate([r.labels for r in ds.records]), boxes, np.ones(len(boxes)))


def test_voc2012_gt_as_detections_is_perfect(shared_data: Path) -> None:
    ds = read_voc(shared_data / "voc2012-100-padilla" / "gts" / "pascalvoc_format")
    result = evaluate(ds, _gt_as_detections(ds))
    assert result.voc == pytest.approx({"mAP_11pt": 1.0, "mAP_allpt": 1.0}, abs=1e-15)
    assert result.coco["AP"] == 1.0 and result.coco["AR100"] == 1.0
    assert sum(r["n_gt"] for r in result.per_class) == 273


def test_voc2012_real_detections_equal_devkit_port(shared_data: Path) -> None:
    folder = shared_data / "voc2012-100-padilla"
    ds = read_voc(folder / "gts" / "pascalvoc_format")
    names = (folder / "voc.names").read_text().split()
    files = [Path(r.file_name).stem for r in ds.records]
    det_files = [p.stem for p in sorted((folder / "dets" / "abs_xyx2y2").glob("*.txt"))]
    di, cls, score, boxes = read_txt_boxes(folder / "dets" / "abs_xyx2y2", with_score=True)
    label = np.array([ds.classes.index(names[int(c)]) for c in cls])
    image_id = np.array([ds.records[files.index(det_files[i])].image_id for i in di])
    dets = DetectionResults(image_id, label, boxes - [1, 1, 0, 0], score)  # devkit -> continuous
    result = evaluate(ds, dets)
    for c, row in enumerate(result.per_class):
        gt = {r.image_id: (to_devkit(r.boxes[r.labels == c]), r.difficult[r.labels == c]) for r in ds.records}
        if row["n_gt"] and any((~d).any() for _, d in gt.values()):
            sel = label == c
            assert (row["voc_ap_11pt"], row["voc_ap_allpt"]) == reference_voc_eval(
                gt, image_id[sel], score[sel], boxes[sel], 0.5)


def _indoor85(folder: Path, classes: list[str]) -> DetectionDataset:
    gi, names, _, boxes = read_txt_boxes(folder / "ground-truth", with_score=False)
    labels = np.array([classes.index(n) for n in names])
    n_images = len(list((folder / "ground-truth").glob("*.txt")))
    records = [ImageRecord(i, f"{i}.jpg", 640, 480, boxes=boxes[gi == i] - [1, 1, 0, 0],
                           labels=labels[gi == i]) for i in range(n_images)]
    return DetectionDataset(classes, records, folder)


def test_indoor85_gt_as_detections_is_perfect(shared_data: Path) -> None:
    folder = shared_data / "indoor85-cartucho"
    ds = _indoor85(folder, sorted(set(read_txt_boxes(folder / "ground-truth", with_score=False)[1])))
    perfect = evaluate(ds, _gt_as_detections(ds))
    assert perfect.voc == pytest.approx({"mAP_11pt": 1.0, "mAP_allpt": 1.0}, abs=1e-15)
    assert perfect.coco["AP"] == 1.0 and ds.num_classes == 30


def test_indoor85_detection_only_classes_do_not_count(shared_data: Path) -> None:
    """8 detected classes never occur in the GT: listed with n_gt 0 and NaN AP, and no mean moves."""
    folder = shared_data / "indoor85-cartucho"
    gt_names = sorted(set(read_txt_boxes(folder / "ground-truth", with_score=False)[1]))
    di, det_names, score, boxes = read_txt_boxes(folder / "detection-results", with_score=True)
    all_names = sorted(set(gt_names) | set(det_names))
    assert len(all_names) == 38

    def score_with(classes: list[str]) -> dict:
        keep = np.array([n in classes for n in det_names])
        label = np.array([classes.index(n) for n, k in zip(det_names, keep, strict=True) if k],
                         dtype=np.int64)
        dets = DetectionResults(di[keep], label, boxes[keep] - [1, 1, 0, 0], score[keep])
        return evaluate(_indoor85(folder, classes), dets)

    with_foreign, without = score_with(all_names), score_with(gt_names)
    assert with_foreign.voc == without.voc and with_foreign.coco == without.coco
    foreign = [r for r in with_foreign.per_class if r["class"] not in gt_names]
    assert len(foreign) == 8 and all(r["n_gt"] == 0 and r["n_det"] > 0 and np.isnan(r["AP"]) for r in foreign)
    no_dets = {r["class"]: r for r in without.per_class if r["n_det"] == 0}
    assert set(no_dets) == {"doll", "shelf"} and all(r["voc_ap_allpt"] == 0 for r in no_dets.values())
