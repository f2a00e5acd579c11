"""A small fake run directory for the report tests, generated from a seed.

Every number here is invented (random, clearly fake) and only shaped like the run-directory contract;
nothing is a result. The test images are noise PNGs in a COCO layout under ``dataset/`` (the manifest's
data root), each done model has a ``detections.json`` and the manifest a ``data_health`` record. One model is
done per family, one has failed and one never started, and one class
name is hostile HTML, so the report's handling of each case is exercised. ``plan.json`` carries parameter
counts at 20 classes for ssd300 (invented) and mfssd300 (its architecture's, so that the report's
architecture row reproduces although that model failed), and planned iterations; YOLOv5n's AP50 is 0, a
model below the budget to learn.
"""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pandas as pd
from PIL import Image

HOSTILE_CLASS = "<script>alert(1)</script>"
CLASSES = ["bottle", "bird", "boat", HOSTILE_CLASS]
DONE = {"ssd300": ("ssd", 300, 8732), "yolov5n": ("yolov5", 640, None)}
FAILED = "mfssd300"
NEVER_STARTED = "dfssd300"


def _write(path: Path, obj: object) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(json.dumps(obj, indent=1), encoding="utf-8")


def _coco_gt(rng: np.random.Generator, n_images: int, first_id: int) -> dict:
    images, annotations = [], []
    for i in range(n_images):
        image_id = first_id + i
        images.append({"id": image_id, "file_name": f"{image_id:06d}.png", "width": 320, "height": 240})
        for _ in range(rng.integers(1, 6)):
            w, h = rng.uniform(4, 120, size=2)
            x, y = rng.uniform(0, 320 - w), rng.uniform(0, 240 - h)
            annotations.append({"id": len(annotations) + 1, "image_id": first_id + i, "iscrowd": 0,
                                "category_id": int(rng.integers(1, len(CLASSES) + 1)),
                                "bbox": [x, y, w, h], "area": w * h})
    return {"images": images, "annotations": annotations,
            "categories": [{"id": i + 1, "name": c} for i, c in enumerate(CLASSES)]}


def _images(folder: Path, gt: dict, rng: np.random.Generator) -> None:
    """Small noise PNGs for the test split, so the qualitative figures have pixels to draw on."""
    folder.mkdir(parents=True, exist_ok=True)
    for image in gt["images"]:
        pixels = rng.integers(0, 255, (image["height"], image["width"], 3), dtype=np.uint8)
        Image.fromarray(pixels).save(folder / image["file_name"])


def _detections(gt: dict, rng: np.random.Generator) -> list[dict]:
    """COCO results: each ground-truth box found with a jitter and a random score, plus one stray box."""
    out = [{"image_id": a["image_id"], "category_id": a["category_id"], "score": float(rng.uniform(0.05, 1)),
            "bbox": [float(v) for v in np.asarray(a["bbox"]) + rng.normal(0, 1.5, 4)]}
           for a in gt["annotations"]]
    out += [{"image_id": im["id"], "category_id": 1, "score": 0.3, "bbox": [5.0, 5.0, 20.0, 20.0]}
            for im in gt["images"]]
    return out


DATA_HEALTH = {"strict": False, "quality_problems": 3, "splits": [
    {"split": "train", "role": "train", "reference": "pycocotools", "images": 12, "boxes": 40,
     "findings": [{"kind": "zero_height", "description": "boxes with zero height",
                   "action": "dropped from training", "count": 2,
                   "examples": ["annotation 918", "annotation 7"]},
                  {"kind": "partly_outside", "description": "boxes partly outside the image",
                   "action": "clipped to the image for training", "count": 1, "examples": ["annotation 3"]}],
     "notes": ["3 objects of classes outside the suite left out"]},
    {"split": "test", "role": "test", "reference": "pycocotools", "images": 6, "boxes": 20, "findings": [],
     "notes": []}]}


def _model_files(directory: Path, name: str, family: str, size: int, priors: int | None,
                 rng: np.random.Generator, test_gt: dict) -> None:
    _write(directory / "status.json", {"state": "done", "stage": "finished", "error": None,
                                       "started": "2026-01-01T00:00:00", "finished": "2026-01-01T00:05:00",
                                       "training": [{"stage": "train", "iterations": 100,
                                                     "planned_iterations": 100, "stopped_by_time": False}]})
    _write(directory / "info.json", {"name": name, "family": family, "paper": "fake", "input_size": size,
                                     "num_classes": len(CLASSES), "params": int(rng.integers(1e6, 3e7)),
                                     "priors": priors, "notes": [f"fake note for {name}"],
                                     "overrides": {}, "recipe": {"batch_size": 8, "lr": 0.01}})
    steps = np.arange(10, 110, 10)
    pd.DataFrame({"stage": "train", "epoch": 0, "iteration": steps, "lr": 0.01,
                  "loss": 5 * np.exp(-steps / 60) + rng.uniform(0, 0.1, len(steps)),
                  "seconds": steps * 0.1}).to_csv(directory / "train_log.csv", index=False)
    coco = dict(zip(["AP", "AP50", "AP75", "APs", "APm", "APl", "AR1", "AR10", "AR100", "ARs", "ARm", "ARl"],
                    rng.uniform(0.05, 0.6, 12).round(4).tolist(), strict=True))
    coco["APl"] = None  # a size bucket with no objects must show as n/a
    if name == "yolov5n":
        coco["AP50"] = 0.0  # did not learn in its budget
    per_class = [{"class": c, "n_gt": 10, "n_det": 20, "AP": a, "AP50": a, "AP75": a, "APs": a, "APm": a,
                  "APl": None, "voc_ap_11pt": a, "voc_ap_allpt": a}
                 for c, a in zip(CLASSES, rng.uniform(0.1, 0.9, len(CLASSES)).round(4).tolist(), strict=True)]
    _write(directory / "metrics.json", {"coco": coco, "voc": {"mAP_11pt": 0.41, "mAP_allpt": 0.42},
                                        "per_class": per_class, "roc_definition": "fake: miss rate vs FPPI",
                                        "settings": {"n_images": 6}, "engine": "fake"})
    recall = np.linspace(0, 0.9, 20)
    pr = [pd.DataFrame({"class": c, "iou": iou, "recall": recall, "score": 1 - recall,
                        "precision": 1 - recall * rng.uniform(0.3, 1)})
          for c in CLASSES for iou in (0.5, 0.75)]
    pd.concat(pr).to_csv(directory / "pr_curves.csv", index=False)
    fppi = np.geomspace(0.01, 5, 15)
    pd.concat([pd.DataFrame({"class": c, "fppi": fppi, "miss_rate": np.exp(-fppi * rng.uniform(0.5, 2)),
                             "score": 1 - fppi / 5}) for c in CLASSES]).to_csv(directory / "roc_curves.csv",
                                                                                index=False)
    matrix = rng.integers(0, 9, (len(CLASSES) + 1, len(CLASSES) + 1)).tolist()
    _write(directory / "confusion.json", {"classes": [*CLASSES, "background"], "matrix": matrix,
                                          "normalized": None, "score_thresh": 0.25, "iou_thresh": 0.45,
                                          "definition": "fake definition"})
    timings = [{"protocol": p, "device": "cpu", "device_name": "Fake CPU", "precision": "fp32", "batch": b,
                "fused": True, "warmup": 2, "iterations": 5, "timed_seconds": 0.1, "mean_ms": ms,
                "p50_ms": ms, "p90_ms": ms * 1.1, "fps": 1000 * b / ms, "nms": None, "timer": "perf_counter"}
               for p, b, ms in (("model", 1, rng.uniform(5, 50)), ("e2e", 1, rng.uniform(10, 60)))]
    _write(directory / "speed.json", {"protocol_definitions": {"model": "fake"}, "results": timings})
    _write(directory / "complexity.json", {"params": 1_000_000, "gflops": 1.5, "flops_definition": "2 x MACs",
                                           "input_size": size})
    _write(directory / "detections.json", _detections(test_gt, rng))


ZOO = ("ssd300", "ssd300_11620", "ssd512", "fssd300", "mfssd300", "mfssd300_bn", "mfssd300_pruned",
       "mdssd300", "mdssd512", "dfssd300", "dfssd512", "yolov5n", "yolov5s", "yolov5m", "yolov5l",
       "yolov5x")  # the registry names the run's manifest.zoo lists
PLAN_PARAMS_AT_20 = {"ssd300": 25_000_000, FAILED: 33_709_664}  # mfssd300's is its architecture's count


def _plan(models: list[str]) -> dict:
    """A resolved plan (``bench.plan`` format) with what the report reads: budget, overrides, sizes."""
    out = {}
    for name in models:
        at = {"4": 1_000_000}
        if name in PLAN_PARAMS_AT_20:
            at["20"] = PLAN_PARAMS_AT_20[name]
        family = "ssd" if "ssd" in name else "yolov5"
        override = {"kind": "family", "target": "ssd", "models": None, "reason": "fake family reason",
                    "values": {"lr": 0.02}, "source": "common/fake.toml"}
        out[name] = {"family": family, "budget": {"rule": "schedule", "iterations": 100, "why": "fake"},
                     "params": {"run": 1_000_000, "at_num_classes": at},
                     "overrides": [override] if family == "ssd" else []}
    return {"format": 1, "suite": {"name": "fake_suite", "protocol": "identical"}, "data": {}, "models": out}


def make_fake_run(root: Path, seed: int = 0, protocol: str = "identical") -> Path:
    """Write the fake run into ``root`` and return it; ``protocol`` is its suite's (identical or paper)."""
    rng = np.random.default_rng(seed)
    models = [*DONE, FAILED, NEVER_STARTED]
    _write(root / "manifest.json", {
        "suite": {"name": "fake_suite", "path": "bench/suites/fake.toml", "sha256": "0" * 64,
                  "config": {"name": "fake_suite", "models": models, "protocol": protocol}},
        "command": "python -m bench.run --suite fake", "git": {"commit": "f" * 40, "dirty": True},
        "seed": seed,
        "versions": {"python": "3.11", "torch": "fake"},
        "device": {"requested": "cpu", "type": "cpu", "name": "Fake CPU", "driver": None, "cuda": None,
                   "world_size": 1},
        "precision": "fp32",
        "data": {"name": "synthetic-fake", "format": "coco", "root": str(root / "dataset"), "synthetic": True,
                 "splits": {"train": 12, "test": 6}, "split_names": {"train": "train", "test": "test"},
                 "annotation_sha256": "a" * 64, "classes": CLASSES},
        "data_health": DATA_HEALTH,
        "budget": {"iterations": 100, "batch_size": 8, "paper_budget": False,
                   "description": "100 fake iterations; the papers train 120k iterations"},
        "started": "2026-01-01T00:00:00", "finished": "2026-01-01T00:10:00",
        "zoo": [{"name": n} for n in ZOO]})
    _write(root / "plan.json", _plan(models))
    _write(root / "data" / "train_gt.json", _coco_gt(rng, 12, 1))
    test_gt = _coco_gt(rng, 6, 100)
    _write(root / "data" / "test_gt.json", test_gt)
    _images(root / "dataset" / "images" / "test", test_gt, rng)
    for name, (family, size, priors) in DONE.items():
        _model_files(root / "models" / name, name, family, size, priors, rng, test_gt)
    failed = root / "models" / FAILED
    _write(failed / "status.json", {"state": "failed", "stage": "train", "error": None,
                                    "started": "2026-01-01T00:05:00", "finished": "2026-01-01T00:06:00"})
    (failed / "error.txt").write_text("Traceback (most recent call last):\nFloatingPointError: loss is NaN\n")
    return root
