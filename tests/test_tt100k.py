"""TT100K: the reader (annotations.json, ids.txt, Zhu et al.'s 45 classes), size buckets, round trips."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest
from PIL import Image

from bench.data.resolve import detect_format, read_ground_truth, resolve_data
from bench.data.tt100k import (
    TT100K_45_CLASSES,
    TT100K_SIZE_BUCKETS,
    class_counts,
    read_tt100k,
    size_bucket,
    write_tt100k,
)
from bench.errors import BenchInputError
from bench.suite.spec import load_suite


def box(x1: float, y1: float, x2: float, y2: float) -> dict[str, float]:
    return {"xmin": x1, "ymin": y1, "xmax": x2, "ymax": y2}


ANNOTATIONS = {
    "types": ["pl80", "p26", "w57", "i5", "pl5", "zzz"],
    "imgs": {
        "10": {"path": "train/10.jpg", "id": 10, "objects": [
            {"category": "pl80", "bbox": box(100.5, 200.25, 112.0, 214.0), "ellipse": [[1, 2]]},  # tiny
            {"category": "zzz", "bbox": box(5, 5, 50, 50)},  # not one of the 45: left out
            {"category": "p26", "bbox": box(1000, 1000, 1032, 1020)}]},  # long side exactly 32 px
        "11": {"path": "train/11.jpg", "id": 11, "objects": [
            {"category": "w57", "bbox": box(2040, 10, 2050.5, 30)},  # 2.5 px past the 2048 px image
            {"category": "i5", "bbox": box(300, 300, 300, 340)}]},  # zero width
        "20": {"path": "test/20.jpg", "id": 20, "objects": [
            {"category": "pl5", "bbox": box(10, 10, 106, 50)},
            {"category": "pl80", "bbox": box(0, 0, 400, 90)}]},
        "99": {"path": "other/99.jpg", "id": 99, "objects": []},  # in neither split
    },
}


@pytest.fixture()
def tt100k_root(tmp_path: Path) -> Path:
    root = tmp_path / "data"
    for split, ids in (("train", ["10", "11"]), ("test", ["20"])):
        (root / split).mkdir(parents=True)
        (root / split / "ids.txt").write_text("\n".join(ids) + "\n")
    (root / "annotations.json").write_text(json.dumps(ANNOTATIONS))
    Image.new("RGB", (2048, 2048)).save(root / "train" / "10.jpg", quality=5)
    return root


def test_reader_keeps_the_45_classes_and_tiny_signs(tt100k_root: Path) -> None:
    assert detect_format(tt100k_root) == "tt100k" and len(TT100K_45_CLASSES) == 45
    ds = read_tt100k(tt100k_root, "train")
    assert ds.classes == list(TT100K_45_CLASSES) and [r.image_id for r in ds.records] == [10, 11]
    first, second = ds.records
    np.testing.assert_array_equal(first.boxes, [[100.5, 200.25, 112.0, 214.0], [1000, 1000, 1032, 1020]])
    assert [ds.classes[k] for k in first.labels] == ["pl80", "p26"]
    np.testing.assert_array_equal(first.entry_ids, [0, 2])  # positions in the image's object list
    assert (first.width, first.height) == (2048, 2048) and (second.width, second.height) == (2048, 2048)
    assert any("1 objects of categories outside the 45" in note for note in ds.notes)
    assert any("images absent" in note for note in ds.notes)  # image 11 has no file: taken as 2048x2048
    counts = class_counts(tt100k_root, "train")
    assert counts == {"i5": 1, "p26": 1, "pl80": 1, "w57": 1, "zzz": 1}


def test_size_buckets_follow_the_official_script() -> None:
    names = [name for name, _, _ in TT100K_SIZE_BUCKETS]
    assert names == ["small", "medium", "large"]
    long_sides = [10, 31.99, 32, 95.9, 96, 399.99, 400]
    boxes = np.array([[0, 0, s, s / 2] for s in long_sides])
    np.testing.assert_array_equal(size_bucket(boxes), [0, 0, 1, 1, 2, 2, -1])  # low <= max(w, h) < high
    np.testing.assert_array_equal(size_bucket(np.array([[0, 0, 5, 40]])), [1])  # the long side is the height


def test_round_trip_is_exact(tt100k_root: Path, tmp_path: Path) -> None:
    splits = {s: read_tt100k(tt100k_root, s) for s in ("train", "test")}
    write_tt100k(splits, tmp_path / "copy")
    for split, ds in splits.items():
        again = read_tt100k(tmp_path / "copy", split)
        assert again.classes == ds.classes
        for a, b in zip(ds.records, again.records, strict=True):
            assert (a.image_id, a.width, a.height) == (b.image_id, b.width, b.height)
            np.testing.assert_array_equal(a.boxes, b.boxes)
            np.testing.assert_array_equal(a.labels, b.labels)


@pytest.mark.parametrize(("edit", "field"), [
    (lambda d: d["imgs"].pop("11"), "imgs"),  # listed in train/ids.txt, absent from the annotations
    (lambda d: d["imgs"]["10"].update(path="../10.jpg"), "path"),
    (lambda d: d["imgs"]["10"]["objects"][0]["bbox"].pop("ymax"), "bbox"),
    (lambda d: d["imgs"]["10"]["objects"][0]["bbox"].update(xmin="1"), "bbox.xmin"),
    (lambda d: d["imgs"]["10"]["objects"][0].update(category="nope"), "category"),
    (lambda d: d.update(imgs=[]), "imgs"),
])
def test_structural_problems_are_named(tt100k_root: Path, edit, field: str) -> None:
    data = json.loads(json.dumps(ANNOTATIONS))
    edit(data)
    (tt100k_root / "annotations.json").write_text(json.dumps(data))
    with pytest.raises(BenchInputError) as info:
        read_tt100k(tt100k_root, "train")
    assert info.value.field == field


def test_suite_and_data_resolution(tt100k_root: Path, tmp_path: Path) -> None:
    suite = load_suite("tt100k")
    assert {"mdssd512", "ssd512"} <= set(suite.models) and suite.data.classes == list(TT100K_45_CLASSES)
    data = resolve_data(suite.data, str(tt100k_root), tmp_path, tmp_path / "tt100k.toml")
    assert data.format == "tt100k" and (len(data.train), len(data.test)) == (2, 1)
    train = data.health.split("train")
    assert set(train.findings) == {"partly_outside", "zero_width"}
    repaired = data.train.records[1]
    np.testing.assert_array_equal(repaired.boxes, [[2040, 10, 2048, 30]])  # clipped; zero width dropped
    gt = read_ground_truth(tt100k_root)
    assert gt.format == "tt100k" and [r.image_id for r in gt.dataset.records] == [20]
