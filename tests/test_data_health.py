"""The data-problem policy: quality problems are counted and never stop a run; evaluation scores them exactly
as pycocotools and voc_eval do; training clips and drops them; ``strict`` turns them into errors."""

from __future__ import annotations

import contextlib
import copy
import io
import json
from pathlib import Path

import numpy as np
import pytest
from PIL import Image
from test_metrics_voc import reference_voc_eval

from bench.data.coco import read_coco
from bench.data.health import QUALITY_KINDS, DataHealth, _Flat, classify, repair_record, scan, training_view
from bench.data.records import DetectionDataset, ImageRecord
from bench.data.resolve import resolve_data
from bench.data.voc import read_voc
from bench.data.yolo import read_yolo
from bench.errors import BenchInputError
from bench.metrics import DetectionResults, evaluate
from bench.suite.spec import DataConfig

COCO_KEYS = ("AP", "AP50", "AP75", "APs", "APm", "APl", "AR1", "AR10", "AR100", "ARs", "ARm", "ARl")

# COCO train2017's annotation 918 (image 200365), a box 0.7 px past the right edge of its image, and ordinary
# boxes around them; categories 1 and 3 (ids need not be contiguous).
PROBLEM_GT = {
    "images": [{"id": 200365, "file_name": "000000200365.jpg", "width": 640, "height": 480},
               {"id": 7, "file_name": "7.jpg", "width": 320, "height": 240}],
    "annotations": [
        {"id": 918, "image_id": 200365, "category_id": 1, "bbox": [296.65, 388.33, 1.03, 0.0], "area": 0.0,
         "iscrowd": 0},
        {"id": 919, "image_id": 200365, "category_id": 1, "bbox": [600.0, 100.0, 40.7, 30.0], "area": 1100.5,
         "iscrowd": 0},
        {"id": 920, "image_id": 200365, "category_id": 3, "bbox": [10.0, 20.0, 50.0, 60.0], "area": 2400.0,
         "iscrowd": 0},
        {"id": 921, "image_id": 7, "category_id": 3, "bbox": [30.5, 40.25, 20.0, 10.0], "area": 150.0,
         "iscrowd": 0},
        {"id": 922, "image_id": 7, "category_id": 1, "bbox": [100.0, 100.0, 90.0, 80.0], "area": 6000.0,
         "iscrowd": 0}],
    "categories": [{"id": 1, "name": "person"}, {"id": 3, "name": "car"}],
}
PROBLEM_DETS = [
    {"image_id": 200365, "category_id": 1, "bbox": [296.0, 388.0, 2.0, 1.0], "score": 0.95},  # on 918
    {"image_id": 200365, "category_id": 1, "bbox": [601.0, 99.0, 39.0, 31.0], "score": 0.9},
    {"image_id": 200365, "category_id": 3, "bbox": [12.0, 18.0, 49.0, 61.0], "score": 0.8},
    {"image_id": 200365, "category_id": 3, "bbox": [300.0, 300.0, 30.0, 30.0], "score": 0.85},
    {"image_id": 7, "category_id": 3, "bbox": [31.0, 40.0, 19.0, 11.0], "score": 0.7},
    {"image_id": 7, "category_id": 1, "bbox": [105.0, 95.0, 80.0, 90.0], "score": 0.6},
    {"image_id": 7, "category_id": 1, "bbox": [0.0, 0.0, 40.0, 40.0], "score": 0.65},
]


def pycocotools_stats(gt: dict, dets: list[dict]) -> list[float]:
    from pycocotools.coco import COCO
    from pycocotools.cocoeval import COCOeval

    with contextlib.redirect_stdout(io.StringIO()):
        coco = COCO()
        coco.dataset = copy.deepcopy(gt)
        coco.createIndex()
        evaluator = COCOeval(coco, coco.loadRes(copy.deepcopy(dets)), "bbox")
        evaluator.evaluate()
        evaluator.accumulate()
        evaluator.summarize()
    return [float(v) for v in evaluator.stats]


def coco_root(tmp_path: Path, gt: dict) -> Path:
    root = tmp_path / "coco"
    (root / "annotations").mkdir(parents=True)
    for split in ("train2017", "val2017"):
        (root / "annotations" / f"instances_{split}.json").write_text(json.dumps(gt))
        (root / split).mkdir()
        for image in gt["images"]:
            pixels = Image.new("RGB", (image["width"], image["height"]), (120, 110, 100))
            pixels.save(root / split / image["file_name"])
    return root


def test_coco_zero_height_and_outside_boxes_read_and_score_as_pycocotools(tmp_path: Path) -> None:
    path = tmp_path / "gt.json"
    path.write_text(json.dumps(PROBLEM_GT))
    ds = read_coco(path)  # the reader used to refuse annotation 918
    record = next(r for r in ds.records if r.image_id == 200365)
    np.testing.assert_array_equal(record.boxes[0], [296.65, 388.33, 296.65 + 1.03, 388.33])
    (tmp_path / "dt.json").write_text(json.dumps(PROBLEM_DETS))
    dets = DetectionResults.from_coco_json(tmp_path / "dt.json", ds)
    expected = pycocotools_stats(PROBLEM_GT, PROBLEM_DETS)
    for coco_gt in (PROBLEM_GT, None):  # bench.evaluate (the file's own numbers) and the runner (records)
        result = evaluate(ds, dets, coco_gt=coco_gt, small_objects=None)
        ours = [-1.0 if np.isnan(result.coco[k]) else result.coco[k] for k in COCO_KEYS]
        assert ours == expected


def test_the_drop_is_reported_per_kind_and_training_repairs(tmp_path: Path) -> None:
    data = resolve_data(DataConfig(), str(coco_root(tmp_path, PROBLEM_GT)), tmp_path / "cache", tmp_path)
    lines = data.health.console_lines()
    assert "train2017: 1 box with zero height dropped from training (annotations 918)" in lines
    assert ("train2017: 1 box partly outside the image clipped to the image for training (annotations 919)"
            in lines)
    assert ("val2017: 1 box with zero height kept for evaluation, as pycocotools reads them (annotations 918)"
            in lines)
    train = {r.image_id: r for r in data.train.records}
    np.testing.assert_array_equal(train[200365].boxes, [[600, 100, 640, 130], [10, 20, 60, 80]])  # 918 gone
    np.testing.assert_array_equal(train[200365].entry_ids, [919, 920])
    test = {r.image_id: r for r in data.test.records}
    assert len(test[200365].boxes) == 3  # evaluation keeps the ground truth as read
    report = data.health.to_dict()
    assert json.loads(json.dumps(report)) == report and report["quality_problems"] == 4
    assert DataHealth.from_dict(report).to_dict() == report
    with pytest.raises(BenchInputError, match="--strict: 1 boxes with zero height") as info:
        resolve_data(DataConfig(), str(coco_root(tmp_path / "again", PROBLEM_GT)), tmp_path / "cache",
                     tmp_path, strict=True)
    assert info.value.entry == "annotation 918"
    with pytest.raises(BenchInputError, match="--strict"):
        resolve_data(DataConfig(strict=True), str(tmp_path / "coco"), tmp_path / "cache", tmp_path)


VOC_XML = """<annotation><filename>{name}.jpg</filename>
<size><width>500</width><height>480</height><depth>3</depth></size>{objects}</annotation>"""
VOC_OBJECT = ("<object><name>{cls}</name><difficult>{difficult}</difficult><bndbox><xmin>{0}</xmin>"
              "<ymin>{1}</ymin><xmax>{2}</xmax><ymax>{3}</ymax></bndbox></object>")


def test_voc_box_one_pixel_past_the_image_scores_as_voc_eval(tmp_path: Path) -> None:
    gts = {"a": [("dog", 0, (10, 400, 120, 481)), ("dog", 0, (200, 10, 260, 90)), ("cat", 1, (1, 1, 50, 50))],
           "b": [("dog", 0, (0, 30, 80, 120)), ("cat", 0, (300, 300, 300, 350))]}  # xmin 0, 1-px-wide cat
    for name, objects in gts.items():
        xml = "".join(VOC_OBJECT.format(*b, cls=c, difficult=d) for c, d, b in objects)
        (tmp_path / f"{name}.xml").write_text(VOC_XML.format(name=name, objects=xml))
    ds = read_voc(tmp_path, classes=["cat", "dog"])  # the reader used to refuse ymax 481 and xmin 0
    health, _ = scan(ds, "voc", "test", "the VOC devkit")
    assert health.findings["partly_outside"].count == 2
    assert health.findings["partly_outside"].examples == ["a.xml object 0", "b.xml object 0"]
    rows = [("a", "dog", 0.9, (12, 402, 118, 480)), ("a", "dog", 0.8, (205, 12, 258, 88)),
            ("a", "dog", 0.7, (10, 400, 120, 481)), ("b", "dog", 0.6, (1, 31, 80, 118)),
            ("b", "cat", 0.5, (300, 300, 301, 350)), ("a", "cat", 0.4, (2, 2, 48, 50))]
    image = {"a": 0, "b": 1}
    dets = DetectionResults([image[r[0]] for r in rows], [["cat", "dog"].index(r[1]) for r in rows],
                            np.array([r[3] for r in rows], float) - [1, 1, 0, 0], [r[2] for r in rows])
    result = evaluate(ds, dets, small_objects=None)
    for name in ("cat", "dog"):
        gt = {image[i]: (np.array([b for cls, _, b in objs if cls == name], float).reshape(-1, 4),
                         np.array([d == 1 for cls, d, _ in objs if cls == name], bool))
              for i, objs in gts.items()}
        sel = [r for r in rows if r[1] == name]
        expected = reference_voc_eval(gt, np.array([image[r[0]] for r in sel]), np.array([r[2] for r in sel]),
                                      np.array([r[3] for r in sel], float), 0.5)
        got = next(p for p in result.per_class if p["class"] == name)
        assert (got["voc_ap_11pt"], got["voc_ap_allpt"]) == expected


def test_every_kind_is_found_once_with_its_entry() -> None:
    boxes = [[5, 5, 3, 9],  # negative width
             [5, 5, 5, 9],  # zero width
             [5, 5, 9, 5],  # zero height
             [120, 5, 130, 9],  # wholly outside the 100 x 50 image
             [5, 5, 5.5, 9],  # under 1 px
             [-3, 5, 20, 9],  # partly outside
             [30, 30, 40, 40], [30, 30, 40, 40],  # a duplicate
             [60, 10, 70, 20],  # area 1e4 on a 100 px^2 box
             [60, 30, 80, 45]]  # fine
    area = [1.0] * 8 + [1e4, 300.0]
    record = ImageRecord(3, "x.jpg", 100, 50, boxes, np.zeros(10, np.int64), area=area,
                         entry_ids=np.arange(100, 110))
    kinds = classify(_Flat.of([record]))
    assert [QUALITY_KINDS[k] if k >= 0 else None for k in kinds] == [
        "negative_size", "zero_width", "zero_height", "wholly_outside", "under_1px", "partly_outside", None,
        "duplicate", "area_mismatch", None]
    ds = DetectionDataset(["a"], [record], Path("."), entry_kind="annotation")
    health, found = scan(ds, "s", "check", "pycocotools")
    assert {k: f.examples for k, f in health.findings.items()}["duplicate"] == ["annotation 107"]
    view = training_view(ds, found).records[0]
    np.testing.assert_array_equal(view.boxes, [[0, 5, 20, 9], [30, 30, 40, 40], [60, 10, 70, 20],
                                               [60, 30, 80, 45]])
    np.testing.assert_array_equal(view.entry_ids, [105, 106, 108, 109])
    assert repair_record(view) is view  # idempotent: a repaired record needs nothing more


def test_yolo_out_of_range_labels_are_quality_problems(tmp_path: Path) -> None:
    (tmp_path / "images" / "s").mkdir(parents=True)
    (tmp_path / "labels" / "s").mkdir(parents=True)
    Image.new("RGB", (40, 20)).save(tmp_path / "images" / "s" / "a.png")
    lines = "0 0.5 0.5 0.5 0.5\n\n1 1.0 0.5 0.5 0.5\n0 0.5 0.5 0 0.2\n"  # x 0.75..1.25; zero width
    (tmp_path / "labels" / "s" / "a.txt").write_text(lines)
    ds = read_yolo(tmp_path, "s", ["a", "b"])
    health, _ = scan(ds, "s", "check", "pycocotools")
    assert health.findings["partly_outside"].examples == ["a.txt line 3"]
    assert health.findings["zero_width"].examples == ["a.txt line 4"]


def test_ground_truth_for_bench_evaluate_is_never_repaired(tmp_path: Path) -> None:
    from bench.data.resolve import read_ground_truth

    root = coco_root(tmp_path, PROBLEM_GT)
    for gt in (read_ground_truth(root), read_ground_truth(root / "annotations" / "instances_val2017.json")):
        assert gt.format == "coco" and gt.coco == PROBLEM_GT  # the raw dict feeds the COCO metrics
        assert sum(len(r.boxes) for r in gt.dataset.records) == 5
