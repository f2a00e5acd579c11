"""Confusion matrices, raw and row-normalised side by side, with the matching thresholds on the figure."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import matplotlib.pyplot as plt
import numpy as np

from reports.plots.style import NotApplicable, save

MAX_ANNOTATED_CLASSES = 15  # beyond this, cell numbers are unreadable: colour only


def confusion_matrix(name: str, confusion: dict[str, Any] | None, path: Path) -> Path:
    if not confusion or not confusion.get("matrix"):
        raise NotApplicable(f"{name} wrote no confusion matrix")
    labels = [str(c) for c in confusion["classes"]]
    raw = np.asarray(confusion["matrix"], dtype=float)
    normalised = np.asarray(confusion.get("normalized") or _row_normalise(raw), dtype=float)
    side = min(2.5 + 0.32 * len(labels), 13)
    fig, axes = plt.subplots(1, 2, figsize=(2 * side + 1, side), layout="constrained", sharey=True)
    panels = ((axes[0], raw, "counts", "{:.0f}", None),
              (axes[1], normalised, "row-normalised", "{:.2f}", 1.0))
    for ax, matrix, title, fmt, vmax in panels:
        image = ax.imshow(matrix, cmap="Blues", vmin=0, vmax=vmax)
        fig.colorbar(image, ax=ax, shrink=0.7)
        ticks = np.arange(len(labels))
        ax.set_xticks(ticks, labels, rotation=90)
        ax.set_yticks(ticks, labels)
        ax.tick_params(labelleft=ax is axes[0])  # the y axis is shared: name the classes once
        ax.grid(False)
        if len(labels) <= MAX_ANNOTATED_CLASSES:
            threshold = (vmax or matrix.max()) / 2  # white text on dark cells
            for (i, j), value in np.ndenumerate(matrix):
                ax.text(j, i, fmt.format(value), ha="center", va="center", fontsize=6,
                        color="white" if value > threshold else "black")
        ax.set_xlabel("predicted")
        ax.set_ylabel("ground truth" if ax is axes[0] else "")
        ax.set_title(title)
    fig.suptitle(f"{name}: confusion matrix (score >= {confusion.get('score_thresh')}, "
                 f"IoU >= {confusion.get('iou_thresh')}; last row/column = background)")
    return save(fig, path)


def _row_normalise(matrix: np.ndarray) -> np.ndarray:
    totals = matrix.sum(axis=1, keepdims=True)
    return np.divide(matrix, totals, out=np.zeros_like(matrix), where=totals > 0)
