"""KITTI 2D object: the reader (15 fields, DontCare, splits, Table 3's merge), round trips, and both scorings
against line-by-line ports of the references (the devkit's evaluate_object.cpp; voc_eval with DontCare)."""

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
from bench.datasets import detect_format, read_ground_truth
from bench.errors import BenchInputError
from bench.metrics import DetectionResults
from bench.metrics.kitti import (
    DIFFICULTIES,
    MAX_OCCLUSION,
    MAX_TRUNCATION,
    MIN_HEIGHT,
    MIN_OVERLAP,
    N_SAMPLE_PTS,
    Frame,
    class_precision,
    kitti_metrics,
    voc_map_with_ignore,
)
from bench.suite import load_suite

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


@pytest.fixture()
def kitti_root(tmp_path: Path) -> Path:
    root = tmp_path / "kitti"
    (root / "training" / "label_2").mkdir(parents=True)
    (root / "training" / "image_2").mkdir(parents=True)
    (root / "ImageSets").mkdir()
    for image_id, lines in LABELS.items():
        (root / "training" / "label_2" / f"{image_id}.txt").write_text("\n".join(lines) + "\n")
        Image.new("RGB", (200, 80), (90, 90, 90)).save(root / "training" / "image_2" / f"{image_id}.png")
    (root / "ImageSets" / "train.txt").write_text("000000\n000001\n")
    (root / "ImageSets" / "val.txt").write_text("000002\n000000\n")
    return root


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


def devkit_statistics(gt: dict, det: dict, cls: str, difficulty: int, compute_fp: bool, thresh: float
                      ) -> tuple[int, int, int, list[float]]:
    """``cleanData`` + ``computeStatistics`` of evaluate_object.cpp, transcribed loop for loop."""
    name, min_ov = cls.lower(), MIN_OVERLAP[cls]
    ignored_gt, dc = [], []
    for t, box, trunc, occ in zip(gt["types"], gt["boxes"], gt["truncated"], gt["occluded"], strict=True):
        height = box[3] - box[1]
        if t.lower() == name:
            valid = 1
        elif (name, t.lower()) in (("pedestrian", "person_sitting"), ("car", "van")):
            valid = 0
        else:
            valid = -1
        ignore = occ > MAX_OCCLUSION[difficulty] or trunc > MAX_TRUNCATION[difficulty] or \
            height <= MIN_HEIGHT[difficulty]
        ignored_gt.append(0 if valid == 1 and not ignore else
                          1 if valid == 0 or (ignore and valid == 1) else -1)
        if t.lower() == "dontcare":
            dc.append(box)
    ignored_det = []
    for t, box in zip(det["types"], det["boxes"], strict=True):
        height = int(abs(box[1] - box[3]))
        ignored_det.append(1 if height < MIN_HEIGHT[difficulty] else 0 if t.lower() == name else -1)

    def iou(a: np.ndarray, b: np.ndarray, criterion: int = -1) -> float:
        w, h = min(a[2], b[2]) - max(a[0], b[0]), min(a[3], b[3]) - max(a[1], b[1])
        if w <= 0 or h <= 0:
            return 0.0
        inter, area_a = w * h, (a[2] - a[0]) * (a[3] - a[1])
        return inter / area_a if criterion == 0 else inter / (area_a + (b[2] - b[0]) * (b[3] - b[1]) - inter)

    n_det = len(det["types"])
    assigned, below = [False] * n_det, [compute_fp and s < thresh for s in det["scores"]]
    tp = fp = fn = 0
    v = []
    for i in range(len(gt["types"])):
        if ignored_gt[i] == -1:
            continue
        det_idx, valid_detection, max_overlap, assigned_ignored = -1, -10000000.0, 0.0, False
        for j in range(n_det):
            if ignored_det[j] == -1 or assigned[j] or below[j]:
                continue
            ov = iou(det["boxes"][j], gt["boxes"][i])
            if not compute_fp and ov > min_ov and det["scores"][j] > valid_detection:
                det_idx, valid_detection = j, det["scores"][j]
            elif (compute_fp and ov > min_ov and (ov > max_overlap or assigned_ignored)
                  and ignored_det[j] == 0):
                max_overlap, det_idx, valid_detection, assigned_ignored = ov, j, 1, False
            elif compute_fp and ov > min_ov and valid_detection == -10000000.0 and ignored_det[j] == 1:
                det_idx, valid_detection, assigned_ignored = j, 1, True
        if valid_detection == -10000000.0 and ignored_gt[i] == 0:
            fn += 1
        elif valid_detection != -10000000.0 and (ignored_gt[i] == 1 or ignored_det[det_idx] == 1):
            assigned[det_idx] = True
        elif valid_detection != -10000000.0:
            tp += 1
            v.append(det["scores"][det_idx])
            assigned[det_idx] = True
    if compute_fp:
        fp = sum(not (assigned[j] or ignored_det[j] in (-1, 1) or below[j]) for j in range(n_det))
        stuff = 0
        for box in dc:
            for j in range(n_det):
                if assigned[j] or ignored_det[j] in (-1, 1) or below[j]:
                    continue
                if iou(det["boxes"][j], box, 0) > min_ov:
                    assigned[j] = True
                    stuff += 1
        fp -= stuff
    return tp, fp, fn, v


def devkit_precision(frames: list[tuple[dict, dict]], cls: str, difficulty: int) -> np.ndarray:
    """``eval_class``: thresholds from the first pass, then the 41 precision values, made monotone."""
    n_gt, v = 0, []
    for gt, det in frames:
        n_gt += sum(1 for t, b, tr, oc in zip(gt["types"], gt["boxes"], gt["truncated"], gt["occluded"],
                                              strict=True)
                    if t.lower() == cls.lower() and not (oc > MAX_OCCLUSION[difficulty] or tr >
                                                         MAX_TRUNCATION[difficulty] or b[3] - b[1] <=
                                                         MIN_HEIGHT[difficulty]))
        v += devkit_statistics(gt, det, cls, difficulty, False, 0.0)[3]
    v.sort(reverse=True)
    thresholds, current = [], 0.0
    for i in range(len(v)):
        left = (i + 1) / n_gt
        right = (i + 2) / n_gt if i < len(v) - 1 else left
        if right - current < current - left and i < len(v) - 1:
            continue
        thresholds.append(v[i])
        current += 1.0 / (N_SAMPLE_PTS - 1.0)
    precision = [0.0] * N_SAMPLE_PTS
    for t, thresh in enumerate(thresholds):
        tp = fp = 0
        for gt, det in frames:
            a, b, _, _ = devkit_statistics(gt, det, cls, difficulty, True, thresh)
            tp, fp = tp + a, fp + b
        precision[t] = tp / (tp + fp)
    for t in range(len(thresholds)):
        precision[t] = max(precision[t:])
    return np.array(precision)


def random_frames(rng: np.random.Generator, n_images: int) -> list[tuple[dict, dict]]:
    """KITTI-like frames: every type, DontCare, truncation and occlusion; detections jittered from the ground
    truth (mostly of its class, Van as Car, Person_sitting as Pedestrian), clutter, tied scores."""
    types = np.array(["Car", "Van", "Pedestrian", "Person_sitting", "Cyclist", "Truck", "DontCare"])
    as_det = {"Car": "Car", "Van": "Car", "Pedestrian": "Pedestrian", "Person_sitting": "Pedestrian",
              "Cyclist": "Cyclist", "Truck": "Car", "DontCare": "Car"}
    frames = []
    for _ in range(n_images):
        n = int(rng.integers(1, 9))
        xy = rng.uniform(0, 300, (n, 2))
        wh = rng.uniform(10, 110, (n, 2))
        boxes = np.round(np.c_[xy, xy + wh], 2)
        kinds = rng.choice(types, n, p=[.35, .08, .22, .05, .15, .05, .10])
        gt = {"types": kinds.tolist(), "boxes": boxes, "truncated": rng.choice([0.0, 0.1, 0.2, 0.4, 0.8], n),
              "occluded": rng.choice([0, 0, 1, 2, 3], n)}
        src = rng.integers(0, n, int(rng.integers(0, 2 * n + 1)))
        det_boxes = boxes[src] + rng.normal(0, 0.04, (len(src), 4)) * np.tile(wh[src], 2)
        clutter = rng.random(len(src)) < 0.25
        det_boxes[clutter] = np.c_[rng.uniform(0, 300, (clutter.sum(), 2)), np.zeros((clutter.sum(), 2))]
        det_boxes[clutter, 2:] = det_boxes[clutter, :2] + rng.uniform(10, 90, (clutter.sum(), 2))
        det_types = [as_det[t] if rng.random() < 0.85 else str(rng.choice(["Car", "Pedestrian", "Cyclist"]))
                     for t in kinds[src]]
        det = {"types": det_types, "boxes": det_boxes, "scores": np.round(rng.random(len(src)), 2)}  # ties
        frames.append((gt, det))
    # a valid hard pedestrian (26 px) whose only match is 24.9 px high, below the minimum: the devkit lets the
    # ignored detection take it (no miss); and a car with a regular and a too-low candidate
    frames.append(({"types": ["Pedestrian", "Car"], "boxes": np.array([[10, 10, 20, 36], [100, 10, 180, 52]]),
                    "truncated": np.zeros(2), "occluded": np.zeros(2, np.int64)},
                   {"types": ["Pedestrian", "Car", "Car"], "scores": np.array([0.9, 0.8, 0.7]),
                    "boxes": np.array([[10, 10, 20, 34.9], [100, 12, 180, 51.9], [101, 10, 180, 52]])}))
    # the greatest overlap, not the first candidate: the first pedestrian takes detection B (IoU 1), leaving A
    # (IoU 2/3 with both) to the second; taking A first would leave B a false positive
    pair = np.array([[0, 0, 10, 40], [4, 0, 14, 40]])
    frames.append(({"types": ["Pedestrian", "Pedestrian"], "boxes": pair,
                    "truncated": np.zeros(2), "occluded": np.zeros(2, np.int64)},
                   {"types": ["Pedestrian", "Pedestrian"], "scores": np.array([0.5, 0.6]),
                    "boxes": np.array([[2, 0, 12, 40], [0, 0, 10, 40]])}))
    return frames


@pytest.mark.parametrize("seed", range(3))
def test_official_protocol_equals_the_devkit(seed: int) -> None:
    from bench.data.kitti import KittiObjects

    frames = random_frames(np.random.default_rng(seed), 30)
    ours = []
    for gt, det in frames:
        numbers = np.zeros((len(gt["types"]), 14))
        numbers[:, 0], numbers[:, 1], numbers[:, 3:7] = gt["truncated"], gt["occluded"], gt["boxes"]
        objects = KittiObjects(gt["types"], numbers, np.arange(1, len(gt["types"]) + 1))
        ours.append(Frame.of(objects, det["types"], det["boxes"], det["scores"]))
    for cls in ("Car", "Pedestrian", "Cyclist"):
        for difficulty in range(len(DIFFICULTIES)):
            expected = devkit_precision(frames, cls, difficulty)
            np.testing.assert_array_equal(class_precision(ours, cls, difficulty), expected)


# ------------------------------------------------------------------------------- Table 3's VOC mAP


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
