"""Size-bucket protocols against pycocotools, TIDE against tidecv, bootstrap and ignore regions."""

from __future__ import annotations

import contextlib
import io
import json
from pathlib import Path

import numpy as np
import pytest
from pycocotools.coco import COCO
from pycocotools.cocoeval import COCOeval

from bench.metrics.bootstrap import paired_comparison, resampled_values
from bench.metrics.coco import CocoBoxes, evaluate_coco
from bench.metrics.coco_match import match_coco
from bench.metrics.ignore import in_ignore_regions
from bench.metrics.protocols import TOLERANCE_THRESHOLDS, get_protocol
from bench.metrics.small_objects import evaluate_protocol, protocol_rows
from bench.metrics.tide import tide
from tests.test_metrics_coco import random_problem


def boxes(gt: dict, dts: list[dict]) -> tuple[CocoBoxes, CocoBoxes, np.ndarray, list[int]]:
    cats = [c["id"] for c in gt["categories"]]
    index = {c: i for i, c in enumerate(cats)}
    truth = CocoBoxes.ground_truth_from_coco(gt, cats)
    dets = CocoBoxes.detections(np.array([d["image_id"] for d in dts], np.int64),
                                np.array([index[d["category_id"]] for d in dts], np.int64),
                                np.array([d["bbox"] for d in dts], np.float64).reshape(-1, 4),
                                np.array([d["score"] for d in dts], np.float64))
    return truth, dets, np.array(sorted(i["id"] for i in gt["images"])), cats


def pycocotools_with(gt: dict, dts: list[dict], tmp_path: Path, area_rng: list, max_dets: list,
                     iou: np.ndarray) -> COCOeval:
    path = tmp_path / "gt.json"
    path.write_text(json.dumps(gt))
    with contextlib.redirect_stdout(io.StringIO()):
        coco = COCO(str(path))
        ev = COCOeval(coco, coco.loadRes(dts), "bbox")
        ev.params.areaRng, ev.params.maxDets, ev.params.iouThrs = area_rng, max_dets, iou
        ev.params.areaRngLbl = [f"a{i}" for i in range(len(area_rng))]
        ev.evaluate()
        ev.accumulate()
    return ev


@pytest.mark.parametrize("seed", range(3))
@pytest.mark.parametrize("name", ["aitod", "tt100k", "tinyperson"])
def test_protocol_equals_pycocotools_with_its_area_ranges(name: str, seed: int, tmp_path: Path) -> None:
    gt, dts = random_problem(seed)
    truth, dets, ids, cats = boxes(gt, dts)
    protocol = get_protocol(name)
    params = protocol.params()
    ours = evaluate_coco(truth, dets, ids, cats, params)
    ref = pycocotools_with(gt, dts, tmp_path, [list(v) for v in params.area_ranges.values()],
                           list(protocol.max_dets), params.iou_thresholds)
    order = np.argsort(cats)
    np.testing.assert_allclose(ours.precision[:, :, order], ref.eval["precision"], rtol=0, atol=1e-9)
    np.testing.assert_allclose(ours.recall[:, order], ref.eval["recall"], rtol=0, atol=1e-9)
    # the AP of every bucket, as pycocotools' arrays average it
    for a in range(len(params.area_ranges)):
        p = ref.eval["precision"][:, :, :, a, -1]
        expected = p[p > -1].mean() if (p > -1).any() else -1.0
        key = "AP" if a == 0 else f"AP_{list(params.area_ranges)[a]}"
        assert abs(ours.stats[key] - expected) <= 1e-9


def test_tolerance_grid_holds_the_standard_arrays(tmp_path: Path) -> None:
    gt, dts = random_problem(4)
    truth, dets, ids, cats = boxes(gt, dts)
    standard = evaluate_coco(truth, dets, ids, cats)
    run = evaluate_protocol(truth, dets, ids, cats, get_protocol("coco"), None)
    rows = protocol_rows(get_protocol("coco"))
    np.testing.assert_array_equal(run.precision[rows], standard.precision)
    assert run.summary(rows, standard.params) == standard.stats
    assert len(TOLERANCE_THRESHOLDS) == 18 and run.precision.shape[0] == 18
    low = run.precision[0, :, :, 0, -1]
    assert low[low > -1].mean() >= standard.stats["AP50"]  # looser IoU never lowers AP here


def test_max_dets_override_keeps_default_summary_exact() -> None:
    protocol = get_protocol("coco", (1, 10, 500))
    assert protocol.max_dets == (1, 10, 500) and get_protocol("coco").max_dets == (1, 10, 100)
    with pytest.raises(ValueError, match="unknown size protocol"):
        get_protocol("nope")


def _tidecv_run(gt_path: Path, dt_path: Path):
    for name, alias in (("float", float), ("int", int), ("bool", bool)):  # tidecv 1.0.1 predates numpy
        if not hasattr(np, name):  # 1.24's removal of the aliases; numpy 2 has np.bool again: keep it
            setattr(np, name, alias)
    from tidecv import TIDE, datasets

    with contextlib.redirect_stdout(io.StringIO()):
        run = TIDE().evaluate(datasets.COCO(str(gt_path)), datasets.COCOResult(str(dt_path)), mode=TIDE.BOX)
        return run, run.fix_main_errors(), run.fix_special_errors()


def _ours(gt: dict, dts: list[dict]) -> dict:
    truth, dets, _, cats = boxes(gt, dts)
    position = {img["id"]: i for i, img in enumerate(gt["images"])}  # tidecv visits images in file order
    gt_pos = np.array([position[i] for i in truth.image_id.tolist()], np.int64)
    det_pos = np.array([position[i] for i in dets.image_id.tolist()], np.int64)
    return tide(truth.xywh, truth.label, gt_pos, truth.iscrowd, dets.xywh, dets.label, det_pos, dets.weight,
                len(cats),
                {"small": (0, 32**2), "medium": (32**2, 96**2), "large": (96**2, 1e10)})


def _compare(gt_path: Path, dt_path: Path, gt: dict, dts: list[dict], tolerance: float = 0.1) -> None:
    run, main, special = _tidecv_run(gt_path, dt_path)
    ours = _ours(gt, dts)
    assert abs(ours["AP50"] - run.ap) <= tolerance
    for error, value in main.items():
        assert abs(ours["main"][error.short_name] - value) <= tolerance, error.short_name
    for error, value in special.items():
        assert abs(ours["special"][error.short_name] - value) <= tolerance, error.short_name
    assert ours["counts"] == {e.short_name: len(v) for e, v in run.error_dict.items()}


def test_tide_equals_tidecv_on_the_cocoapi_fixture(shared_data: Path) -> None:
    folder = shared_data / "coco-val2014-100"
    gt_path = folder / "instances_val2014_100.json"
    dt_path = folder / "instances_val2014_fakebbox100_results.json"
    _compare(gt_path, dt_path, json.loads(gt_path.read_text()), json.loads(dt_path.read_text()))


def test_tide_equals_tidecv_on_the_boxarea_fixture(shared_data: Path, tmp_path: Path) -> None:
    gt_path = shared_data / "coco-val2014-100" / "instances_val2014_100.json"
    gt = json.loads(gt_path.read_text())
    gt["annotations"] = [a for a in gt["annotations"] if not a["iscrowd"]]
    dts = json.loads((shared_data / "coco-val2014-100-boxarea" / "sampled_bbox_results.json").read_text())
    dts = dts["annotations"] if isinstance(dts, dict) else dts
    (tmp_path / "gt.json").write_text(json.dumps(gt))
    (tmp_path / "dt.json").write_text(json.dumps(dts))
    _compare(tmp_path / "gt.json", tmp_path / "dt.json", gt, dts)


@pytest.mark.parametrize(("seed", "digits"), [(0, None), (1, None), (1, 1), (2, 1)])
def test_tide_equals_tidecv_on_random_problems(seed: int, digits: int | None, tmp_path: Path) -> None:
    """Also with scores rounded to ``digits`` (many ties, which tidecv breaks by insertion order, a fixed
    error in the place of its detection): equal up to the sums' rounding, far inside the 0.1 required."""
    gt, dts = random_problem(seed, n_images=30)
    for d in dts:
        d["score"] = d["score"] if digits is None else round(d["score"], digits)
    for a in gt["annotations"]:
        a["id"] += 1  # tidecv keys annotations by id and reads a mask for every box
        x, y, w, h = a["bbox"]
        a["segmentation"] = [[x, y, x + w, y, x + w, y + h, x, y + h]]
    (tmp_path / "gt.json").write_text(json.dumps(gt))
    (tmp_path / "dt.json").write_text(json.dumps(dts))
    _compare(tmp_path / "gt.json", tmp_path / "dt.json", gt, dts, tolerance=1e-9)


def test_bootstrap_with_unit_weights_is_the_point_estimate_and_pairs() -> None:
    gt, dts = random_problem(5, n_images=30)
    truth, dets, ids, cats = boxes(gt, dts)
    protocol = get_protocol("coco")
    run = evaluate_protocol(truth, dets, ids, cats, protocol, None)
    rows = protocol_rows(protocol)
    stats = run.summary(rows, protocol.params())
    values = resampled_values(run, rows, np.ones((3, len(ids)), np.int32))
    assert values["AP"] == pytest.approx([stats["AP"]] * 3, abs=1e-12)
    assert values["AP50"] == pytest.approx([stats["AP50"]] * 3, abs=1e-12)
    assert values["AP_small"] == pytest.approx([stats["APs"]] * 3, abs=1e-12)
    weights = np.random.default_rng(0).multinomial(len(ids), np.full(len(ids), 1 / len(ids)), size=40)
    draws = resampled_values(run, rows, weights.astype(np.int32))["AP"]
    assert draws.std() > 0
    same = paired_comparison(draws.tolist(), draws.tolist())
    assert same["mean_difference"] == 0 and same["p_not_better"] == 1


def test_ignore_regions_by_intersection_over_detection() -> None:
    det = np.array([[10, 10, 14, 14], [0, 0, 100, 100], [50, 50, 54, 54]], np.float64)
    inside = in_ignore_regions(np.array([1, 1, 2]), det, np.array([1]), np.array([[0, 0, 20, 20]]))
    assert inside.tolist() == [True, False, False]  # tiny box inside: IoD 1; big box: IoD 0.04; other image


@pytest.mark.parametrize("kernels", ["0", "1"])
def test_an_ignore_region_drops_false_positives_only(kernels: str, monkeypatch: pytest.MonkeyPatch) -> None:
    # one box; a true positive and a higher-scoring false positive, both inside an ignore region
    monkeypatch.setenv("BENCH_NATIVE", kernels)
    truth = CocoBoxes(np.array([1]), np.array([0]), np.array([[10.0, 10, 8, 8]]), np.array([64.0]),
                      np.array([False]), np.array([1]))
    dets = CocoBoxes.detections(np.array([1, 1]), np.array([0, 0]),
                                np.array([[10.0, 10, 8, 8], [30, 30, 8, 8]]), np.array([0.5, 0.9]))
    matching = match_coco(truth, dets, np.array([1]), [1], np.array([[0, 1e10]]), np.array([0.5]), 100,
                          det_in_ignore_region=np.array([True, True]))
    precision = {regions: matching.cell(0, 100, regions)[0][0, :, 0] for regions in (False, True)}
    # pycocotools' tp / (tp + fp + eps): 1 - 2e-16, not 1
    np.testing.assert_allclose(precision[True], 1.0, rtol=0, atol=1e-12)  # the false positive is ignored
    np.testing.assert_allclose(precision[False], 0.5, rtol=0, atol=1e-12)  # without regions: it ranks first
