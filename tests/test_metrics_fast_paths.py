"""The evaluator's fast paths against plain references: counting and packed-key sorting against
``lexsort``, the confusion matrix on the COCO matcher against a per-image loop, and the forked parts of an
evaluation against the same evaluation in one process (equal numbers, the child's errors re-raised)."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest

from bench.data.coco import read_coco
from bench.metrics import DetectionResults, evaluate, native
from bench.metrics.accumulate import accumulate_order
from bench.metrics.confusion import box_iou, confusion_matrix
from bench.metrics.groups import dense_ids, descending_rank, ordered_by
from bench.metrics.parallel import ENV, run_beside
from tests.test_metrics_coco import random_problem


@pytest.mark.parametrize("kernels", ["1", "0"])  # counting passes (order.c), packed key (NumPy)
@pytest.mark.parametrize("seed", range(20))
def test_ordered_by_equals_lexsort(monkeypatch: pytest.MonkeyPatch, kernels: str, seed: int) -> None:
    monkeypatch.setenv(native.ENV, kernels)
    rng = np.random.default_rng(seed)
    n = int(rng.integers(0, 400))
    group, image = rng.integers(0, int(rng.integers(1, 30)), n), rng.integers(0, 7, n)
    score = np.round(rng.random(n), 1) * rng.choice([1.0, -1.0], n)  # many ties, negative and -0.0 scores
    if n:
        score[rng.integers(0, n)] = -0.0
    rank = descending_rank(score)
    np.testing.assert_array_equal(ordered_by([], rank), np.argsort(-score, kind="stable"))
    np.testing.assert_array_equal(ordered_by([group], rank), np.lexsort((np.arange(n), -score, group)))
    np.testing.assert_array_equal(accumulate_order(group, rank, image),
                                  np.lexsort((np.arange(n), image, -score, group)))
    huge = group.astype(np.int64) << 40  # too wide to count or pack: the lexsort fallback
    np.testing.assert_array_equal(ordered_by([huge], rank, (image,)),
                                  np.lexsort((np.arange(n), image, -score, huge)))


@pytest.mark.parametrize("kernels", ["1", "0"])  # radix sort (order.c), np.unique
def test_descending_rank_orders_like_negated_scores(monkeypatch: pytest.MonkeyPatch, kernels: str) -> None:
    """Dense ranks: equal scores (0.0 and -0.0 too) share one, infinities in place, NaN (any) last, as a
    stable sort of ``-score`` has them; on random scores, the distinct values of ``np.unique``."""
    monkeypatch.setenv(native.ENV, kernels)
    score = np.array([0.5, np.nan, -0.0, np.inf, 0.0, -np.inf, 0.5, -np.nan, 1.0])
    rank = descending_rank(score)
    np.testing.assert_array_equal(rank, [2, 5, 3, 0, 3, 4, 2, 5, 1])
    np.testing.assert_array_equal(ordered_by([], rank), np.argsort(-score, kind="stable"))
    assert descending_rank(np.zeros(0)).shape == (0,)
    rng = np.random.default_rng(0)  # every 16-bit digit varies: exponents, signs, ties, subnormals
    score = np.r_[rng.standard_normal(3000) * 10.0 ** rng.integers(-300, 300, 3000), rng.random(500).round(2),
                  5e-324, -5e-324, 1e308, -1e308]
    distinct, inverse = np.unique(score, return_inverse=True)
    np.testing.assert_array_equal(descending_rank(score), len(distinct) - 1 - inverse.ravel())


@pytest.mark.parametrize("seed", range(5))
def test_dense_ids_equal_unique_inverse(seed: int) -> None:
    """The table numbering (small integer ranges, negative keys too) and the sort (wide ranges, floats)."""
    rng = np.random.default_rng(seed)
    for keys in (rng.integers(-5, 50, 300), rng.integers(0, 2**40, 100), rng.random(20),
                 np.zeros(0, np.int64)):
        np.testing.assert_array_equal(dense_ids(keys), np.unique(keys, return_inverse=True)[1].reshape(-1))


def _loop_confusion(n_cls: int, gt_boxes: np.ndarray, gt_label: np.ndarray, gt_image: np.ndarray,
                    gt_ignored: np.ndarray, det_boxes: np.ndarray, det_label: np.ndarray,
                    det_image: np.ndarray, score: np.ndarray, score_thresh: float, iou_thresh: float
                    ) -> np.ndarray:
    """The module's definition, one image and one detection at a time."""
    matrix = np.zeros((n_cls + 1, n_cls + 1), dtype=np.int64)
    for image in np.unique(np.r_[gt_image, det_image]):
        gts = np.flatnonzero(gt_image == image)
        dets = np.flatnonzero((det_image == image) & (score >= score_thresh))
        dets = dets[np.argsort(-score[dets], kind="stable")]
        used = gt_ignored[gts].copy()
        pairs = {}
        for same_class in (True, False):
            for d in dets:
                if d in pairs:
                    continue
                best, best_iou = -1, -np.inf
                for j, g in enumerate(gts):
                    iou = float(box_iou(tuple(det_boxes[d]), tuple(gt_boxes[g])))
                    if used[j] or iou < iou_thresh or (same_class and gt_label[g] != det_label[d]):
                        continue
                    if iou > best_iou:  # ties: the first box
                        best, best_iou = j, iou
                if best >= 0:
                    pairs[d] = gts[best]
                    used[best] = True
        for d in dets:
            if d in pairs:
                matrix[gt_label[pairs[d]], det_label[d]] += 1
            elif not any(gt_ignored[g] and box_iou(tuple(det_boxes[d]), tuple(gt_boxes[g])) >= iou_thresh
                         for g in gts):
                matrix[n_cls, det_label[d]] += 1
        for j, g in enumerate(gts):
            if not used[j]:
                matrix[gt_label[g], n_cls] += 1
    return matrix


@pytest.mark.parametrize("seed", range(25))
def test_confusion_matrix_equals_the_per_image_loop(seed: int) -> None:
    rng = np.random.default_rng(seed)
    n_gt, n_det, n_cls = int(rng.integers(0, 30)), int(rng.integers(0, 80)), 3
    gt_image = rng.integers(0, 4, n_gt)
    xy = rng.integers(0, 40, (n_gt, 2)).astype(float)
    gt_boxes = np.c_[xy, xy + rng.integers(2, 20, (n_gt, 2))]
    gt_label, gt_ignored = rng.integers(0, n_cls, n_gt), rng.random(n_gt) < 0.15
    if n_gt > 3:  # a box duplicated under another class: IoU ties that decide the cell in the any-class pass
        gt_boxes[1], gt_image[1], gt_label[1], gt_ignored[:2] = gt_boxes[0], gt_image[0], \
            (gt_label[0] + 1) % n_cls, False
    src = rng.integers(0, max(n_gt, 1), n_det)
    det_boxes = (gt_boxes[src] if n_gt else np.zeros((n_det, 4))) + rng.integers(-3, 4, (n_det, 4))
    det_boxes[:, 2:] = np.maximum(det_boxes[:, 2:], det_boxes[:, :2] + 1)
    det_image = np.where(rng.random(n_det) < 0.2, rng.integers(0, 4, n_det),
                         gt_image[src] if n_gt else 0)
    det_label = np.where(rng.random(n_det) < 0.7, gt_label[src] if n_gt else 0, rng.integers(0, n_cls, n_det))
    score = np.round(rng.random(n_det), 1)  # tied scores: input order
    for score_thresh, iou_thresh in ((0.25, 0.5), (0.0, 0.3)):
        ours = confusion_matrix([f"c{i}" for i in range(n_cls)], gt_boxes, gt_label, gt_image, gt_ignored,
                                det_boxes, det_label, det_image, score, score_thresh=score_thresh,
                                iou_thresh=iou_thresh).matrix
        expected = _loop_confusion(n_cls, gt_boxes, gt_label, gt_image, gt_ignored, det_boxes, det_label,
                                   det_image, score, score_thresh, iou_thresh)
        np.testing.assert_array_equal(ours, expected)


def test_forked_parts_give_the_numbers_of_one_process(tmp_path: Path, monkeypatch) -> None:
    gt, dts = random_problem(3, n_images=40)
    (tmp_path / "gt.json").write_text(json.dumps(gt))
    (tmp_path / "dt.json").write_text(json.dumps(dts))
    ds = read_coco(tmp_path / "gt.json")
    dets = DetectionResults.from_coco_json(tmp_path / "dt.json", ds)
    results = {}
    for processes in ("1", "2"):
        monkeypatch.setenv(ENV, processes)
        result = evaluate(ds, dets, coco_gt=gt)
        result.save(tmp_path / processes)
        results[processes] = result.to_dict()
    assert results["1"] == results["2"]
    for name in ("metrics.json", "bootstrap.json", "confusion.json", "pr_curves.csv", "roc_curves.csv"):
        assert (tmp_path / "1" / name).read_bytes() == (tmp_path / "2" / name).read_bytes(), name


def _fails(message: str) -> None:
    raise ValueError(message)


def test_a_forked_part_returns_its_value_and_reraises_its_error(monkeypatch) -> None:
    monkeypatch.setenv(ENV, "2")
    big = np.arange(1 << 20)  # more than a pipe buffer
    assert np.array_equal(run_beside(np.cumsum, big)(), np.cumsum(big))
    with pytest.raises(ValueError, match="from the child"):
        run_beside(_fails, "from the child")()


def test_without_forking_a_part_runs_once(monkeypatch) -> None:
    monkeypatch.setenv(ENV, "1")
    calls: list[int] = []
    part = run_beside(calls.append, 1)
    part()
    part()
    assert calls == [1]


def test_curves_csv_is_the_csv_modules_text(tmp_path: Path) -> None:
    import csv
    import io

    from bench.metrics.result import Curves

    names = ["a,b", 'say "hi"', "plain"]
    # repeated values (each formatted once), and 0.0 beside -0.0 (equal, but written apart)
    curves = Curves(np.array([0, 1, 2, 2, 0]), {"x": np.array([0.1, 1e-300, np.nan, 1 / 3, 1 / 3]),
                                                "y": np.array([1.0, 0.0, -0.0, 7.0, 1.0])})
    curves.write_csv(tmp_path / "c.csv", names, ("class", "x", "y"))
    expected = io.StringIO()
    writer = csv.writer(expected)
    writer.writerow(("class", "x", "y"))
    writer.writerows(zip([names[i] for i in curves.label], curves.columns["x"].tolist(),
                         curves.columns["y"].tolist(), strict=True))
    assert (tmp_path / "c.csv").read_bytes().decode("utf-8") == expected.getvalue()


def test_an_error_beside_a_forked_part_reaps_it(monkeypatch) -> None:
    import os

    from bench.metrics.parallel import reaped

    monkeypatch.setenv(ENV, "2")
    part = run_beside(np.arange, 1 << 20)  # a result larger than the pipe buffer: the child waits for us
    with pytest.raises(KeyError), reaped(part):
        raise KeyError("in the parent")
    with pytest.raises(ChildProcessError):
        os.waitpid(-1, os.WNOHANG)  # no child left


def test_no_fork_beside_torch_unless_forced(monkeypatch: pytest.MonkeyPatch) -> None:
    """A run's process has torch (and its OpenMP pool) loaded: the evaluator must not fork there by itself."""
    import torch  # noqa: F401  (present in sys.modules, as in a run)

    from bench.metrics import parallel

    monkeypatch.delenv(ENV, raising=False)
    monkeypatch.setattr(parallel, "_idle_cores", lambda: 2.0)
    assert not parallel.parallel_enabled()
    monkeypatch.setenv(ENV, "2")
    assert parallel.parallel_enabled()
