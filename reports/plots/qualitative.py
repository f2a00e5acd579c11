"""Qualitative detections (seed 000 figs. 1 and 6, seed 001 fig. 4): predictions drawn on the test images
that hold the most small objects, the ground truth and every model side by side.

The images come from the run's data root (``manifest.data.root``) and the file names of ``data/test_gt.json``;
the predictions from each model's ``detections.json`` (COCO results). PIL reads the images, matplotlib
draws; nothing is recomputed.
"""

from __future__ import annotations

import os
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import matplotlib.pyplot as plt
import numpy as np
from matplotlib.patches import Rectangle
from PIL import Image

from bench.errors import BenchInputError, resolve_inside
from reports.plots.palette import model_colours
from reports.plots.style import NotApplicable, save
from reports.rundir import Run, read_json

SCORE_THRESHOLD = 0.25  # ultralytics' predict default, and the confusion matrices' threshold
SMALL_AREA = 32**2  # COCO's small objects: box area under 32² px
IMAGES = 3  # test images shown, those with the most small ground-truth boxes
COLUMNS = 4
MAX_LABELS = 25  # beyond this many boxes in one panel, class labels are left off (boxes only)
GT_COLOUR = (0.0, 0.75, 0.2)
_SEARCH_DEPTH = 4  # folders below the data root searched for the images when no known layout holds them


@dataclass(frozen=True)
class Chosen:
    image_id: int
    file_name: str
    small: int  # small ground-truth boxes in the image
    path: Path


def small_counts(test_gt: dict[str, Any]) -> dict[int, int]:
    """Small (area < 32² px), non-crowd ground-truth boxes per image id."""
    counts: dict[int, int] = {}
    for ann in test_gt.get("annotations", []):
        w, h = ann["bbox"][2], ann["bbox"][3]
        if not ann.get("iscrowd") and w * h < SMALL_AREA:
            counts[ann["image_id"]] = counts.get(ann["image_id"], 0) + 1
    return counts


def _data_root(run: Run) -> Path:
    return Path(str(run.manifest.get("data", {}).get("root") or run.root))


def _candidate_dirs(run: Run) -> list[Path]:
    """The test split's image folder as recorded (``data.image_roots.test``), then the formats' layouts."""
    data = run.manifest.get("data", {})
    root = _data_root(run)
    split = str((data.get("split_names") or {}).get("test") or "test")
    recorded = (data.get("image_roots") or {}).get("test")
    dirs = [Path(recorded)] if recorded else []
    return [*dirs, root / "images" / split, root / split, root / "images", root, root / "JPEGImages",
            root / "training" / "image_2"]


def _search(root: Path, file_name: str) -> Path | None:
    """The folder below ``root`` (at most ``_SEARCH_DEPTH`` deep) that holds ``file_name``."""
    if not root.is_dir():
        return None
    base = len(root.parts)
    for folder, subdirs, _ in os.walk(root):
        here = Path(folder)
        if (here / file_name).is_file():
            return here
        if len(here.parts) - base >= _SEARCH_DEPTH:
            subdirs.clear()
    return None


def image_folder(run: Run, file_name: str) -> Path:
    """Where the test images are: a known layout of the data root, else a bounded search below it."""
    candidates = _candidate_dirs(run)
    for folder in candidates:
        if (folder / file_name).is_file():
            return folder
    found = _search(_data_root(run), file_name)
    if found is None:
        raise NotApplicable(f"the test images are not readable here: {file_name} is in none of "
                            f"{', '.join(str(c) for c in candidates[:4])} nor below the data root")
    return found


def choose_images(run: Run, limit: int = IMAGES) -> list[Chosen]:
    """The ``limit`` test images with the most small ground-truth boxes (ties: first in the file)."""
    gt = run.test_gt
    if not gt or not gt.get("images"):
        raise NotApplicable("the run directory has no data/test_gt.json with images")
    counts = small_counts(gt)
    if not counts:
        raise NotApplicable("the test split has no small (< 32² px) ground-truth box")
    images = {im["id"]: im for im in gt["images"]}
    ranked = sorted((i for i in counts if i in images), key=lambda i: -counts[i])[:limit]
    folder = image_folder(run, images[ranked[0]]["file_name"])
    source = run.root / "data" / "test_gt.json"
    return [Chosen(i, images[i]["file_name"], counts[i],
                   resolve_inside(folder, images[i]["file_name"], source=source, entry=i)) for i in ranked]


def model_detections(run: Run, image_ids: set[int]) -> dict[str, list[dict[str, Any]]]:
    """Every finished model's detections on ``image_ids`` scoring at least ``SCORE_THRESHOLD``; not the
    untrained models' nor those scored on a subset of the test images (no detections is not their result)."""
    out = {}
    test_images = len((run.test_gt or {}).get("images") or [])
    for name, model in run.models.items():
        path = run.root / "models" / name / "detections.json"
        subset = model.scored_images is not None and model.scored_images < test_images
        if model.state != "done" or not path.is_file() or model.untrained or subset:
            continue
        entries = read_json(path)
        if not isinstance(entries, list):
            raise BenchInputError(path, "expected a JSON list of detections (COCO results format)")
        out[name] = [e for e in entries if isinstance(e, dict) and e.get("image_id") in image_ids
                     and float(e.get("score", 0)) >= SCORE_THRESHOLD]
    if not out:
        raise NotApplicable("no finished model trained and scored on the whole test split left a "
                            "detections.json")
    return out


def _draw_boxes(ax: Any, boxes: list[dict[str, Any]], names: dict[int, str], colour: Any,
                scored: bool) -> None:
    label = len(boxes) <= MAX_LABELS
    for box in boxes:
        x, y, w, h = box["bbox"]
        small = w * h < SMALL_AREA
        ax.add_patch(Rectangle((x, y), w, h, fill=False, edgecolor=colour, lw=1.6 if small else 1.0))
        if label:
            text = names.get(box["category_id"], "?") + (f" {box['score']:.2f}" if scored else "")
            ax.text(x, y, text, fontsize=5, color="white", va="bottom", clip_on=True,
                    bbox={"facecolor": colour, "alpha": 0.7, "pad": 0.5, "lw": 0})


def detections_figure(run: Run, chosen: Chosen, detections: dict[str, list[dict[str, Any]]],
                      path: Path) -> Path:
    """One test image: the ground truth, then each model's detections, in a grid of ``COLUMNS``."""
    gt = run.test_gt or {}
    names = {c["id"]: str(c["name"]) for c in gt.get("categories", [])}
    try:
        with Image.open(chosen.path) as im:
            pixels = np.asarray(im.convert("RGB"))
    except OSError as err:
        raise NotApplicable(f"{chosen.path} is not a readable image: {err}") from None
    truth = [a for a in gt.get("annotations", []) if a["image_id"] == chosen.image_id]
    panels = [("ground truth", truth, GT_COLOUR, False)]
    colours = model_colours(detections, run.zoo)
    panels += [(name, [d for d in dets if d["image_id"] == chosen.image_id], colours[name], True)
               for name, dets in detections.items()]
    cols = min(COLUMNS, len(panels))
    rows = -(-len(panels) // cols)
    height, width = pixels.shape[:2]
    side = 3.0
    fig, axes = plt.subplots(rows, cols, figsize=(side * cols, side * rows * height / width + 0.3 * rows),
                             squeeze=False)
    for ax, (title, boxes, colour, scored) in zip(axes.flat, panels, strict=False):
        ax.imshow(pixels)
        _draw_boxes(ax, boxes, names, colour, scored)
        count = f"{len(boxes)} box{'es' if len(boxes) != 1 else ''}"
        ax.set_title(f"{title}: {count}" + (f" ≥ {SCORE_THRESHOLD}" if scored else ""), fontsize=8)
    for ax in axes.flat:
        ax.set_xticks([])
        ax.set_yticks([])
        ax.grid(False)
    for ax in axes.flat[len(panels):]:
        ax.axis("off")
    fig.suptitle(f"{chosen.file_name}: {chosen.small} small ground-truth boxes (< 32² px, drawn thicker)",
                 fontsize=9)
    fig.tight_layout()
    return save(fig, path)
