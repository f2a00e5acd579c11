"""The SSD ablation switches (seed 003 §4.2, Tables 3.1-3.3; seed 000 §3.5) as build options of every variant.

- ``aspect_ratios``: the non-square ratios r kept (with 1/r) on every level, e.g. ``[2, 3]`` (SSD's full
  {1, 2, 1/2, 3, 1/3}), ``[2]`` (without {3, 1/3}), ``[]`` (also without {2, 1/2}); squares always stay;
- ``fc6``: SSD's atrous fc6/fc7 or the plain VGG16 pool5/fc6/fc7 (``detectors.ssd.vgg``), where the variant's
  maps allow it;
- ``prediction_layers``: which of the variant's maps predict (by name); the priors of the others are
  re-tiled onto the kept maps so the total stays near the variant's own count, as the paper does for its
  Table 3.2 (``retile``);
- ``input_size``: another square input side; map sizes are measured on the meta device and the prior sizes
  scale with the input;
- ``prior_shapes``: learned prior shapes (normalised w, h, e.g. ``kmeans_prior_shapes`` of the training
  boxes) replacing every level's shapes, each shape on the level of the nearest scale.

Zoom-out and augmentation on/off are data-side switches (``bench.data.transforms``), not build options.
"""

from __future__ import annotations

import math
from collections import deque
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, fields
from typing import Any

import torch
from torch import nn

from detectors.base import PostprocessConfig
from detectors.ssd.detector import SSDDetector
from detectors.ssd.priors import PriorLevel
from detectors.ssd.vgg import FC6_CHOICES, Fc6

_RATIO_TOLERANCE = 1e-6


@dataclass(frozen=True)
class Ablation:
    """The ablation build options of an SSD variant; the defaults build the variant as its paper does."""

    aspect_ratios: tuple[float, ...] | None = None
    fc6: Fc6 = "atrous"
    prediction_layers: tuple[str, ...] | None = None
    input_size: int | None = None
    prior_shapes: tuple[tuple[float, float], ...] | None = None

    def __post_init__(self) -> None:
        if self.fc6 not in FC6_CHOICES:
            raise ValueError(f"unknown fc6 {self.fc6!r}; choose one of {list(FC6_CHOICES)}")
        if self.aspect_ratios is not None and any(not r > 1 for r in self.aspect_ratios):
            raise ValueError(f"aspect_ratios lists the ratios r > 1 kept with 1/r, got {self.aspect_ratios}")
        if self.prediction_layers is not None and not self.prediction_layers:
            raise ValueError("prediction_layers needs at least one layer")
        if self.input_size is not None and self.input_size < 32:
            raise ValueError(f"input_size must be at least 32, got {self.input_size}")
        if self.prior_shapes is not None:
            if not self.prior_shapes or any(not (0 < w <= 4 and 0 < h <= 4) for w, h in self.prior_shapes):
                raise ValueError("prior_shapes are (w, h) pairs normalised by the input side")
            if self.aspect_ratios is not None:
                raise ValueError("prior_shapes replace the layout's shapes: give aspect_ratios or "
                                 "prior_shapes, not both")

    @classmethod
    def from_options(cls, options: Mapping[str, Any]) -> Ablation:
        """From builder keyword options (TOML gives lists; unknown names are an error)."""
        unknown = sorted(set(options) - ABLATION_OPTIONS)
        if unknown:
            known = ", ".join(sorted(ABLATION_OPTIONS))
            raise ValueError(f"unknown SSD build option {unknown[0]!r}; known: {known}")
        values = dict(options)
        for key in ("aspect_ratios", "prediction_layers"):
            if values.get(key) is not None:
                values[key] = tuple(values[key])
        if values.get("prior_shapes") is not None:
            values["prior_shapes"] = tuple((float(w), float(h)) for w, h in values["prior_shapes"])
        return cls(**values)

    def notes(self) -> list[str]:
        """One note per switch that differs from the paper's model."""
        out = []
        if self.aspect_ratios is not None:
            kept = ", ".join(f"{r:g}, 1/{r:g}" for r in self.aspect_ratios) or "none"
            out.append(f"ablation: aspect ratios 1 and {kept} (shapes of other ratios removed from every "
                       f"level)")
        if self.fc6 != "atrous":
            out.append("ablation: plain VGG16 pool5 2x2/2 and fc6/fc7 (7x7 and 1x1, 4096 channels) instead "
                       "of SSD's atrous fc6")
        if self.prediction_layers is not None:
            out.append(f"ablation: predicting on {', '.join(self.prediction_layers)} only; the other layers' "
                       f"priors re-tiled onto the nearest kept layer (each scale keeps at least its square "
                       f"box, then more shapes while the total gets closer to the full layout's count)")
        if self.input_size is not None:
            out.append(f"ablation: input {self.input_size}x{self.input_size}; prior sizes scaled with the "
                       f"input, map sizes measured, steps = input / map side")
        if self.prior_shapes is not None:
            out.append(f"ablation: {len(self.prior_shapes)} learned prior shapes (k-means on the training "
                       f"boxes) replace the layout's, each on the level of the nearest scale")
        return out


ABLATION_OPTIONS = frozenset(f.name for f in fields(Ablation))


def assemble(make_features: Callable[[bool], nn.Module], levels: list[PriorLevel], native_size: int,
             ablation: Ablation, num_classes: int, *, pretrained_backbone: bool, paper: str, notes: list[str],
             postprocess: PostprocessConfig | None) -> SSDDetector:
    """Build a variant with its ablation switches applied.

    ``make_features(pretrained)`` builds the variant's feature network at the input size (and fc6) the
    ablation asks for, ``levels`` are the variant's priors at ``native_size``.
    """
    size = ablation.input_size or native_size
    features = make_features(pretrained_backbone)
    if size != native_size:
        levels = rescale_levels(levels, native_size, size, probe_map_sizes(make_features, size))
    keep = None
    if ablation.prediction_layers is not None:
        keep = map_indices(list(features.map_names), ablation.prediction_layers)
        truncate = getattr(features, "truncate", None)
        if truncate is not None:  # trailing maps nobody predicts on: their layers go
            truncate(max(keep) + 1)
        levels = retile(levels, keep)  # indices of the full layout: truncation removes trailing maps only
    if ablation.aspect_ratios is not None:
        levels = restrict_aspect_ratios(levels, ablation.aspect_ratios)
    if ablation.prior_shapes is not None:
        levels = learned_levels(levels, ablation.prior_shapes, size)
    return SSDDetector(features, levels, num_classes, size, paper=paper, notes=[*notes, *ablation.notes()],
                       clip_priors=False, postprocess=postprocess, prediction_maps=keep)


def probe_map_sizes(make_features: Callable[[bool], nn.Module], size: int) -> list[int]:
    """The side of every prediction map at a ``size`` input, measured on the meta device (no weights)."""
    with torch.device("meta"):
        probe = make_features(False)
        try:
            maps = probe(torch.empty(1, 3, size, size))
        except RuntimeError as err:
            raise ValueError(f"input_size {size} is too small for {type(probe).__name__}: {err}") from None
    return [int(m.shape[-1]) for m in maps]


def rescale_levels(levels: list[PriorLevel], native: int, size: int,
                   map_sizes: Sequence[int]) -> list[PriorLevel]:
    """The variant's priors at another input: shapes scaled by ``size / native``, steps ``size / side``."""
    if len(map_sizes) != len(levels):
        raise ValueError(f"{len(map_sizes)} maps for {len(levels)} prior levels")
    factor = size / native
    return [PriorLevel(side, size / side, tuple((w * factor, h * factor) for w, h in lv.shapes))
            for lv, side in zip(levels, map_sizes, strict=True)]


def map_indices(names: list[str], chosen: Sequence[str]) -> list[int]:
    unknown = [n for n in chosen if n not in names]
    if unknown:
        raise ValueError(f"unknown prediction layer {unknown[0]!r}; this model's layers: {', '.join(names)}")
    return sorted({names.index(n) for n in chosen})


def retile(levels: list[PriorLevel], keep: Sequence[int]) -> list[PriorLevel]:
    """The kept levels, with the dropped levels' shapes moved onto the nearest kept level (ties: coarser).

    The paper keeps the total near the full count "by stacking more scales of boxes on remaining layers"
    without giving the rule; this one: every dropped level's square s_k box moves (so every scale stays
    covered), then its other shapes, in turn over the dropped levels, while each move brings the total
    closer to the full layout's count. SSD300 keeping conv7 only gets 24 boxes there: 8,664, the paper's
    count for that row.
    """
    target = sum(lv.num_priors for lv in levels)
    kept = {i: list(levels[i].shapes) for i in keep}
    dropped = [i for i in range(len(levels)) if i not in kept]

    def home(i: int) -> int:
        return min(keep, key=lambda k: (abs(k - i), -k))

    queues = [(home(i), deque(levels[i].shapes)) for i in dropped]
    for target_level, queue in queues:
        kept[target_level].append(queue.popleft())
    total = sum(levels[i].feature_size ** 2 * len(kept[i]) for i in keep)
    moved = True
    while moved:
        moved = False
        for target_level, queue in queues:
            cells = levels[target_level].feature_size ** 2
            if queue and abs(total + cells - target) < abs(total - target):
                kept[target_level].append(queue.popleft())
                total, moved = total + cells, True
    return [PriorLevel(levels[i].feature_size, levels[i].step, tuple(kept[i])) for i in keep]


def restrict_aspect_ratios(levels: list[PriorLevel], ratios: Sequence[float]) -> list[PriorLevel]:
    """Every level without the shapes whose w/h is not 1, r or 1/r for a kept ratio r."""
    def allowed(w: float, h: float) -> bool:
        r = max(w / h, h / w)
        return any(abs(r - k) <= _RATIO_TOLERANCE * k for k in (1.0, *ratios))

    return [PriorLevel(lv.feature_size, lv.step, tuple(s for s in lv.shapes if allowed(*s))) for lv in levels]


def learned_levels(levels: list[PriorLevel], shapes: Sequence[tuple[float, float]],
                   size: int) -> list[PriorLevel]:
    """Replace every level's shapes by the learned ``shapes`` (normalised w, h) of the nearest log-scale.

    A level's scale is that of its first (s_k square) shape; a level no learned shape falls on gets the
    learned shape nearest to its scale, so every map still predicts.
    """
    pixels = [(w * size, h * size) for w, h in shapes]
    scales = [math.log(math.sqrt(lv.shapes[0][0] * lv.shapes[0][1])) for lv in levels]
    assigned: list[list[tuple[float, float]]] = [[] for _ in levels]
    for w, h in pixels:
        scale = math.log(math.sqrt(w * h))
        assigned[min(range(len(levels)), key=lambda k: abs(scales[k] - scale))].append((w, h))
    for k, own in enumerate(assigned):
        if not own:
            own.append(min(pixels, key=lambda s: abs(math.log(math.sqrt(s[0] * s[1])) - scales[k])))
    return [PriorLevel(lv.feature_size, lv.step, tuple(own))
            for lv, own in zip(levels, assigned, strict=True)]
