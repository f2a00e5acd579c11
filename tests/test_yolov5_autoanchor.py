"""v5's AutoAnchor: the BPR rule, k-means + evolution when anchors fit poorly, setting them on a model."""

from __future__ import annotations

import numpy as np
import pytest
import torch

from detectors import build_model
from detectors.yolov5.autoanchor import (
    BPR_THRESHOLD,
    best_possible_recall,
    check_anchors,
    kmean_anchors,
    letterboxed_box_wh,
)
from detectors.yolov5.network import DEFAULT_ANCHORS

YAML_ANCHORS = np.array(DEFAULT_ANCHORS, dtype=np.float64).reshape(3, 3, 2)


def _boxes(median_px: float, images: int = 200, seed: int = 1) -> list[np.ndarray]:
    """Per image 1-7 boxes, log-normal around ``median_px`` on each side."""
    rng = np.random.default_rng(seed)
    return [np.exp(rng.normal(np.log(median_px), 0.5, (int(rng.integers(1, 8)), 2))) for _ in range(images)]


def test_best_possible_recall_uses_the_loss_ratio_threshold() -> None:
    anchors = np.array([[10.0, 13.0]])
    wh = np.array([[10.0, 13.0], [39.0, 13.0], [41.0, 13.0], [2.4, 3.0]])
    bpr, per_target = best_possible_recall(wh, anchors, thr=4.0)
    # 10x13 exact; 39 wide is < 4x (kept); 41 wide is > 4x; 2.4 is 10/2.4 = 4.17x too small
    assert bpr == pytest.approx(0.5) and per_target == pytest.approx(0.5)
    assert best_possible_recall(wh, anchors, thr=4.5)[0] == pytest.approx(1.0)


def test_letterboxed_box_wh_scales_the_long_side_to_the_input() -> None:
    boxes = [np.array([[0.0, 0.0, 100.0, 50.0]]), np.zeros((0, 4))]
    wh = letterboxed_box_wh(boxes, [(200, 400), (640, 480)], 640)
    assert np.allclose(wh[0], [[160.0, 80.0]]) and wh[1].shape == (0, 2)


def test_anchors_that_fit_are_kept() -> None:
    result = check_anchors(_boxes(60.0), YAML_ANCHORS, seed=0)
    assert result.bpr > BPR_THRESHOLD
    assert not result.refit and not result.replaced and np.array_equal(result.anchors, YAML_ANCHORS)


def test_poorly_fitting_anchors_are_refit_by_kmeans_and_evolution() -> None:
    boxes = _boxes(6.0)  # small objects: the 10x13 P3 anchor misses everything under ~2.5 x 3.3 px
    result = check_anchors(boxes, YAML_ANCHORS, seed=0)
    assert result.bpr < BPR_THRESHOLD and result.refit and result.replaced
    assert result.new_bpr is not None and result.new_bpr > result.bpr and result.new_bpr > 0.99
    area = result.anchors.reshape(-1, 2).prod(1)
    assert bool((np.diff(area) >= 0).all())  # small to large: P3 gets the smallest
    assert bool((result.anchors >= 2.0).all()) and result.anchors.max() < 40
    again = check_anchors(boxes, YAML_ANCHORS, seed=0)
    assert np.array_equal(again.anchors, result.anchors)  # a seed fixes k-means and evolution
    other = check_anchors(boxes, YAML_ANCHORS, seed=1)
    assert not np.array_equal(other.anchors, result.anchors)


def test_evolution_improves_on_kmeans() -> None:
    wh = np.concatenate(_boxes(6.0))
    fit = kmean_anchors(wh, gen=0, rng=np.random.default_rng(0))
    evolved = kmean_anchors(wh, gen=300, rng=np.random.default_rng(0))

    def fitness(k: np.ndarray) -> float:  # v5's: mean best ratio over boxes that pass 1/4
        r = wh[:, None] / k[None]
        best = np.minimum(r, 1 / r).min(2).max(1)
        return float((best * (best > 0.25)).mean())

    assert fitness(evolved) > fitness(fit)


def test_new_anchors_are_kept_only_when_their_recall_is_higher() -> None:
    # Half the boxes are far below any anchor (>= 2 px): no anchor set recalls them, so the refit cannot win.
    boxes = [np.array([[0.3, 0.3], [30.0 + i, 40.0 - i / 2]]) for i in range(50)]
    result = check_anchors(boxes, YAML_ANCHORS, seed=0, gen=100)
    assert result.refit and result.new_bpr == pytest.approx(result.bpr)
    assert not result.replaced and np.array_equal(result.anchors, YAML_ANCHORS)


def test_too_few_boxes_fall_back_to_random_init() -> None:
    anchors = kmean_anchors(np.array([[5.0, 6.0], [7.0, 9.0]]), n=9, gen=50, rng=np.random.default_rng(0))
    assert anchors.shape == (9, 2) and bool((anchors >= 2.0).all())
    with pytest.raises(ValueError, match="at least one training box"):
        check_anchors([np.zeros((0, 2))], YAML_ANCHORS)


def test_model_autoanchor_sets_the_head_anchors() -> None:
    model = build_model("yolov5n", num_classes=2, input_size=64)
    before = model.model.detect.anchors.clone()
    result = model.autoanchor(_boxes(6.0, images=60), seed=0, gen=200)
    assert result.replaced
    head = model.model.detect
    assert not torch.equal(head.anchors, before)
    assert torch.allclose(head.anchors_pixels(), torch.tensor(result.anchors, dtype=torch.float32), rtol=1e-3)
    assert torch.equal(head.anchors, head.anchors.half().float())  # v5's fp16 rounding of the anchors
    fresh = build_model("yolov5n", num_classes=2, input_size=64)
    assert not fresh.autoanchor(_boxes(60.0, images=60), seed=0).replaced
    assert torch.equal(fresh.model.detect.anchors, before)


def test_runner_hook_letterboxes_original_boxes() -> None:
    # 640 x 320 originals letterboxed to 64: scale 0.1, so 15-35 px boxes become 1.5-3.5 px (poor fit: refit).
    rng = np.random.default_rng(0)
    corners = rng.uniform(0, 200, (40, 3, 2))
    boxes = [np.concatenate([xy, xy + rng.uniform(15, 35, (3, 2))], 1) for xy in corners]
    model = build_model("yolov5n", num_classes=2, input_size=64)
    report = model.fit_to_training_boxes(boxes, [(320, 640)] * len(boxes), seed=0)
    assert report["replaced"] and report["bpr"] < BPR_THRESHOLD < report["new_bpr"]
    assert np.allclose(model.model.detect.anchors_pixels().numpy(), report["anchors"], atol=0.02)
    assert np.asarray(report["anchors"]).max() < 6
