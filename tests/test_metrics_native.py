"""The compiled kernels (bench.metrics.native) against their NumPy forms, and NWD matching against
pycocotools given NWD as its overlap."""

from __future__ import annotations

import contextlib
import io
import json
from dataclasses import replace
from pathlib import Path

import numpy as np
import pytest
from pycocotools.coco import COCO
from pycocotools.cocoeval import COCOeval

from bench.evaluate import run
from bench.metrics import native
from bench.metrics.accumulate import FP, IGNORED, TP
from bench.metrics.bootstrap import resample_weights
from bench.metrics.coco import score_coco
from bench.metrics.coco_match import match_coco
from bench.metrics.confusion import confusion_matrix
from bench.metrics.nwd import nwd
from bench.metrics.protocols import TOLERANCE_THRESHOLDS, get_protocol
from bench.metrics.resample import resampled_ap
from bench.metrics.small_objects import protocol_match, protocol_rows
from bench.metrics.tide import tide
from bench.metrics.voc import match_devkit, to_devkit
from tests.test_metrics_coco import random_problem
from tests.test_metrics_small_objects import boxes

RANGES = np.array([[0, 1e10], [0, 32.0**2], [16.0**2, 48.0**2], [64.0**2, 1e10]])


def both(monkeypatch: pytest.MonkeyPatch, compute):  # type: ignore[no-untyped-def]
    """``compute()`` with the NumPy forms, then with the kernels."""
    out = []
    for flag in ("0", "1"):
        monkeypatch.setenv(native.ENV, flag)
        out.append(compute())
    return out


def test_the_kernels_are_built_by_the_install(monkeypatch: pytest.MonkeyPatch) -> None:
    # a failed build would fall back to NumPy silently everywhere else; here it fails
    assert native.available(), native.engine()
    monkeypatch.setenv(native.ENV, "0")
    assert not native.available() and "BENCH_NATIVE=0" in native.engine()


@pytest.mark.parametrize("similarity", ["iou", "nwd"])
@pytest.mark.parametrize("seed", range(3))
def test_matching_and_accumulate_equal_the_numpy_forms(seed: int, similarity: str,
                                                       monkeypatch: pytest.MonkeyPatch) -> None:
    truth, dets, ids, cats = boxes(*random_problem(seed))
    rng = np.random.default_rng(seed)
    in_region = rng.random(len(dets.label)) < 0.3
    # many boxes with annotation id 0 (never credited): their matches' status depends on the range
    truth = replace(truth, ann_id=np.where(rng.random(len(truth.label)) < 0.3, 0, truth.ann_id))
    for max_det in (2, 100):  # 2 truncates groups before matching

        def compute(max_det: int = max_det):  # type: ignore[no-untyped-def]
            m = match_coco(truth, dets, ids, cats, RANGES, TOLERANCE_THRESHOLDS, max_det, similarity,
                           in_region)
            cells = [m.cell(a, md, regions) for a in range(len(RANGES)) for md in (1, max_det)
                     for regions in (False, True)]
            return m.matches, m.status(True), cells

        (reference, ref_regions, ref_cells), (kernel, regions, cells) = both(monkeypatch, compute)
        for name in ("bounds", "det", "gt", "status"):
            assert np.array_equal(getattr(reference, name), getattr(kernel, name)), name
        assert np.array_equal(ref_regions, regions)
        assert len(reference.det) > 100 and set(np.unique(reference.status).tolist()) == {TP, FP, IGNORED}
        for ref, got in zip(ref_cells, cells, strict=True):
            for a, b in zip(ref, got, strict=True):
                assert np.array_equal(a, b)  # bit for bit


def test_matching_with_thresholds_out_of_order_equals_the_numpy_form(monkeypatch: pytest.MonkeyPatch) -> None:
    """The kernel stops at the thresholds a detection's best overlap reaches only when they ascend."""
    truth, dets, ids, cats = boxes(*random_problem(4))
    shuffled = np.random.default_rng(4).permutation(TOLERANCE_THRESHOLDS)
    reference, kernel = both(monkeypatch,
                             lambda: match_coco(truth, dets, ids, cats, RANGES, shuffled, 100).matches)
    for name in ("bounds", "det", "gt", "status"):
        assert np.array_equal(getattr(reference, name), getattr(kernel, name)), name
    assert len(reference.det) > 100


@pytest.mark.parametrize("kernels", ["1", "0"])
def test_runs_without_scores_share_cells_with_runs_with_them(kernels: str, monkeypatch: pytest.MonkeyPatch
                                                             ) -> None:
    """A run without pycocotools' ``scores`` array has the same precision and recall; a later run that wants
    scores of a cell first written without them computes it again (the cache cannot serve it)."""
    monkeypatch.setenv(native.ENV, kernels)
    truth, dets, ids, cats = boxes(*random_problem(0))
    params = get_protocol("coco").params(TOLERANCE_THRESHOLDS)
    areas = list(range(len(params.area_ranges)))

    def matching():  # type: ignore[no-untyped-def]
        return match_coco(truth, dets, ids, cats, np.array(list(params.area_ranges.values())),
                          TOLERANCE_THRESHOLDS, 100)

    shared = matching()
    without = score_coco(shared, areas, params, keep_scores=False)
    later = score_coco(shared, areas, params)  # its cells were all written, without scores, just above
    fresh = score_coco(matching(), areas, params)
    assert without.scores is None and (fresh.scores > 0).any()
    for name in ("precision", "recall", "scores"):
        assert np.array_equal(getattr(later, name), getattr(fresh, name)), name
    assert np.array_equal(without.precision, fresh.precision) and np.array_equal(without.recall, fresh.recall)
    assert without.stats == fresh.stats


@pytest.mark.parametrize("seed", range(2))
def test_resampled_ap_equals_the_numpy_form(seed: int, monkeypatch: pytest.MonkeyPatch) -> None:
    truth, dets, ids, cats = boxes(*random_problem(seed))
    protocol = get_protocol("aitod")
    matching = match_coco(truth, dets, ids, cats, np.array(list(protocol.params().area_ranges.values())),
                          TOLERANCE_THRESHOLDS, 1500)
    match, params = protocol_match(matching, protocol)
    weights = resample_weights(len(ids), 40, seed)
    rows = [int(t) for t in protocol_rows(protocol)]
    for area in range(len(params.area_ranges)):
        reference, kernel = both(monkeypatch, lambda area=area: resampled_ap(match, area, rows, weights))
        for t in rows:
            np.testing.assert_allclose(kernel[t], reference[t], rtol=0, atol=1e-12)  # summation order only
            assert np.array_equal(np.isnan(kernel[t]), np.isnan(reference[t]))


@pytest.mark.parametrize("seed", range(3))
def test_tide_equals_the_numpy_form(seed: int, monkeypatch: pytest.MonkeyPatch) -> None:
    truth, dets, ids, cats = boxes(*random_problem(seed))
    image = np.searchsorted(ids, truth.image_id), np.searchsorted(ids, dets.image_id)
    buckets = {"small": (0.0, 32.0**2), "large": (32.0**2, 1e10)}
    reference, kernel = both(monkeypatch, lambda: tide(
        truth.xywh, truth.label, image[0], truth.iscrowd, dets.xywh, dets.label, image[1], dets.weight,
        len(cats), buckets))
    assert kernel == reference
    assert sum(reference["counts"].values()) > 20


@pytest.mark.parametrize("seed", range(3))
def test_confusion_matrix_equals_the_numpy_form(seed: int, monkeypatch: pytest.MonkeyPatch) -> None:
    truth, dets, _, cats = boxes(*random_problem(seed))
    n = min(40, len(truth.label))  # every box twice more, once as another class: IoU ties in both passes
    xywh = np.r_[truth.xywh, truth.xywh[:n], truth.xywh[:n]]
    label = np.r_[truth.label, truth.label[:n], (truth.label[:n] + 1) % len(cats)]
    image = np.r_[truth.image_id, truth.image_id[:n], truth.image_id[:n]]
    crowd = np.r_[truth.iscrowd, np.zeros(2 * n, bool)]

    def xyxy(b: np.ndarray) -> np.ndarray:
        return np.c_[b[:, :2], b[:, :2] + b[:, 2:]]

    reference, kernel = both(monkeypatch, lambda: confusion_matrix(
        [f"c{c}" for c in cats], xyxy(xywh), label, image, crowd, xyxy(dets.xywh), dets.label, dets.image_id,
        dets.weight, score_thresh=0.05).matrix)
    assert np.array_equal(reference, kernel)
    off_diagonal = reference[:-1, :-1].sum() - np.trace(reference[:-1, :-1])
    assert np.trace(reference) > 10 and off_diagonal > 0


def test_tide_crowd_regions_take_more_than_half_the_detection(monkeypatch: pytest.MonkeyPatch) -> None:
    from bench.metrics.tide import _in_crowd_region
    crowd = np.array([[0.0, 0, 10, 10]])
    # a detection half inside (tidecv: not ignored), one just more than half inside, one of another group
    dets = np.array([[5.0, 0, 10, 10], [4.9, 0, 10, 10], [0, 0, 10, 10]])
    reference, kernel = both(monkeypatch, lambda: _in_crowd_region(dets, np.array([0, 0, 1]), crowd,
                                                                    np.array([0])))
    assert reference.tolist() == kernel.tolist() == [False, True, False]


@pytest.mark.parametrize("seed", range(3))
def test_devkit_matching_equals_the_numpy_form(seed: int, monkeypatch: pytest.MonkeyPatch) -> None:
    truth, dets, ids, _ = boxes(*random_problem(seed))
    difficult = np.random.default_rng(seed).random(len(truth.label)) < 0.2
    n = len(ids)
    gt_key = truth.label * n + np.searchsorted(ids, truth.image_id)
    det_key = dets.label * n + np.searchsorted(ids, dets.image_id)
    xyxy = [to_devkit(np.c_[b.xywh[:, :2], b.xywh[:, :2] + b.xywh[:, 2:]]) for b in (truth, dets)]
    reference, kernel = both(monkeypatch, lambda: match_devkit(xyxy[0], gt_key, difficult, xyxy[1], det_key,
                                                               dets.weight, 0.5))
    for name in ("order", "tp", "fp"):
        assert np.array_equal(getattr(reference, name), getattr(kernel, name)), name
    assert reference.tp.sum() > 10 and (~reference.tp & ~reference.fp).any()  # difficult hits exist


class _NwdEval(COCOeval):
    """pycocotools with NWD as its overlap matrix (detections sorted and truncated as computeIoU does)."""

    def computeIoU(self, imgId, catId):  # type: ignore[no-untyped-def]
        gt, dt = self._gts[imgId, catId], self._dts[imgId, catId]
        if len(gt) == 0 and len(dt) == 0:
            return []
        order = np.argsort([-d["score"] for d in dt], kind="mergesort")[:self.params.maxDets[-1]]
        dt = [dt[i] for i in order]
        d = np.array([x["bbox"] for x in dt], dtype=np.float64).reshape(-1, 4)
        g = np.array([x["bbox"] for x in gt], dtype=np.float64).reshape(-1, 4)
        return nwd(tuple(d[:, k, None] for k in range(4)), tuple(g[None, :, k] for k in range(4)))


@pytest.mark.parametrize("seed", range(2))
def test_nwd_matching_equals_pycocotools_with_nwd_overlaps(seed: int, tmp_path: Path,
                                                           monkeypatch: pytest.MonkeyPatch) -> None:
    gt, dts = random_problem(seed)
    truth, dets, ids, cats = boxes(gt, dts)
    (tmp_path / "gt.json").write_text(json.dumps(gt))
    with contextlib.redirect_stdout(io.StringIO()):
        coco = COCO(str(tmp_path / "gt.json"))
        ev = _NwdEval(coco, coco.loadRes(dts), "bbox")
        ev.params.iouThrs = TOLERANCE_THRESHOLDS
        ev.evaluate()
        ev.accumulate()
    order = np.argsort(cats)
    ranges = np.array(ev.params.areaRng, dtype=np.float64)

    def ours():  # type: ignore[no-untyped-def]
        m = match_coco(truth, dets, ids, cats, ranges, TOLERANCE_THRESHOLDS, 100, "nwd")
        params = get_protocol("coco").params(TOLERANCE_THRESHOLDS, "nwd")
        return score_coco(m, list(range(len(ranges))), params)

    for run_ in both(monkeypatch, ours):
        # libm's and NumPy's exp may differ in the last bit: no threshold lies that close here
        np.testing.assert_allclose(run_.precision[:, :, order], ev.eval["precision"], rtol=0, atol=1e-12)
        np.testing.assert_allclose(run_.recall[:, order], ev.eval["recall"], rtol=0, atol=1e-12)
    assert (ev.eval["precision"] > 0).any()


def test_metrics_json_is_the_same_with_either(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    gt, dts = random_problem(5)
    (tmp_path / "gt.json").write_text(json.dumps(gt))
    (tmp_path / "dt.json").write_text(json.dumps(dts))
    monkeypatch.setenv("BENCH_EVAL_PROCESSES", "1")
    def metrics() -> dict:
        out = tmp_path / f"out-{native.available()}"
        run(tmp_path / "gt.json", tmp_path / "dt.json", out)
        return json.loads((out / "metrics.json").read_text())

    reference, kernel = both(monkeypatch, metrics)
    assert reference.pop("engine")["kernels"].startswith("NumPy")
    assert kernel.pop("engine")["kernels"].startswith("compiled")
    intervals = [(p, kernel["small_objects"]["protocols"][p].pop("intervals"),
                  reference["small_objects"]["protocols"][p].pop("intervals"))
                 for p in reference["small_objects"]["protocols"]]
    assert kernel == reference  # COCO, VOC, confusion, protocols, NWD curves, TIDE: exactly
    assert reference["small_objects"]["tide"]["counts"]["Loc"] > 0
    for _, got, ref in intervals:
        for metric, values in ref.items():
            np.testing.assert_allclose([got[metric][k] for k in values], list(values.values()), rtol=0,
                                       atol=1e-12)
