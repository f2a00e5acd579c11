"""Sliced inference (SAHI, Akyon et al. 2022) for every ``Detector``, and training-data tiling.

Inference: the image is cut into overlapping tiles (``sahi.slicing.get_slice_bboxes``); each tile goes through
the model's own input spec (stretch or letterbox) like a whole image, its detections are mapped back to
tile pixels by the model (``ImageMeta.to_original``) and shifted by the tile's offset; an optional full-image
pass adds the large objects tiles cut apart. The union is merged per class by NMS (``torchvision``'s
``batched_nms``) or by greedy non-maximum merging (``sahi.postprocess.combine.batched_greedy_nmm``: a kept box
absorbs the boxes it matches, becoming their enclosing box, with the highest score, as SAHI merges).

Training: :func:`training_tiles` cuts a record into the same tiles with the boxes that fall inside (clipped,
kept when at least ``min_visible`` of their area is inside) - the dataset side of seed 000's "tile your
images" direction; the loader crops ``TileSpec.window`` from the image.
"""

from __future__ import annotations

import time
from dataclasses import dataclass
from typing import Literal

import numpy as np
import torch
from torch import Tensor
from torchvision.ops import batched_nms

from bench.data.records import ImageRecord
from bench.data.transforms import letterbox, resize_stretch
from detectors import Detections, Detector


@dataclass(frozen=True)
class SliceConfig:
    """A sliced-inference setting: tile side, overlap ratio, full-image pass, merge rule and threshold."""

    slice_size: int = 512
    overlap: float = 0.2
    full_image: bool = True
    merge: Literal["nms", "nmm"] = "nms"
    match_metric: Literal["IOU", "IOS"] = "IOS"  # SAHI's default for merging tiles
    match_threshold: float = 0.5
    batch_size: int = 8


def slice_windows(height: int, width: int, config: SliceConfig) -> np.ndarray:
    """``(T, 4)`` int tile windows ``x1, y1, x2, y2`` covering the image (SAHI's layout)."""
    from sahi.slicing import get_slice_bboxes

    size = config.slice_size
    if height <= size and width <= size:
        return np.array([[0, 0, width, height]], dtype=np.int64)
    boxes = get_slice_bboxes(height, width, slice_height=size, slice_width=size, auto_slice_resolution=False,
                             overlap_height_ratio=config.overlap, overlap_width_ratio=config.overlap)
    return np.asarray(boxes, dtype=np.int64).reshape(-1, 4)


def _prepare(model: Detector, crop: Tensor, image_id: int) -> tuple[Tensor, object]:
    spec = model.input_spec
    empty = torch.zeros((0, 4))
    if spec.resize == "letterbox":
        image, _, meta = letterbox(crop, empty, spec.size, spec.pad_value, image_id=image_id)
    else:
        image, _, meta = resize_stretch(crop, empty, spec.size, image_id=image_id)
    return image, meta


@torch.inference_mode()
def sliced_predict(model: Detector, image: Tensor, image_id: int, config: SliceConfig,
                   device: torch.device | str = "cpu") -> tuple[Detections, int]:
    """Detections of one ``(3, H, W)`` image (uint8 or float) in original pixels, and the number of model
    inputs it took (tiles plus the optional full-image pass)."""
    height, width = image.shape[-2:]
    windows = slice_windows(height, width, config)
    crops = [image[:, y1:y2, x1:x2] for x1, y1, x2, y2 in windows.tolist()]
    offsets = [(x1, y1) for x1, y1, _, _ in windows.tolist()]
    if config.full_image and len(windows) > 1:
        crops.append(image)
        offsets.append((0, 0))
    parts: list[Detections] = []
    for lo in range(0, len(crops), config.batch_size):
        prepared = [_prepare(model, c, image_id) for c in crops[lo:lo + config.batch_size]]
        batch = torch.stack([p[0] for p in prepared]).to(device)
        for dets, (dx, dy) in zip(model.predict(batch, [p[1] for p in prepared]),
                                  offsets[lo:lo + config.batch_size], strict=True):
            shift = dets.boxes.new_tensor([dx, dy, dx, dy])
            parts.append(Detections(dets.boxes + shift, dets.scores, dets.labels))
    boxes = torch.cat([p.boxes.float().cpu() for p in parts])
    scores = torch.cat([p.scores.float().cpu() for p in parts])
    labels = torch.cat([p.labels.cpu() for p in parts])
    return merge(boxes, scores, labels, config), len(crops)


def merge(boxes: Tensor, scores: Tensor, labels: Tensor, config: SliceConfig) -> Detections:
    """Per-class NMS or greedy NMM of the union of tile detections."""
    if len(scores) == 0:
        return Detections(boxes, scores, labels)
    if config.merge == "nms" and config.match_metric == "IOU":
        keep = batched_nms(boxes, scores, labels, config.match_threshold)
        return Detections(boxes[keep], scores[keep], labels[keep])
    from sahi.postprocess.combine import batched_greedy_nmm
    from sahi.postprocess.combine import batched_nms as sahi_batched_nms

    table = np.concatenate([boxes.numpy(), scores.numpy()[:, None], labels.numpy()[:, None]], axis=1)
    if config.merge == "nms":
        keep = sahi_batched_nms(table, config.match_metric, config.match_threshold)
        keep = np.asarray(keep, dtype=np.int64)
        return Detections(boxes[keep], scores[keep], labels[keep])
    groups = batched_greedy_nmm(table, config.match_metric, config.match_threshold)
    kept = sorted(groups, key=lambda k: -float(scores[k]))
    out_boxes = torch.stack([torch.cat([boxes[[k, *groups[k]], :2].min(0).values,
                                        boxes[[k, *groups[k]], 2:].max(0).values]) for k in kept])
    index = torch.as_tensor(kept, dtype=torch.int64)
    return Detections(out_boxes, scores[index], labels[index])


@dataclass(frozen=True)
class SlicedRun:
    """Detections of a split under one setting, with its cost."""

    image_id: np.ndarray
    label: np.ndarray
    boxes: np.ndarray
    score: np.ndarray
    inputs_per_image: float
    ms_per_image: float


def predict_images(model: Detector, images: list[tuple[int, Tensor]], config: SliceConfig | None,
                   device: torch.device | str = "cpu") -> SlicedRun:
    """Every image through the model, sliced (``config``) or whole (None), timed end to end (preprocessing,
    tiles, merge) so the latency cost sits beside the accuracy gain."""
    model.eval()
    ids, labels, boxes, scores, inputs = [], [], [], [], 0
    start = time.perf_counter()
    for image_id, image in images:
        if config is None:
            with torch.inference_mode():
                tensor, meta = _prepare(model, image, image_id)
                dets = model.predict(tensor[None].to(device), [meta])[0]
            used = 1
        else:
            dets, used = sliced_predict(model, image, image_id, config, device)
        inputs += used
        ids.append(np.full(len(dets.scores), image_id, dtype=np.int64))
        labels.append(dets.labels.cpu().numpy())
        boxes.append(dets.boxes.float().cpu().numpy().reshape(-1, 4))
        scores.append(dets.scores.float().cpu().numpy())
    seconds = time.perf_counter() - start
    n = max(len(images), 1)

    def cat(parts: list[np.ndarray], shape: tuple[int, ...]) -> np.ndarray:
        return np.concatenate(parts) if parts else np.zeros(shape)

    return SlicedRun(cat(ids, (0,)).astype(np.int64), cat(labels, (0,)).astype(np.int64), cat(boxes, (0, 4)),
                     cat(scores, (0,)), inputs / n, 1000 * seconds / n)


@dataclass(frozen=True)
class TileSpec:
    """One training tile: the crop window of the source image and the ground truth inside, in tile pixels."""

    image_id: int
    window: tuple[int, int, int, int]  # x1, y1, x2, y2 in the source image
    boxes: np.ndarray  # (M, 4) xyxy in tile pixels, clipped to the tile
    labels: np.ndarray  # (M,)


def training_tiles(record: ImageRecord, config: SliceConfig, min_visible: float = 0.5) -> list[TileSpec]:
    """The record cut into SAHI tiles; a box is kept (clipped) in a tile that holds ``min_visible`` of it."""
    tiles = []
    boxes = np.asarray(record.boxes, dtype=np.float64).reshape(-1, 4)
    area = np.clip(boxes[:, 2] - boxes[:, 0], 0, None) * np.clip(boxes[:, 3] - boxes[:, 1], 0, None)
    for x1, y1, x2, y2 in slice_windows(record.height, record.width, config).tolist():
        clipped = np.stack([np.clip(boxes[:, 0], x1, x2), np.clip(boxes[:, 1], y1, y2),
                            np.clip(boxes[:, 2], x1, x2), np.clip(boxes[:, 3], y1, y2)], axis=1)
        inside = (clipped[:, 2] - clipped[:, 0]) * (clipped[:, 3] - clipped[:, 1])
        with np.errstate(divide="ignore", invalid="ignore"):
            keep = (inside > 0) & (inside >= min_visible * np.where(area > 0, area, np.inf))
        tiles.append(TileSpec(record.image_id, (x1, y1, x2, y2), clipped[keep] - [x1, y1, x1, y1],
                              np.asarray(record.labels)[keep]))
    return tiles


def sliced_comparison(model: Detector, dataset: object, images: list[tuple[int, Tensor]], config: SliceConfig,
                      protocol: str = "aitod", device: torch.device | str = "cpu") -> dict:
    """Full-image against sliced inference on the same images: AP per bucket of ``protocol``, its ΔAP, and
    the cost (model inputs per image, end-to-end ms per image). The content of ``sliced.json``."""
    from bench.metrics import DetectionResults, evaluate
    from bench.metrics.small_objects import SmallObjectSettings

    settings = SmallObjectSettings(protocols=(protocol,), nwd=False, tide=False, bootstrap=0)
    out: dict = {"protocol": protocol, "config": {k: getattr(config, k) for k in config.__dataclass_fields__}}
    for name, setting in (("full", None), ("sliced", config)):
        run = predict_images(model, images, setting, device)
        dets = DetectionResults(run.image_id, run.label, run.boxes, run.score)
        result = evaluate(dataset, dets, small_objects=settings)  # type: ignore[arg-type]
        out[name] = {"stats": result.small_objects["protocols"][protocol]["stats"], "AP": result.coco["AP"],
                     "inputs_per_image": run.inputs_per_image, "ms_per_image": run.ms_per_image}
    out["delta"] = {k: (None if v is None or out["full"]["stats"].get(k) is None
                        else v - out["full"]["stats"][k]) for k, v in out["sliced"]["stats"].items()}
    return out
