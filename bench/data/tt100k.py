"""Tsinghua-Tencent 100K traffic signs (Zhu et al., CVPR 2016), the data set of MDSSD's 77.6 mAP.

Layout of the release's ``data/`` folder: ``annotations.json`` (``{"types": [...], "imgs": {id: {"path":
"train/10056.jpg", "objects": [{"category": "pl80", "bbox": {"xmin", "ymin", "xmax", "ymax"}, ...}]}}}``),
``train/ids.txt`` and ``test/ids.txt`` (one image id per line) and the 2048x2048 images next to them. Boxes
are continuous pixels (the official ``anno_func.py`` takes ``xmax - xmin`` as the width).

Protocol of Zhu et al. (their ``python/anno_func.py``), which this reader and ``bench.metrics`` follow:

* the 45 classes with at least 100 training instances (``TT100K_45_CLASSES``, the ``type45`` list of the
  official code); objects of every other category are left out of training and of the ground truth, which is
  what ``eval_annos(types=type45)`` does (they can be neither matched nor missed);
* sizes by the long side of the box, ``max(w, h)``, in three buckets ``TT100K_SIZE_BUCKETS``. The paper
  prints them as (0,32], (32,96], (96,400]; the official ``eval_annos`` tests ``minsize <= size < maxsize``
  and so puts a sign of exactly 32 px among the medium ones. ``size_bucket`` follows the script, the
  reference tool; signs of 400 px and more are in no bucket.
"""

from __future__ import annotations

import json
from pathlib import Path, PurePosixPath
from typing import Any

import numpy as np
from PIL import Image, UnidentifiedImageError

from bench.data.records import DetectionDataset, ImageRecord
from bench.data.voc import place_image
from bench.errors import BenchInputError
from bench.io import read_json

TT100K_45_CLASSES = (
    "i2", "i4", "i5", "il100", "il60", "il80", "io", "ip", "p10", "p11", "p12", "p19", "p23", "p26", "p27",
    "p3", "p5", "p6", "pg", "ph4", "ph4.5", "ph5", "pl100", "pl120", "pl20", "pl30", "pl40", "pl5", "pl50",
    "pl60", "pl70", "pl80", "pm20", "pm30", "pm55", "pn", "pne", "po", "pr40", "w13", "w32", "w55", "w57",
    "w59", "wo",
)
MIN_TRAIN_INSTANCES = 100  # Zhu et al.: "we ignore classes with fewer than 100 instances", leaving 45
IMAGE_SIZE = 2048
# (name, low, high) on the box's long side in pixels: low <= max(w, h) < high, as the official eval_annos
TT100K_SIZE_BUCKETS = (("small", 0.0, 32.0), ("medium", 32.0, 96.0), ("large", 96.0, 400.0))
_COORDS = ("xmin", "ymin", "xmax", "ymax")


def is_tt100k_root(root: Path) -> bool:
    root = Path(root)
    splits = any((root / s / "ids.txt").is_file() for s in ("train", "test"))
    return (root / "annotations.json").is_file() and splits


def long_side(boxes: np.ndarray) -> np.ndarray:
    """``max(w, h)`` of xyxy boxes: the size Zhu et al. bucket by."""
    boxes = np.asarray(boxes, dtype=np.float64).reshape(-1, 4)
    return np.maximum(boxes[:, 2] - boxes[:, 0], boxes[:, 3] - boxes[:, 1])


def size_bucket(boxes: np.ndarray) -> np.ndarray:
    """Index into ``TT100K_SIZE_BUCKETS`` of every box, -1 when its long side is 400 px or more."""
    size = long_side(boxes)
    bucket = np.full(len(size), -1, dtype=np.int64)
    for i, (_, low, high) in enumerate(TT100K_SIZE_BUCKETS):
        bucket[(size >= low) & (size < high)] = i
    return bucket


def _split_ids(root: Path, split: str) -> list[str]:
    listed = root / split / "ids.txt"
    if not listed.is_file():
        raise BenchInputError(listed, f"TT100K split list for {split!r} not found")
    return [line.split()[0] for line in listed.read_text().splitlines() if line.strip()]


def _load(path: Path) -> tuple[dict[str, Any], set[str] | None]:
    data = read_json(path)
    if not isinstance(data, dict) or not isinstance(data.get("imgs"), dict):
        raise BenchInputError(path, "expected an object with an 'imgs' object (TT100K annotations)",
                              field="imgs")
    types = data.get("types")
    if types is not None and not (isinstance(types, list) and all(isinstance(t, str) for t in types)):
        raise BenchInputError(path, "must be a list of category names", field="types")
    return data, None if types is None else set(types)


def _number(value: Any, path: Path, entry: str, field: str) -> float:
    if not isinstance(value, int | float) or isinstance(value, bool) or not np.isfinite(value):
        raise BenchInputError(path, f"expected a finite number, got {value!r}", entry=entry, field=field)
    return float(value)


def _objects(image: dict[str, Any], image_id: str, path: Path, known: set[str] | None
             ) -> tuple[list[str], np.ndarray]:
    objects = image.get("objects", [])
    if not isinstance(objects, list):
        raise BenchInputError(path, "must be a list", entry=f"imgs[{image_id}]", field="objects")
    names, rows = [], []
    for k, obj in enumerate(objects):
        entry = f"imgs[{image_id}] object {k}"
        if not isinstance(obj, dict) or not isinstance(obj.get("category"), str):
            raise BenchInputError(path, "missing or not a string", entry=entry, field="category")
        if known is not None and obj["category"] not in known:
            raise BenchInputError(path, f"category {obj['category']!r} is not in 'types'", entry=entry,
                                  field="category")
        bbox = obj.get("bbox")
        if not isinstance(bbox, dict) or any(c not in bbox for c in _COORDS):
            raise BenchInputError(path, "must be {xmin, ymin, xmax, ymax}", entry=entry, field="bbox")
        names.append(obj["category"])
        rows.append([_number(bbox[c], path, entry, f"bbox.{c}") for c in _COORDS])
    return names, np.asarray(rows, dtype=np.float64).reshape(-1, 4)


def _image_size(path: Path) -> tuple[int, int] | None:
    if not path.is_file():
        return None
    try:
        with Image.open(path) as image:
            return image.size
    except (OSError, UnidentifiedImageError) as err:
        raise BenchInputError(path, f"cannot read image header: {err}") from None


def read_tt100k(root: Path, split: str = "test", classes: list[str] | tuple[str, ...] | None = None
                ) -> DetectionDataset:
    """Read one split (``train`` or ``test``) of a TT100K ``data/`` root; image ids are TT100K's.

    ``classes`` default to the 45 of the protocol; objects of other categories are left out (and counted in
    the data set's notes). Image sizes come from the image headers, 2048x2048 when the images are absent.
    """
    root = Path(root)
    path = root / "annotations.json"
    data, known = _load(path)
    classes = list(classes or TT100K_45_CLASSES)
    index = {name: i for i, name in enumerate(classes)}
    records, left_out, absent = [], 0, 0
    for image_id in _split_ids(root, split):
        image = data["imgs"].get(image_id)
        if not isinstance(image, dict):
            raise BenchInputError(root / split / "ids.txt",
                                  f"image id {image_id!r} is not in annotations.json", field="imgs")
        rel = image.get("path")
        if not isinstance(rel, str) or PurePosixPath(rel).is_absolute() or ".." in PurePosixPath(rel).parts:
            raise BenchInputError(path, f"path {rel!r} is missing or escapes the data root",
                                  entry=f"imgs[{image_id}]", field="path")
        names, boxes = _objects(image, image_id, path, known)
        kept = np.array([n in index for n in names], dtype=bool)
        left_out += int((~kept).sum())
        size = _image_size(root / rel)
        absent += size is None
        width, height = size or (IMAGE_SIZE, IMAGE_SIZE)
        records.append(ImageRecord(
            image_id=int(image_id) if image_id.isdigit() else len(records), file_name=rel, width=width,
            height=height, boxes=boxes[kept],
            labels=np.array([index[n] for n, k in zip(names, kept, strict=True) if k], dtype=np.int64),
            entry_ids=np.flatnonzero(kept), label_file=f"annotations.json imgs[{image_id}]"))
    notes = []
    if left_out:
        notes.append(f"{left_out} objects of categories outside the {len(classes)} classes left out of "
                     "training and evaluation, as Zhu et al.'s eval_annos(types=type45) does")
    if absent:
        notes.append(f"{absent} images absent: taken as {IMAGE_SIZE}x{IMAGE_SIZE}")
    return DetectionDataset(classes, records, root, name=f"tt100k-{split}", source=path, notes=notes)


def class_counts(root: Path, split: str = "train") -> dict[str, int]:
    """Instances per category in ``split``, every category: the 45 classes are those with >= 100 in train."""
    data, known = _load(Path(root) / "annotations.json")
    counts: dict[str, int] = {}
    for image_id in _split_ids(Path(root), split):
        names, _ = _objects(data["imgs"].get(image_id, {}), image_id, Path(root) / "annotations.json", known)
        for name in names:
            counts[name] = counts.get(name, 0) + 1
    return dict(sorted(counts.items(), key=lambda kv: (-kv[1], kv[0])))


def write_tt100k(splits: dict[str, DetectionDataset], root: Path, link_images: bool = False) -> Path:
    """Write data sets as a TT100K root: one ``annotations.json`` for all splits, ``<split>/ids.txt``, images.

    Images go to ``<split>/<id><suffix>``; ids are the records' image ids (unique over all splits).
    """
    root = Path(root)
    imgs: dict[str, Any] = {}
    types: list[str] = []
    for split, ds in splits.items():
        (root / split).mkdir(parents=True, exist_ok=True)
        types += [c for c in ds.classes if c not in types]
        ids = []
        for record in ds.records:
            key = str(int(record.image_id))
            if key in imgs:
                raise ValueError(f"image id {key} appears twice")
            source = ds.image_path(record)
            rel = f"{split}/{key}{Path(record.file_name).suffix or '.jpg'}"
            place_image(source, root / rel, link_images)
            objects = [{"category": ds.classes[int(label)], "bbox": dict(zip(_COORDS, box, strict=True))}
                       for label, box in zip(record.labels.tolist(), record.boxes.tolist(), strict=True)]
            imgs[key] = {"path": rel, "objects": objects, "id": int(record.image_id)}
            ids.append(key)
        (root / split / "ids.txt").write_text("".join(f"{i}\n" for i in ids))
    path = root / "annotations.json"
    path.write_text(json.dumps({"types": types, "imgs": imgs}), encoding="utf-8")
    return path
