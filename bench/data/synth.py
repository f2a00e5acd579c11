"""The embedded default data set: coloured shapes, mostly small, on cluttered backgrounds, from a seed.

``python -m bench.data.synth --out DIR --images N --seed S [--size PX]`` writes

- ``DIR/coco/images/<split>/synth_NNNNNN.png`` and ``DIR/coco/annotations/instances_<split>.json``
  (``read_coco`` finds the images by default);
- ``DIR/VOCdevkit/SYNTH/{Annotations,JPEGImages,ImageSets/Main/<split>.txt}``, whose images are hard links
  to the COCO ones (copies where the file system has no hard links);
- ``DIR/dataset.json`` and ``DIR/README.md``: generator, version, seed, counts and size statistics.

Why it looks like this: the suite must show small-object differences within minutes on a CPU, so the classes
differ in both shape and hue (learnable fast), while the scale mix follows COCO (most objects under 32x32 px),
and clutter (low-saturation gradients, blobs, lines and stray polygons), partial occlusion and grain keep
the task from being trivial. Image ``i`` depends only on ``(seed, i)`` through numpy's ``SeedSequence``, and
PNGs are written with fixed settings and no metadata, so two runs give byte-identical files.

Scale classes use the box area ``w * h`` (there are no masks), with COCO's thresholds 32² and 96².
"""

from __future__ import annotations

import argparse
import colorsys
import json
import os
import sys
from pathlib import Path

import numpy as np
from PIL import Image, ImageDraw

from bench.data.coco import write_coco
from bench.data.records import DetectionDataset, ImageRecord
from bench.data.voc import write_voc
from bench.errors import BenchInputError

SYNTH_VERSION = 1
CLASSES = ["circle", "square", "triangle", "cross", "ring", "star", "diamond", "hexagon"]
HUES_DEG = [0, 220, 120, 55, 300, 28, 185, 265]  # one distinct hue per class
DEFAULT_SPLITS = {"train": 0.70, "val": 0.15, "test": 0.15}
SMALL, MEDIUM = 32**2, 96**2  # COCO's area thresholds
SCALE_MIX = {"small": 0.52, "medium": 0.36, "large": 0.12}  # share of sampled object sizes
OBJECTS_PER_IMAGE = (3, 15)  # drawn per image; fewer are placed when a small image has no room left
MIN_SIDE = 10
GRAIN = 6  # luminance grain amplitude; 2x2-pixel grains keep the PNGs compressible
MAX_OCCLUDED = 0.35  # at most this fraction of an object's box may be covered by later objects


def _unit_polygon(points: list[tuple[float, float]]) -> np.ndarray:
    """Vertices rescaled to span exactly [0, 1] on both axes, so the shape fills its box tightly."""
    xy = np.asarray(points, dtype=np.float64)
    return (xy - xy.min(0)) / (xy.max(0) - xy.min(0))


def _star(points: int, inner: float) -> np.ndarray:
    angles = np.pi / 2 + np.arange(2 * points) * np.pi / points
    radii = np.where(np.arange(2 * points) % 2 == 0, 1.0, inner)
    return _unit_polygon(list(zip(radii * np.cos(angles), -radii * np.sin(angles), strict=True)))


_T = 1 / 3
POLYGONS = {
    "square": _unit_polygon([(0, 0), (1, 0), (1, 1), (0, 1)]),
    "triangle": _unit_polygon([(0.5, 0), (1, 1), (0, 1)]),
    "cross": _unit_polygon([(_T, 0), (2 * _T, 0), (2 * _T, _T), (1, _T), (1, 2 * _T), (2 * _T, 2 * _T),
                            (2 * _T, 1), (_T, 1), (_T, 2 * _T), (0, 2 * _T), (0, _T), (_T, _T)]),
    "star": _star(5, 0.45),
    "diamond": _unit_polygon([(0.5, 0), (1, 0.5), (0.5, 1), (0, 0.5)]),
    "hexagon": _unit_polygon([(np.cos(a), np.sin(a)) for a in np.arange(6) * np.pi / 3]),
}


def _rgb(hue_deg: float, saturation: float, value: float) -> tuple[int, int, int]:
    r, g, b = colorsys.hsv_to_rgb((hue_deg % 360) / 360, saturation, value)
    return round(r * 255), round(g * 255), round(b * 255)


def _dull(rng: np.random.Generator) -> tuple[int, int, int]:
    """A clutter colour: any hue, low saturation, so it never reads as one of the classes."""
    return _rgb(rng.uniform(0, 360), rng.uniform(0, 0.3), rng.uniform(0.15, 0.9))


def _background(rng: np.random.Generator, size: int) -> Image.Image:
    """A linear gradient between two dull colours, with blobs, lines and stray polygons as distractors."""
    c0, c1 = np.array(_dull(rng), np.float32), np.array(_dull(rng), np.float32)
    angle = rng.uniform(0, 2 * np.pi)
    ramp = np.linspace(-0.5, 0.5, size, dtype=np.float32)
    cos, sin = np.float32(np.cos(angle)), np.float32(np.sin(angle))
    t = (0.5 + cos * ramp[None, :] + sin * ramp[:, None]).clip(0, 1)
    image = Image.fromarray((c0 + t[..., None] * (c1 - c0)).astype(np.uint8))
    draw = ImageDraw.Draw(image)
    for _ in range(rng.integers(2, 6)):
        cx, cy, rx, ry = rng.uniform(0, size, 2).tolist() + rng.uniform(size / 12, size / 3, 2).tolist()
        draw.ellipse([cx - rx, cy - ry, cx + rx, cy + ry], fill=_dull(rng))
    for _ in range(rng.integers(4, 12)):
        draw.line(rng.uniform(0, size, 4).tolist(), fill=_dull(rng), width=int(rng.integers(1, 4)))
    for _ in range(rng.integers(2, 7)):
        centre, radius = rng.uniform(0, size, 2), rng.uniform(4, size / 10)
        points = centre + rng.uniform(-radius, radius, (int(rng.integers(3, 6)), 2))
        draw.polygon([tuple(p) for p in points.tolist()], fill=_dull(rng))
    return image


def _sample_sides(rng: np.random.Generator, n: int, size: int) -> np.ndarray:
    """``(n, 2)`` integer ``(w, h)``: a COCO-like mix of small, medium and large, aspect about 0.6..1.6."""
    scale = rng.choice(3, size=n, p=list(SCALE_MIX.values()))
    lo = np.array([MIN_SIDE, 32, 96], float)[scale]
    hi = np.minimum(np.array([32, 96, 0.6 * size], float)[scale], 0.8 * size)
    side = rng.uniform(np.minimum(lo, hi - 1), hi)
    aspect = np.exp(rng.uniform(-0.25, 0.25, n))
    wh = np.stack([side * np.sqrt(aspect), side / np.sqrt(aspect)], 1)
    return np.clip(np.round(wh), MIN_SIDE, 0.8 * size).astype(np.int64)


def _place(rng: np.random.Generator, sides: np.ndarray, size: int) -> np.ndarray:
    """Integer xyxy boxes drawn in order; a new box may cover at most ``MAX_OCCLUDED`` of any earlier box."""
    placed = np.zeros((0, 4), np.int64)
    for w, h in sides.tolist():
        xy = rng.integers(0, [size - w + 1, size - h + 1], size=(30, 2))
        candidates = np.hstack([xy, xy + np.array([w, h])])
        inter_wh = (np.minimum(candidates[:, None, 2:], placed[None, :, 2:])
                    - np.maximum(candidates[:, None, :2], placed[None, :, :2])).clip(0)
        covered = inter_wh.prod(-1) / (placed[:, 2:] - placed[:, :2]).prod(-1)[None]
        ok = (covered <= MAX_OCCLUDED).all(1)
        if ok.any():
            placed = np.vstack([placed, candidates[np.argmax(ok)]])
    return placed


def _draw_object(draw: ImageDraw.ImageDraw, rng: np.random.Generator, label: int, box: np.ndarray) -> None:
    """Fill the box's pixels ``x1..x2-1`` (PIL coordinates are inclusive) with the class shape and hue."""
    x1, y1, x2, y2 = box.tolist()
    hue = HUES_DEG[label] + rng.uniform(-7, 7)
    fill = _rgb(hue, rng.uniform(0.75, 1.0), rng.uniform(0.8, 1.0))
    edge = _rgb(hue, 1.0, rng.uniform(0.35, 0.55))
    edge_width = 1 if min(x2 - x1, y2 - y1) < 24 else 2
    bounds = [x1, y1, x2 - 1, y2 - 1]
    name = CLASSES[label]
    if name == "circle":
        draw.ellipse(bounds, fill=fill, outline=edge, width=edge_width)
    elif name == "ring":
        draw.ellipse(bounds, outline=fill, width=max(2, round(0.22 * min(x2 - x1, y2 - y1))))
    else:
        scale = np.array([x2 - 1 - x1, y2 - 1 - y1], float)
        points = (POLYGONS[name] * scale + [x1, y1]).tolist()
        draw.polygon([tuple(p) for p in points], fill=fill, outline=edge, width=edge_width)


def render_image(seed: int, index: int, size: int) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """``(pixels uint8 (size, size, 3), boxes int (N, 4) xyxy, labels (N,))`` of image ``index``."""
    rng = np.random.default_rng([seed, index])
    image = _background(rng, size)
    count = int(rng.integers(OBJECTS_PER_IMAGE[0], OBJECTS_PER_IMAGE[1] + 1))
    boxes = _place(rng, _sample_sides(rng, count, size), size)
    labels = rng.integers(0, len(CLASSES), len(boxes))
    draw = ImageDraw.Draw(image)
    for label, box in zip(labels, boxes, strict=True):
        _draw_object(draw, rng, int(label), box)
    half = (size + 1) // 2
    grain = rng.integers(-GRAIN, GRAIN + 1, (half, half, 1), dtype=np.int16).repeat(2, 0).repeat(2, 1)
    pixels = (np.asarray(image, dtype=np.int16) + grain[:size, :size]).clip(0, 255).astype(np.uint8)
    return pixels, boxes, labels


def split_bounds(images: int, splits: dict[str, float]) -> dict[str, range]:
    if images < 1 or not splits or any(f < 0 for f in splits.values()) or sum(splits.values()) <= 0:
        raise BenchInputError(None, f"need at least one image and non-negative split fractions, got {images} "
                                    f"images and {splits}", field="splits")
    cuts = np.round(np.cumsum([0.0, *splits.values()]) / sum(splits.values()) * images).astype(int)
    return {name: range(cuts[k], cuts[k + 1]) for k, name in enumerate(splits)}


def _statistics(datasets: dict[str, DetectionDataset]) -> dict:
    """Counts and sizes per split and overall, for ``dataset.json`` and the README."""
    def summary(records: list[ImageRecord]) -> dict:
        areas = np.concatenate([r.box_area for r in records]) if records else np.zeros(0)
        labels = np.concatenate([r.labels for r in records]) if records else np.zeros(0, int)
        per_image = [len(r.boxes) for r in records] or [0]
        scale = np.searchsorted([SMALL, MEDIUM], areas, side="right")  # 0 small, 1 medium, 2 large
        by_scale = dict(zip(("small", "medium", "large"), np.bincount(scale, minlength=3).tolist(),
                            strict=True))
        return {"images": len(records), "objects": len(areas), "objects_by_scale": by_scale,
                "small_fraction": round(by_scale["small"] / max(len(areas), 1), 4),
                "objects_per_class": dict(zip(CLASSES, np.bincount(labels, minlength=len(CLASSES)).tolist(),
                                              strict=True)),
                "objects_per_image": {"min": min(per_image), "mean": round(float(np.mean(per_image)), 3),
                                      "max": max(per_image)},
                "box_side_px": {"min": round(float(np.sqrt(areas.min())), 2) if len(areas) else None,
                                "median": round(float(np.median(np.sqrt(areas))), 2) if len(areas) else None,
                                "max": round(float(np.sqrt(areas.max())), 2) if len(areas) else None}}

    every = [r for ds in datasets.values() for r in ds.records]
    return {"all": summary(every), **{name: summary(ds.records) for name, ds in datasets.items()}}


def _readme(manifest: dict) -> str:
    stats = manifest["statistics"]
    rows = "\n".join(f"| {name} | {s['images']} | {s['objects']} | {s['objects_by_scale']['small']} | "
                     f"{s['objects_by_scale']['medium']} | {s['objects_by_scale']['large']} |"
                     for name, s in stats.items())
    return (f"# Synthetic small-object data set (bench.data.synth v{manifest['version']})\n\n"
            f"Generated by `python -m bench.data.synth --out DIR --images {manifest['images']} "
            f"--seed {manifest['seed']} --size {manifest['image_size']}`; the same command rebuilds these "
            f"files byte for byte.\n\n"
            f"{manifest['image_size']}x{manifest['image_size']} RGB PNGs, {len(CLASSES)} classes "
            f"({', '.join(CLASSES)}), each with its own shape and hue, on cluttered backgrounds with "
            f"partial occlusion. Scale classes use the box area with COCO's thresholds (small < 32², "
            f"large >= 96²).\n\n"
            f"| split | images | objects | small | medium | large |\n|---|---|---|---|---|---|\n{rows}\n\n"
            f"Formats: COCO (`coco/annotations/instances_<split>.json`, images in `coco/images/<split>/`) "
            f"and VOC (`VOCdevkit/SYNTH`, split files in `ImageSets/Main/`; read it with the class list of "
            f"`dataset.json`, since VOC XML records no class order). Details: `dataset.json`.\n")


def _save_png(pixels: np.ndarray, path: Path) -> None:
    """Fixed encoder settings and no metadata chunks: identical pixels give identical bytes."""
    Image.fromarray(pixels).save(path, format="PNG", compress_level=1)


def _link_or_copy(source: Path, target: Path) -> None:
    target.unlink(missing_ok=True)
    try:
        os.link(source, target)
    except OSError:
        target.write_bytes(source.read_bytes())


def generate(out: Path, images: int, seed: int, image_size: int = 320,
             splits: dict[str, float] | None = None) -> dict[str, Path]:
    """Generate the data set under ``out`` and return its paths.

    Keys: ``"voc"`` (the VOCdevkit year root), ``"coco_<split>"`` (one instances JSON per split),
    ``"manifest"`` (``dataset.json``) and ``"readme"``. Splits are contiguous runs of image indices
    (default 70/15/15). Read the VOC copy with ``classes=CLASSES``: VOC XML records no class order.
    """
    if image_size < 64:
        raise BenchInputError(None, f"image size must be at least 64 px, got {image_size}", field="size")
    out = Path(out)
    bounds = split_bounds(images, splits or DEFAULT_SPLITS)
    voc_root = out / "VOCdevkit" / "SYNTH"
    (voc_root / "JPEGImages").mkdir(parents=True, exist_ok=True)
    paths: dict[str, Path] = {"voc": voc_root}
    datasets = {}
    for split, indices in bounds.items():
        image_dir = out / "coco" / "images" / split
        image_dir.mkdir(parents=True, exist_ok=True)
        records = []
        for index in indices:
            pixels, boxes, labels = render_image(seed, index, image_size)
            file_name = f"synth_{index:06d}.png"
            _save_png(pixels, image_dir / file_name)
            _link_or_copy(image_dir / file_name, voc_root / "JPEGImages" / file_name)
            records.append(ImageRecord(image_id=index + 1, file_name=file_name, width=image_size,
                                       height=image_size, boxes=boxes, labels=labels))
        ds = DetectionDataset(list(CLASSES), records, image_dir, name=f"synth-{split}")
        datasets[split] = ds
        paths[f"coco_{split}"] = write_coco(ds, out / "coco" / "annotations" / f"instances_{split}.json")
        write_voc(ds, voc_root, split)
    manifest = {"generator": "bench.data.synth", "version": SYNTH_VERSION, "seed": seed, "images": images,
                "image_size": image_size, "classes": CLASSES,
                "splits": {name: [r.start, r.stop] for name, r in bounds.items()},
                "scale_thresholds_area": {"small": SMALL, "large": MEDIUM},
                "statistics": _statistics(datasets)}
    paths["manifest"] = out / "dataset.json"
    paths["manifest"].write_text(json.dumps(manifest, indent=2) + "\n")
    paths["readme"] = out / "README.md"
    paths["readme"].write_text(_readme(manifest))
    return paths


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m bench.data.synth", description=__doc__.split("\n\n")[0])
    parser.add_argument("--out", type=Path, required=True, help="output folder")
    parser.add_argument("--images", type=int, required=True, help="number of images over all splits")
    parser.add_argument("--seed", type=int, required=True)
    parser.add_argument("--size", type=int, default=320, help="square image side in pixels (default 320)")
    args = parser.parse_args(argv)
    try:
        paths = generate(args.out, args.images, args.seed, args.size)
    except BenchInputError as err:
        print(f"error: {err}", file=sys.stderr)
        return 2
    for key, path in paths.items():
        print(f"{key}: {path}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
