"""Turn a suite's data section (and ``--data``) into train/test ``DetectionDataset`` s.

Resolution order for the root: ``--data``, the suite's environment variable (e.g. ``BENCH_VOC_ROOT``), the
suite's ``root``; with none of them, the generated synthetic set (cached and reused), unless the suite
requires real data, in which case it stops at once with where the data comes from and how to point at it.
"""

from __future__ import annotations

import os
import shutil
from dataclasses import dataclass
from pathlib import Path

from bench.data.records import DetectionDataset, ImageRecord
from bench.errors import BenchInputError
from bench.suite import DataConfig, SplitNames

DEFAULT_SPLITS = {
    "coco": SplitNames("train2017", "val2017"),
    "voc": SplitNames("trainval", "test"),
    "yolo": SplitNames("train", "val"),
}


@dataclass(frozen=True)
class ResolvedData:
    train: DetectionDataset
    test: DetectionDataset
    format: str
    root: Path
    synthetic: bool
    splits: SplitNames
    name: str  # shown in the manifest and the report header


def resolve_data(config: DataConfig, data_arg: str | None, cache_dir: Path, suite_path: Path) -> ResolvedData:
    root_text = data_arg or (os.environ.get(config.env) if config.env else None) or config.root
    if root_text is None:
        if config.required:
            how = f"pass --data PATH{f' or set {config.env}=PATH' if config.env else ''}"
            raise BenchInputError(suite_path, f"this suite needs a real data set: {config.where} Then {how}.",
                                  field="data.root")
        return _synthetic(config, cache_dir)
    root = Path(root_text).expanduser()
    if not root.exists():
        raise BenchInputError(root, "data root does not exist")
    fmt = detect_format(root) or config.format
    splits = config.splits.get(fmt, DEFAULT_SPLITS[fmt])
    train, test = _read_pair(fmt, root, splits, config.classes)
    return ResolvedData(train, _limit(test, config.test_images), fmt, root.resolve(), False, splits,
                        root.resolve().name)


def detect_format(root: Path) -> str | None:
    """``coco`` (annotations/*.json), ``voc`` (a devkit or year folder) or ``yolo`` (images/ + labels/)."""
    if root.is_dir() and any((root / "annotations").glob("*.json")):
        return "coco"
    if (root / "Annotations").is_dir() or any(p.is_dir() for p in root.glob("VOC*/Annotations")):
        return "voc"
    if (root / "labels").is_dir() or (root / "data.yaml").is_file():
        return "yolo"
    return None


def _synthetic(config: DataConfig, cache_dir: Path) -> ResolvedData:
    from bench.data.synth import generate

    spec = config.synthetic
    out = cache_dir / f"synth-{spec.seed}-{spec.images}-{spec.image_size}"
    if not out.is_dir():
        # Generate beside the cache entry and rename: a killed generation never leaves a half-written set.
        tmp = cache_dir / f".{out.name}.{os.getpid()}.tmp"
        shutil.rmtree(tmp, ignore_errors=True)
        tmp.mkdir(parents=True)
        generate(tmp, images=spec.images, seed=spec.seed, image_size=spec.image_size)
        try:
            os.replace(tmp, out)
        except OSError:  # another process won the race; its set is identical (same seed)
            shutil.rmtree(tmp, ignore_errors=True)
    splits = SplitNames("train", "test")
    root = out / "coco"
    train, test = _read_pair("coco", root, splits, config.classes)
    limit = spec.test_images if spec.test_images is not None else config.test_images
    return ResolvedData(train, _limit(test, limit), "coco", root.resolve(), True, splits,
                        f"synthetic small objects (bench.data.synth, {out.name})")


def _limit(ds: DetectionDataset, n: int | None) -> DetectionDataset:
    return ds if n is None or n >= len(ds) else ds.subset(list(range(n)))


def _read_pair(fmt: str, root: Path, splits: SplitNames, classes: list[str]) -> tuple[DetectionDataset, ...]:
    """Train and test with one class list: VOC/YOLO test splits take the train split's (or the suite's)."""
    train = _read(fmt, root, splits.train, classes)
    test = _read(fmt, root, splits.test, classes or train.classes)
    if test.classes != train.classes:
        raise BenchInputError(root, f"splits {splits.train!r} and {splits.test!r} have different classes: "
                                    f"{train.classes} vs {test.classes}", field="data.splits")
    return train, test


def _read(fmt: str, root: Path, split: str, classes: list[str]) -> DetectionDataset:
    if fmt == "coco":
        return _read_coco(root, split)
    if fmt == "voc":
        return _read_voc(root, split, classes)
    from bench.data.yolo import read_yolo

    if not classes:
        raise BenchInputError(root, "YOLO-format data needs the class names in the suite",
                              field="data.classes")
    return read_yolo(root, split, classes)


def _read_coco(root: Path, split: str) -> DetectionDataset:
    """``split`` is a split name (``annotations/instances_<split>.json``, images in ``<split>/`` or
    ``images/<split>/`` when present) or a JSON path relative to the root."""
    from bench.data.coco import read_coco

    if split.endswith(".json"):
        return read_coco(root / split)
    ann = root / "annotations" / f"instances_{split}.json"
    if not ann.is_file():
        raise BenchInputError(ann, f"COCO annotations for split {split!r} not found")
    images = next((p for p in (root / split, root / "images" / split) if p.is_dir()), None)
    return read_coco(ann, images)


def _read_voc(root: Path, split: str, classes: list[str]) -> DetectionDataset:
    """``split`` is ``trainval`` (``root`` is a year folder) or ``VOC2007:trainval+VOC2012:trainval``
    (``root`` is a devkit)."""
    from bench.data.voc import read_voc

    parts = []
    for part in split.split("+"):
        year, _, name = part.rpartition(":")
        year_root = root / year if year else root
        if not (year_root / "ImageSets" / "Main" / f"{name}.txt").is_file():
            raise BenchInputError(year_root, f"VOC split list ImageSets/Main/{name}.txt not found",
                                  field="data.splits")
        parts.append(read_voc(year_root, split=name, classes=classes or None))
    return parts[0] if len(parts) == 1 else merge(parts, root, name=split)


def merge(parts: list[DetectionDataset], root: Path, name: str) -> DetectionDataset:
    """Concatenate splits (VOC07+12) under one image root; image ids are renumbered 1..N to stay unique."""
    classes = parts[0].classes
    if any(p.classes != classes for p in parts):
        raise BenchInputError(root, "the merged splits disagree on the class list", field="data.splits")
    records = []
    for part in parts:
        for rec in part.records:
            rel = os.path.relpath(part.image_root / rec.file_name, root)
            records.append(ImageRecord(len(records) + 1, rel, rec.width, rec.height, rec.boxes, rec.labels,
                                       rec.difficult, rec.iscrowd, rec.area))
    return DetectionDataset(classes, records, root, name, root, list(parts[0].category_ids or []))
