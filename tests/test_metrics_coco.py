"""COCO metrics: equal to pycocotools bit for bit, on the shared fixtures and on random problems."""

from __future__ import annotations

import contextlib
import io
import json
from pathlib import Path

import numpy as np
import pytest
from pycocotools.coco import COCO
from pycocotools.cocoeval import COCOeval

from bench.data.coco import read_coco, read_coco_annotations, write_coco
from bench.metrics import DetectionResults, evaluate
from bench.metrics.coco import SUMMARY_KEYS, CocoBoxes, evaluate_coco


def pycocotools_eval(gt_path: Path, dt: Path | list[dict]) -> COCOeval:
    with contextlib.redirect_stdout(io.StringIO()):
        gt = COCO(str(gt_path))
        coco_eval = COCOeval(gt, gt.loadRes(dt if isinstance(dt, list) else str(dt)), "bbox")
        coco_eval.evaluate()
        coco_eval.accumulate()
        coco_eval.summarize()
    return coco_eval


def as_pycocotools(stats: dict[str, float]) -> list[float]:
    return [-1.0 if np.isnan(stats[k]) else stats[k] for k in SUMMARY_KEYS]


def random_problem(seed: int, n_images: int = 24) -> tuple[dict, list[dict]]:
    """Crowd regions, an ``area`` unlike w*h, duplicate GT boxes (exact IoU ties), tied scores, a pair with
    more than 100 detections, a category without GT, images without GT, unsorted category ids, annotation
    id 0."""
    rng = np.random.default_rng(seed)
    cat_ids = [7, 3, 12, 1, 5]
    images = [{"id": int(i), "file_name": f"{i}.jpg", "width": 200, "height": 160}
              for i in rng.permutation(np.arange(100, 100 + n_images))]
    anns = []
    for img in images[:-3]:
        for _ in range(rng.integers(0, 7)):
            w, h = np.exp(rng.uniform(np.log(3), np.log(150), 2))
            box = [float(np.round(rng.uniform(0, 200 - w), 2)), float(np.round(rng.uniform(0, 160 - h), 1)),
                   float(np.round(w, 2)), float(np.round(h, 2))]
            copies = 2 if rng.random() < 0.1 else 1
            for _ in range(copies):
                anns.append({"id": len(anns), "image_id": img["id"],
                             "category_id": int(rng.choice(cat_ids[1:])), "bbox": box,
                             "area": float(box[2] * box[3] * rng.uniform(0.4, 1.1)),
                             "iscrowd": int(rng.random() < 0.08)})
    dets = []
    for ann in anns:
        for _ in range(rng.integers(0, 4)):
            x, y, w, h = np.asarray(ann["bbox"]) + rng.normal(0, 0.12, 4) * np.tile(ann["bbox"][2:], 2)
            cat = ann["category_id"] if rng.random() < 0.85 else int(rng.choice(cat_ids))
            dets.append({"image_id": ann["image_id"], "category_id": cat,
                         "bbox": [float(x), float(y), float(max(abs(w), 0.5)), float(max(abs(h), 0.5))],
                         "score": float(np.round(rng.random(), 1))})
    for _ in range(40):
        img = images[rng.integers(0, len(images))]
        w, h = rng.uniform(2, 80, 2)
        dets.append({"image_id": img["id"], "category_id": int(rng.choice(cat_ids)),
                     "bbox": [float(rng.uniform(0, 120)), float(rng.uniform(0, 80)), float(w), float(h)],
                     "score": float(np.round(rng.random(), 2))})
    crowded = anns[0] if anns else {"image_id": images[0]["id"], "category_id": 3, "bbox": [5, 5, 30, 30]}
    for k in range(110):
        dets.append({"image_id": crowded["image_id"], "category_id": crowded["category_id"],
                     "bbox": [crowded["bbox"][0] + k % 7, *crowded["bbox"][1:]],
                     "score": float(np.round(rng.random(), 2))})
    categories = [{"id": c, "name": f"c{c}"} for c in cat_ids]
    return {"images": images, "annotations": anns, "categories": categories}, dets


@pytest.mark.parametrize("seed", range(6))
def test_random_problems_equal_pycocotools_arrays(tmp_path: Path, seed: int) -> None:
    gt_dict, dets = random_problem(seed)
    (tmp_path / "gt.json").write_text(json.dumps(gt_dict))
    reference = pycocotools_eval(tmp_path / "gt.json", dets)

    category_ids = [c["id"] for c in gt_dict["categories"]]  # unsorted: class order differs from pycocotools'
    det = CocoBoxes.detections(np.array([d["image_id"] for d in dets]),
                               np.array([category_ids.index(d["category_id"]) for d in dets]),
                               np.array([d["bbox"] for d in dets]), np.array([d["score"] for d in dets]))
    ours = evaluate_coco(CocoBoxes.ground_truth_from_coco(gt_dict, category_ids), det,
                         np.array([i["id"] for i in gt_dict["images"]]), category_ids)

    to_ours = np.argsort(np.argsort(category_ids))  # pycocotools' class axis is sorted by category id
    np.testing.assert_array_equal(ours.precision, reference.eval["precision"][:, :, to_ours])
    np.testing.assert_array_equal(ours.recall, reference.eval["recall"][:, to_ours])
    np.testing.assert_array_equal(ours.scores, reference.eval["scores"][:, :, to_ours])
    assert [ours.stats[k] for k in SUMMARY_KEYS] == list(reference.stats)


@pytest.mark.parametrize("seed", range(3))
def test_public_path_equals_pycocotools_on_files(tmp_path: Path, seed: int) -> None:
    """read_coco + from_coco_json + evaluate(coco_gt=...) on the files pycocotools reads."""
    gt_dict, dets = random_problem(seed + 10)
    gt_path, dt_path = tmp_path / "gt.json", tmp_path / "dt.json"
    gt_path.write_text(json.dumps(gt_dict))
    dt_path.write_text(json.dumps(dets))
    ds, columns = read_coco_annotations(gt_path)
    reference = list(pycocotools_eval(gt_path, dt_path).stats)
    dets = DetectionResults.from_coco_json(dt_path, ds)
    for coco_gt in (gt_dict, columns):  # the dict, or the columns read_coco parsed (bench.evaluate's path)
        result = evaluate(ds, dets, coco_gt=coco_gt, small_objects=None)
        assert as_pycocotools(result.coco) == reference


def test_dataset_path_equals_pycocotools_on_exported_files(tmp_path: Path) -> None:
    """Without the source dict, COCO numbers equal pycocotools on what write_coco and to_coco_json write."""
    gt_dict, dets = random_problem(42)
    (tmp_path / "src.json").write_text(json.dumps(gt_dict))
    ds = read_coco(tmp_path / "src.json")
    results = DetectionResults.from_coco_json(_write(tmp_path / "src_dt.json", dets), ds)
    gt_path = write_coco(ds, tmp_path / "gt.json")
    dt_path = DetectionResults(results.image_id, results.label, results.boxes, results.score).to_coco_json(
        tmp_path / "dt.json", ds)
    ours = evaluate(ds, DetectionResults.from_coco_json(dt_path, ds))
    assert as_pycocotools(ours.coco) == list(pycocotools_eval(gt_path, dt_path).stats)


def test_cocoapi_fake_results_fixture_exact(shared_data: Path) -> None:
    folder = shared_data / "coco-val2014-100"
    expected = json.loads((folder / "expected.json").read_text())["stats"]
    gt_path = folder / "instances_val2014_100.json"
    ds = read_coco(gt_path)
    dets = DetectionResults.from_coco_json(folder / "instances_val2014_fakebbox100_results.json", ds)
    result = evaluate(ds, dets, coco_gt=json.loads(gt_path.read_text()))
    assert result.coco == expected  # every float, not approximately
    assert result.coco["APs"] != evaluate(_without_area(ds), dets).coco["APs"]  # the area field matters


def test_toy_cats_fixture_exact_including_annotation_id_zero(shared_data: Path) -> None:
    """The GT uses annotation id 0, which pycocotools never credits as a match; the numbers reproduce that."""
    folder = shared_data / "voc-toy-cats-padilla"
    expected = json.loads((folder / "expected.json").read_text())["coco"]["stats"]
    gt_path = folder / "gts_coco_format" / "toy_example_coco.JSON"
    ds = read_coco(gt_path)
    dets = DetectionResults.from_coco_json(folder / "dets_coco_format" / "coco_dets.json", ds)
    result = evaluate(ds, dets, coco_gt=json.loads(gt_path.read_text()))
    assert as_pycocotools(result.coco) == [expected[k] for k in SUMMARY_KEYS]


def test_boxarea_fixture_equals_pycocotools(shared_data: Path, tmp_path: Path) -> None:
    folder = shared_data / "coco-val2014-100-boxarea"
    gt_path = folder / "sampled_gts_bbox_area.json"
    raw_dets = json.loads((folder / "sampled_bbox_results.json").read_text())["annotations"]
    ds = read_coco(gt_path)
    result = evaluate(ds, DetectionResults.from_coco_json(folder / "sampled_bbox_results.json", ds),
                      coco_gt=json.loads(gt_path.read_text()))
    assert as_pycocotools(result.coco) == list(pycocotools_eval(gt_path, raw_dets).stats)


def test_per_class_ap_from_precision_array(shared_data: Path) -> None:
    folder = shared_data / "coco-val2014-100"
    gt_path = folder / "instances_val2014_100.json"
    reference = pycocotools_eval(gt_path, folder / "instances_val2014_fakebbox100_results.json")
    ds = read_coco(gt_path)
    dets = DetectionResults.from_coco_json(folder / "instances_val2014_fakebbox100_results.json", ds)
    result = evaluate(ds, dets, coco_gt=json.loads(gt_path.read_text()))
    precision = reference.eval["precision"][:, :, :, 0, -1]
    for k, row in enumerate(result.per_class):
        p = precision[:, :, k]
        if (p > -1).any():
            assert row["AP"] == np.mean(p[p > -1])
            assert row["AP50"] == np.mean(p[0][p[0] > -1])
        else:
            assert row["n_gt"] == 0 and np.isnan(row["AP"])


def test_ground_truth_from_parsed_columns_equals_from_the_dict(tmp_path: Path) -> None:
    """bench.evaluate scores the columns read_coco parsed; they are the dict's numbers, ids of 0 in any form
    uncredited (pycocotools stores a match as the id), a missing area w * h."""
    gt_dict, _ = random_problem(7)
    anns = gt_dict["annotations"]
    anns[0]["id"], anns[1]["id"], anns[2]["id"] = 0, 0.0, False
    del anns[3]["id"], anns[4]["area"]
    anns[5]["bbox"] = [0.1, 0.2, 0.30000000000000004, 0.7]  # x + w - x != w
    ds, columns = read_coco_annotations(_write(tmp_path / "gt.json", gt_dict))
    cats = list(ds.category_ids)
    from_columns, from_dict = (CocoBoxes.ground_truth_from_coco(x, cats) for x in (columns, gt_dict))
    for name in ("image_id", "label", "xywh", "weight", "iscrowd"):
        np.testing.assert_array_equal(getattr(from_columns, name), getattr(from_dict, name), strict=True)
    np.testing.assert_array_equal(from_columns.ann_id != 0, [a.get("id", 1) != 0 for a in anns])
    assert (from_columns.ann_id == 0).sum() == 3


def test_per_class_aps_at_once_equal_class_ap_bit_for_bit() -> None:
    from dataclasses import replace

    from bench.metrics.evaluation import _class_aps
    gt_dict, dets = random_problem(5)
    category_ids = [c["id"] for c in gt_dict["categories"]]
    det = CocoBoxes.detections(np.array([d["image_id"] for d in dets]),
                               np.array([category_ids.index(d["category_id"]) for d in dets]),
                               np.array([d["bbox"] for d in dets]), np.array([d["score"] for d in dets]))
    coco = evaluate_coco(CocoBoxes.ground_truth_from_coco(gt_dict, category_ids), det,
                         np.array([i["id"] for i in gt_dict["images"]]), category_ids)
    odd = coco.precision.copy()
    odd[0, :3, 1, 0, -1] = -1  # part of a block undefined: not pycocotools' arrays, the one-by-one path
    keys = {"AP": (None, "all"), "AP50": (0.5, "all"), "AP75": (0.75, "all"), "APs": (None, "small"),
            "APm": (None, "medium"), "APl": (None, "large")}
    for ev in (coco, replace(coco, precision=odd)):
        got = _class_aps(ev)
        for key, (iou, area) in keys.items():
            expected = [ev.class_ap(c, iou, area) for c in range(len(category_ids))]
            np.testing.assert_array_equal(got[key], expected, strict=True)
        assert np.isnan(got["AP"]).any() and not np.isnan(got["AP"]).all()


def test_detections_of_class_without_gt_do_not_lower_map(tmp_path: Path) -> None:
    gt_dict, dets = random_problem(3)
    gt_path = _write(tmp_path / "gt.json", gt_dict)
    ds = read_coco(gt_path)
    base = evaluate(ds, DetectionResults.from_coco_json(_write(tmp_path / "a.json", dets), ds))
    extra = [{"image_id": gt_dict["images"][0]["id"], "category_id": 7, "bbox": [1, 1, 20, 20],
              "score": 0.99}] * 5
    more = evaluate(ds, DetectionResults.from_coco_json(_write(tmp_path / "b.json", dets + extra), ds))
    assert more.coco["AP"] == base.coco["AP"] and more.voc == base.voc
    assert next(r for r in more.per_class if r["class"] == "c7")["n_det"] > 0
    assert np.isnan(next(r for r in more.per_class if r["class"] == "c7")["AP"])


def _write(path: Path, data: object) -> Path:
    path.write_text(json.dumps(data))
    return path


def _without_area(ds):  # type: ignore[no-untyped-def]
    from dataclasses import replace
    return replace(ds, records=[replace(r, area=None) for r in ds.records])
