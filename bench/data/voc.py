"""PASCAL VOC annotations: a VOCdevkit year root or a plain folder of XML files.

The devkit stores 1-based inclusive integer pixels; records hold continuous ``xyxy`` (see ``records``),
so reading maps ``(xmin, ymin, xmax, ymax) -> (xmin - 1, ymin - 1, xmax, ymax)`` and writing maps back.
The devkit's ``+1`` widths are then exactly ``x2 - x1`` and the conversion round-trips exactly.

Boxes are kept as written even when they are empty (``xmax < xmin``) or leave the image (``ymax`` one past
the height, ``xmin`` 0): ``voc_eval`` scores such boxes as they are, so evaluation must too. They are
quality problems for ``bench.data.health`` (counted, repaired for training), not errors.
"""

from __future__ import annotations

import os
import shutil
import xml.etree.ElementTree as ET
from dataclasses import dataclass
from pathlib import Path, PurePosixPath

import numpy as np

from bench.data.records import DetectionDataset, ImageRecord
from bench.errors import BenchInputError

VOC_CLASSES = [
    "aeroplane", "bicycle", "bird", "boat", "bottle", "bus", "car", "cat", "chair", "cow", "diningtable",
    "dog", "horse", "motorbike", "person", "pottedplant", "sheep", "sofa", "train", "tvmonitor",
]
_COORDS = ("xmin", "ymin", "xmax", "ymax")


@dataclass
class _ParsedXml:
    """One annotation file before class names are turned into indices."""

    file_name: str
    width: int
    height: int
    names: list[str]
    boxes: np.ndarray  # (N, 4) continuous xyxy
    difficult: np.ndarray  # (N,) bool


def _text(node: ET.Element, tag: str, path: Path, entry: str | None, *, default: str | None = None) -> str:
    child = node.find(tag)
    if child is None or child.text is None or not child.text.strip():
        if default is not None:
            return default
        raise BenchInputError(path, "missing or empty", entry=entry, field=tag)
    return child.text.strip()


def _number(node: ET.Element, tag: str, path: Path, entry: str | None) -> float:
    text = _text(node, tag, path, entry)
    try:
        value = float(text)
    except ValueError:
        raise BenchInputError(path, f"not a number: {text!r}", entry=entry, field=tag) from None
    if not np.isfinite(value):
        raise BenchInputError(path, f"not a finite number: {text!r}", entry=entry, field=tag)
    return value


def _parse_xml(path: Path) -> _ParsedXml:
    """Parse and validate the structure of one file; the box values are not judged here (see module doc)."""
    try:
        root = ET.parse(path).getroot()
    except ET.ParseError as err:
        raise BenchInputError(path, f"malformed XML: {err}") from None
    except OSError as err:
        raise BenchInputError(path, f"cannot read: {err.strerror or err}") from None
    size = root.find("size")
    if size is None:
        raise BenchInputError(path, "missing", field="size")
    width, height = (_number(size, tag, path, "size") for tag in ("width", "height"))
    if width <= 0 or height <= 0 or not width.is_integer() or not height.is_integer():
        raise BenchInputError(path, f"image size must be positive integers, got {width}x{height}",
                              field="size")
    names, rows, difficult = [], [], []
    for k, obj in enumerate(root.iter("object")):
        entry = f"object {k}"
        names.append(_text(obj, "name", path, entry))
        bndbox = obj.find("bndbox")
        if bndbox is None:
            raise BenchInputError(path, "missing", entry=entry, field="bndbox")
        rows.append([_number(bndbox, tag, path, entry) for tag in _COORDS])
        flag = _text(obj, "difficult", path, entry, default="0")
        if flag not in ("0", "1"):
            raise BenchInputError(path, f"must be 0 or 1, got {flag!r}", entry=entry, field="difficult")
        difficult.append(flag == "1")
    raw = np.asarray(rows, dtype=np.float64).reshape(-1, 4)
    boxes = raw - np.array([1.0, 1.0, 0.0, 0.0])
    file_name = _text(root, "filename", path, None, default=path.stem + ".jpg")
    if PurePosixPath(file_name).is_absolute() or ".." in PurePosixPath(file_name).parts:
        raise BenchInputError(path, f"path {file_name!r} escapes the image root", field="filename")
    return _ParsedXml(file_name, int(width), int(height), names, boxes, np.asarray(difficult, dtype=bool))


def _split_ids(root: Path, split: str) -> list[str]:
    split_file = root / "ImageSets" / "Main" / f"{split}.txt"
    if not split_file.is_file():
        raise BenchInputError(split_file, f"split file for split {split!r} not found")
    return [line.split()[0] for line in split_file.read_text().splitlines() if line.strip()]


def _default_image_root(xml_dir: Path, file_names: list[str]) -> Path:
    """Where a plain XML folder's images live: next to the XMLs or in a nearby ``images``/``JPEGImages``."""
    candidates = [xml_dir] + [base / sub for base in (xml_dir.parent, xml_dir.parent.parent)
                              for sub in ("images", "JPEGImages")]
    probe = file_names[:5]
    for folder in candidates:
        if probe and all((folder / name).is_file() for name in probe):
            return folder
    return xml_dir


def _class_list(parsed: list[_ParsedXml], classes: list[str] | None, files: list[Path]) -> list[str]:
    if classes is None:
        found = {name for item in parsed for name in item.names}
        return list(VOC_CLASSES) if found <= set(VOC_CLASSES) else sorted(found)
    known = set(classes)
    for item, path in zip(parsed, files, strict=True):
        for k, name in enumerate(item.names):
            if name not in known:
                raise BenchInputError(path, f"unknown class {name!r} (not among the {len(classes)} given)",
                                      entry=f"object {k}", field="name")
    return list(classes)


def read_voc(root: Path, split: str | None = None, classes: list[str] | None = None) -> DetectionDataset:
    """Read a VOCdevkit year root or a plain folder of XML files.

    A year root holds ``Annotations/``, ``JPEGImages/`` and ``ImageSets/Main/<split>.txt``; ``split`` selects
    its ids (all annotations when ``None``). A plain folder has no splits; its images are looked up next to
    the XMLs, then in a sibling or grand-sibling ``images/`` or ``JPEGImages/`` folder. Default classes:
    ``VOC_CLASSES`` when every name is a VOC class, else the sorted names found (XML does not record an
    order, so pass ``classes`` for anything else). The image id is the position in the split (or in the
    sorted folder), so it is stable across runs.
    """
    root = Path(root)
    if not root.is_dir():
        raise BenchInputError(root, "VOC root not found (expected a VOCdevkit year folder or XML files)")
    devkit = (root / "Annotations").is_dir()
    if devkit:
        ann_dir = root / "Annotations"
        ids = _split_ids(root, split) if split is not None else sorted(p.stem for p in ann_dir.glob("*.xml"))
        files = [ann_dir / f"{image_id}.xml" for image_id in ids]
        for path in files:
            if not path.is_file():
                raise BenchInputError(path, f"annotation listed in split {split!r} not found")
    else:
        if split is not None:
            raise BenchInputError(root, f"split {split!r} given but there is no Annotations/ folder")
        files = sorted(root.glob("*.xml"))
        if not files:
            raise BenchInputError(root, "no XML annotation files found")
    parsed = [_parse_xml(path) for path in files]
    class_names = _class_list(parsed, classes, files)
    index = {name: i for i, name in enumerate(class_names)}
    image_root = root / "JPEGImages" if devkit else _default_image_root(root, [p.file_name for p in parsed])
    records = [
        ImageRecord(image_id=i, file_name=item.file_name, width=item.width, height=item.height,
                    boxes=item.boxes, labels=np.array([index[name] for name in item.names], dtype=np.int64),
                    difficult=item.difficult, label_file=os.path.relpath(path, root))
        for i, (item, path) in enumerate(zip(parsed, files, strict=True))
    ]
    name = f"{root.name}-{split}" if split else root.name
    return DetectionDataset(class_names, records, image_root, name=name, source=root)


def _format_coord(value: float) -> str:
    return str(int(value)) if float(value).is_integer() else repr(float(value))


def _record_xml(ds: DetectionDataset, record: ImageRecord, file_name: str) -> ET.ElementTree:
    """VOC has no crowd regions: crowd objects are written as ``difficult`` (both are ignored in scoring)."""
    ann = ET.Element("annotation")
    ET.SubElement(ann, "folder").text = ds.name
    ET.SubElement(ann, "filename").text = file_name
    size = ET.SubElement(ann, "size")
    for tag, value in (("width", record.width), ("height", record.height), ("depth", 3)):
        ET.SubElement(size, tag).text = str(value)
    ET.SubElement(ann, "segmented").text = "0"
    devkit = record.boxes + np.array([1.0, 1.0, 0.0, 0.0])
    ignored = record.difficult | record.iscrowd
    for box, label, flag in zip(devkit, record.labels, ignored, strict=True):
        obj = ET.SubElement(ann, "object")
        ET.SubElement(obj, "name").text = ds.classes[int(label)]
        ET.SubElement(obj, "pose").text = "Unspecified"
        ET.SubElement(obj, "truncated").text = "0"
        ET.SubElement(obj, "difficult").text = str(int(flag))
        bndbox = ET.SubElement(obj, "bndbox")
        for tag, value in zip(_COORDS, box, strict=True):
            ET.SubElement(bndbox, tag).text = _format_coord(value)
    tree = ET.ElementTree(ann)
    ET.indent(tree, space="\t")
    return tree


def place_image(source: Path, target: Path, link: bool) -> None:
    """Copy (or symlink) an image into an exported layout.

    Absent sources are skipped (GT-only data sets), and so are targets that already are the source (a link).
    """
    if not source.is_file() or (target.exists() and os.path.samefile(source, target)):
        return
    target.parent.mkdir(parents=True, exist_ok=True)
    if target.exists() or target.is_symlink():
        target.unlink()
    if link:
        os.symlink(source.resolve(), target)
    else:
        shutil.copyfile(source, target)


def write_voc(ds: DetectionDataset, root: Path, split: str, link_images: bool = False) -> Path:
    """Write ``ds`` as a VOCdevkit year root: XMLs, ``ImageSets/Main/<split>.txt`` and ``JPEGImages/``.

    Images are copied (or symlinked with ``link_images``) when they exist; GT-only data sets are written
    without them. VOC ids are the image file stems, so they must be unique. Returns the split file.
    """
    root = Path(root)
    stems = [Path(r.file_name).stem for r in ds.records]
    if len(set(stems)) != len(stems):
        raise ValueError(f"{ds.name}: image file stems are not unique, VOC ids would collide")
    ann_dir, img_dir, sets_dir = root / "Annotations", root / "JPEGImages", root / "ImageSets" / "Main"
    for folder in (ann_dir, img_dir, sets_dir):
        folder.mkdir(parents=True, exist_ok=True)
    for record, stem in zip(ds.records, stems, strict=True):
        file_name = Path(record.file_name).name
        _record_xml(ds, record, file_name).write(ann_dir / f"{stem}.xml", encoding="unicode")
        place_image(ds.image_path(record), img_dir / file_name, link_images)
    split_file = sets_dir / f"{split}.txt"
    split_file.write_text("".join(f"{stem}\n" for stem in stems))
    return split_file
