"""Curves: PR per class and model, the YOLOv5-vs-SSD overlay of seed 000 (fig. 7), detection ROC."""

from __future__ import annotations

from pathlib import Path

import matplotlib.pyplot as plt
import numpy as np
import pandas as pd

from reports.plots.palette import model_colours
from reports.plots.style import NotApplicable, save
from reports.rundir import Run

RECALL_GRID = np.linspace(0, 1, 101)
MAX_PR_PANELS = 12
PR_IOU = 0.5


def _curves(run: Run, attr: str) -> dict[str, pd.DataFrame]:
    return {name: getattr(m, attr) for name, m in run.models.items()
            if getattr(m, attr) is not None and not getattr(m, attr).empty}


def pr_classes(run: Run, limit: int = MAX_PR_PANELS) -> list[str]:
    """The classes that get a PR panel: the ``limit`` with most test objects, in the data set's order."""
    n_gt: dict[str, int] = {}
    for model in run.models.values():
        for c in (model.metrics or {}).get("per_class", []):
            n_gt[c["class"]] = max(n_gt.get(c["class"], 0), int(c.get("n_gt") or 0))
    order = run.classes or list(n_gt)
    ranked = sorted((c for c in order if n_gt.get(c, 0) > 0), key=lambda c: -n_gt[c])[:limit]
    return [c for c in order if c in ranked]


def pr_per_class(run: Run, path: Path, limit: int = MAX_PR_PANELS) -> Path:
    curves = _curves(run, "pr_curves")
    classes = pr_classes(run, limit)
    if not curves or not classes:
        raise NotApplicable("no model has PR curve points (pr_curves.csv absent or empty) for a class with "
                            "test objects")
    colours = model_colours(curves, run.zoo)
    cols = min(4, len(classes))
    rows = -(-len(classes) // cols)
    fig, axes = plt.subplots(rows, cols, figsize=(3 * cols, 2.6 * rows), squeeze=False, sharex=True,
                             sharey=True)
    for ax, cls in zip(axes.flat, classes, strict=False):  # spare panels are switched off below
        for name, frame in curves.items():
            curve = frame[(frame["class"] == cls) & np.isclose(frame["iou"], PR_IOU)]
            ax.plot(curve["recall"], curve["precision"], color=colours[name], label=name, lw=1.2)
        ax.set_title(str(cls))
        ax.set_xlim(0, 1)
        ax.set_ylim(0, 1.02)
    for ax in axes.flat[len(classes):]:
        ax.axis("off")
    for ax in axes[:, 0]:
        ax.set_ylabel("precision")
    for ax in axes[-1]:
        ax.set_xlabel("recall")
    handles, labels = axes.flat[0].get_legend_handles_labels()
    fig.legend(handles, labels, loc="lower center", ncols=min(6, len(labels)), bbox_to_anchor=(0.5, -0.02))
    fig.suptitle(f"Precision-recall per class at IoU {PR_IOU} (measured in this run)")
    fig.tight_layout(rect=(0, 0.05, 1, 1))
    return save(fig, path)


def mean_pr(frame: pd.DataFrame, iou: float = PR_IOU) -> np.ndarray:
    """Class-averaged interpolated precision on ``RECALL_GRID`` (precision 0 beyond a class's max recall)."""
    curves = []
    for _, curve in frame[np.isclose(frame["iou"], iou)].groupby("class"):
        order = np.argsort(curve["recall"].to_numpy(), kind="stable")
        recall = curve["recall"].to_numpy()[order]
        precision = np.maximum.accumulate(curve["precision"].to_numpy()[order][::-1])[::-1]  # VOC envelope
        curves.append(np.interp(RECALL_GRID, recall, precision, right=0.0))
    return np.mean(curves, axis=0) if curves else np.zeros_like(RECALL_GRID)


def best_of(run: Run, family: str) -> str | None:
    """The finished model of ``family`` with the highest COCO AP50 (seed 000 compares the best of each)."""
    scored = [((m.metrics or {}).get("coco", {}).get("AP50") or 0.0, name) for name, m in run.models.items()
              if m.info.get("family") == family and m.pr_curves is not None and not m.pr_curves.empty]
    return max(scored)[1] if scored else None


def yolo_vs_ssd(run: Run, path: Path) -> Path:
    pair = [best_of(run, "yolov5"), best_of(run, "ssd")]
    if None in pair:
        raise NotApplicable("needs a finished YOLOv5 model and a finished SSD-family model with PR curves")
    colours = model_colours(pair, run.zoo)
    fig, ax = plt.subplots(figsize=(4.5, 3.6))
    for label, name in zip(("Algorithm 1 (YOLOv5)", "Algorithm 2 (SSD family)"), pair, strict=True):
        ax.plot(RECALL_GRID, mean_pr(run.models[name].pr_curves), color=colours[name], lw=1.6,
                label=f"{label}: {name}")
    ax.set_xlabel("recall")
    ax.set_ylabel("precision (mean over classes)")
    ax.set_xlim(0, 1)
    ax.set_ylim(0, 1.02)
    ax.set_title(f"YOLOv5 vs SSD, all classes, IoU {PR_IOU} (as seed 000 fig. 7)")
    ax.legend(loc="lower left")
    return save(fig, path)


def roc_curves(run: Run, path: Path) -> Path:
    """Miss rate against false positives per image, averaged over classes at common FPPI points."""
    curves = _curves(run, "roc_curves")
    if not curves:
        raise NotApplicable("no model has ROC-style curve points (roc_curves.csv absent or empty)")
    colours = model_colours(curves, run.zoo)
    fppi_grid = np.logspace(-3, 1, 60)
    fig, ax = plt.subplots(figsize=(5, 3.6))
    for name, frame in curves.items():
        per_class = []
        for _, curve in frame.groupby("class"):
            order = np.argsort(curve["fppi"].to_numpy(), kind="stable")
            fppi, miss = curve["fppi"].to_numpy()[order], curve["miss_rate"].to_numpy()[order]
            per_class.append(np.interp(fppi_grid, fppi, miss, left=1.0, right=miss[-1]))
        ax.plot(fppi_grid, np.mean(per_class, axis=0), color=colours[name], label=name, lw=1.4)
    ax.set_xscale("log")
    ax.set_ylim(0, 1.02)
    ax.set_xlabel("false positives per image")
    ax.set_ylabel("miss rate (mean over classes)")
    ax.set_title("Detection ROC-style curves (measured in this run)")
    ax.legend(loc="lower left", ncols=2)
    return save(fig, path)
