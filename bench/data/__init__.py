"""Data sets: one in-memory record per image, readers/writers for VOC, COCO, YOLO, KITTI and TT100K, the
synthetic set, and the data-health scan (``bench.data.health``; ``python -m bench.data.check ROOT``).

The transforms and the torch loader live in ``bench.data.transforms`` and ``bench.data.loader``; they are not
imported here so that reading annotations (the evaluator's path) does not pull in torchvision. The names
below are imported on first use (PEP 562), so ``import bench.data.coco`` does not load every other reader.
"""

from __future__ import annotations

import importlib
from typing import Any

_HOMES = {
    "read_coco": "coco", "to_coco_dict": "coco", "write_coco": "coco",
    "DataHealth": "health",
    "KITTI_CLASSES": "kitti", "read_kitti": "kitti", "write_kitti": "kitti",
    "DetectionDataset": "records", "ImageRecord": "records",
    "TT100K_45_CLASSES": "tt100k", "read_tt100k": "tt100k", "write_tt100k": "tt100k",
    "VOC_CLASSES": "voc", "read_voc": "voc", "write_voc": "voc",
    "read_yolo": "yolo", "write_yolo": "yolo",
}
__all__ = sorted(_HOMES)


def __getattr__(name: str) -> Any:
    if name not in _HOMES:
        raise AttributeError(f"module 'bench.data' has no attribute {name!r}")
    value = getattr(importlib.import_module(f"bench.data.{_HOMES[name]}"), name)
    globals()[name] = value
    return value
