"""Ignore regions: areas of an image where a detection counts neither as a true nor as a false positive.

VisDrone ("ignored regions"), TinyPerson ("ignore" boxes) and KITTI (``DontCare``) mark parts of an image
that were not annotated object by object. A detection that is *not matched* to any ground truth and lies
inside such a region is dropped from the precision count; a matched one stays a true positive. "Inside" is
the intersection over the *detection's* area (IoD), as TinyPerson's evaluation and tidecv's crowd IoU
define it: a small detection inside a large region has IoD 1 although its IoU with the region is tiny.
"""

from __future__ import annotations

import numpy as np

from bench.metrics.groups import columns, group_sizes, group_slots, pow2_buckets

DEFAULT_IOD = 0.5


def intersection_over_detection(det_xyxy: tuple[np.ndarray, ...], region_xyxy: tuple[np.ndarray, ...]
                                ) -> np.ndarray:
    """Intersection area / detection area of broadcast ``x1, y1, x2, y2`` columns (0 for empty boxes)."""
    dx1, dy1, dx2, dy2 = det_xyxy
    rx1, ry1, rx2, ry2 = region_xyxy
    iw = np.clip(np.minimum(dx2, rx2) - np.maximum(dx1, rx1), 0, None)
    ih = np.clip(np.minimum(dy2, ry2) - np.maximum(dy1, ry1), 0, None)
    area = (dx2 - dx1) * (dy2 - dy1)
    with np.errstate(divide="ignore", invalid="ignore"):
        return np.where(area > 0, iw * ih / area, 0.0)


def in_ignore_regions(det_image: np.ndarray, det_xyxy: np.ndarray, region_image: np.ndarray,
                      region_xyxy: np.ndarray, iod_threshold: float = DEFAULT_IOD) -> np.ndarray:
    """``(N,)`` bool: detection ``i`` has IoD >= ``iod_threshold`` with some region of its own image.

    ``*_image`` is any integer image key (the same for both), boxes are continuous ``xyxy`` pixels. Pass the
    result as ``det_in_ignore_region`` to :func:`bench.metrics.coco.evaluate_coco`: unmatched detections
    flagged here are then ignored, matched ones keep their true positive.
    """
    det_image = np.asarray(det_image, dtype=np.int64)
    region_image = np.asarray(region_image, dtype=np.int64)
    inside = np.zeros(len(det_image), dtype=bool)
    if not len(region_image) or not len(det_image):
        return inside
    det_xyxy = np.asarray(det_xyxy, dtype=np.float64).reshape(-1, 4)
    region_xyxy = np.asarray(region_xyxy, dtype=np.float64).reshape(-1, 4)
    sizes = group_sizes(region_image, det_image)
    widths = pow2_buckets(sizes)
    for width in np.unique(widths[sizes > 0]):
        members = np.flatnonzero((sizes > 0) & (widths == width))
        slots = group_slots(region_image, det_image[members], int(width))
        iod = intersection_over_detection(columns(det_xyxy, members[:, None]),
                                          columns(region_xyxy, slots.slots))
        inside[members] = ((iod >= iod_threshold) & slots.valid).any(axis=1)
    return inside


def dataset_ignore_regions(records: list) -> tuple[np.ndarray, np.ndarray]:
    """(image id, ``xyxy``) of every record's ``ignore_regions`` (KITTI DontCare, VisDrone ignored areas)."""
    with_regions = [r for r in records if len(r.ignore_regions)]  # (most data sets: none)
    ids = [np.full(len(r.ignore_regions), r.image_id, dtype=np.int64) for r in with_regions]
    boxes = [np.asarray(r.ignore_regions, dtype=np.float64).reshape(-1, 4) for r in with_regions]
    return (np.concatenate(ids) if ids else np.zeros(0, np.int64),
            np.concatenate(boxes) if boxes else np.zeros((0, 4)))
