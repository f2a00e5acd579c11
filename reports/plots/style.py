"""Shared figure style: readable on screen and in print at a modest DPI, so reports build in seconds."""

from __future__ import annotations

from pathlib import Path

import matplotlib.pyplot as plt
from matplotlib.figure import Figure

DPI = 90
plt.rcParams.update({
    "figure.dpi": DPI, "savefig.dpi": DPI, "font.size": 9, "axes.titlesize": 10, "axes.grid": True,
    "grid.alpha": 0.3, "axes.spines.top": False, "axes.spines.right": False, "legend.fontsize": 8,
    "legend.frameon": False,
})


def save(fig: Figure, path: Path) -> Path:
    """Write ``fig`` as PNG and free it (reports draw dozens of figures)."""
    path.parent.mkdir(parents=True, exist_ok=True)
    laid_out = fig.get_layout_engine() is not None  # a second, "tight" layout pass would only cost time
    fig.savefig(path, format="png", bbox_inches=None if laid_out else "tight")
    plt.close(fig)
    return path


class NotApplicable(Exception):
    """Raised by a figure function that has nothing honest to draw; the message says why, on the page."""
