"""Data set statistics from the run's COCO-format GT: class counts, box sizes and aspects, labels correlogram.

The correlogram follows seed 000's figures 2 and 5 (ultralytics' ``labels_correlogram``): pairwise
histograms of normalised box centre x, y, width and height, drawn with plain matplotlib (seaborn's
pairplot is several times slower for the same picture).
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import matplotlib.pyplot as plt
import numpy as np
import pandas as pd
from matplotlib.colors import LogNorm
from matplotlib.ticker import NullFormatter

from reports.plots.style import NotApplicable, save

SMALL, MEDIUM = 32, 96  # COCO area thresholds (side of the equivalent square, pixels)
CORRELOGRAM_MAX_BOXES = 5000  # subsample so the pair plot stays fast on big sets


def boxes_table(gt: dict[str, Any] | None) -> pd.DataFrame:
    """One row per non-crowd box: class; x, y, w, h normalised by the image; sqrt(area) and aspect (px)."""
    if not gt or not gt.get("annotations"):
        return pd.DataFrame(columns=["class", "x", "y", "w", "h", "side", "aspect"])
    images = pd.DataFrame(gt["images"]).set_index("id")[["width", "height"]]
    names = {c["id"]: str(c["name"]) for c in gt.get("categories", [])}
    ann = pd.DataFrame(gt["annotations"])
    if "iscrowd" in ann:
        ann = ann[ann["iscrowd"] == 0]
    xywh = np.asarray(ann["bbox"].tolist(), dtype=float).reshape(-1, 4)
    size = images.loc[ann["image_id"]].to_numpy(dtype=float)
    return pd.DataFrame({
        "class": ann["category_id"].map(names).to_numpy(),
        "x": (xywh[:, 0] + xywh[:, 2] / 2) / size[:, 0], "y": (xywh[:, 1] + xywh[:, 3] / 2) / size[:, 1],
        "w": xywh[:, 2] / size[:, 0], "h": xywh[:, 3] / size[:, 1],
        "side": np.sqrt(xywh[:, 2] * xywh[:, 3]), "aspect": xywh[:, 2] / np.maximum(xywh[:, 3], 1e-9),
    })


def class_counts(splits: dict[str, pd.DataFrame], classes: list[str], path: Path) -> Path:
    counts = pd.DataFrame({split: boxes["class"].value_counts() for split, boxes in splits.items()})
    if counts.empty:
        raise NotApplicable("the run directory holds no ground truth (data/*_gt.json)")
    counts = counts.reindex([c for c in classes if c in counts.index] or counts.index).fillna(0)
    fig, ax = plt.subplots(figsize=(min(3 + 0.35 * len(counts), 22), 3.2))
    counts.plot.bar(ax=ax, width=0.8, color=["#4c72b0", "#dd8452"][: counts.shape[1]])
    ax.set_ylabel("boxes")
    ax.set_title("Objects per class and split")
    ax.tick_params(axis="x", labelrotation=60)
    return save(fig, path)


def box_shapes(splits: dict[str, pd.DataFrame], path: Path) -> Path:
    if all(boxes.empty for boxes in splits.values()):
        raise NotApplicable("the run directory holds no ground truth (data/*_gt.json)")
    fig, (size_ax, aspect_ax) = plt.subplots(1, 2, figsize=(10, 3.2))
    side_bins = np.geomspace(2, 2048, 45)
    aspect_bins = np.geomspace(1 / 8, 8, 41)
    for split, boxes in splits.items():
        if boxes.empty:
            continue
        small = (boxes["side"] < SMALL).mean()
        size_ax.hist(boxes["side"].clip(2, 2048), bins=side_bins, histtype="step", lw=1.4,
                     label=f"{split} ({small:.0%} small)")
        aspect_ax.hist(boxes["aspect"].clip(1 / 8, 8), bins=aspect_bins, histtype="step", lw=1.4, label=split)
    for edge, label in ((SMALL, "32"), (MEDIUM, "96")):
        size_ax.axvline(edge, color="0.4", ls=":", lw=1)
        size_ax.text(edge, size_ax.get_ylim()[1] * 0.95, f" {label}²", fontsize=7, va="top")
    size_ax.set_xscale("log")
    size_ax.set_xlabel("box size: sqrt(w x h) in pixels (COCO small < 32, large > 96)")
    size_ax.set_ylabel("boxes")
    size_ax.set_title("Box size distribution")
    size_ax.legend()
    aspect_ax.set_xscale("log")
    ratios = [1 / 8, 1 / 4, 1 / 2, 1, 2, 4, 8]
    aspect_ax.set_xticks(ratios, ["1/8", "1/4", "1/2", "1", "2", "4", "8"])
    aspect_ax.xaxis.set_minor_formatter(NullFormatter())
    aspect_ax.set_xlabel("aspect ratio w / h")
    aspect_ax.set_title("Box aspect distribution")
    aspect_ax.legend()
    return save(fig, path)


def labels_correlogram(boxes: pd.DataFrame, path: Path, seed: int = 0) -> Path:
    if boxes.empty:
        raise NotApplicable("the run directory holds no training ground truth (data/train_gt.json)")
    if len(boxes) > CORRELOGRAM_MAX_BOXES:
        boxes = boxes.sample(CORRELOGRAM_MAX_BOXES, random_state=seed)
    columns = ["x", "y", "w", "h"]
    n = len(columns)
    fig, axes = plt.subplots(n, n, figsize=(6.4, 6.4), sharex="col")
    bins = np.linspace(0, 1, 31)
    for i, row in enumerate(columns):
        for j, col in enumerate(columns):
            ax = axes[i, j]
            if j > i:
                ax.axis("off")
            elif i == j:
                ax.hist(boxes[col].clip(0, 1), bins=bins, color="#4c72b0")
            else:
                ax.hist2d(boxes[col].clip(0, 1), boxes[row].clip(0, 1), bins=(bins, bins), cmap="viridis",
                          norm=LogNorm(), cmin=1)
            ax.grid(False)
            ax.set_xlabel(col if i == n - 1 else "")
            ax.set_ylabel(row if j == 0 and i > 0 else "")
    fig.suptitle("Labels correlogram (normalised box centre and size, training split)")
    return save(fig, path)
