"""A COCO-val-shaped random detection problem written as COCO files, and pycocotools timed on them.

Run as a script it scores the given files with pycocotools in its own process (the reference of the perf
benchmark): ``python coco_problem.py GT DT`` prints one JSON line with the 12 stats and the seconds spent in
evaluate + accumulate + summarize.
"""

from __future__ import annotations

import contextlib
import io
import json
import sys
import time
from pathlib import Path

import numpy as np


def write_problem(out_dir: Path, *, n_images: int = 2000, n_classes: int = 80, gt_per_image: int = 7,
                  dets_per_image: int = 100, seed: int = 0) -> tuple[Path, Path]:
    """GT with crowd regions and segmentation-like ``area``; detections: jittered GT, clutter, tied scores."""
    rng = np.random.default_rng(seed)
    sizes = rng.integers(320, 641, size=(n_images, 2))
    n_gt = rng.poisson(gt_per_image, n_images)
    gt_img = np.repeat(np.arange(n_images), n_gt)
    wh = np.exp(rng.uniform(np.log(4), np.log(300), (len(gt_img), 2)))  # many small, some large
    xy = rng.uniform(0, 1, (len(gt_img), 2)) * np.maximum(sizes[gt_img] - wh, 1)
    gt_box = np.round(np.c_[xy, wh], 2)
    gt_cls = rng.integers(0, n_classes, len(gt_img))
    crowd = rng.random(len(gt_img)) < 0.01
    area = gt_box[:, 2] * gt_box[:, 3] * rng.uniform(0.5, 1.0, len(gt_img))

    n_det = dets_per_image * n_images
    src = rng.integers(0, len(gt_img), n_det)
    clutter = rng.random(n_det) < 0.5
    jitter = rng.normal(0, 0.15, (n_det, 4)) * np.tile(gt_box[src, 2:], 2)
    det_box = gt_box[src] + jitter
    det_img = gt_img[src]
    det_cls = np.where(rng.random(n_det) < 0.1, rng.integers(0, n_classes, n_det), gt_cls[src])
    det_img[clutter] = rng.integers(0, n_images, clutter.sum())
    det_cls[clutter] = rng.integers(0, n_classes, clutter.sum())
    det_box[:, 2:] = np.maximum(np.abs(det_box[:, 2:]), 1.0)
    det_box = np.round(det_box, 2)
    score = np.round(rng.beta(2, 2, n_det) * np.where(clutter, 0.6, 1.0), 3)

    images = [{"id": i + 1, "file_name": f"{i:06d}.jpg", "width": int(w), "height": int(h)}
              for i, (w, h) in enumerate(sizes.tolist())]
    annotations = [{"id": j + 1, "image_id": int(i) + 1, "category_id": int(c) + 1, "bbox": b, "area": a,
                    "iscrowd": int(k)}
                   for j, (i, c, b, a, k) in enumerate(zip(gt_img.tolist(), gt_cls.tolist(), gt_box.tolist(),
                                                            area.tolist(), crowd.tolist(), strict=True))]
    categories = [{"id": c + 1, "name": f"class{c:02d}"} for c in range(n_classes)]
    results = [{"image_id": int(i) + 1, "category_id": int(c) + 1, "bbox": b, "score": s}
               for i, c, b, s in zip(det_img.tolist(), det_cls.tolist(), det_box.tolist(), score.tolist(),
                                     strict=True)]
    out_dir.mkdir(parents=True, exist_ok=True)
    gt_path, dt_path = out_dir / "gt.json", out_dir / "dt.json"
    gt_path.write_text(json.dumps({"images": images, "annotations": annotations, "categories": categories}))
    dt_path.write_text(json.dumps(results))
    return gt_path, dt_path


def pycocotools_stats(gt_path: Path, dt_path: Path) -> tuple[list[float], float]:
    """pycocotools' 12 stats and the seconds of evaluate + accumulate + summarize (loading excluded)."""
    from pycocotools.coco import COCO
    from pycocotools.cocoeval import COCOeval

    with contextlib.redirect_stdout(io.StringIO()):
        gt = COCO(str(gt_path))
        dt = gt.loadRes(str(dt_path))
        start = time.perf_counter()
        coco_eval = COCOeval(gt, dt, "bbox")
        coco_eval.evaluate()
        coco_eval.accumulate()
        coco_eval.summarize()
        seconds = time.perf_counter() - start
    return [float(s) for s in coco_eval.stats], seconds


if __name__ == "__main__":
    stats, seconds = pycocotools_stats(Path(sys.argv[1]), Path(sys.argv[2]))
    print(json.dumps({"stats": stats, "seconds": seconds}))
