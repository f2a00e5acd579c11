"""Turn a suite's data section (and ``--data``) into train/test ``DetectionDataset`` s and a health report.

Resolution order for the root: ``--data``, the suite's environment variable (e.g. ``BENCH_VOC_ROOT``), the
suite's ``root``; with none of them, the generated synthetic set (cached and reused), unless the suite
requires real data, in which case it stops at once with where the data comes from and how to point at it.

The format is detected from the root's layout (``detect_format``): TT100K, KITTI, COCO, VOC, YOLO. Both splits
are scanned for quality problems (``bench.data.health``); the test split is kept exactly as read (what the
reference tools score) and the train split is the repaired training view. ``ResolvedData.health`` holds the
counts for the manifest, the report and the console; with ``strict`` a quality problem is an error instead.
"""

from __future__ import annotations

import dataclasses
import os
import shutil
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from bench.data.health import DataHealth, scan, training_view
from bench.data.merge import merge, merge_classes
from bench.data.records import DetectionDataset
from bench.errors import BenchInputError
from bench.suite.spec import DataConfig, SplitNames

DEFAULT_SPLITS = {
    "coco": SplitNames("train2017", "val2017"),
    "voc": SplitNames("trainval", "test"),
    "yolo": SplitNames("train", "val"),
    "kitti": SplitNames("train", "val"),  # the common 3,712/3,769 split (KITTI's test labels are private)
    "tt100k": SplitNames("train", "test"),
}
# Whose view of the ground truth evaluation keeps, per format (shown beside every quality count).
REFERENCE_TOOLS = {"coco": "pycocotools", "voc": "the VOC devkit (voc_eval)", "yolo": "pycocotools",
                   "kitti": "the KITTI devkit", "tt100k": "Zhu et al.'s eval_annos"}


@dataclass(frozen=True)
class ResolvedData:
    train: DetectionDataset  # the training view: boxes clipped, degenerate and duplicate boxes dropped
    test: DetectionDataset  # exactly as read
    format: str
    root: Path
    synthetic: bool
    splits: SplitNames
    name: str  # shown in the manifest and the report header
    health: DataHealth = field(default_factory=DataHealth)


def resolve_data(config: DataConfig, data_arg: str | None, cache_dir: Path, suite_path: Path,
                 strict: bool = False) -> ResolvedData:
    """``strict`` (the ``--strict`` flag) or the suite's ``data.strict`` turn quality problems into errors."""
    strict = strict or config.strict
    root_text = data_arg or (os.environ.get(config.env) if config.env else None) or config.root
    if root_text is None:
        if config.required:
            how = f"pass --data PATH{f' or set {config.env}=PATH' if config.env else ''}"
            raise BenchInputError(suite_path, f"this suite needs a real data set: {config.where} Then {how}.",
                                  field="data.root")
        return _assess(_synthetic(config, cache_dir), strict)
    root = Path(root_text).expanduser()
    if not root.exists():
        raise BenchInputError(root, "data root does not exist")
    fmt = detect_format(root) or config.format
    splits = config.splits.get(fmt, DEFAULT_SPLITS[fmt])
    train, test = _read_pair(fmt, root, splits, config.classes, config.class_map)
    return _assess(ResolvedData(train, first_images(test, config.test_images), fmt, root.resolve(), False,
                                splits, root.resolve().name), strict)


def _assess(data: ResolvedData, strict: bool) -> ResolvedData:
    """Scan both splits; the train split becomes its training view, the test split stays as read."""
    reference = REFERENCE_TOOLS[data.format]
    train_health, kinds = scan(data.train, data.splits.train, "train", reference)
    test_health, _ = scan(data.test, data.splits.test, "test", reference)
    health = DataHealth([train_health, test_health], strict=strict)
    health.raise_if_strict()
    return dataclasses.replace(data, train=training_view(data.train, kinds), health=health)


def detect_format(root: Path) -> str | None:
    """``tt100k`` (annotations.json + <split>/ids.txt), ``kitti`` (training/label_2), ``coco``
    (annotations/*.json), ``voc`` (a devkit or year folder) or ``yolo`` (images/ + labels/)."""
    from bench.data.kitti import is_kitti_root
    from bench.data.tt100k import is_tt100k_root

    if is_tt100k_root(root):
        return "tt100k"
    if is_kitti_root(root):
        return "kitti"
    if root.is_dir() and any((root / "annotations").glob("*.json")):
        return "coco"
    if (root / "Annotations").is_dir() or any(p.is_dir() for p in root.glob("VOC*/Annotations")):
        return "voc"
    if (root / "labels").is_dir() or (root / "data.yaml").is_file():
        return "yolo"
    return None


@dataclass(frozen=True)
class GroundTruth:
    """What ``bench.evaluate --gt`` scores against: the data set, the raw COCO dict when GT is a COCO file
    (its exact ``bbox`` numbers feed the COCO metrics) and the detected format."""

    dataset: DetectionDataset
    coco: dict[str, Any] | None
    format: str


def read_ground_truth(gt: Path, split: str | None = None, classes: list[str] | None = None,
                      class_map: dict[str, list[str]] | None = None,
                      image_root: Path | None = None) -> GroundTruth:
    """A COCO JSON file or root (``split`` default ``val2017``), a VOCdevkit year root or XML folder, a KITTI
    root (default ``val``) or a TT100K root (default ``test``), exactly as read (no repair: evaluation sees
    what the reference tool sees).

    KITTI and TT100K need no images here (sizes are read from them when present).
    """
    from bench.data.coco import read_coco
    from bench.io import read_json

    gt = Path(gt)
    if not gt.exists():
        raise BenchInputError(gt, "ground truth not found")
    if gt.is_file():
        if split is not None:
            raise BenchInputError(gt, "--split applies to a data root, not to a COCO file")
        ds = read_coco(gt, image_root=image_root)
        return GroundTruth(ds, read_json(gt), "coco")
    fmt = detect_format(gt)
    if fmt == "kitti":
        from bench.data.kitti import read_kitti

        ds = read_kitti(gt, split or DEFAULT_SPLITS["kitti"].test, class_map=class_map or _identity(classes),
                        require_images=False)
    elif fmt == "tt100k":
        from bench.data.tt100k import read_tt100k

        ds = read_tt100k(gt, split or DEFAULT_SPLITS["tt100k"].test, classes=classes)
    elif fmt == "coco":
        name = split or DEFAULT_SPLITS["coco"].test
        ds = _read_coco(gt, name)
        if image_root is not None:
            ds.image_root = Path(image_root)
        return GroundTruth(ds, read_json(ds.source), "coco")
    else:
        from bench.data.voc import read_voc

        ds = read_voc(gt, split=split, classes=classes)
        fmt = "voc"
    if image_root is not None:
        ds.image_root = Path(image_root)
    return GroundTruth(ds, None, fmt)


def _identity(classes: list[str] | None) -> dict[str, list[str]] | None:
    return {name: [name] for name in classes} if classes else None


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
    return ResolvedData(train, first_images(test, limit), "coco", root.resolve(), True, splits,
                        f"synthetic small objects (bench.data.synth, {out.name})")


def first_images(ds: DetectionDataset, n: int | None) -> DetectionDataset:
    """The first ``n`` images of ``ds`` (all with ``None``): a deterministic test subset."""
    return ds if n is None or n >= len(ds) else ds.subset(list(range(n)))


def _read_pair(fmt: str, root: Path, splits: SplitNames, classes: list[str],
               class_map: dict[str, list[str]] | None = None) -> tuple[DetectionDataset, ...]:
    """Train and test with one class list: VOC/YOLO test splits take the train split's (or the suite's)."""
    train = _read(fmt, root, splits.train, classes, class_map)
    test_classes = classes if class_map else classes or train.classes  # a merge reads the sources again
    test = _read(fmt, root, splits.test, test_classes, class_map)
    if test.classes != train.classes:
        raise BenchInputError(root, f"splits {splits.train!r} and {splits.test!r} have different classes: "
                                    f"{train.classes} vs {test.classes}", field="data.splits")
    return train, test


def _read(fmt: str, root: Path, split: str, classes: list[str],
          class_map: dict[str, list[str]] | None = None) -> DetectionDataset:
    if fmt == "kitti":
        from bench.data.kitti import read_kitti

        return read_kitti(root, split, class_map=class_map or _identity(classes))
    if fmt == "tt100k":
        from bench.data.tt100k import read_tt100k

        return merge_classes(read_tt100k(root, split, classes=_sources(classes, class_map)), class_map)
    if fmt == "coco":
        return merge_classes(_read_coco(root, split), class_map)
    if fmt == "voc":
        return merge_classes(_read_voc(root, split, _sources(classes, class_map)), class_map)
    from bench.data.yolo import read_yolo

    if not classes:
        raise BenchInputError(root, "YOLO-format data needs the class names in the suite",
                              field="data.classes")
    return merge_classes(read_yolo(root, split, classes), class_map)


def _sources(classes: list[str], class_map: dict[str, list[str]] | None) -> list[str]:
    """The classes to read before a merge: ``classes`` when given, else every source class of the map."""
    if classes or not class_map:
        return classes
    return [name for sources in class_map.values() for name in sources]


def _read_coco(root: Path, split: str) -> DetectionDataset:
    """``split`` is a split name (``annotations/instances_<split>.json``, images in ``<split>/`` or
    ``images/<split>/`` when present) or a JSON path relative to the root."""
    from bench.data.coco import read_coco

    if split.endswith(".json"):
        return read_coco(root / split)
    ann = root / "annotations" / f"instances_{split}.json"
    if not ann.is_file():
        raise BenchInputError(ann, f"COCO annotations for split {split!r} not found", field="data.splits")
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
