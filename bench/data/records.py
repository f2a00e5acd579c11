"""The one in-memory representation every reader produces and every consumer reads.

Box convention: float64 ``xyxy`` in *continuous* pixel coordinates with the origin at the top-left corner of
the top-left pixel (COCO's convention: ``x2 = x + w``). The VOC reader converts the devkit's 1-based inclusive
integers with ``x1 = xmin - 1, x2 = xmax``, so the devkit's "+1" widths equal ``x2 - x1`` here and the
conversion round-trips exactly.

Records hold the ground truth exactly as the source file has it, degenerate and out-of-image boxes included:
evaluation must see what the reference tools see. Training uses the repaired view of ``bench.data.health``.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path

import numpy as np

from bench.errors import BenchInputError


def _empty(shape: tuple[int, ...], dtype: type) -> np.ndarray:
    return np.zeros(shape, dtype=dtype)


def _array(values: object, dtype: type, shape: tuple[int, ...]) -> np.ndarray:
    """``values`` as an array of ``dtype`` and ``shape``; arrays that already are pass through untouched (a
    reader builds one record per image, 118k of them for COCO train2017)."""
    if type(values) is np.ndarray and values.dtype == dtype:
        got = values.shape
        if got == shape or (shape[0] == -1 and len(got) == len(shape) and got[1:] == shape[1:]):
            return values
    return np.asarray(values, dtype=dtype).reshape(shape)


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
    # Per-object id for problem reports: the COCO annotation id, the 1-based line of a text label file, or
    # the 0-based object position in a VOC XML or TT100K image entry (``DetectionDataset.entry_kind``).
    entry_ids: np.ndarray = field(default_factory=lambda: _empty((0,), np.int64))
    label_file: str = ""  # this image's own annotation file (per-image formats), for problem reports
    # Regions where a detection counts neither as TP nor as FP (KITTI ``DontCare``), xyxy pixels, any class.
    ignore_regions: np.ndarray = field(default_factory=lambda: _empty((0, 4), np.float64))
    # Extra per-object fields aligned with ``boxes`` (KITTI: type, truncated, occluded, alpha, location...).
    attributes: dict[str, np.ndarray] = field(default_factory=dict)

    def __post_init__(self) -> None:
        self.boxes = _array(self.boxes, np.float64, (-1, 4))
        n = len(self.boxes)
        self.labels = _array(self.labels, np.int64, (n,))
        none = np.zeros(n, bool)
        self.difficult = none if len(self.difficult) == 0 and n else _array(self.difficult, bool, (n,))
        self.iscrowd = none.copy() if len(self.iscrowd) == 0 and n else _array(self.iscrowd, bool, (n,))
        if self.area is not None:
            self.area = _array(self.area, np.float64, (n,))
        self.entry_ids = (np.arange(n, dtype=np.int64) if len(self.entry_ids) == 0 and n else
                          _array(self.entry_ids, np.int64, (n,)))
        self.ignore_regions = _array(self.ignore_regions, np.float64, (-1, 4))
        for key, values in self.attributes.items():
            if len(values) != n:
                raise ValueError(f"attribute {key!r} has {len(values)} rows for {n} boxes")

    @classmethod
    def trusted(cls, **fields: object) -> ImageRecord:
        """A record from arrays that already have the right dtypes and shapes, without ``__post_init__``: the
        COCO reader builds 118k of them for train2017, and validating each again would double its cost."""
        record = object.__new__(cls)
        record.__dict__.update({"area": None, "label_file": "", "attributes": {}}, **fields)
        return record

    def describe_entry(self, k: int, kind: str) -> str:
        """Object ``k`` as a problem report names it: ``annotation 918``, ``000012.txt line 3``, ..."""
        entry = int(self.entry_ids[k])
        if kind == "annotation":
            return f"annotation {entry}"
        where = self.label_file or self.file_name
        return f"{where} line {entry}" if kind == "line" else f"{where} object {entry}"

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
    entry_kind: str = "object"  # how ``ImageRecord.entry_ids`` name objects: annotation, line or object
    notes: list[str] = field(default_factory=list)  # what the reader chose or left out, for the health report

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
                                name or self.name, self.source, list(self.category_ids or []),
                                self.entry_kind, list(self.notes))


def read_image_size(path: Path) -> tuple[int, int]:
    """``(width, height)`` from the image header alone (no decode); an unreadable file is a named error."""
    from PIL import Image  # here, not at the top: scoring a results file never opens an image (7 ms)

    try:
        with Image.open(path) as image:
            return image.size
    except OSError as err:  # PIL's UnidentifiedImageError is an OSError
        raise BenchInputError(path, f"cannot read image header: {err}") from None
