"""The YOLO txt layout ultralytics trains on: ``images/<split>/*`` and ``labels/<split>/<stem>.txt``.

Each label line is ``cls cx cy w h`` normalised to [0, 1] by the image's width and height, so pixel boxes need
the real image sizes (read from the file headers with PIL, without decoding pixels; EXIF orientation is not
applied, exactly as the loader decodes them). An image without a label file is a background image.

Normalised text recovers pixels only up to float error, so pixel coordinates are rounded to 1e-6 px (far
below any IoU effect): integer boxes written by ``write_yolo`` come back exactly. YOLO has no ``difficult``
or crowd flags: ``write_yolo`` writes difficult objects as ordinary boxes and drops crowd regions, as
ultralytics' COCO converter does.

Coordinates outside [0, 1] and non-positive sizes are read as they are and left to ``bench.data.health``
(counted, clipped or dropped for training); ultralytics would drop the whole label file instead.
"""

from __future__ import annotations

from pathlib import Path

import numpy as np

from bench.data.records import DetectionDataset, ImageRecord, read_image_size
from bench.data.voc import place_image
from bench.errors import BenchInputError

IMAGE_SUFFIXES = frozenset({".bmp", ".jpeg", ".jpg", ".png", ".tif", ".tiff", ".webp"})
_DECIMALS = 6


def _parse_labels(path: Path, num_classes: int) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """``(labels, cxcywh, line numbers)`` of one label file, naming the first malformed line."""
    lines = [(n, line.split()) for n, line in enumerate(path.read_text().splitlines(), 1) if line.strip()]
    rows = []
    for n, fields in lines:
        if len(fields) != 5:
            raise BenchInputError(path, f"expected 'cls cx cy w h', got {len(fields)} fields",
                                  entry=f"line {n}")
        try:
            rows.append([float(f) for f in fields])
        except ValueError:
            raise BenchInputError(path, f"not a number in {' '.join(fields)!r}", entry=f"line {n}") from None
    table = np.asarray(rows, dtype=np.float64).reshape(-1, 5)
    numbers = [n for n, _ in lines]

    def first_bad(mask: np.ndarray, field: str, message: str) -> None:
        if mask.any():
            k = int(np.flatnonzero(mask)[0])
            raise BenchInputError(path, f"{message}: {' '.join(lines[k][1])!r}", entry=f"line {numbers[k]}",
                                  field=field)

    cls = table[:, 0]
    first_bad((cls != np.round(cls)) | (cls < 0) | (cls >= num_classes), "cls",
              f"class index must be an integer in [0, {num_classes})")
    coords = table[:, 1:]
    first_bad(~np.isfinite(coords).all(axis=1), "box", "coordinates must be finite numbers")
    return cls.astype(np.int64), coords, np.asarray(numbers, dtype=np.int64)


def read_yolo(root: Path, split: str, classes: list[str]) -> DetectionDataset:
    """Read ``root/images/<split>`` and ``root/labels/<split>``; image ids are positions in sorted order."""
    root = Path(root)
    image_dir, label_dir = root / "images" / split, root / "labels" / split
    if not image_dir.is_dir():
        raise BenchInputError(image_dir, f"image folder for split {split!r} not found")
    paths = sorted(p for p in image_dir.iterdir() if p.suffix.lower() in IMAGE_SUFFIXES)
    records = []
    for image_id, path in enumerate(paths):
        width, height = read_image_size(path)
        label_file = label_dir / f"{path.stem}.txt"
        labels, cxcywh, lines = (_parse_labels(label_file, len(classes)) if label_file.is_file()
                                 else (np.zeros(0, np.int64), np.zeros((0, 4)), np.zeros(0, np.int64)))
        scale = np.array([width, height, width, height], dtype=np.float64)
        half = cxcywh[:, 2:] / 2
        xyxy = np.concatenate([cxcywh[:, :2] - half, cxcywh[:, :2] + half], axis=1) * scale
        records.append(ImageRecord(image_id=image_id, file_name=path.name, width=width, height=height,
                                   boxes=np.round(xyxy, _DECIMALS), labels=labels, entry_ids=lines,
                                   label_file=label_file.name))
    return DetectionDataset(list(classes), records, image_dir, name=f"{root.name}-{split}", source=label_dir,
                            entry_kind="line")


def _label_lines(record: ImageRecord) -> str:
    keep = ~record.iscrowd
    boxes = record.boxes[keep]
    wh = boxes[:, 2:] - boxes[:, :2]
    cxcywh = np.concatenate([boxes[:, :2] + wh / 2, wh], axis=1)
    cxcywh /= np.array([record.width, record.height, record.width, record.height], dtype=np.float64)
    return "".join(f"{label} " + " ".join(f"{v:.12g}" for v in row) + "\n"
                   for label, row in zip(record.labels[keep].tolist(), cxcywh.tolist(), strict=True))


def write_yolo(ds: DetectionDataset, root: Path, split: str, link_images: bool = False) -> Path:
    """Write a label file per record to ``root/labels/<split>``, images to ``root/images/<split>``.

    Images are copied, or symlinked with ``link_images``, when they exist. Every record gets a label file
    (empty for background images); values have 12 significant digits. Returns the label folder.
    """
    root = Path(root)
    image_dir, label_dir = root / "images" / split, root / "labels" / split
    stems = [Path(r.file_name).stem for r in ds.records]
    if len(set(stems)) != len(stems):
        raise ValueError(f"{ds.name}: image file stems are not unique, label files would collide")
    label_dir.mkdir(parents=True, exist_ok=True)
    image_dir.mkdir(parents=True, exist_ok=True)
    for record, stem in zip(ds.records, stems, strict=True):
        (label_dir / f"{stem}.txt").write_text(_label_lines(record))
        place_image(ds.image_path(record), image_dir / Path(record.file_name).name, link_images)
    return label_dir
