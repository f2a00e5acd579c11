"""KITTI 2D object: the reader (15 fields, DontCare, splits, Table 3's merge), round trips, and Table 3's
mAP against voc_eval with DontCare (the official protocol's devkit port is in test_kitti_devkit.py)."""

from __future__ import annotations

import hashlib
from pathlib import Path

import numpy as np
import pytest
from PIL import Image
from test_metrics_voc import reference_voc_eval

from bench.data.coco import read_coco, write_coco
from bench.data.kitti import KITTI_CLASSES, parse_label_file, read_kitti, write_kitti
from bench.data.kitti_splits import TRAIN_SHA256, VAL_SHA256, default_split
from bench.data.resolve import detect_format, read_ground_truth
from bench.errors import BenchInputError
from bench.metrics import DetectionResults
from bench.metrics.kitti import (
    kitti_metrics,
    voc_map_with_ignore,
)
from bench.suite.spec import load_suite

LABELS = {
    "000000": ["Car 0.00 0 -1.58 10.5 20.25 90.75 60.00 1.52 1.63 3.88 1.84 1.47 8.41 -1.56",
               "DontCare -1 -1 -10 150.00 10.00 190.00 30.00 -1 -1 -1 -1000 -1000 -1000 -10",
               "Pedestrian 0.32 1 0.21 100 5 110 50 1.70 0.60 0.80 2.00 1.60 10.00 0.10",
               "Van 0.90 2 0.10 0 0 30.5 79.99 2.00 2.00 4.00 1.00 1.00 5.00 0.00"],
    "000001": ["Cyclist 0.00 3 0.00 5 5 20 40 1.70 0.50 1.80 1.00 1.00 1.00 0.00",
               "Misc 0.00 0 0.00 50 10 60 10 1 1 1 1 1 1 0",  # zero height
               "Tram 0.00 0 0.00 180 10 200.7 30 3 3 15 1 1 30 0",  # 0.7 px past the 200 px wide image
               "Person_sitting 0.00 0 0.00 60 20 80 60 1 1 1 1 1 1 0",
               "Truck 0.00 0 0.00 120 20 160 60 3 2.5 10 1 1 20 0"],
    "000002": ["DontCare -1 -1 -10 0 0 40 20 -1 -1 -1 -1000 -1000 -1000 -10"],
}
MERGED = ["pedestrian", "motor_vehicle", "other"]


def make_kitti_root(root: Path) -> Path:
    """A KITTI training folder with LABELS' three frames and a train/val split."""
    (root / "training" / "label_2").mkdir(parents=True)
    (root / "training" / "image_2").mkdir(parents=True)
    (root / "ImageSets").mkdir()
    for image_id, lines in LABELS.items():
        (root / "training" / "label_2" / f"{image_id}.txt").write_text("\n".join(lines) + "\n")
        Image.new("RGB", (200, 80), (90, 90, 90)).save(root / "training" / "image_2" / f"{image_id}.png")
    (root / "ImageSets" / "train.txt").write_text("000000\n000001\n")
    (root / "ImageSets" / "val.txt").write_text("000002\n000000\n")
    return root


@pytest.fixture()
def kitti_root(tmp_path: Path) -> Path:
    return make_kitti_root(tmp_path / "kitti")


def test_reader_keeps_all_fields_dontcare_truncation_and_occlusion(kitti_root: Path) -> None:
    ds = read_kitti(kitti_root, "train")
    assert ds.classes == list(KITTI_CLASSES) and [r.image_id for r in ds.records] == [0, 1]
    first = ds.records[0]
    assert (first.width, first.height) == (200, 80)
    np.testing.assert_array_equal(first.boxes, [[10.5, 20.25, 90.75, 60.0], [100, 5, 110, 50],
                                                [0, 0, 30.5, 79.99]])
    assert [ds.classes[k] for k in first.labels] == ["Car", "Pedestrian", "Van"]
    np.testing.assert_array_equal(first.ignore_regions, [[150, 10, 190, 30]])  # DontCare is never an object
    np.testing.assert_array_equal(first.entry_ids, [1, 3, 4])  # line numbers, DontCare's line 2 skipped
    attrs = first.attributes
    np.testing.assert_array_equal(attrs["truncated"], [0.0, 0.32, 0.9])
    np.testing.assert_array_equal(attrs["occluded"], [0, 1, 2])
    np.testing.assert_array_equal(attrs["alpha"], [-1.58, 0.21, 0.1])
    np.testing.assert_array_equal(attrs["dimensions"][0], [1.52, 1.63, 3.88])
    np.testing.assert_array_equal(attrs["location"][0], [1.84, 1.47, 8.41])
    np.testing.assert_array_equal(attrs["rotation_y"], [-1.56, 0.1, 0.0])
    assert any("DontCare" in note for note in ds.notes) and detect_format(kitti_root) == "kitti"


def test_table3_merge_is_the_suites_class_map(kitti_root: Path) -> None:
    suite = load_suite("kitti")
    assert list(suite.data.class_map) == MERGED and "ssd512" in suite.models and "dfssd512" in suite.models
    merged = set().union(*map(set, suite.data.class_map.values()))
    assert merged == set(KITTI_CLASSES)  # the 8 classes, each in exactly one group
    ds = read_kitti(kitti_root, "train", class_map=suite.data.class_map)
    assert ds.classes == MERGED
    names = [[MERGED[k] for k in r.labels] for r in ds.records]
    assert names == [["motor_vehicle", "pedestrian", "motor_vehicle"],
                     ["other", "other", "motor_vehicle", "pedestrian", "motor_vehicle"]]
    assert ds.records[1].attributes["type"].tolist() == ["Cyclist", "Misc", "Tram", "Person_sitting", "Truck"]
    only_cars = read_kitti(kitti_root, "train", class_map={"Car": ["Car"]})
    assert [len(r.boxes) for r in only_cars.records] == [1, 0]
    assert any("left out" in note and "1 Van" in note for note in only_cars.notes)
    with pytest.raises(BenchInputError, match="no type 'Bus'"):
        read_kitti(kitti_root, "train", class_map={"x": ["Bus"]})


def test_round_trips_kitti_and_coco_are_exact(kitti_root: Path, tmp_path: Path) -> None:
    ds = read_kitti(kitti_root, "train")
    write_kitti(ds, tmp_path / "copy", "train")
    again = read_kitti(tmp_path / "copy", "train")
    coco = read_coco(write_coco(ds, tmp_path / "gt.json"))
    for a, b, c in zip(ds.records, again.records, coco.records, strict=True):
        for other in (b, c):
            np.testing.assert_array_equal(a.boxes, other.boxes)
            np.testing.assert_array_equal(a.labels, other.labels)
            np.testing.assert_array_equal(a.ignore_regions, other.ignore_regions)
        assert a.attributes.keys() == b.attributes.keys()
        for key, values in a.attributes.items():
            np.testing.assert_array_equal(values, b.attributes[key])


def test_bundled_split_is_the_common_3712_3769_one(tmp_path: Path) -> None:
    train, val = default_split("train"), default_split("val")
    assert (len(train), len(val)) == (3712, 3769) and not set(train) & set(val)
    assert train[:4] == ["000000", "000003", "000007", "000009"] and val[:4] == ["000001", "000002", "000004",
                                                                                 "000005"]
    for ids, digest in ((train, TRAIN_SHA256), (val, VAL_SHA256)):
        assert hashlib.sha256("".join(f"{i}\n" for i in ids).encode()).hexdigest() == digest
    root = tmp_path / "bare"
    (root / "training" / "label_2").mkdir(parents=True)
    (root / "training" / "label_2" / "000001.txt").write_text(LABELS["000002"][0] + "\n")
    with pytest.raises(BenchInputError, match="000002"):  # val's second id is absent from this root
        read_kitti(root, "val", require_images=False)


@pytest.mark.parametrize(("line", "field", "message"), [
    ("Car 0 0 0 1 2 3", None, "expected 15 fields"),
    ("Car 0 0 x 1 2 3 4 1 1 1 1 1 1 0", "alpha", "not a number"),
    ("Car 0 1.5 0 1 2 3 4 1 1 1 1 1 1 0", "occluded", "integer"),
    ("Bus 0 0 0 1 2 3 4 1 1 1 1 1 1 0", "type", "unknown KITTI type"),
])
def test_structural_problems_are_named(kitti_root: Path, line: str, field: str | None, message: str) -> None:
    label = kitti_root / "training" / "label_2" / "000001.txt"
    label.write_text(LABELS["000001"][0] + "\n" + line + "\n")
    with pytest.raises(BenchInputError, match=message) as info:
        read_kitti(kitti_root, "train")
    assert (info.value.path, info.value.entry, info.value.field) == (str(label), "line 2", field)


def test_ground_truth_root_for_bench_evaluate(kitti_root: Path) -> None:
    for folder in ("image_2",):
        for png in (kitti_root / "training" / folder).glob("*.png"):
            png.unlink()  # scoring needs no images
    gt = read_ground_truth(kitti_root)
    assert gt.format == "kitti" and gt.coco is None and [r.image_id for r in gt.dataset.records] == [2, 0]
    assert gt.dataset.records[1].boxes.tolist()[0] == [10.5, 20.25, 90.75, 60.0]


# ------------------------------------------------------------------ the official protocol vs the devkit


def test_table3_map_with_dontcare_equals_voc_eval_without_the_covered_detections(kitti_root: Path) -> None:
    ds = read_kitti(kitti_root, "val", class_map=load_suite("kitti").data.class_map)
    # image 2: a lone DontCare; image 0: Car (motor_vehicle), Pedestrian, Van (motor_vehicle), DontCare
    rows = [(2, 1, [1, 1, 30, 15], 0.9),  # 100% inside image 2's DontCare: ignored
            (2, 1, [20, 10, 60, 30], 0.8),  # a quarter inside: a false positive
            (0, 1, [11, 21, 90, 60], 0.7),  # the car
            (0, 1, [151, 11, 189, 29], 0.6),  # inside image 0's DontCare: ignored
            (0, 0, [100, 5, 110, 48], 0.5), (0, 0, [0, 0, 10, 10], 0.4)]
    dets = DetectionResults([r[0] for r in rows], [r[1] for r in rows], [r[2] for r in rows],
                            [r[3] for r in rows])
    result = voc_map_with_ignore(ds, dets)
    kept = [k for k in range(len(rows)) if k not in (0, 3)]  # what voc_eval scores once the ignored are out
    by_image = {r.image_id: r for r in ds.records}
    expected = []
    for c in range(3):
        gt = {i: (r.boxes[r.labels == c] + [1, 1, 0, 0], np.zeros((r.labels == c).sum(), bool))
              for i, r in by_image.items()}
        sel = [k for k in kept if rows[k][1] == c]
        if sum(len(b) for b, _ in gt.values()):
            boxes = np.array([rows[k][2] for k in sel], float).reshape(-1, 4) + np.array([1, 1, 0, 0])
            expected.append(reference_voc_eval(gt, np.array([rows[k][0] for k in sel]),
                                               np.array([rows[k][3] for k in sel]), boxes, 0.5)[0])
    assert result["mAP_11pt"] == pytest.approx(np.mean(expected), abs=1e-12)
    assert [c["ignored_in_regions"] for c in result["per_class"]] == [0, 2, 0]


def test_kitti_metrics_runs_the_official_protocol_only_on_kittis_classes(kitti_root: Path) -> None:
    dets = DetectionResults([0, 0], [0, 3], [[10.5, 20.25, 90.75, 60], [100, 5, 110, 50]], [0.9, 0.8])
    original = kitti_metrics(read_kitti(kitti_root, "val"), dets)
    assert set(original["official"]["classes"]) == {"Car", "Pedestrian", "Cyclist"}
    car = original["official"]["classes"]["Car"]
    # one ground truth, found: a single threshold with precision 1 at recall 1, which the devkit stores in
    # slot 0 of its 41, so R11 (slots 0, 4, ..., 40) sees 1/11 and R40 (slots 1..40) sees nothing
    assert (car["AP_R11"]["moderate"], car["AP_R40"]["moderate"]) == (1 / 11, 0.0)
    assert car["AP_R40"]["easy"] == 0.0  # 39.75 px high: not > 40, so no easy car at all
    merged_dets = DetectionResults([0, 0], [1, 0], dets.boxes, dets.score)  # motor_vehicle, pedestrian
    merged = kitti_metrics(read_kitti(kitti_root, "val", class_map=load_suite("kitti").data.class_map),
                           merged_dets)
    # the merged "pedestrian" is Pedestrian + Person_sitting, and the devkit ignores Person_sitting when it
    # scores Pedestrian: that official number is valid for the merged model; Car and Cyclist have no class
    assert list(merged["official"]["classes"]) == ["Pedestrian"]
    assert 0 <= merged["table3"]["mAP_11pt"] <= 1


def test_label_parser_reads_detection_files_with_scores(tmp_path: Path) -> None:
    path = tmp_path / "000000.txt"
    path.write_text("Car -1 -1 -10 1 2 30 40 -1 -1 -1 -1000 -1000 -1000 -10 0.75\n")
    objects = parse_label_file(path, with_score=True)
    assert objects.types == ["Car"] and objects.score.tolist() == [0.75]
    assert objects.boxes.tolist() == [[1, 2, 30, 40]]
