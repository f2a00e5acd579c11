"""KITTI's official protocol (evaluate_object.cpp) against a line-by-line Python port of the devkit."""


from __future__ import annotations

import numpy as np
import pytest

from bench.metrics.kitti import (
    DIFFICULTIES,
    MAX_OCCLUSION,
    MAX_TRUNCATION,
    MIN_HEIGHT,
    MIN_OVERLAP,
    N_SAMPLE_PTS,
    Frame,
    class_precision,
)


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


