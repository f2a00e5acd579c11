"""A COCO train2017-shaped instances file (118,287 images, 860,001 annotations) with train2017's problems.

Run as a script with a path it times ``pycocotools.coco.COCO(path)`` in its own process and prints one JSON
line ``{"seconds": ..., "cpu_seconds": ...}``: the reference of ``test_perf_data_check``.
"""

from __future__ import annotations

import contextlib
import io
import json
import sys
import time
from pathlib import Path

import numpy as np

N_IMAGES = 118_287
N_ANNOTATIONS = 860_001


def write_train2017_shaped(path: Path, seed: int = 0) -> Path:
    """Random boxes of COCO's size mix, two zero-height boxes (annotations 918 and 550395 here; train2017 has
    two, 918 among them), a few boxes past the image edge, crowd regions; no segmentation (not read)."""
    rng = np.random.default_rng(seed)
    sizes = rng.choice([(640, 480), (480, 640), (640, 427), (500, 375)], N_IMAGES)
    image = np.sort(rng.integers(0, N_IMAGES, N_ANNOTATIONS))
    wh = np.exp(rng.uniform(np.log(2), np.log(400), (N_ANNOTATIONS, 2)))
    xy = rng.uniform(0, 1, (N_ANNOTATIONS, 2)) * np.maximum(sizes[image] - wh, 1)
    bbox = np.round(np.c_[xy, np.minimum(wh, sizes[image] - xy)], 2)
    bbox[[917, 550394], 3] = 0.0
    past = rng.choice(N_ANNOTATIONS, 50, replace=False)
    bbox[past, 2] += 0.7
    area = np.round(bbox[:, 2] * bbox[:, 3] * rng.uniform(0.4, 1.0, N_ANNOTATIONS), 4)
    crowd = (rng.random(N_ANNOTATIONS) < 0.01).astype(int)
    category = rng.integers(1, 91, N_ANNOTATIONS)
    images = [{"id": i + 1, "file_name": f"{i + 1:012d}.jpg", "width": int(w), "height": int(h)}
              for i, (w, h) in enumerate(sizes.tolist())]
    annotations = [{"id": k + 1, "image_id": int(i) + 1, "category_id": int(c), "bbox": b, "area": a,
                    "iscrowd": int(z)}
                   for k, (i, c, b, a, z) in enumerate(zip(image.tolist(), category.tolist(), bbox.tolist(),
                                                           area.tolist(), crowd.tolist(), strict=True))]
    categories = [{"id": c, "name": f"class{c}", "supercategory": "x"} for c in range(1, 91)]
    path.write_text(json.dumps({"images": images, "annotations": annotations, "categories": categories}))
    return path


if __name__ == "__main__":
    from pycocotools.coco import COCO

    start, cpu = time.perf_counter(), time.process_time()
    with contextlib.redirect_stdout(io.StringIO()):
        coco = COCO(sys.argv[1])
    timing = {"seconds": time.perf_counter() - start, "cpu_seconds": time.process_time() - cpu}
    # What it read, counted after the clock stopped: the check must have read the same.
    names = {c["id"]: c["name"] for c in coco.cats.values()}
    instances: dict[str, int] = {}
    for ann in coco.anns.values():
        instances[names[ann["category_id"]]] = instances.get(names[ann["category_id"]], 0) + 1
    print(json.dumps({**timing, "images": len(coco.imgs), "boxes": len(coco.anns), "instances": instances}))
