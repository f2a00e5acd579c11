"""What the GPU checks share: model builds without downloads, synthetic small-object batches, timing."""

from __future__ import annotations

import dataclasses
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

import torch
from torch import Tensor

from detectors import Detector, ImageMeta, Target, build_model, model_spec

REPO_ROOT = Path(__file__).resolve().parents[2]
NUM_CLASSES = 20
# One model per family: SSD, YOLOv5 with anchors (the original), YOLOv5u (ultralytics' anchor-free head).
FAMILY_MODELS = (("SSD", "ssd300"), ("YOLOv5 anchor-based", "yolov5n"), ("YOLOv5u", "yolov5nu"))


def build(name: str, device: torch.device, input_size: int | None = None,
          num_classes: int = NUM_CLASSES, seed: int = 0) -> Detector:
    """Random initial weights (never a download), the model's declared options only."""
    options = model_spec(name).options
    kwargs: dict[str, Any] = {}
    if "pretrained_backbone" in options:
        kwargs["pretrained_backbone"] = False
    if input_size is not None and "input_size" in options:
        kwargs["input_size"] = input_size
    torch.manual_seed(seed)
    return build_model(name, num_classes, **kwargs).to(device)


def input_size(name: str, ctx_quick: bool) -> int | None:
    """YOLO at 320 (the suites' size) or 64 in the dry run; SSD at its architecture's native size."""
    return (64 if ctx_quick else 320) if model_spec(name).family == "yolov5" else None


def random_targets(batch: int, size: int, num_classes: int, generator: torch.Generator) -> list[Target]:
    """1 to 5 small boxes (2-12 % of the side) per image, in input pixels."""
    targets = []
    for i in range(batch):
        n = 1 + i % 5
        xy = torch.rand(n, 2, generator=generator) * size * 0.85
        wh = size * (0.02 + 0.10 * torch.rand(n, 2, generator=generator))
        boxes = torch.cat([xy, (xy + wh).clamp(max=size - 1)], dim=1)
        targets.append(Target(boxes, torch.randint(0, num_classes, (n,), generator=generator)))
    return targets


def synthetic_batch(batch: int, size: int, device: torch.device, num_classes: int = NUM_CLASSES,
                    seed: int = 0) -> tuple[Tensor, list[Target]]:
    generator = torch.Generator().manual_seed(seed)
    images = torch.rand(batch, 3, size, size, generator=generator)
    targets = random_targets(batch, size, num_classes, generator)
    return images.to(device), [t.to(device) for t in targets]


class SyntheticSet:
    """An ``EpochDataset`` of random images with small boxes; item ``i`` of epoch ``e`` is fixed by (e, i)."""

    def __init__(self, n: int, size: int, num_classes: int = NUM_CLASSES) -> None:
        self.n, self.size, self.num_classes, self.epoch = n, size, num_classes, 0

    def set_epoch(self, epoch: int) -> None:
        self.epoch = epoch

    def __len__(self) -> int:
        return self.n

    def __getitem__(self, index: int) -> tuple[Tensor, Target, ImageMeta]:
        generator = torch.Generator().manual_seed(10_007 * self.epoch + index)
        image = torch.rand(3, self.size, self.size, generator=generator)
        (target,) = random_targets(1, self.size, self.num_classes, generator)
        return image, target, ImageMeta(index + 1, (self.size, self.size))


def collate(items: list[Any]) -> tuple[Tensor, list[Target], list[ImageMeta]]:
    images, targets, metas = zip(*items, strict=True)
    return torch.stack(images), list(targets), list(metas)


def single_process(device: torch.device) -> Any:
    from bench.distributed import DistContext

    return DistContext(rank=0, world_size=1, local_rank=0, device=device)


def recipe(**changes: Any) -> Any:
    """The smoke suite's recipe with ``changes``: every other field keeps the suites' defaults."""
    from bench.suite.spec import load_suite

    return dataclasses.replace(load_suite("smoke").recipe, **changes)


def timed_seconds(step: Callable[[], object], device: torch.device, repeats: int) -> float:
    """Wall seconds of ``repeats`` calls of ``step``, device work included (CUDA events around them)."""
    if device.type != "cuda":
        start = time.perf_counter()
        for _ in range(repeats):
            step()
        return time.perf_counter() - start
    begin, end = torch.cuda.Event(enable_timing=True), torch.cuda.Event(enable_timing=True)
    torch.cuda.synchronize(device)
    begin.record()
    for _ in range(repeats):
        step()
    end.record()
    end.synchronize()
    return begin.elapsed_time(end) / 1000.0


def train_step(model: Detector, images: Tensor, targets: list[Target],
               optimizer: torch.optim.Optimizer | None,
               scaler: torch.amp.GradScaler | None,
               amp: bool) -> float:
    """One forward, backward (and optimizer step when given) under fp16 autocast when ``amp``."""
    with torch.autocast(images.device.type, dtype=torch.float16, enabled=amp):
        loss = model.loss(images, targets)["loss"]
    if scaler is not None:
        scaler.scale(loss).backward()
    else:
        loss.backward()
    if optimizer is not None:
        if scaler is not None:
            scaler.step(optimizer)
            scaler.update()
        else:
            optimizer.step()
        optimizer.zero_grad(set_to_none=True)
    else:
        model.zero_grad(set_to_none=True)
    return float(loss.detach())
