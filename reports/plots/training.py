"""Training curves: total loss and learning rate against the iteration, one line per model."""

from __future__ import annotations

from pathlib import Path

import matplotlib.pyplot as plt
import pandas as pd

from reports.plots.palette import model_colours
from reports.plots.style import NotApplicable, save
from reports.rundir import Run


def global_step(log: pd.DataFrame) -> pd.Series:
    """Iterations counted across stages (MFSSD-Pruned logs sparse training, then fine-tuning, each from 0)."""
    if "stage" not in log:
        return log["iteration"]
    stage_order = pd.unique(log["stage"])
    offsets, total = {}, 0
    for stage in stage_order:
        offsets[stage] = total
        total += int(log.loc[log["stage"] == stage, "iteration"].max())
    return log["iteration"] + log["stage"].map(offsets)


def training_curves(run: Run, path: Path) -> Path:
    logs = {name: m.train_log for name, m in run.models.items()
            if m.train_log is not None and not m.train_log.empty and "loss" in m.train_log}
    if not logs:
        raise NotApplicable("no model wrote a training log")
    colours = model_colours(logs, run.zoo)
    fig, (loss_ax, lr_ax) = plt.subplots(1, 2, figsize=(10, 3.4))
    for name, log in logs.items():
        step = global_step(log)
        loss_ax.plot(step, log["loss"], color=colours[name], label=name, lw=1.2)
        if "lr" in log:
            lr_ax.plot(step, log["lr"], color=colours[name], lw=1.2)
    loss_ax.set_yscale("log")
    loss_ax.set_xlabel("iteration (stages concatenated)")
    loss_ax.set_ylabel("training loss (log scale)")
    loss_ax.set_title("Training loss (each family has its own loss: compare shapes, not levels)")
    lr_ax.set_xlabel("iteration")
    lr_ax.set_ylabel("learning rate")
    lr_ax.set_title("Learning-rate schedule")
    loss_ax.legend(ncols=2)
    return save(fig, path)
