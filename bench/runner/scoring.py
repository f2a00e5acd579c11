"""A trained model's measurements: detections on the test split scored, speed timed, size counted."""

from __future__ import annotations

import dataclasses
from pathlib import Path
from typing import TYPE_CHECKING

import numpy as np
import torch
from torch.utils.data import DataLoader, Subset
from tqdm import tqdm

from bench.data.resolve import ResolvedData
from bench.distributed import DistContext, gather_to_main, shard
from bench.io import read_json, write_json
from bench.suite.spec import Suite
from detectors import Detector, PostprocessConfig

if TYPE_CHECKING:  # bench.speed.harness imports the data pipeline
    from bench.metrics.small_objects import SmallObjectSettings

SLICED_FILE = "sliced.json"


def postprocess_config(suite: Suite) -> PostprocessConfig:
    """The ``PostprocessConfig`` part of the suite's evaluation settings (which extends it)."""
    ev = suite.evaluation
    return PostprocessConfig(**{f.name: getattr(ev, f.name) for f in dataclasses.fields(PostprocessConfig)})


def small_object_settings(suite: Suite) -> SmallObjectSettings:
    """The suite's size protocols, maxDets overrides and bootstrap resamples. The bootstrap seed is the
    suite's shared one, never a model's: resample r then draws the same images for every model, which is what
    makes the paired comparison between two models (``bench.runner.comparisons``) paired."""
    from bench.metrics.small_objects import SmallObjectSettings

    ev = suite.evaluation
    return SmallObjectSettings(protocols=tuple(ev.size_protocols),
                               max_dets={k: tuple(v) for k, v in ev.max_dets.items()} or None,
                               bootstrap=ev.bootstrap, seed=suite.recipe.seed)


@torch.inference_mode()
def predict_split(model: Detector, data: ResolvedData, batch_size: int, workers: int,
                  ctx: DistContext) -> dict[str, np.ndarray] | None:
    """Detections on the test split, each image on exactly one rank, gathered on rank 0 as flat arrays."""
    from bench.data.loader import DetectionTorchDataset, collate

    dataset = DetectionTorchDataset(data.test, model.input_spec, train=False, augment="none", seed=0)
    loader = DataLoader(Subset(dataset, shard(len(dataset), ctx).tolist()), batch_size=batch_size,
                        collate_fn=collate, num_workers=workers)
    model.eval()
    parts: list[tuple[torch.Tensor, ...]] = []
    for images, _targets, metas in tqdm(loader, desc=f"{model.name} [evaluate]", unit="batch",
                                        disable=not ctx.is_main, dynamic_ncols=True):
        dets = model.predict(images.to(ctx.device), metas)
        ids = torch.cat([torch.full((len(d.scores),), m.image_id, dtype=torch.int64)
                         for d, m in zip(dets, metas, strict=True)])
        parts.append((ids, *(torch.cat([getattr(d, k) for d in dets]).cpu() for k in ("labels", "boxes",
                                                                                       "scores"))))
    local = {key: torch.cat([p[i] for p in parts]).numpy() if parts else empty
             for i, (key, empty) in enumerate((("image_id", np.zeros(0, np.int64)),
                                               ("label", np.zeros(0, np.int64)),
                                               ("boxes", np.zeros((0, 4), np.float32)),
                                               ("score", np.zeros(0, np.float32))))}
    gathered = gather_to_main(local, ctx)
    if gathered is None:
        return None
    return {key: np.concatenate([g[key] for g in gathered]) for key in local}


def score_test_split(model: Detector, suite: Suite, data: ResolvedData, ctx: DistContext,
                     model_dir: Path) -> None:
    """``detections.json`` and the evaluator's files (``metrics.json``, curves, confusion) on rank 0."""
    from bench.metrics import DetectionResults
    from bench.metrics import evaluate as score

    arrays = predict_split(model, data, suite.evaluation.batch_size, suite.recipe.workers, ctx)
    if arrays is None:
        return
    dets = DetectionResults(**arrays)
    dets.to_coco_json(model_dir / "detections.json", data.test)
    score(data.test, dets, small_objects=small_object_settings(suite)).save(model_dir)
    if data.format == "kitti":  # the official devkit protocol and DF-SSD's Table 3, beside COCO's and VOC's
        from bench.metrics.kitti import kitti_metrics

        metrics = read_json(model_dir / "metrics.json")
        metrics["kitti"] = kitti_metrics(data.test, dets)
        write_json(metrics, model_dir / "metrics.json")


def sliced_test_split(model: Detector, suite: Suite, data: ResolvedData, ctx: DistContext,
                      model_dir: Path) -> None:
    """``sliced.json``: full-image against sliced inference on the test split (the suite's ``slicing``
    table; rank 0 alone, the first ``images`` test images)."""
    from bench.data.loader import load_image
    from bench.slicing import SliceConfig, sliced_comparison

    cfg = suite.evaluation.slicing
    if not (cfg.enabled and ctx.is_main):
        return
    test = data.test if cfg.images is None or cfg.images >= len(data.test) else \
        data.test.subset(list(range(cfg.images)))
    images = [(r.image_id, load_image(str(test.image_path(r)), (r.height, r.width))) for r in test.records]
    config = SliceConfig(slice_size=cfg.slice_size, overlap=cfg.overlap, full_image=cfg.full_image,
                         merge=cfg.merge, batch_size=suite.evaluation.batch_size)
    result = sliced_comparison(model, test, images, config, protocol=cfg.protocol, device=ctx.device)
    write_json({**result, "images": len(images)}, model_dir / SLICED_FILE)


def measure(model: Detector, suite: Suite, data: ResolvedData, ctx: DistContext, model_dir: Path) -> None:
    """``speed.json`` (the suite's speed protocols) and ``complexity.json`` (parameters, GFLOPs)."""
    from bench.speed.harness import measure_speed, save
    from detectors.complexity import FLOPS_DEFINITION, count_flops, count_params

    sp = suite.speed
    samples = [data.test.image_path(r) for r in data.test.records[:sp.sample_images]]
    save(measure_speed(model, sp.protocols, suite.speed, ctx.device, samples), model_dir)
    write_json({"params": count_params(model), "gflops": count_flops(model, model.input_size),
                "flops_definition": FLOPS_DEFINITION, "input_size": model.input_size},
               model_dir / "complexity.json")
