"""Bootstrap over images: weighted resamples equal scoring the resampled data set, unit weights give the point
estimate, the intervals' definitions, and paired draws."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest

from bench.data.records import DetectionDataset, ImageRecord
from bench.metrics import DetectionResults, evaluate
from bench.metrics.bootstrap import (
    interval,
    paired_comparison,
    point_values,
    resample_weights,
    resampled_values,
)
from bench.metrics.coco import CocoBoxes, evaluate_coco
from bench.metrics.protocols import get_protocol
from bench.metrics.small_objects import SmallObjectSettings, evaluate_protocol, protocol_rows
from tests.test_metrics_coco import random_problem
from tests.test_metrics_small_objects import boxes


def _problem(seed: int, n_images: int = 30, distinct_scores: bool = True):  # type: ignore[no-untyped-def]
    gt, dts = random_problem(seed, n_images=n_images)
    if distinct_scores:  # copies of one image's tied detections are ordered differently (see the module)
        for k, d in enumerate(dts):
            d["score"] += 1e-9 * k
    return boxes(gt, dts)


def _duplicated(truth: CocoBoxes, dets: CocoBoxes, ids: np.ndarray, weights: np.ndarray
                ) -> tuple[CocoBoxes, CocoBoxes, np.ndarray]:
    """The resampled data set itself: image ``i`` copied ``weights[i]`` times under new ids, in order."""
    gt_parts, det_parts, new = [], [], 0
    for i, image in enumerate(ids):
        for _ in range(int(weights[i])):
            new += 1
            gt_parts.append((np.flatnonzero(truth.image_id == image), new))
            det_parts.append((np.flatnonzero(dets.image_id == image), new))

    def build(src: CocoBoxes, parts: list, keep_ann_id: bool) -> CocoBoxes:
        idx = np.concatenate([p for p, _ in parts]).astype(np.int64)
        image = np.concatenate([np.full(len(p), n) for p, n in parts]).astype(np.int64)
        ann = src.ann_id[idx] if keep_ann_id else np.arange(1, len(idx) + 1)  # annotation id 0 stays 0
        return CocoBoxes(image, src.label[idx], src.xywh[idx], src.weight[idx], src.iscrowd[idx], ann)

    return build(truth, gt_parts, True), build(dets, det_parts, False), np.arange(1, new + 1)


@pytest.mark.parametrize("seed", range(3))
def test_weighted_resample_equals_scoring_the_resampled_data_set(seed: int) -> None:
    truth, dets, ids, cats = _problem(seed)
    protocol = get_protocol("coco")
    run = evaluate_protocol(truth, dets, ids, cats, protocol, None)
    weights = resample_weights(len(ids), 4, seed)
    values = resampled_values(run, protocol_rows(protocol), weights, buckets=["small", "medium", "large"])
    for b in range(len(weights)):
        stats = evaluate_coco(*_duplicated(truth, dets, ids, weights[b]), cats).stats
        for ours, theirs in (("AP", "AP"), ("AP50", "AP50"), ("AP_small", "APs"), ("AP_medium", "APm"),
                             ("AP_large", "APl")):
            expected = np.nan if stats[theirs] == -1 else stats[theirs]
            assert values[ours][b] == pytest.approx(expected, abs=1e-12, nan_ok=True), (b, ours)


@pytest.mark.parametrize("name", ["coco", "aitod", "tinyperson"])
def test_unit_weights_reproduce_the_point_estimate(name: str) -> None:
    truth, dets, ids, cats = _problem(7, distinct_scores=False)  # ties included: one copy changes nothing
    protocol = get_protocol(name)
    run = evaluate_protocol(truth, dets, ids, cats, protocol, None)
    rows = protocol_rows(protocol)
    labels = list(protocol.buckets)
    values = resampled_values(run, rows, np.ones((2, len(ids)), np.int64), buckets=labels)
    point = point_values(run, rows)
    stats = run.summary(rows, protocol.params())
    assert point["AP"] == stats["AP"]  # point_values is pycocotools' summarize
    for key, samples in values.items():
        assert samples == pytest.approx([point[key]] * 2, abs=1e-12, nan_ok=True), key
    assert set(values) == {"AP", "AP50", *[f"AP_{b}" for b in labels]}


def test_default_intervals_cover_the_small_object_buckets_only() -> None:
    truth, dets, ids, cats = _problem(3)
    protocol = get_protocol("aitod")
    run = evaluate_protocol(truth, dets, ids, cats, protocol, None)
    values = resampled_values(run, protocol_rows(protocol), resample_weights(len(ids), 3, 0))
    assert set(values) == {"AP", "AP50", "AP_very_tiny", "AP_tiny", "AP_small"}  # medium >= 32 px is not


def test_interval_definitions() -> None:
    samples = np.array([0.30, 0.31, 0.32, 0.33, 0.34, np.nan])
    plain = interval(samples, 0.5)
    lo, hi = np.quantile(samples[:-1], [0.25, 0.75])
    assert (plain["lo"], plain["hi"]) == (lo, hi) and "bias" not in plain
    basic = interval(samples, 0.5, estimate=0.30)
    assert basic["lo"] == pytest.approx(2 * 0.30 - hi) and basic["hi"] == pytest.approx(2 * 0.30 - lo)
    assert (basic["percentile_lo"], basic["percentile_hi"]) == (lo, hi)
    assert basic["bias"] == pytest.approx(0.02) and basic["estimate"] == 0.30


def _dataset(dets_per_box: int, seed: int) -> tuple[DetectionDataset, DetectionResults]:
    rng = np.random.default_rng(seed)
    records, rows = [], []
    for i in range(40):
        xy = rng.uniform(0, 60, (3, 2))
        wh = rng.uniform(4, 30, (3, 2))
        records.append(ImageRecord(i + 1, f"{i}.jpg", 100, 100, boxes=np.c_[xy, xy + wh], labels=[0, 1, 0]))
        for box, label in zip(np.c_[xy, xy + wh], [0, 1, 0], strict=True):
            for _ in range(dets_per_box):
                rows.append((i + 1, label, box + rng.normal(0, 2, 4), rng.random()))
    image, label, box, score = zip(*rows, strict=True)
    dets = DetectionResults(image, label, np.array(box), score)
    return DetectionDataset(["a", "b"], records, Path(".")), dets


def test_paired_bootstrap_uses_identical_draws_for_both_models() -> None:
    ds, good = _dataset(1, 0)
    _, noisy = _dataset(2, 1)  # same images and boxes, more and noisier detections
    settings = SmallObjectSettings(protocols=("coco",), nwd=False, tide=False, bootstrap=50, seed=3)
    a = evaluate(ds, good, small_objects=settings).small_objects
    b = evaluate(ds, noisy, small_objects=settings).small_objects
    # the draws depend on the images and the seed only: rebuilding them reproduces model A's samples
    truth = CocoBoxes.ground_truth(ds)
    det = CocoBoxes.detections(good.image_id, good.label, good.xywh, good.score)
    protocol = get_protocol("coco")
    ids = np.array([r.image_id for r in ds.records])
    run = evaluate_protocol(truth, det, ids, list(ds.category_ids), protocol, None)
    again = resampled_values(run, protocol_rows(protocol), resample_weights(len(ids), 50, 3))["AP"]
    iv_a, iv_b = a["protocols"]["coco"]["intervals"]["AP"], b["protocols"]["coco"]["intervals"]["AP"]
    np.testing.assert_allclose(iv_a["samples"], again, rtol=0, atol=1e-12)
    same = paired_comparison(iv_a["samples"], iv_a["samples"], estimate_a=iv_a["estimate"],
                             estimate_b=iv_a["estimate"])
    assert same["mean_difference"] == 0 and same["lo"] == same["hi"] == 0 and same["p_not_better"] == 1
    worse = paired_comparison(iv_a["samples"], iv_b["samples"], estimate_a=iv_a["estimate"],
                              estimate_b=iv_b["estimate"])
    assert worse["mean_difference"] < 0 and worse["hi"] < 0 and worse["p_not_better"] == 1
    with pytest.raises(ValueError, match="same resamples"):
        paired_comparison(iv_a["samples"], iv_b["samples"][:-1])


def test_resample_weights_are_draws_of_every_image() -> None:
    """Reproducible per seed, and multinomial counts: mean 1, variance 1 - 1/I, covariance -1/I (5 sigma)."""
    w = resample_weights(25, 8, 1)
    assert w.shape == (8, 25) and w.dtype == np.int32 and (w.sum(axis=1) == 25).all()
    np.testing.assert_array_equal(w, resample_weights(25, 8, 1))
    assert not np.array_equal(w, resample_weights(25, 8, 2))
    many = resample_weights(10, 20000, 3).astype(np.float64)
    np.testing.assert_allclose(many.mean(axis=0), 1.0, atol=5 * np.sqrt(0.9 / 20000))
    cov = np.cov(many, rowvar=False)
    np.testing.assert_allclose(np.diag(cov), 0.9, atol=0.05)
    np.testing.assert_allclose(cov[~np.eye(10, dtype=bool)], -0.1, atol=0.03)
    assert resample_weights(0, 3, 0).shape == (3, 0) and resample_weights(4, 0, 0).shape == (0, 4)
