"""Default boxes ("priors"): a set of box shapes tiled over every cell of every prediction map.

A level is described by its map size, its step (pixels between cell centres) and its list of box shapes in
pixels. This is more general than torchvision's ``DefaultBoxGenerator`` (which always emits 2 + 2·len(ratios)
boxes), which is what DF-SSD's 9-box level needs; SSD's own rule is ``ssd_box_shapes``.
"""

from __future__ import annotations

import math
from dataclasses import dataclass

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
