"""Accuracy figures: per-class AP heatmap, AP by object size, and DF-SSD's small-class view."""

from __future__ import annotations

from pathlib import Path

import matplotlib.pyplot as plt
import numpy as np
import pandas as pd
import seaborn as sns

from reports.papers import DFSSD_SMALL_CLASSES
from reports.plots.palette import model_colours
from reports.plots.style import NotApplicable, save
from reports.rundir import Run

MAX_CLASS_COLUMNS = 30
SIZE_METRICS = {"APs": "small (< 32²)", "APm": "medium", "APl": "large (> 96²)"}


def per_class_ap(run: Run, key: str = "voc_ap_11pt") -> pd.DataFrame:
    """Models x classes table of per-class AP in percent; classes without ground truth are NaN."""
    rows = {}
    for name, model in run.models.items():
        if model.metrics and model.metrics.get("per_class"):
            rows[name] = {c["class"]: (100 * c[key] if c.get(key) is not None and c.get("n_gt", 1) > 0
                                       else np.nan) for c in model.metrics["per_class"]}
    return pd.DataFrame.from_dict(rows, orient="index", dtype=float)


def per_class_heatmap(run: Run, path: Path) -> Path:
    table = per_class_ap(run)
    if table.empty:
        raise NotApplicable("no model has per-class metrics in this run")
    tall = table.shape[1] > MAX_CLASS_COLUMNS  # COCO's 80 classes read better as rows
    if tall:
        table = table.T
    fig, ax = plt.subplots(figsize=(2.5 + 0.6 * table.shape[1], 1.2 + 0.24 * table.shape[0]) if tall
                           else (2 + 0.45 * table.shape[1], 1.2 + 0.4 * table.shape[0]))
    sns.heatmap(table, vmin=0, vmax=100, cmap="viridis", annot=True, fmt=".0f", ax=ax,
                annot_kws={"fontsize": 7}, cbar_kws={"label": "AP (%, VOC 11-point, IoU 0.5)"})
    ax.set_xlabel("model" if tall else "class")
    ax.set_ylabel("class" if tall else "model")
    ax.set_title("Per-class AP (measured in this run)")
    ax.tick_params(axis="x", labelrotation=60)
    return save(fig, path)


def ap_by_size(run: Run, path: Path) -> Path:
    table = pd.DataFrame({name: {label: (m.metrics or {}).get("coco", {}).get(key) for key, label in
                                 SIZE_METRICS.items()} for name, m in run.models.items() if m.metrics},
                         dtype=float).T * 100
    if table.empty:
        raise NotApplicable("no model has COCO metrics in this run")
    colours = model_colours(table.index, run.zoo)
    fig, ax = plt.subplots(figsize=(max(5, 1.2 * len(SIZE_METRICS) * max(1, len(table) / 4)), 3.2))
    width = 0.8 / len(table)
    x = np.arange(len(SIZE_METRICS))
    for i, (name, values) in enumerate(table.iterrows()):
        offset = x + i * width - 0.4 + width / 2
        bars = ax.bar(offset, values.fillna(0), width, label=name, color=colours[name])
        for bar, value in zip(bars, values, strict=True):
            if np.isnan(value):  # pycocotools -1: no objects of that size in the test split
                ax.text(bar.get_x() + bar.get_width() / 2, 0.5, "n/a", ha="center", fontsize=6, rotation=90)
    ax.set_xticks(x, list(SIZE_METRICS.values()))
    ax.set_ylabel("COCO AP@[.5:.95] (%)")
    ax.set_title("AP by object size (measured in this run)")
    ax.legend(ncols=min(5, len(table)), loc="upper left", bbox_to_anchor=(0, -0.12))
    return save(fig, path)


def small_class_view(run: Run, paper_table: pd.DataFrame, path: Path) -> Path:
    """DF-SSD Table 2's six small VOC classes: the paper's rows (grey, hatched) beside the run's models."""
    measured = per_class_ap(run).reindex(columns=list(DFSSD_SMALL_CLASSES)).dropna(how="all")
    paper = paper_table.pivot_table(index="model", columns="class", values="value", sort=False)
    paper = paper.reindex(columns=list(DFSSD_SMALL_CLASSES))
    series = [(f"paper: {label}", row, "grey", "//") for label, row in paper.iterrows()]
    colours = model_colours(measured.index, run.zoo)
    series += [(f"run: {name}", row, colours[name], None) for name, row in measured.iterrows()]
    if not series:
        raise NotApplicable("neither the paper registry nor the run has these classes")
    greys = iter(np.linspace(0.35, 0.8, max(1, len(paper))))
    fig, ax = plt.subplots(figsize=(9, 3.4))
    width = 0.85 / len(series)
    x = np.arange(len(DFSSD_SMALL_CLASSES))
    for i, (label, row, colour, hatch) in enumerate(series):
        colour = str(next(greys)) if colour == "grey" else colour
        ax.bar(x + i * width - 0.425 + width / 2, row.fillna(0).to_numpy(), width, label=label, color=colour,
               hatch=hatch, edgecolor="white" if hatch else None, linewidth=0)
    ax.set_xticks(x, list(DFSSD_SMALL_CLASSES))
    ax.set_ylabel("AP (%, VOC 11-point)")
    note = "" if len(measured) else " — the run has none of these classes"
    ax.set_title(f"DF-SSD Table 2 small classes: paper (grey, hatched) vs this run{note}")
    ax.legend(ncols=3, loc="upper left", bbox_to_anchor=(0, -0.12))
    return save(fig, path)
