"""Seed 000's figures 1/6, 4 and 8 from run-directory files: the operating point, the class subset and the
images with small objects."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pandas as pd
import pytest
from fixtures_report import make_fake_run
from ultralytics.utils.metrics import ap_per_class

from bench.data.records import DetectionDataset, ImageRecord
from bench.metrics import DetectionResults, evaluate
from reports.operating_point import (
    CONFIDENCE_GRID,
    box_smooth,
    class_curve,
    model_operating_point,
    operating_point,
)
from reports.plots import qualitative, seed000
from reports.plots.style import NotApplicable
from reports.rundir import load_run


def _problem(seed: int = 0) -> tuple[DetectionDataset, DetectionResults, np.ndarray]:
    """3 classes on 40 images; each ground-truth box found exactly (IoU 1, a TP at every threshold) with
    probability 0.8, plus false positives in an empty corner. Returns GT, detections and the TP flags."""
    rng = np.random.default_rng(seed)
    records, ids, labels, boxes, scores, tp = [], [], [], [], [], []
    for i in range(40):
        n = int(rng.integers(1, 5))
        xy = rng.uniform(0, 90, (n, 2))
        gt = np.concatenate([xy, xy + rng.uniform(8, 40, (n, 2))], axis=1)
        cls = rng.integers(0, 3, n)
        records.append(ImageRecord(i + 1, f"{i}.jpg", 200, 200, boxes=gt, labels=cls))
        for box, c in zip(gt, cls, strict=True):
            if rng.random() < 0.8:
                ids.append(i + 1), labels.append(c), boxes.append(box), tp.append(True)
                scores.append(rng.beta(4, 2))
        for _ in range(int(rng.integers(0, 4))):
            corner = rng.uniform(150, 180, 2)
            ids.append(i + 1), labels.append(int(rng.integers(0, 3))), tp.append(False)
            boxes.append(np.concatenate([corner, corner + 15])), scores.append(rng.beta(2, 4))
    ds = DetectionDataset(["a", "b", "c"], records, Path("."))
    dets = DetectionResults(np.array(ids), np.array(labels), np.array(boxes), np.array(scores))
    return ds, dets, np.array(tp)


def test_operating_point_matches_ultralytics(tmp_path: Path):
    """P, R and the confidence from the run's files equal ultralytics' ap_per_class on the same detections
    (every match is unambiguous here: exact copies or boxes in an empty corner)."""
    for seed in range(3):
        ds, dets, tp = _problem(seed)
        evaluate(ds, dets).save(tmp_path)
        metrics = json.loads((tmp_path / "metrics.json").read_text())
        ours = model_operating_point(metrics, pd.read_csv(tmp_path / "roc_curves.csv"))
        target = np.concatenate([r.labels for r in ds.records])
        out = ap_per_class(np.repeat(tp[:, None], 10, axis=1), dets.score, dets.label, target)
        p, r, f1_curve = out[2], out[3], out[9]
        assert ours is not None
        assert ours.confidence == pytest.approx(CONFIDENCE_GRID[box_smooth(f1_curve.mean(0)).argmax()])
        assert ours.precision == pytest.approx(p.mean(), abs=1e-9)
        assert ours.recall == pytest.approx(r.mean(), abs=1e-9)


def test_class_curve_raw_precision_and_ends():
    """Two boxes, 10 images: a TP at 0.8, an FP at 0.6, a TP at 0.4 and an FP at 0.2."""
    curve = pd.DataFrame({"class": "a", "fppi": [0.0, 0.1, 0.1, 0.2], "miss_rate": [0.5, 0.5, 0.0, 0.0],
                          "score": [0.8, 0.6, 0.4, 0.2]})
    grid = np.array([0.9, 0.8, 0.6, 0.4, 0.2, 0.1])
    precision, recall = class_curve(curve, 2, 10, grid)
    assert recall.tolist() == pytest.approx([0.0, 0.5, 0.5, 1.0, 1.0, 1.0])
    assert precision.tolist() == pytest.approx([1.0, 1.0, 0.5, 2 / 3, 0.5, 0.5])  # the trailing FP counts
    assert [a.tolist() for a in class_curve(curve.iloc[:0], 2, 10, grid)] == [[0.0] * 6, [0.0] * 6]


def test_class_without_detections_counts_as_zero():
    curve = pd.DataFrame({"class": "a", "fppi": [0.0], "miss_rate": [0.0], "score": [0.9]})
    alone = operating_point(curve, {"a": 1}, 1)
    both = operating_point(curve, {"a": 1, "b": 3, "c": 0}, 1)  # c has no box: left out
    assert alone.precision == 1.0 and alone.recall == 1.0
    assert both.precision == 0.5 and both.recall == 0.5


def test_box_smooth_is_a_centred_moving_average():
    values = np.zeros(100)
    values[50] = 11.0
    smoothed = box_smooth(values, 0.1)  # a window of 11, as ultralytics' smooth(y, 0.1)
    assert len(smoothed) == 100 and smoothed[45:56].tolist() == pytest.approx([1.0] * 11)
    assert smoothed[44] == 0 and smoothed[56] == 0


@pytest.fixture()
def run(tmp_path: Path):
    return load_run(make_fake_run(tmp_path / "run"))


def test_yolo_family_table_reads_the_run(run):
    table = seed000.yolo_family_table(run)
    assert table["model"].tolist() == ["yolov5n"]  # the SSD model is not of the family
    metrics = json.loads((run.root / "models" / "yolov5n" / "metrics.json").read_text())
    row = table.iloc[0]
    assert row["mAP50"] == 0.0 and row["mAP50-95"] == pytest.approx(100 * metrics["coco"]["AP"])
    point = model_operating_point(metrics, run.models["yolov5n"].roc_curves)
    assert row["P"] == pytest.approx(100 * point.precision) and row["R"] == pytest.approx(100 * point.recall)


def test_class_subset_prefers_the_animals(run):
    classes, why = seed000.class_subset(run)
    assert classes == ["bird"] and "animal classes (bird)" in why
    run.manifest["data"]["classes"] = ["bottle", "boat"]
    classes, why = seed000.class_subset(run)
    assert classes == ["bottle", "boat"] and why.startswith("no animal class in this run")


def test_class_shares_sum_to_100():
    confusion = {"classes": ["cat", "dog", "background"], "matrix": [[6, 2, 2], [1, 3, 0], [4, 1, 0]]}
    shares = seed000.class_shares(confusion, ["cat", "dog"])
    assert shares.loc["cat", ["correct", "as another class", "missed"]].tolist() == [60.0, 20.0, 20.0]
    assert shares.loc["dog", "correct"] == 75.0
    frame = seed000.subset_confusion(confusion, ["cat"])
    assert frame.loc["cat"].tolist() == [60.0, 20.0, 20.0]  # cat, other classes, missed


def test_qualitative_picks_the_images_with_most_small_boxes(run):
    gt = run.test_gt
    counts = qualitative.small_counts(gt)
    chosen = qualitative.choose_images(run, limit=2)
    assert [c.small for c in chosen] == sorted(counts.values(), reverse=True)[:2]
    assert all(c.path.is_file() and c.path.parent.name == "test" for c in chosen)
    dets = qualitative.model_detections(run, {c.image_id for c in chosen})
    assert set(dets) == {"ssd300", "yolov5n"}  # finished models only
    assert all(d["score"] >= qualitative.SCORE_THRESHOLD and d["image_id"] in {c.image_id for c in chosen}
               for entries in dets.values() for d in entries)


def test_qualitative_says_where_it_looked_when_images_are_absent(run):
    run.manifest["data"]["root"] = str(run.root / "elsewhere")
    with pytest.raises(NotApplicable, match="not readable here"):
        qualitative.choose_images(run)
