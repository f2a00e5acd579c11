"""Ultralytics' operating point from a run's files: the precision and recall YOLOv5's ``val.py`` prints.

Ultralytics (``ap_per_class``) reports P and R at one confidence threshold for all classes: per class it
interpolates raw precision and recall over 1,000 confidence values in [0, 1] (above the highest score P is
1 and R 0), takes F1 = 2PR / (P + R), averages F1 over the classes with ground truth, smooths that mean with a
box filter over 10 % of the grid, and takes the confidence of the highest smoothed F1; P and R are the class
means there. A class with ground truth but no detection counts with P = R = 0.

The per-class raw curves come from ``roc_curves.csv``, which holds one point per distinct score (IoU 0.5,
VOC devkit matching): recall = 1 - miss rate, false positives = FPPI x test images, true positives = recall x
the class's boxes (``metrics.json`` ``per_class.n_gt``). ``pr_curves.csv`` cannot serve: pycocotools keeps
only the precision envelope at 101 recall points, which hides the false positives scored below a class's
last true positive. No torch here.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

import numpy as np
import pandas as pd

CONFIDENCE_GRID = np.linspace(0.0, 1.0, 1000)  # ultralytics' grid of confidence thresholds
SMOOTH_FRACTION = 0.1  # ultralytics' ``smooth(f1, 0.1)``: a window of 10 % of the grid (+1, odd)
DEFINITION = ("P and R at ultralytics' operating point: the confidence (of 1,000 in [0, 1]) that maximises "
              "the class-mean F1 after a box filter over 10 % of the grid, with P and R the class means "
              "there; per class from the raw precision and recall at every score at IoU 0.5 (VOC devkit "
              "matching, roc_curves.csv). mAP50 and mAP50-95 are pycocotools' AP50 and AP@[.5:.95] "
              "(metrics.json).")


@dataclass(frozen=True)
class OperatingPoint:
    confidence: float
    precision: float  # mean over classes with ground truth, in [0, 1]
    recall: float
    f1: float  # mean F1 over classes at ``confidence`` (unsmoothed)


def box_smooth(values: np.ndarray, fraction: float = SMOOTH_FRACTION) -> np.ndarray:
    """Moving average over an odd window of ``fraction`` of the length (+1), ends padded with end values."""
    width = round(len(values) * fraction * 2) // 2 + 1
    pad = width // 2
    padded = np.concatenate([np.full(pad, values[0]), values, np.full(pad, values[-1])])
    return np.convolve(padded, np.ones(width) / width, mode="valid")


def class_curve(curve: pd.DataFrame, n_gt: int, n_images: int,
                grid: np.ndarray = CONFIDENCE_GRID) -> tuple[np.ndarray, np.ndarray]:
    """Raw precision and recall of one class (its ``roc_curves.csv`` rows) at every confidence of ``grid``."""
    if curve.empty:
        return np.zeros_like(grid), np.zeros_like(grid)
    curve = curve.sort_values("score", ascending=False, kind="stable")
    recall = 1.0 - curve["miss_rate"].to_numpy(dtype=float)
    false_pos = curve["fppi"].to_numpy(dtype=float) * n_images
    true_pos = recall * n_gt
    precision = np.divide(true_pos, true_pos + false_pos, out=np.zeros_like(true_pos),
                          where=true_pos + false_pos > 0)
    neg_score = -curve["score"].to_numpy(dtype=float)  # increasing, as np.interp needs
    return (np.interp(-grid, neg_score, precision, left=1.0), np.interp(-grid, neg_score, recall, left=0.0))


def operating_point(roc_curves: pd.DataFrame, n_gt: dict[str, int], n_images: int) -> OperatingPoint | None:
    """Ultralytics' P and R of one model; ``n_gt``: boxes per class (classes without any are left out)."""
    classes = [c for c, n in n_gt.items() if n > 0]
    if not classes or n_images <= 0:
        return None
    names = roc_curves["class"].astype(str)
    curves = [class_curve(roc_curves[names == c], n_gt[c], n_images) for c in classes]
    precision = np.stack([p for p, _ in curves])
    recall = np.stack([r for _, r in curves])
    f1 = 2 * precision * recall / (precision + recall + 1e-16)
    best = int(np.argmax(box_smooth(f1.mean(axis=0))))
    return OperatingPoint(float(CONFIDENCE_GRID[best]), float(precision[:, best].mean()),
                          float(recall[:, best].mean()), float(f1[:, best].mean()))


def model_operating_point(metrics: dict[str, Any] | None, roc_curves: pd.DataFrame | None
                          ) -> OperatingPoint | None:
    """The operating point from one model's ``metrics.json`` and ``roc_curves.csv`` (``None`` if absent)."""
    if not metrics or roc_curves is None:
        return None
    n_gt = {str(c["class"]): int(c.get("n_gt") or 0) for c in metrics.get("per_class", [])}
    n_images = int((metrics.get("settings") or {}).get("n_images") or 0)
    return operating_point(roc_curves, n_gt, n_images)
