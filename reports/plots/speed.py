"""Speed figures: FPS per model and protocol (seed 000 fig. 3) and the speed-accuracy Pareto front."""

from __future__ import annotations

from pathlib import Path

import matplotlib.pyplot as plt
import numpy as np
import pandas as pd

from reports.plots.palette import model_colours
from reports.plots.style import NotApplicable, save
from reports.rundir import Run


def speed_table(run: Run) -> pd.DataFrame:
    """One row per (model, protocol, precision, batch) timing the run measured."""
    rows = [{"model": name, **result} for name, m in run.models.items()
            for result in (m.speed or {}).get("results", [])]
    return pd.DataFrame(rows)


def fps_chart(run: Run, path: Path) -> Path:
    table = speed_table(run)
    if table.empty:
        raise NotApplicable("no model was timed in this run")
    table["setting"] = (table["protocol"] + " " + table["precision"] + " b" + table["batch"].astype(str))
    wide = table.pivot_table(index="model", columns="setting", values="fps", sort=False)
    colours = model_colours(wide.index, run.zoo)
    fig, ax = plt.subplots(figsize=(max(5, 1.6 * wide.shape[1] + 0.25 * wide.size), 3.4))
    width = 0.8 / len(wide)
    x = np.arange(wide.shape[1])
    for i, (name, row) in enumerate(wide.iterrows()):
        bars = ax.bar(x + i * width - 0.4 + width / 2, row.fillna(0), width, color=colours[name], label=name)
        ax.bar_label(bars, labels=[f"{v:.0f}" if v == v else "" for v in row], fontsize=6, padding=1)
    ax.set_xticks(x, wide.columns)
    ax.set_ylabel("FPS (images / s)")
    devices = ", ".join(sorted(set(table["device_name"].astype(str))))
    ax.set_title(f"Inference speed per model (measured on {devices})")
    ax.legend(ncols=min(5, len(wide)), loc="upper left", bbox_to_anchor=(0, -0.12))
    return save(fig, path)


def pareto_front(points: pd.DataFrame) -> pd.DataFrame:
    """Models no other model beats on both speed and accuracy, fastest first."""
    ordered = points.sort_values(["fps", "ap"], ascending=[False, False])
    best = np.maximum.accumulate(ordered["ap"].to_numpy())
    keep = np.r_[True, ordered["ap"].to_numpy()[1:] > best[:-1]]
    return ordered[keep]


def speed_accuracy(run: Run, path: Path) -> Path:
    points = pd.DataFrame([
        {"model": name, "fps": timing["fps"], "ap": 100 * m.metrics["coco"]["AP50"]}
        for name, m in run.models.items()
        if (timing := m.speed_result("model")) and m.metrics and (m.metrics.get("coco") or {}).get("AP50")
        is not None
    ])
    if points.empty:
        raise NotApplicable("needs models with both a `model` fp32 timing and COCO AP50")
    colours = model_colours(points["model"], run.zoo)
    front = pareto_front(points)
    fig, ax = plt.subplots(figsize=(7.5, 3.8))
    ax.plot(front["fps"], front["ap"], color="0.6", lw=1, ls="--", label="Pareto front")
    on_front = set(front["model"])
    for row in points.itertuples():
        # Every model is in the legend; only the front is labelled in place, so clustered points stay legible.
        ax.scatter(row.fps, row.ap, color=colours[row.model], s=36, zorder=3, label=row.model)
        if row.model in on_front:
            ax.annotate(row.model, (row.fps, row.ap), textcoords="offset points", xytext=(4, 3), fontsize=7)
    ax.set_xscale("log")
    ax.set_xlabel("FPS, `model` protocol, fp32, batch 1 (log scale)")
    ax.set_ylabel("COCO AP50 (%)")
    ax.set_title("Speed vs accuracy (measured in this run)")
    ax.legend(loc="upper left", bbox_to_anchor=(1.02, 1), fontsize=7, frameon=False)
    return save(fig, path)
