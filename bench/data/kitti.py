"""KITTI 2D object detection: ``training/label_2/<id>.txt`` with ``training/image_2/<id>.png``.

Every label line has the devkit's 15 fields: ``type truncated occluded alpha left top right bottom height
width length x y z rotation_y`` (detections add a 16th, ``score``). All of them are kept: the box as the
record's box (continuous pixels, the devkit's convention: widths are ``right - left``), the rest as per-object
``attributes`` (``type``, ``truncated``, ``occluded``, ``alpha``, ``dimensions`` (h, w, l), ``location``
(x, y, z), ``rotation_y``). ``DontCare`` boxes are never objects: they become the record's
``ignore_regions`` (a detection with at least half its area inside one counts neither as TP nor as FP,
see ``bench.metrics.kitti``).

Classes: the 8 KITTI types, or a ``class_map`` that merges them (DF-SSD's Table 3 merges them into 3, see
``bench/suites/kitti.toml``); types no target class takes are left out and said so in the data set's notes.

Splits: ``ImageSets/<split>.txt`` in the root when present; otherwise ``train``/``val`` are the common
3,712/3,769 split of Chen et al. (``bench.data.kitti_splits``) and ``trainval`` is every labelled image.
Image sizes vary (about 1242x375) and are read from the PNG headers; without images (scoring ground truth
only) they are taken as the smallest size holding every box and a note says so.
"""

from __future__ import annotations

import os
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from bench.data.kitti_splits import default_split
from bench.data.records import DetectionDataset, ImageRecord, read_image_size
from bench.data.voc import place_image
from bench.errors import BenchInputError

KITTI_CLASSES = ("Car", "Van", "Truck", "Pedestrian", "Person_sitting", "Cyclist", "Tram", "Misc")
DONT_CARE = "DontCare"
LABEL_FIELDS = ("type", "truncated", "occluded", "alpha", "left", "top", "right", "bottom", "height", "width",
                "length", "x", "y", "z", "rotation_y")
IMAGE_SUFFIXES = (".png", ".jpg", ".jpeg")


@dataclass(frozen=True)
class KittiObjects:
    """One label (or result) file, line by line: ``numbers`` holds fields 2..15 (and the score) as floats."""

    types: list[str]
    numbers: np.ndarray  # (N, 14) or (N, 15) with the score last
    lines: np.ndarray  # (N,) 1-based line numbers

    @property
    def truncated(self) -> np.ndarray:
        return self.numbers[:, 0]

    @property
    def occluded(self) -> np.ndarray:
        return self.numbers[:, 1].astype(np.int64)

    @property
    def boxes(self) -> np.ndarray:
        return self.numbers[:, 3:7]

    @property
    def score(self) -> np.ndarray | None:
        return self.numbers[:, 14] if self.numbers.shape[1] == 15 else None


def parse_label_file(path: Path, *, with_score: bool = False) -> KittiObjects:
    """Read one file; a wrong field count, a non-number or a non-integer ``occluded`` is named by line."""
    try:
        text = path.read_text(encoding="utf-8")
    except (OSError, UnicodeDecodeError) as err:
        raise BenchInputError(path, f"cannot read: {getattr(err, 'strerror', None) or err}") from None
    expected = len(LABEL_FIELDS) + with_score
    types, rows, lines = [], [], []
    for n, line in enumerate(text.splitlines(), 1):
        fields = line.split()
        if not fields:
            continue
        if len(fields) != expected:
            names = " ".join(LABEL_FIELDS) + (" score" if with_score else "")
            raise BenchInputError(path, f"expected {expected} fields ({names}), got {len(fields)}",
                                  entry=f"line {n}")
        try:
            values = [float(f) for f in fields[1:]]
        except ValueError:
            bad = next(i for i, f in enumerate(fields[1:], 1) if not _is_float(f))
            field = LABEL_FIELDS[bad] if bad < len(LABEL_FIELDS) else "score"
            raise BenchInputError(path, f"not a number: {fields[bad]!r}", entry=f"line {n}",
                                  field=field) from None
        if not np.isfinite(values).all():
            raise BenchInputError(path, "NaN or infinite value", entry=f"line {n}")
        if not float(values[1]).is_integer():
            raise BenchInputError(path, f"must be an integer (0..3), got {fields[2]!r}", entry=f"line {n}",
                                  field="occluded")
        types.append(fields[0])
        rows.append(values)
        lines.append(n)
    numbers = np.asarray(rows, dtype=np.float64).reshape(-1, expected - 1)
    return KittiObjects(types, numbers, np.asarray(lines, dtype=np.int64))


def check_types(objects: KittiObjects, path: Path) -> KittiObjects:
    """Refuse a type that is neither one of the 8 KITTI classes nor ``DontCare`` (an unknown class)."""
    unknown = [t for t in objects.types if t not in KITTI_CLASSES and t != DONT_CARE]
    if unknown:
        k = objects.types.index(unknown[0])
        raise BenchInputError(path, f"unknown KITTI type {unknown[0]!r}", entry=f"line {objects.lines[k]}",
                              field="type")
    return objects


def _is_float(text: str) -> bool:
    try:
        float(text)
    except ValueError:
        return False
    return True


@dataclass(frozen=True)
class KittiLayout:
    root: Path
    labels: Path
    images: Path

    @classmethod
    def of(cls, root: Path) -> KittiLayout:
        """``root`` is the object root (holding ``training/``) or ``training/`` itself."""
        root = Path(root)
        base = root / "training" if (root / "training" / "label_2").is_dir() else root
        if not (base / "label_2").is_dir():
            raise BenchInputError(root, "not a KITTI object root: training/label_2/ not found")
        return cls(root, base / "label_2", base / "image_2")


def is_kitti_root(root: Path) -> bool:
    return (Path(root) / "training" / "label_2").is_dir() or (Path(root) / "label_2").is_dir()


def split_ids(layout: KittiLayout, split: str) -> tuple[list[str], str]:
    """The ids of ``split`` and where they came from (shown in the data set's notes)."""
    for sets in dict.fromkeys((layout.root / "ImageSets", layout.labels.parent / "ImageSets",
                               layout.labels.parent.parent / "ImageSets")):
        listed = sets / f"{split}.txt"
        if listed.is_file():
            return [line.split()[0] for line in listed.read_text().splitlines() if line.strip()], str(listed)
    if split in ("trainval", "all"):
        return sorted(p.stem for p in layout.labels.glob("*.txt")), "every labelled training image"
    if split in ("train", "val"):
        return default_split(split), ("the common 3,712/3,769 train/val split of Chen et al. (3DOP), "
                                      "bundled; KITTI's test labels are private")
    raise BenchInputError(layout.root / "ImageSets" / f"{split}.txt",
                          f"KITTI split list for {split!r} not found")


def _image_file(layout: KittiLayout, image_id: str) -> Path | None:
    return next((p for p in (layout.images / f"{image_id}{s}" for s in IMAGE_SUFFIXES) if p.is_file()), None)


def class_index(class_map: dict[str, list[str]] | None) -> tuple[list[str], dict[str, int]]:
    """Target class names and the index of every KITTI type they take; unknown types are refused."""
    if not class_map:
        return list(KITTI_CLASSES), {name: i for i, name in enumerate(KITTI_CLASSES)}
    index: dict[str, int] = {}
    for i, (target, sources) in enumerate(class_map.items()):
        for source in sources:
            if source not in KITTI_CLASSES:
                raise BenchInputError(None, f"KITTI has no type {source!r} (types: "
                                            f"{', '.join(KITTI_CLASSES)})", field=f"data.class_map.{target}")
            if source in index:
                raise BenchInputError(None, f"type {source!r} is mapped twice",
                                      field=f"data.class_map.{target}")
            index[source] = i
    return list(class_map), index


def read_kitti(root: Path, split: str = "val", class_map: dict[str, list[str]] | None = None,
               require_images: bool = True) -> DetectionDataset:
    """Read one split of a KITTI object root (see the module docstring); image ids are the file numbers."""
    layout = KittiLayout.of(root)
    ids, origin = split_ids(layout, split)
    classes, index = class_index(class_map)
    records, notes, left_out, sizes_guessed = [], [f"split {split!r}: {origin}"], {}, 0
    for image_id in ids:
        label_path = layout.labels / f"{image_id}.txt"
        if not label_path.is_file():
            raise BenchInputError(label_path, f"label file of image {image_id!r} (listed in split {split!r}) "
                                              "not found")
        objects = check_types(parse_label_file(label_path), label_path)
        types = np.array(objects.types, dtype=object)
        care = types != DONT_CARE
        kept = care & np.isin(types, list(index))
        for name in types[care & ~kept]:
            left_out[name] = left_out.get(name, 0) + 1
        image = _image_file(layout, image_id)
        boxes = objects.boxes
        if image is not None:
            width, height = read_image_size(image)
        elif require_images:
            raise BenchInputError(layout.images / f"{image_id}.png", "image not found", field="file_name")
        else:
            width, height = _box_extent(boxes)
            sizes_guessed += 1
        n = objects.numbers[kept]
        records.append(ImageRecord(
            image_id=int(image_id) if image_id.isdigit() else len(records), width=width, height=height,
            file_name=os.path.relpath(image, layout.images) if image is not None else f"{image_id}.png",
            boxes=boxes[kept], labels=np.array([index[t] for t in types[kept]], dtype=np.int64),
            entry_ids=objects.lines[kept], label_file=os.path.relpath(label_path, layout.root),
            ignore_regions=boxes[~care],
            attributes={"type": types[kept], "truncated": n[:, 0], "occluded": n[:, 1].astype(np.int64),
                        "alpha": n[:, 2], "dimensions": n[:, 7:10], "location": n[:, 10:13],
                        "rotation_y": n[:, 13]}))
    dont_care = sum(len(r.ignore_regions) for r in records)
    if dont_care:
        notes.append(f"{dont_care} DontCare boxes kept as ignore regions (an unmatched detection with at "
                     "least half its area inside one is neither TP nor FP; never a training target)")
    if left_out:
        notes.append("objects of types outside the suite's classes left out of training and evaluation: "
                     + ", ".join(f"{count} {name}" for name, count in sorted(left_out.items())))
    if sizes_guessed:
        notes.append(f"{sizes_guessed} images absent: their sizes are the extent of their boxes")
    return DetectionDataset(classes, records, layout.images, name=f"kitti-{split}", source=layout.root,
                            entry_kind="line", notes=notes)


def _box_extent(boxes: np.ndarray) -> tuple[int, int]:
    if not len(boxes):
        return 1, 1
    return max(1, int(np.ceil(boxes[:, 2].max()))), max(1, int(np.ceil(boxes[:, 3].max())))


def _format(value: float) -> str:
    return repr(float(value)) if not float(value).is_integer() else f"{float(value):.2f}"


def record_lines(ds: DetectionDataset, record: ImageRecord) -> str:
    """The record as a KITTI label file: its objects with every field, then its ``DontCare`` regions.

    Fields a record does not carry get the devkit's "unknown" values (alpha -10, dimensions -1, location
    -1000, rotation_y -10); values are written at full precision, so reading them back is exact.
    """
    n = len(record.boxes)
    attrs = record.attributes
    types = attrs.get("type", np.array([ds.classes[int(k)] for k in record.labels], dtype=object))
    columns = [attrs.get("truncated", np.zeros(n)), attrs.get("occluded", np.zeros(n)),
               attrs.get("alpha", np.full(n, -10.0)), record.boxes,
               attrs.get("dimensions", np.full((n, 3), -1.0)),
               attrs.get("location", np.full((n, 3), -1000.0)),
               attrs.get("rotation_y", np.full(n, -10.0))]
    table = np.column_stack([np.asarray(c, dtype=np.float64).reshape(n, -1) for c in columns])
    dont_care = np.column_stack([np.full((len(record.ignore_regions), 1), -1.0),
                                 np.full((len(record.ignore_regions), 1), -1.0),
                                 np.full((len(record.ignore_regions), 1), -10.0), record.ignore_regions,
                                 np.full((len(record.ignore_regions), 3), -1.0),
                                 np.full((len(record.ignore_regions), 3), -1000.0),
                                 np.full((len(record.ignore_regions), 1), -10.0)])
    rows = [(str(t), row) for t, row in zip(types, table, strict=True)]
    rows += [(DONT_CARE, row) for row in dont_care]
    return "".join(f"{t} {_format(row[0])} {int(row[1])} " + " ".join(_format(v) for v in row[2:]) + "\n"
                   for t, row in rows)


def write_kitti(ds: DetectionDataset, root: Path, split: str, link_images: bool = False) -> Path:
    """Write ``ds`` as a KITTI object root: ``training/label_2``, ``training/image_2``, ``ImageSets/<split>``.

    File names are the records' image ids as six digits (KITTI's own naming). Returns the split list.
    """
    root = Path(root)
    labels, images, sets = root / "training" / "label_2", root / "training" / "image_2", root / "ImageSets"
    for folder in (labels, images, sets):
        folder.mkdir(parents=True, exist_ok=True)
    stems = [f"{int(r.image_id):06d}" for r in ds.records]
    if len(set(stems)) != len(stems):
        raise ValueError(f"{ds.name}: image ids are not unique, KITTI file names would collide")
    for record, stem in zip(ds.records, stems, strict=True):
        (labels / f"{stem}.txt").write_text(record_lines(ds, record))
        source = ds.image_path(record)
        place_image(source, images / f"{stem}{source.suffix or '.png'}", link_images)
    split_file = sets / f"{split}.txt"
    split_file.write_text("".join(f"{stem}\n" for stem in stems))
    return split_file
