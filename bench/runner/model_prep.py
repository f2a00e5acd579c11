"""What one model's training needs besides the loop: its training set (the suite's augmentation policy),
its data-fitted priors (YOLOv5's AutoAnchor), and the images its loader had to skip (the data-health report).
"""

from __future__ import annotations

import dataclasses
import math
import sys
from pathlib import Path
from typing import Any

from bench.data.resolve import ResolvedData
from bench.distributed import DistContext, gather_to_main
from bench.io import read_json, write_json
from bench.runner.stages import EpochDataset, iterations_per_epoch, total_iterations
from bench.suite.spec import Recipe
from detectors import Detector

AUTOANCHOR_FILE = "autoanchor.json"


def training_dataset(data: ResolvedData, model: Detector, recipe: Recipe, family: str,
                     ctx: DistContext) -> EpochDataset:
    """The training items under the recipe's augmentation policy for ``family``: ``"mosaic"``
    (``bench.data.mosaic``, ultralytics' pipeline) or one of the loader's (``ssd``, ``yolo``, ``none``)."""
    from bench.data.loader import DetectionTorchDataset
    from bench.data.transforms import SSD_AUGMENT

    if family not in recipe.augment:
        raise ValueError(f"the recipe's augment table names no policy for the {family!r} family "
                         f"(has: {', '.join(sorted(recipe.augment))})")
    policy = recipe.augment[family]
    if policy == "mosaic":
        from bench.data.mosaic import MosaicDataset

        # The whole budget in epochs: the last ``close_mosaic`` of them train without mosaic.
        epochs = math.ceil(total_iterations(len(data.train), recipe, ctx)
                           / iterations_per_epoch(len(data.train), recipe, ctx))
        return MosaicDataset(data.train, model.input_spec, recipe.mosaic, seed=recipe.seed, epochs=epochs)
    ssd_config = dataclasses.replace(SSD_AUGMENT, **dataclasses.asdict(recipe.ssd_augment))
    return DetectionTorchDataset(data.train, model.input_spec, train=True, augment=policy,  # type: ignore[arg-type]
                                 seed=recipe.seed, ssd_config=ssd_config)


def fit_priors(model: Detector, recipe: Recipe, data: ResolvedData, model_dir: Path,
               ctx: DistContext) -> dict[str, Any] | None:
    """``Detector.fit_to_training_boxes`` on the training view's non-crowd boxes, before the first stage.

    Every rank fits (a seeded, deterministic computation on the same boxes), so no collective is needed; the
    caller skips it on resume, since what it sets (the anchors) is in the checkpoint. Rank 0 writes
    ``autoanchor.json`` when the model reports something.
    """
    if not recipe.autoanchor:
        return None
    records = data.train.records
    report = model.fit_to_training_boxes([r.boxes[~r.iscrowd] for r in records],
                                         [(r.height, r.width) for r in records], seed=recipe.seed)
    if report is not None and ctx.is_main:
        write_json(report, model_dir / AUTOANCHOR_FILE)
    return report


def record_skipped_images(dataset: EpochDataset, data: ResolvedData, ctx: DistContext,
                          manifest_path: Path) -> list[str]:
    """Images the loader could not decode (on any rank) into the run's data health: ``manifest.json``'s
    ``data_health`` is rewritten and the console line printed on rank 0; returns the new lines."""
    from bench.data.health import SKIPPED_IMAGE

    skipped = getattr(dataset, "skipped", None)
    gathered = gather_to_main(skipped() if skipped is not None else [], ctx)
    if gathered is None:  # not rank 0
        return []
    indices = sorted({int(i) for part in gathered for i in part})
    if not indices:
        return []
    split = data.splits.train
    data.health.add_skipped_images(split, data.train, indices)
    target = data.health.split(split)
    finding = None if target is None else target.findings.get(SKIPPED_IMAGE[0])
    lines = [] if finding is None else [finding.console_line(split)]
    for line in lines:
        print(line, file=sys.stderr)
    if manifest_path.is_file():
        manifest = read_json(manifest_path)
        manifest["data_health"] = data.health.to_dict()
        write_json(manifest, manifest_path)
    return lines
