"""Default boxes ("priors"): a set of box shapes tiled over every cell of every prediction map.

A level is described by its map size, its step (pixels between cell centres) and its list of box shapes in
pixels. This is more general than torchvision's ``DefaultBoxGenerator`` (which always emits 2 + 2·len(ratios)
boxes), which is what DF-SSD's 9-box level needs; SSD's own rule is ``ssd_box_shapes``.

Also the home of SSD's prior-size tables (Caffe ``ssd_pascal*.py`` / ``ssd_coco*.py``, lufficc configs) and of
the box-count layouts the variants put on them: SSD300's 8,732 and the 11,620 of MFSSD's 6 boxes on conv4_3.
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from typing import Literal

import numpy as np
import torch
from torch import Tensor


@dataclass(frozen=True)
class PriorLevel:
    feature_size: int  # square map side
    step: float  # pixels between neighbouring cell centres; centres at (i + 0.5) * step
    shapes: tuple[tuple[float, float], ...]  # (w, h) in input pixels, in head output order

    @property
    def boxes_per_location(self) -> int:
        return len(self.shapes)

    @property
    def num_priors(self) -> int:
        return self.feature_size**2 * len(self.shapes)


def ssd_box_shapes(
    min_size: float, max_size: float, aspect_ratios: tuple[float, ...]
) -> tuple[tuple[float, float], ...]:
    """SSD's boxes for one level: s_k, sqrt(s_k s_{k+1}), then (r, 1/r) per aspect ratio (Liu et al. 2016)."""
    shapes = [(min_size, min_size)]
    mid = math.sqrt(min_size * max_size)
    shapes.append((mid, mid))
    for ratio in aspect_ratios:
        r = math.sqrt(ratio)
        shapes += [(min_size * r, min_size / r), (min_size / r, min_size * r)]
    return tuple(shapes)


def ssd_levels(
    image_size: int,
    feature_sizes: list[int],
    steps: list[float],
    min_sizes: list[float],
    max_sizes: list[float],
    aspect_ratios: list[tuple[float, ...]],
) -> list[PriorLevel]:
    """Build SSD levels from the usual config lists (the layout of lufficc/SSD and amdegroot configs)."""
    lists = (feature_sizes, steps, min_sizes, max_sizes, aspect_ratios)
    if len({len(x) for x in lists}) != 1:
        raise ValueError("prior config lists differ in length")
    return [PriorLevel(f, s, ssd_box_shapes(lo, hi, r)) for f, s, lo, hi, r in zip(*lists, strict=True)]


def generate_priors(levels: list[PriorLevel], image_size: int, clip: bool = False) -> Tensor:
    """All priors as ``(P, 4)`` (cx, cy, w, h) normalised by ``image_size``; order: level, row, column, shape.

    ``clip=True`` clamps all four centre-form values to [0, 1] (the lufficc/amdegroot ports); the Caffe VOC
    scripts use ``clip=False``.
    """
    out = []
    for level in levels:
        idx = torch.arange(level.feature_size, dtype=torch.float64)
        centres = (idx + 0.5) * level.step / image_size
        cy, cx = torch.meshgrid(centres, centres, indexing="ij")
        wh = torch.tensor(level.shapes, dtype=torch.float64) / image_size  # (A, 2)
        n_cells, n_shapes = cx.numel(), len(level.shapes)
        ctr = torch.stack([cx.reshape(-1), cy.reshape(-1)], dim=1)  # (HW, 2)
        boxes = torch.cat(
            [ctr[:, None, :].expand(n_cells, n_shapes, 2), wh[None].expand(n_cells, n_shapes, 2)], 2
        )
        out.append(boxes.reshape(-1, 4))
    priors = torch.cat(out).float()
    return priors.clamp_(0, 1) if clip else priors


PriorSet = Literal["voc", "coco"]


@dataclass(frozen=True)
class PriorSizes:
    """One SSD prior configuration in input pixels (Caffe ``ssd_pascal*.py`` / ``ssd_coco*.py``)."""

    feature_sizes: tuple[int, ...]
    steps: tuple[float, ...]
    min_sizes: tuple[float, ...]
    max_sizes: tuple[float, ...]


SSD300_PRIOR_SIZES: dict[str, PriorSizes] = {
    "voc": PriorSizes((38, 19, 10, 5, 3, 1), (8, 16, 32, 64, 100, 300),
                      (30, 60, 111, 162, 213, 264), (60, 111, 162, 213, 264, 315)),
    "coco": PriorSizes((38, 19, 10, 5, 3, 1), (8, 16, 32, 64, 100, 300),
                       (21, 45, 99, 153, 207, 261), (45, 99, 153, 207, 261, 315)),
}
SSD512_PRIOR_SIZES: dict[str, PriorSizes] = {
    "voc": PriorSizes((64, 32, 16, 8, 4, 2, 1), (8, 16, 32, 64, 128, 256, 512),
                      (35.84, 76.8, 153.6, 230.4, 307.2, 384.0, 460.8),
                      (76.8, 153.6, 230.4, 307.2, 384.0, 460.8, 537.6)),
    "coco": PriorSizes((64, 32, 16, 8, 4, 2, 1), (8, 16, 32, 64, 128, 256, 512),
                       (20.48, 51.2, 133.12, 215.04, 296.96, 378.88, 460.8),
                       (51.2, 133.12, 215.04, 296.96, 378.88, 460.8, 542.72)),
}

# Boxes per location on the SSD300/SSD512 maps: 4 = {1, 1', 2, 1/2}, 6 adds {3, 1/3}.
SSD300_BOXES = (4, 6, 6, 6, 4, 4)  # 8,732 priors (Liu et al. 2016)
SSD512_BOXES = (4, 6, 6, 6, 6, 4, 4)  # 24,564 priors
SIX_ON_CONV4_3_BOXES = (6, 6, 6, 6, 4, 4)  # 11,620 priors: MFSSD §III.A ("Conv4_3 layer adopts 6 kinds")

_RATIOS_FOR_BOXES: dict[int, tuple[float, ...]] = {4: (2.0,), 6: (2.0, 3.0)}


def prior_sizes(table: dict[str, PriorSizes], prior_set: str) -> PriorSizes:
    """``table[prior_set]`` with an error that names the choices."""
    try:
        return table[prior_set]
    except KeyError:
        raise ValueError(f"unknown prior_set {prior_set!r}; choose one of {sorted(table)}") from None


def sized_levels(sizes: PriorSizes, boxes: tuple[int, ...], image_size: int) -> list[PriorLevel]:
    """SSD levels for ``sizes`` with 4 ({1, 1', 2, 1/2}) or 6 (plus {3, 1/3}) boxes per location per level."""
    if len(boxes) != len(sizes.feature_sizes):
        raise ValueError(f"{len(boxes)} box counts for {len(sizes.feature_sizes)} levels")
    try:
        ratios = [_RATIOS_FOR_BOXES[b] for b in boxes]
    except KeyError as err:
        raise ValueError(f"SSD levels have 4 or 6 boxes per location, not {err.args[0]}") from None
    return ssd_levels(image_size, list(sizes.feature_sizes), list(sizes.steps), list(sizes.min_sizes),
                      list(sizes.max_sizes), ratios)


def ssd300_levels(prior_set: PriorSet = "voc", boxes: tuple[int, ...] = SSD300_BOXES) -> list[PriorLevel]:
    """SSD300's sizes on 38/19/10/5/3/1 with ``boxes`` per location (default: the 8,732 priors)."""
    return sized_levels(prior_sizes(SSD300_PRIOR_SIZES, prior_set), boxes, 300)


def ssd512_levels(prior_set: PriorSet = "voc", boxes: tuple[int, ...] = SSD512_BOXES) -> list[PriorLevel]:
    """SSD512's sizes on 64/32/16/8/4/2/1 with ``boxes`` per location (default: the 24,564 priors)."""
    return sized_levels(prior_sizes(SSD512_PRIOR_SIZES, prior_set), boxes, 512)


def shape_iou(wh: np.ndarray, shapes: np.ndarray) -> np.ndarray:
    """IoU of boxes and prior shapes with their centres aligned: ``(N, 2)`` x ``(K, 2)`` -> ``(N, K)``."""
    inter = np.minimum(wh[:, None, 0], shapes[None, :, 0]) * np.minimum(wh[:, None, 1], shapes[None, :, 1])
    return inter / (wh[:, None].prod(-1) + shapes[None].prod(-1) - inter)


def kmeans_prior_shapes(wh: np.ndarray, k: int, *, seed: int = 0, iterations: int = 300) -> np.ndarray:
    """``k`` prior shapes learned from ``(N, 2)`` box widths and heights (normalised by the image side).

    k-means with the distance 1 - IoU of centre-aligned boxes (Redmon & Farhadi, YOLO9000 §2, the
    "dimension clusters"; seed 000 §3.5's "automatically learned anchors"), k-means++ seeding with ``seed``,
    mean updates until the assignment is stable. Boxes without area are ignored (they match nothing).
    Returns ``(k, 2)`` shapes sorted by area, smallest first.
    """
    wh = np.asarray(wh, dtype=np.float64)
    if wh.ndim != 2 or wh.shape[1] != 2:
        raise ValueError(f"box sizes must be an (N, 2) array of widths and heights, got shape {wh.shape}")
    wh = wh[np.isfinite(wh).all(1) & (wh > 0).all(1)]
    if len(wh) < k:
        raise ValueError(f"{len(wh)} boxes with an area cannot give {k} prior shapes")
    rng = np.random.default_rng(seed)
    centres = wh[[rng.integers(len(wh))]]
    while len(centres) < k:  # k-means++: the next centre far (in 1 - IoU) from the chosen ones
        distance = (1 - shape_iou(wh, centres).max(1)) ** 2
        total = distance.sum()
        pick = rng.integers(len(wh)) if total == 0 else rng.choice(len(wh), p=distance / total)
        centres = np.vstack([centres, wh[pick]])
    assignment = np.full(len(wh), -1)
    for _ in range(iterations):
        new = shape_iou(wh, centres).argmax(1)
        if np.array_equal(new, assignment):
            break
        assignment = new
        for j in range(k):
            members = wh[assignment == j]
            if len(members):
                centres[j] = members.mean(0)
    return centres[np.argsort(centres.prod(1), kind="stable")]
