"""Normalised Gaussian Wasserstein distance (Wang et al. 2021, "A Normalized Gaussian Wasserstein Distance
for Tiny Object Detection"), an alternative to IoU for matching tiny boxes.

A box ``(cx, cy, w, h)`` is modelled as a 2-D Gaussian N((cx, cy), diag(w^2/4, h^2/4)); between two such
Gaussians the second-order Wasserstein distance is
``W^2 = |c_a - c_b|^2 + ((w_a - w_b)^2 + (h_a - h_b)^2) / 4``
and ``NWD = exp(-sqrt(W^2) / C)``. The paper sets C to the data set's average absolute object size; its
AI-TOD experiments use C = 12.8, the default here. Unlike IoU, NWD stays informative for boxes that do not
overlap, and a 1-pixel shift of a 4-pixel box costs far less of it.
"""

from __future__ import annotations

import numpy as np

from bench.metrics.groups import Columns

NWD_CONSTANT = 12.8


def nwd(det: Columns, gt: Columns, constant: float = NWD_CONSTANT) -> np.ndarray:
    """NWD of broadcast ``x, y, w, h`` columns."""
    dx, dy, dw, dh = det
    gx, gy, gw, gh = gt
    cx = (dx + dw / 2) - (gx + gw / 2)
    cy = (dy + dh / 2) - (gy + gh / 2)
    w2 = cx * cx + cy * cy + ((dw - gw) ** 2 + (dh - gh) ** 2) / 4.0
    return np.exp(-np.sqrt(w2) / constant)


def nwd_similarity(det: Columns, gt: Columns, gt_crowd: np.ndarray) -> np.ndarray:
    """NWD in the matcher's similarity signature; crowd regions have no NWD meaning and are compared as
    ordinary boxes (they stay ignored ground truth)."""
    return nwd(det, gt)
