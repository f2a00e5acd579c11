"""Scan a whole data set before a long run: ``python -m bench.data.check ROOT [--images] [--strict]``.

ROOT is any root ``--data`` accepts (COCO root or instances JSON, VOCdevkit or year folder or XML folder,
YOLO root, KITTI object root, TT100K ``data/``). Every split found is read; structural problems (the
readers' ``BenchInputError`` s; for the per-file formats VOC, YOLO and KITTI every bad file, not just the
first) and every quality problem of the policy table (``bench.data.health``) are listed per kind with the
first entries, then a summary. Image files are checked for presence; ``--images`` also decodes every one
(corrupt, truncated, size not the annotated one) behind a progress bar, as ultralytics' label-cache scan does.

Exit status: 2 when there is a structural problem (the run would stop on it), else 0 (quality problems never
stop a run); with ``--strict``, 1 when there are quality problems (``bench.run --strict`` would refuse them).
"""

from __future__ import annotations

import argparse
import os
import sys
from collections.abc import Callable
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np

from bench.data.health import MAX_EXAMPLES, Finding, SplitHealth, scan
from bench.data.records import DetectionDataset
from bench.errors import BenchInputError

SHOWN_ERRORS = 20


@dataclass
class SplitReport:
    health: SplitHealth
    dataset: DetectionDataset
    classes: dict[str, int] = field(default_factory=dict)  # instances per class


@dataclass
class CheckReport:
    format: str
    root: Path
    splits: list[SplitReport] = field(default_factory=list)
    structural: list[str] = field(default_factory=list)

    def to_dict(self) -> dict[str, Any]:
        return {"format": self.format, "root": str(self.root), "structural": self.structural,
                "splits": [{**s.health.to_dict(), "instances": s.classes} for s in self.splits]}


def _splits(fmt: str, root: Path) -> list[tuple[str, Callable[[], DetectionDataset]]]:
    """``(name, reader)`` of every split of ``root``; readers raise ``BenchInputError`` on structure."""
    from bench.data.resolve import DEFAULT_SPLITS, _read_coco

    if fmt == "coco":
        from bench.data.coco import read_coco

        if root.is_file():
            return [(root.stem.removeprefix("instances_"), lambda: read_coco(root))]
        files = sorted((root / "annotations").glob("instances_*.json"))
        if files:  # the standard layout: images found as the runner finds them
            return [(f.stem.removeprefix("instances_"),
                     lambda f=f: _read_coco(root, f.stem.removeprefix("instances_"))) for f in files]
        return [(f.stem, lambda f=f: read_coco(f)) for f in sorted((root / "annotations").glob("*.json"))]
    if fmt == "voc":
        from bench.data.voc import read_voc

        years = sorted(p.parent for p in root.glob("VOC*/Annotations")) or [root]
        return [(year.name, lambda year=year: read_voc(year)) for year in years]
    if fmt == "yolo":
        from bench.data.yolo import read_yolo

        names = _yolo_names(root)
        folders = sorted(d for d in (root / "images").iterdir() if d.is_dir())
        return [(d.name, lambda d=d: read_yolo(root, d.name, names)) for d in folders]
    if fmt == "kitti":
        from bench.data.kitti import read_kitti

        return [("training", lambda: read_kitti(root, "trainval", require_images=False))]
    from bench.data.tt100k import read_tt100k

    return [(s, lambda s=s: read_tt100k(root, s)) for s in (DEFAULT_SPLITS["tt100k"].train, "test")
            if (root / s / "ids.txt").is_file()]


def _yolo_names(root: Path) -> list[str]:
    """Class names from ``data.yaml`` (``names``: a list or an index map), else ``0..max`` from the labels."""
    config = root / "data.yaml"
    if config.is_file():
        import yaml

        names = (yaml.safe_load(config.read_text()) or {}).get("names")
        if isinstance(names, dict):
            return [str(names[k]) for k in sorted(names)]
        if isinstance(names, list):
            return [str(n) for n in names]
    top = -1
    for label in (root / "labels").rglob("*.txt"):
        for line in label.read_text().splitlines():
            head = line.split()[:1]
            if head and head[0].isdigit():
                top = max(top, int(head[0]))
    return [str(i) for i in range(top + 1)]


def _per_file_errors(fmt: str, root: Path, split: str) -> list[str]:
    """Every bad file of a per-file format (the reader stops at the first)."""
    errors = []

    def attempt(check: Callable[[], object]) -> None:
        try:
            check()
        except BenchInputError as err:
            errors.append(str(err))

    if fmt == "voc":
        from bench.data.voc import _parse_xml

        year = root / split if (root / split / "Annotations").is_dir() else root
        folder = year / "Annotations" if (year / "Annotations").is_dir() else year
        for path in sorted(folder.glob("*.xml")):
            attempt(lambda path=path: _parse_xml(path))
    elif fmt == "kitti":
        from bench.data.kitti import KittiLayout, check_types, parse_label_file

        for path in sorted(KittiLayout.of(root).labels.glob("*.txt")):
            attempt(lambda path=path: check_types(parse_label_file(path), path))
    elif fmt == "yolo":
        from bench.data.yolo import _parse_labels

        n = len(_yolo_names(root))
        for path in sorted((root / "labels" / split).glob("*.txt")):
            attempt(lambda path=path: _parse_labels(path, n))
    return errors


def _decode(path: Path, expected: tuple[int, int]) -> str | None:
    """Why ``path`` would not load in training, or ``None``."""
    from PIL import Image

    try:
        with Image.open(path) as image:
            size = image.size
            image.load()
    except (OSError, SyntaxError, ValueError) as err:
        return f"{path}: corrupt or truncated image: {err}"
    if size != expected:
        return f"{path}: image is {size[0]}x{size[1]} but the annotation says {expected[0]}x{expected[1]}"
    return None


def check_images(ds: DetectionDataset, decode: bool, workers: int) -> tuple[list[str], list[str], str]:
    """``(missing, bad, note)``: absent image files (structural), undecodable or mis-sized ones."""
    paths = [ds.image_path(r) for r in ds.records]
    try:  # one directory listing instead of a stat per image (118k for train2017)
        listed = {entry.name for entry in os.scandir(ds.image_root) if entry.is_file()}
    except OSError:
        listed = set()
    present = [r.file_name in listed or ("/" in r.file_name and p.is_file())
               for r, p in zip(ds.records, paths, strict=True)]
    if paths and not any(present):
        return [], [], f"no image found under {ds.image_root}: annotation-only check"
    missing = [f"{p}: image not found" for p, ok in zip(paths, present, strict=True) if not ok]
    bad: list[str] = []
    if decode:
        from tqdm import tqdm

        jobs = [(p, (r.width, r.height)) for p, r, ok in zip(paths, ds.records, present, strict=True) if ok]
        with ThreadPoolExecutor(max_workers=workers) as pool:
            results = pool.map(lambda job: _decode(*job), jobs)
            bad = [r for r in tqdm(results, total=len(jobs), desc=f"decoding {ds.name}", unit="img") if r]
    return missing, bad, ""


def run_check(root: Path, fmt: str | None = None, images: bool = False,
              workers: int = min(8, os.cpu_count() or 1)) -> CheckReport:
    from bench.data.resolve import REFERENCE_TOOLS, detect_format

    root = Path(root)
    if not root.exists():
        raise BenchInputError(root, "data root does not exist")
    fmt = fmt or ("coco" if root.is_file() else detect_format(root))
    if fmt is None:
        raise BenchInputError(root, "no known layout (COCO, VOC, YOLO, KITTI or TT100K)")
    report = CheckReport(fmt, root)
    for name, read in _splits(fmt, root):
        try:
            ds = read()
        except BenchInputError as err:
            report.structural += _per_file_errors(fmt, root, name) or [str(err)]
            continue
        health, _ = scan(ds, name, "check", REFERENCE_TOOLS[fmt])
        missing, bad, note = check_images(ds, images, workers)
        report.structural += missing
        if bad:
            health.findings["corrupt_image"] = Finding("corrupt_image", "images that cannot be loaded",
                                                       "found (skipped in training)", len(bad),
                                                       bad[:MAX_EXAMPLES])
        if note:
            health.notes.append(note)
        labels = np.concatenate([r.labels for r in ds.records] or [np.zeros(0, np.int64)])
        counts = np.bincount(labels, minlength=ds.num_classes).tolist()
        report.splits.append(SplitReport(health, ds, dict(zip(ds.classes, counts, strict=True))))
    return report


def print_report(report: CheckReport, out: Any = None) -> None:
    out = out or sys.stdout
    print(f"{report.root} ({report.format})", file=out)
    for s in report.splits:
        h = s.health
        print(f"{h.split}: {h.images} images, {h.boxes} boxes, {len(s.classes)} classes", file=out)
        for finding in h.findings.values():
            print("  " + finding.console_line(h.split), file=out)
        for note in h.notes:
            print(f"  {h.split}: {note}", file=out)
    for line in report.structural[:SHOWN_ERRORS]:
        print(f"error: {line}", file=out)
    if len(report.structural) > SHOWN_ERRORS:
        print(f"error: ... and {len(report.structural) - SHOWN_ERRORS} more", file=out)
    quality = sum(s.health.quality_problems for s in report.splits)
    print(f"summary: {len(report.splits)} splits, {sum(s.health.boxes for s in report.splits)} boxes, "
          f"{len(report.structural)} structural problems, {quality} quality problems", file=out)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m bench.data.check", description=__doc__.split("\n\n")[0])
    parser.add_argument("root", type=Path, help="data root (or a COCO instances JSON)")
    parser.add_argument("--format", choices=("coco", "voc", "yolo", "kitti", "tt100k"),
                        help="skip layout detection")
    parser.add_argument("--images", action="store_true", help="decode every image (slow; progress bar)")
    parser.add_argument("--strict", action="store_true", help="exit 1 when there are quality problems")
    parser.add_argument("--workers", type=int, default=min(8, os.cpu_count() or 1), help="decoding threads")
    parser.add_argument("--json", type=Path, help="also write the report as JSON here")
    args = parser.parse_args(argv)
    try:
        report = run_check(args.root, args.format, args.images, args.workers)
    except BenchInputError as err:
        print(f"error: {err}", file=sys.stderr)
        return 2
    print_report(report)
    if args.json:
        from bench.io import write_json

        write_json(report.to_dict(), args.json)
    if report.structural:
        return 2
    return 1 if args.strict and any(s.health.quality_problems for s in report.splits) else 0


if __name__ == "__main__":
    sys.exit(main())
