"""Size-bucket evaluation protocols for small objects, each a set of pycocotools parameters.

Bucket bounds are object sizes in pixels, ``sqrt(area)``, compared as pycocotools compares areas (both ends
inclusive, ground truth by its ``area`` field, detections by ``w * h``):

* ``coco``: small < 32 <= medium < 96 <= large, maxDets 1/10/100, IoU 0.50:0.95 (pycocotools' defaults).
* ``aitod``: very tiny < 8, tiny 8-16, small 16-32, medium >= 32; maxDets 100/300/1500, IoU 0.50:0.95 -
  the AI-TOD evaluator (a pycocotools fork) with its area ranges and maxDets (Wang et al. 2021).
* ``tinyperson``: tiny 2-20 split into tiny1 2-8, tiny2 8-12, tiny3 12-20, and small 20-32; IoU
  0.25/0.50/0.75; ignore regions by IoD 0.5 (TinyPerson, Yu et al. 2020). The lower bound 2 is TinyPerson's
  "objects smaller than 2 px are not evaluated"; maxDets 200 as its detectors keep.
* ``tt100k``: (0, 32], (32, 96], (96, 400] px (Zhu et al. 2016, Tsinghua-Tencent 100K), sizes as
  sqrt(area) - the paper bins by object size without fixing the measure; sqrt(area) keeps every protocol on
  one measure. maxDets 100.
* ``visdrone``: COCO buckets, maxDets 1/10/100/500 (the VisDrone-DET toolkit), ignore regions by IoD 0.5.

``max_dets`` can be overridden per protocol (``with_max_dets``); the first protocol's COCO summary keys
stay pycocotools' own because ``coco`` is always evaluated with pycocotools' defaults.
"""

from __future__ import annotations

from dataclasses import dataclass, replace

import numpy as np

from bench.metrics.coco import IOU_THRESHOLDS, CocoParams

# Localisation-tolerance grid: 0.10:0.05:0.45 followed by pycocotools' own 0.50:0.95 values, bit for bit, so
# a run on this grid contains the standard arrays as its last ten rows.
TOLERANCE_THRESHOLDS = np.concatenate([np.round(np.arange(0.10, 0.49, 0.05), 2), IOU_THRESHOLDS])
BIG = 1e5


@dataclass(frozen=True)
class SizeProtocol:
    name: str
    buckets: dict[str, tuple[float, float]]  # label -> (lo, hi) object size in px, sqrt(area)
    iou_thresholds: tuple[float, ...]
    max_dets: tuple[int, ...]
    ignore_regions: bool = False  # unmatched detections inside ignore regions (IoD >= 0.5) are ignored
    source: str = ""

    def params(self, thresholds: np.ndarray | None = None, similarity: str = "iou") -> CocoParams:
        """pycocotools parameters: ``all`` first, then the buckets as area ranges."""
        ranges = {"all": (0.0, BIG**2), **{k: (lo**2, hi**2) for k, (lo, hi) in self.buckets.items()}}
        grid = np.asarray(self.iou_thresholds if thresholds is None else thresholds, dtype=np.float64)
        return CocoParams(iou_thresholds=grid, area_ranges=ranges, max_dets=self.max_dets,
                          similarity=similarity)

    def with_max_dets(self, max_dets: tuple[int, ...]) -> SizeProtocol:
        return replace(self, max_dets=tuple(sorted(int(m) for m in max_dets)))


def _coco_iou() -> tuple[float, ...]:
    return tuple(IOU_THRESHOLDS.tolist())


PROTOCOLS: dict[str, SizeProtocol] = {
    "coco": SizeProtocol("coco", {"small": (0, 32), "medium": (32, 96), "large": (96, BIG)}, _coco_iou(),
                         (1, 10, 100), source="pycocotools defaults"),
    "aitod": SizeProtocol("aitod", {"very_tiny": (0, 8), "tiny": (8, 16), "small": (16, 32),
                                    "medium": (32, BIG)}, _coco_iou(), (100, 300, 1500),
                          source="AI-TOD evaluator (pycocotools fork): areaRng and maxDets"),
    "tinyperson": SizeProtocol("tinyperson", {"tiny": (2, 20), "tiny1": (2, 8), "tiny2": (8, 12),
                                              "tiny3": (12, 20), "small": (20, 32)}, (0.25, 0.5, 0.75),
                               (200,), ignore_regions=True, source="TinyPerson benchmark"),
    "tt100k": SizeProtocol("tt100k", {"small": (0, 32), "medium": (32, 96), "large": (96, 400)}, _coco_iou(),
                           (100,), source="Tsinghua-Tencent 100K size bins"),
    "visdrone": SizeProtocol("visdrone", {"small": (0, 32), "medium": (32, 96), "large": (96, BIG)},
                             _coco_iou(), (1, 10, 100, 500), ignore_regions=True,
                             source="VisDrone-DET toolkit"),
}
DEFAULT_PROTOCOLS = ("coco", "aitod")  # others on request: each costs one IoU and one NWD run


def get_protocol(name: str, max_dets: tuple[int, ...] | None = None) -> SizeProtocol:
    if name not in PROTOCOLS:
        raise ValueError(f"unknown size protocol {name!r}; known: {', '.join(PROTOCOLS)}")
    protocol = PROTOCOLS[name]
    return protocol.with_max_dets(max_dets) if max_dets else protocol
