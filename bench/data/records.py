"""The one in-memory representation every reader produces and every consumer reads.

Box convention: float64 ``xyxy`` in *continuous* pixel coordinates with the origin at the top-left corner of
the top-left pixel (COCO's convention: ``x2 = x + w``). The VOC reader converts the devkit's 1-based inclusive
integers with ``x1 = xmin - 1, x2 = xmax``, so the devkit's "+1" widths equal ``x2 - x1`` here and the
conversion round-trips exactly.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path

import numpy as np


def _empty(shape: tuple[int, ...], dtype: type) -> np.ndarray:
    return np.zeros(shape, dtype=dtype)


@dataclass
class ImageRecord:
    """Ground truth of one image. Arrays are aligned: row ``i`` of every array describes object ``i``."""

    image_id: int
    file_name: str  # relative to the data set's image root
    width: int
    height: int
    boxes: np.ndarray = field(default_factory=lambda: _empty((0, 4), np.float64))  # (N, 4) xyxy pixels
    labels: np.ndarray = field(default_factory=lambda: _empty((0,), np.int64))  # (N,) contiguous class index
    difficult: np.ndarray = field(default_factory=lambda: _empty((0,), bool))  # VOC "difficult"
    iscrowd: np.ndarray = field(default_factory=lambda: _empty((0,), bool))  # COCO crowd regions
    area: np.ndarray | None = None  # COCO "area" field; None means box area w*h

    def __post_init__(self) -> None:
        self.boxes = np.asarray(self.boxes, dtype=np.float64).reshape(-1, 4)
        n = len(self.boxes)
        self.labels = np.asarray(self.labels, dtype=np.int64).reshape(n)
        self.difficult = (np.zeros(n, bool) if len(self.difficult) == 0 and n else
                          np.asarray(self.difficult, dtype=bool).reshape(n))
        self.iscrowd = (np.zeros(n, bool) if len(self.iscrowd) == 0 and n else
                        np.asarray(self.iscrowd, dtype=bool).reshape(n))
        if self.area is not None:
            self.area = np.asarray(self.area, dtype=np.float64).reshape(n)

    @property
    def box_area(self) -> np.ndarray:
        """The COCO ``area`` when the source gave one, else the box area."""
        if self.area is not None:
            return self.area
        wh = self.boxes[:, 2:] - self.boxes[:, :2]
        return wh[:, 0] * wh[:, 1]


@dataclass
class DetectionDataset:
    """A split of a data set: class names, where the images live, and one record per image."""

    classes: list[str]
    records: list[ImageRecord]
    image_root: Path
    name: str = "dataset"
    source: Path | None = None  # the annotation file or folder it was read from (for the manifest)
    category_ids: list[int] | None = None  # COCO category id of each class index; None means 1..C

    def __post_init__(self) -> None:
        self.image_root = Path(self.image_root)
        if self.category_ids is None:
            self.category_ids = list(range(1, len(self.classes) + 1))
        if len(self.category_ids) != len(self.classes):
            raise ValueError("category_ids and classes differ in length")

    @property
    def num_classes(self) -> int:
        return len(self.classes)

    def __len__(self) -> int:
        return len(self.records)

    def image_path(self, record: ImageRecord) -> Path:
        return self.image_root / record.file_name

    def subset(self, indices: list[int] | np.ndarray, name: str | None = None) -> DetectionDataset:
        return DetectionDataset(self.classes, [self.records[i] for i in indices], self.image_root,
                                name or self.name, self.source, list(self.category_ids or []))
