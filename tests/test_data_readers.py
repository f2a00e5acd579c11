"""VOC, COCO and YOLO readers/writers: shared third-party fixtures, exact round trips, named input errors."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest

from bench.data import (
    VOC_CLASSES,
    DetectionDataset,
    ImageRecord,
    read_coco,
    read_voc,
    read_yolo,
    to_coco_dict,
    write_coco,
    write_voc,
    write_yolo,
)
from bench.errors import BenchInputError

COCO80 = [f"class{i}" for i in range(80)]  # names do not matter to the reader, only their count


@pytest.fixture(scope="module")
def padilla(shared_data: Path) -> Path:
    return shared_data / "voc2012-100-padilla"


@pytest.fixture(scope="module")
def padilla_voc(padilla: Path) -> DetectionDataset:
    return read_voc(padilla / "gts" / "pascalvoc_format")


def _by_name(ds: DetectionDataset) -> dict[str, np.ndarray]:
    """Per image file: rows ``(class name index in VOC_CLASSES, x1, y1, x2, y2)`` in a canonical order."""
    out = {}
    for r in ds.records:
        names = np.array([VOC_CLASSES.index(ds.classes[k]) for k in r.labels], float)
        rows = np.column_stack([names, r.boxes]) if len(r.boxes) else np.zeros((0, 5))
        out[r.file_name] = rows[np.lexsort(rows.T[::-1])]
    return out


def _assert_same(a: DetectionDataset, b: DetectionDataset, *, difficult: bool = True) -> None:
    assert a.classes == b.classes
    assert len(a) == len(b)
    for ra, rb in zip(a.records, b.records, strict=True):
        assert (ra.file_name, ra.width, ra.height) == (rb.file_name, rb.width, rb.height)
        np.testing.assert_array_equal(ra.boxes, rb.boxes)
        np.testing.assert_array_equal(ra.labels, rb.labels)
        if difficult:
            np.testing.assert_array_equal(ra.difficult, rb.difficult)


# --- the shared fixtures ------------------------------------------------------------------------------------


def test_voc_folder_of_xml(padilla: Path, padilla_voc: DetectionDataset) -> None:
    ds = padilla_voc
    assert len(ds) == 100 and ds.classes == VOC_CLASSES
    assert sum(len(r.boxes) for r in ds.records) == 273
    assert sum(int(r.difficult.sum()) for r in ds.records) == 38
    assert ds.image_root == padilla / "images"
    assert all(ds.image_path(r).is_file() for r in ds.records)
    first = ds.records[0]  # 2007_000027.xml: person, xmin 174 ymin 101 xmax 349 ymax 351 in a 486x500 image
    assert (first.image_id, first.file_name, first.width, first.height) == (0, "2007_000027.jpg", 486, 500)
    np.testing.assert_array_equal(first.boxes, [[173, 100, 349, 351]])
    assert ds.classes[first.labels[0]] == "person"
    # the README counts 20 boxes under 32x32 px with (xmax - xmin)(ymax - ymin); the devkit's +1 areas give 17
    wh = np.concatenate([r.boxes[:, 2:] - r.boxes[:, :2] for r in ds.records])
    assert ((wh - 1).prod(1) < 32**2).sum() == 20 and (wh.prod(1) < 32**2).sum() == 17


def test_padilla_coco_v2_has_the_voc_boxes(padilla: Path, padilla_voc: DetectionDataset) -> None:
    """This export writes ``x = xmin, w = xmax - xmin``: our boxes with the top-left shifted by one."""
    coco = read_coco(padilla / "gts" / "coco_format_v2" / "instances_v2.json")
    assert len(coco) == 100 and sum(len(r.boxes) for r in coco.records) == 273
    assert coco.records[0].image_id == 20180000001
    assert coco.category_ids == sorted(coco.category_ids)
    voc = _by_name(padilla_voc)
    for name, rows in _by_name(coco).items():
        expected = voc[name] + [0, 1, 1, 0, 0]
        np.testing.assert_array_equal(rows, expected[np.lexsort(expected.T[::-1])])


def test_padilla_yolo_has_the_voc_boxes(padilla: Path, padilla_voc: DetectionDataset, tmp_path: Path) -> None:
    """The COCO v2 export's convention, normalised to 6 decimals; its class order differs from VOC's."""
    yolo_dir = padilla / "gts" / "yolo_format"
    classes = (yolo_dir / "obj.names").read_text().split()
    for sub, folder, suffix in (("images", padilla / "images", ".jpg"),
                                ("labels", yolo_dir / "obj_train_data", ".txt")):
        (tmp_path / sub / "train").mkdir(parents=True)
        for path in folder.glob(f"*{suffix}"):  # the ultralytics layout, as links to the fixture
            (tmp_path / sub / "train" / path.name).symlink_to(path)
    yolo = read_yolo(tmp_path, "train", classes)
    assert len(yolo) == 100 and sum(len(r.boxes) for r in yolo.records) == 273
    voc = _by_name(padilla_voc)
    for name, rows in _by_name(yolo).items():
        expected = voc[name] + [0, 1, 1, 0, 0]
        np.testing.assert_allclose(rows, expected[np.lexsort(expected.T[::-1])], atol=1e-3)


def test_coco8_yolo_labels(shared_data: Path) -> None:
    root = shared_data / "coco8-ultralytics"
    splits = {split: read_yolo(root, split, COCO80) for split in ("train", "val")}
    assert [len(ds) for ds in splits.values()] == [4, 4]
    records = [r for ds in splits.values() for r in ds.records]
    assert sum(len(r.boxes) for r in records) == 30
    assert sum(int((r.box_area < 32**2).sum()) for r in records) == 4
    val = {r.file_name: r for r in splits["val"].records}
    r49 = val["000000000049.jpg"]
    # first line "17 0.597835 0.63755 0.342283 0.36886", normalised by the JPEG's own size
    w, h = r49.width, r49.height
    np.testing.assert_allclose(r49.boxes[0], [(0.597835 - 0.342283 / 2) * w, (0.63755 - 0.36886 / 2) * h,
                                              (0.597835 + 0.342283 / 2) * w, (0.63755 + 0.36886 / 2) * h])
    assert r49.labels.tolist()[:3] == [17, 17, 0]
    for r in records:
        assert (r.boxes >= -1e-6).all() and (r.boxes[:, 2] <= r.width + 1e-6).all()


def test_coco_val2014_fixture(shared_data: Path) -> None:
    path = shared_data / "coco-val2014-100" / "instances_val2014_100.json"
    ds = read_coco(path)
    raw = json.loads(path.read_text())
    assert len(ds) == 100 and ds.num_classes == 80
    assert sum(len(r.boxes) for r in ds.records) == 839
    assert sum(int(r.iscrowd.sum()) for r in ds.records) == 9
    areas = np.concatenate([r.box_area for r in ds.records])
    by_scale = np.bincount(np.searchsorted([32**2, 96**2], areas, side="right"), minlength=3)
    assert by_scale.tolist() == [408, 243, 188]  # the fixture's README, from the annotations' own area
    assert ds.category_ids == sorted(c["id"] for c in raw["categories"]) and ds.category_ids[-1] == 90
    assert [r.image_id for r in ds.records] == [im["id"] for im in raw["images"]]
    ann = raw["annotations"][0]
    record = next(r for r in ds.records if r.image_id == ann["image_id"])
    x, y, w, h = ann["bbox"]
    k = next(i for i, box in enumerate(record.boxes) if np.allclose(box, [x, y, x + w, y + h]))
    assert ds.category_ids[record.labels[k]] == ann["category_id"] and record.area[k] == ann["area"]


def test_to_coco_dict_keeps_ids_crowd_and_area(shared_data: Path, tmp_path: Path) -> None:
    ds = read_coco(shared_data / "coco-val2014-100" / "instances_val2014_100.json")
    back = read_coco(write_coco(ds, tmp_path / "gt.json"), image_root=tmp_path)
    _assert_same(ds, back)
    assert [r.image_id for r in back.records] == [r.image_id for r in ds.records]
    assert back.category_ids == ds.category_ids
    for a, b in zip(ds.records, back.records, strict=True):
        np.testing.assert_array_equal(a.iscrowd, b.iscrowd)
        np.testing.assert_array_equal(a.area, b.area)


# --- round trips -------------------------------------------------------------------------------------------


def test_voc_to_coco_to_voc_is_exact(padilla_voc: DetectionDataset, tmp_path: Path) -> None:
    coco_dict = to_coco_dict(padilla_voc)
    assert sum(a.get("difficult", 0) for a in coco_dict["annotations"]) == 38
    assert {a["iscrowd"] for a in coco_dict["annotations"]} == {0}
    coco = read_coco(write_coco(padilla_voc, tmp_path / "gt.json"), image_root=padilla_voc.image_root)
    _assert_same(padilla_voc, coco)
    split_file = write_voc(coco, tmp_path / "VOC", "val")
    assert split_file.read_text().splitlines()[0] == "2007_000027"
    _assert_same(padilla_voc, read_voc(tmp_path / "VOC", "val"))
    assert (tmp_path / "VOC" / "JPEGImages" / "2007_000027.jpg").is_file()


def test_voc_to_yolo_and_back_is_exact(padilla_voc: DetectionDataset, tmp_path: Path) -> None:
    write_yolo(padilla_voc, tmp_path, "val", link_images=True)
    assert (tmp_path / "images" / "val" / "2007_000027.jpg").is_symlink()
    _assert_same(padilla_voc, read_yolo(tmp_path, "val", padilla_voc.classes), difficult=False)


def test_writers_handle_crowd_and_fractional_boxes(tmp_path: Path) -> None:
    record = ImageRecord(image_id=7, file_name="a.jpg", width=40, height=30,
                         boxes=[[0.5, 1.25, 10.5, 20.0], [2, 2, 30, 28]], labels=[1, 0],
                         iscrowd=[False, True])
    ds = DetectionDataset(["x", "y"], [record], tmp_path, category_ids=[3, 9])
    coco = to_coco_dict(ds)
    assert [a["bbox"] for a in coco["annotations"]] == [[0.5, 1.25, 10.0, 18.75], [2.0, 2.0, 28.0, 26.0]]
    assert [a["category_id"] for a in coco["annotations"]] == [9, 3]
    write_yolo(ds, tmp_path / "yolo", "s")
    lines = (tmp_path / "yolo" / "labels" / "s" / "a.txt").read_text().splitlines()
    assert lines == ["1 0.1375 0.354166666667 0.25 0.625"]  # the crowd region is dropped
    write_voc(ds, tmp_path / "voc", "s")
    back = read_voc(tmp_path / "voc", "s", classes=["x", "y"])
    np.testing.assert_array_equal(back.records[0].boxes, record.boxes)
    assert back.records[0].difficult.tolist() == [False, True]  # crowd is written as difficult


# --- bad input ---------------------------------------------------------------------------------------------

VOC_XML = """<annotation><filename>a.jpg</filename>
<size><width>100</width><height>80</height><depth>3</depth></size>
<object><name>dog</name><difficult>0</difficult>
<bndbox><xmin>10</xmin><ymin>5</ymin><xmax>50</xmax><ymax>40</ymax></bndbox></object></annotation>"""


@pytest.mark.parametrize(("old", "new", "field"), [
    ("</annotation>", "", None),  # malformed XML
    ("<size><width>100</width><height>80</height><depth>3</depth></size>", "", "size"),
    ("<height>80</height>", "", "height"),
    ("<bndbox><xmin>10</xmin><ymin>5</ymin><xmax>50</xmax><ymax>40</ymax></bndbox>", "", "bndbox"),
    ("<ymax>40</ymax>", "", "ymax"),
    ("<xmin>10</xmin>", "<xmin>ten</xmin>", "xmin"),
    ("<filename>a.jpg</filename>", "<filename>../a.jpg</filename>", "filename"),
])
def test_voc_bad_xml(tmp_path: Path, old: str, new: str, field: str | None) -> None:
    assert old in VOC_XML
    (tmp_path / "a.xml").write_text(VOC_XML.replace(old, new))
    with pytest.raises(BenchInputError) as info:
        read_voc(tmp_path)
    assert info.value.path == str(tmp_path / "a.xml") and info.value.field == field


def test_voc_devkit_tolerance_and_bad_layouts(tmp_path: Path) -> None:
    xml = VOC_XML.replace("<xmin>10</xmin>", "<xmin>1</xmin>").replace("<xmax>50</xmax>", "<xmax>100</xmax>")
    (tmp_path / "a.xml").write_text(xml)
    np.testing.assert_array_equal(read_voc(tmp_path).records[0].boxes, [[0, 4, 100, 40]])
    with pytest.raises(BenchInputError) as info:
        read_voc(tmp_path, classes=["cat"])
    assert info.value.field == "name" and "dog" in str(info.value)
    devkit = tmp_path / "VOC2007"
    (devkit / "Annotations").mkdir(parents=True)
    with pytest.raises(BenchInputError, match=r"test\.txt.*not found"):
        read_voc(devkit, "test")
    (devkit / "ImageSets" / "Main").mkdir(parents=True)
    (devkit / "ImageSets" / "Main" / "test.txt").write_text("000001\n")
    with pytest.raises(BenchInputError) as info:
        read_voc(devkit, "test")
    assert info.value.path == str(devkit / "Annotations" / "000001.xml")


COCO_GT = {"images": [{"id": 1, "file_name": "a.jpg", "width": 100, "height": 80}],
           "annotations": [{"id": 5, "image_id": 1, "category_id": 3, "bbox": [1, 2, 10, 20], "area": 200,
                            "iscrowd": 0}],
           "categories": [{"id": 3, "name": "dog"}]}


@pytest.mark.parametrize(("edit", "entry", "field"), [
    (lambda d: d.pop("annotations"), None, "annotations"),
    (lambda d: d["images"][0].pop("width"), "images[0] id 1", "width"),
    (lambda d: d["annotations"][0].pop("bbox"), "annotations[0] id 5", "bbox"),
    (lambda d: d["annotations"][0].update(bbox=[1, 2, 10]), "annotations[0] id 5", "bbox"),
    (lambda d: d["annotations"][0].update(bbox=[1, "x", 10, 3]), "annotations[0] id 5", "bbox"),
    (lambda d: d["annotations"][0].update(bbox=[1, float("nan"), 10, 3]), "annotations[0] id 5", "bbox"),
    (lambda d: d["annotations"][0].update(area=float("nan")), "annotations[0] id 5", "area"),
    (lambda d: d["annotations"][0].update(image_id=2), "annotations[0] id 5", "image_id"),
    (lambda d: d["annotations"][0].update(category_id=4), "annotations[0] id 5", "category_id"),
    (lambda d: d["categories"].append({"id": 3, "name": "cat"}), "categories[0] id 3", "id"),
    (lambda d: d["images"][0].update(id=1.5), "images[0] id 1.5", "id"),
    (lambda d: d["images"][0].update(height=0), "images[0] id 1", "height"),
    (lambda d: d["images"][0].update(file_name="/etc/a.jpg"), "images[0] id 1", "file_name"),
    (lambda d: d["images"][0].update(file_name="x/../../a.jpg"), "images[0] id 1", "file_name"),
])
def test_coco_bad_json(tmp_path: Path, edit, entry: str | None, field: str) -> None:
    data = json.loads(json.dumps(COCO_GT))
    edit(data)
    path = tmp_path / "gt.json"
    path.write_text(json.dumps(data))  # json writes NaN as the NaN literal, which the reader must refuse
    with pytest.raises(BenchInputError) as info:
        read_coco(path)
    assert (info.value.path, info.value.entry, info.value.field) == (str(path), entry, field)


def test_coco_unreadable_or_malformed(tmp_path: Path) -> None:
    with pytest.raises(BenchInputError, match="cannot read"):
        read_coco(tmp_path / "missing.json")
    bad = tmp_path / "bad.json"
    bad.write_text('{"images": [}')
    with pytest.raises(BenchInputError, match="malformed JSON at line 1"):
        read_coco(bad)


def test_coco_default_image_root(tmp_path: Path) -> None:
    (tmp_path / "annotations").mkdir()
    path = tmp_path / "annotations" / "instances_val.json"
    path.write_text(json.dumps(COCO_GT))
    assert read_coco(path).image_root == tmp_path / "annotations"
    (tmp_path / "val").mkdir()  # the COCO layout: annotations/ next to val/
    assert read_coco(path).image_root == tmp_path / "val"
    (tmp_path / "images" / "val").mkdir(parents=True)
    assert read_coco(path).image_root == tmp_path / "images" / "val"


@pytest.mark.parametrize(("line", "field"), [
    ("0 0.5 0.5 0.2", None),  # four fields
    ("0 0.5 0.5 0.2 x", None),
    ("2 0.5 0.5 0.2 0.2", "cls"),  # two classes
    ("0.5 0.5 0.5 0.2 0.2", "cls"),
    ("0 nan 0.5 0.2 0.2", "box"),
])
def test_yolo_bad_labels(tmp_path: Path, line: str, field: str | None) -> None:
    from PIL import Image

    (tmp_path / "images" / "s").mkdir(parents=True)
    (tmp_path / "labels" / "s").mkdir(parents=True)
    Image.new("RGB", (40, 30)).save(tmp_path / "images" / "s" / "a.png")
    label = tmp_path / "labels" / "s" / "a.txt"
    label.write_text(f"1 0.5 0.5 0.5 0.5\n{line}\n")
    with pytest.raises(BenchInputError) as info:
        read_yolo(tmp_path, "s", ["a", "b"])
    assert (info.value.path, info.value.entry, info.value.field) == (str(label), "line 2", field)
