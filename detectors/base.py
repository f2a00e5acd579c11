"""The one interface every detector adapter implements, and the small value types it speaks.

Division of labour with the data pipeline (``bench.data``): the pipeline does the geometry (resize or
letterbox to ``input_spec.size``, boxes mapped into network-input pixels) and hands over float RGB images in
[0, 1]; the detector does its own normalisation (mean/std, channel order) inside ``forward``, so the same
batch serves every model of a family and exported/fused models stay self-contained.
"""

from __future__ import annotations

from abc import ABC, abstractmethod
from collections.abc import Callable, Iterator, Sequence
from contextlib import contextmanager
from dataclasses import dataclass, field
from typing import Any, ClassVar, Literal

import numpy as np
import torch
from torch import Tensor, nn

# Every BatchNorm flavour (1d/2d/3d, SyncBatchNorm, lazy ones): the one definition the package uses.
BATCH_NORMS: tuple[type[nn.Module], ...] = (nn.modules.batchnorm._BatchNorm,)


@dataclass(frozen=True)
class InputSpec:
    """How images must be prepared for a model: geometry by the pipeline, normalisation by the model."""

    size: int  # square network input side in pixels
    resize: Literal["stretch", "letterbox"]  # SSD stretches to size x size; YOLO letterboxes
    mean: tuple[float, float, float]  # RGB, on the [0, 1] scale, applied inside the model
    std: tuple[float, float, float]
    pad_value: float = 114 / 255  # letterbox fill


@dataclass(frozen=True)
class ImageMeta:
    """Maps network-input pixels back to original-image pixels: ``orig = (net - pad) / scale``."""

    image_id: int
    orig_size: tuple[int, int]  # (height, width) of the original image
    scale: tuple[float, float] = (1.0, 1.0)  # (sy, sx)
    pad: tuple[float, float] = (0.0, 0.0)  # (top, left)
    flipped: bool = False  # horizontal flip applied by augmentation (never at evaluation)

    def to_original(self, boxes: Tensor) -> Tensor:
        """Map ``(N, 4)`` xyxy boxes from network input to original pixels, clipped to the image."""
        sy, sx = self.scale
        top, left = self.pad
        offset = boxes.new_tensor([left, top, left, top])
        scale = boxes.new_tensor([sx, sy, sx, sy])
        out = (boxes - offset) / scale
        h, w = self.orig_size
        out[:, 0::2] = out[:, 0::2].clamp(0, w)
        out[:, 1::2] = out[:, 1::2].clamp(0, h)
        return out


@dataclass
class Target:
    """Ground truth of one image in network-input pixels (xyxy) with 0-based class indices."""

    boxes: Tensor  # (M, 4) float
    labels: Tensor  # (M,) int64 in [0, num_classes)

    def to(self, device: torch.device | str, non_blocking: bool = False) -> Target:
        return Target(self.boxes.to(device, non_blocking=non_blocking),
                      self.labels.to(device, non_blocking=non_blocking))

    def pin_memory(self) -> Target:
        """Called by ``DataLoader(pin_memory=True)``, so targets too are copied with ``non_blocking=True``."""
        return Target(self.boxes.pin_memory(), self.labels.pin_memory())


@dataclass
class Detections:
    """Predictions for one image, in original-image pixels, best first."""

    boxes: Tensor  # (K, 4) xyxy
    scores: Tensor  # (K,)
    labels: Tensor  # (K,) int64, 0-based class index (background excluded)


@dataclass(frozen=True)
class PostprocessConfig:
    """Score threshold, NMS IoU and detections per image; the defaults are SSD's evaluation settings."""

    score_thresh: float = 0.01
    nms_iou: float = 0.45
    max_detections: int = 200
    pre_nms_topk: int = 400  # per class, before NMS


@dataclass
class ModelInfo:
    """Static metadata reported by ``python -m detectors list`` and in every report."""

    name: str
    family: str  # "ssd" or "yolov5"
    paper: str
    input_size: int
    num_classes: int
    params: int
    priors: int | None  # None for anchor-free models
    notes: list[str] = field(default_factory=list)  # design choices where the paper is ambiguous


_replica_mean: Callable[[Tensor], Tensor] | None = None  # installed by the trainer under DDP


def mean_over_replicas(value: Tensor) -> Tensor:
    """The mean of ``value`` over the data-parallel processes; ``value`` itself in a single process.

    For loss normalisers (the number of positives, a target-score sum): a loss that divides its rank-local sum
    by ``mean_over_replicas(count)`` gives, after DDP's gradient average, the gradient of sum(L) / sum(N) over
    the global batch, as in one process, instead of the mean of the ranks' L_r / N_r (mmdet's
    ``reduce_mean``).
    The result carries no gradient. Every rank must call it the same number of times per step.
    """
    if _replica_mean is None:
        return value.detach()
    return _replica_mean(value.detach())


@contextmanager
def replica_mean(reduce: Callable[[Tensor], Tensor] | None) -> Iterator[None]:
    """Install ``reduce`` (an all-reduce mean) as ``mean_over_replicas`` while a training stage runs."""
    global _replica_mean
    previous, _replica_mean = _replica_mean, reduce
    try:
        yield
    finally:
        _replica_mean = previous


class Detector(nn.Module, ABC):
    """Base class of every adapter.

    ``forward(images)`` returns the raw network outputs (what FLOPs and the ``model`` speed protocol time);
    ``loss`` and ``predict`` are what the runner calls.
    """

    name: str = "detector"
    family: str = "unknown"
    paper: str = ""
    # Buffers (by attribute name, e.g. "priors") that stay fp32 when the speed harness times the model in
    # half precision (``bench.speed``): box decoding and normalisation constants lose too much in fp16.
    fp32_buffers: ClassVar[tuple[str, ...]] = ()

    def __init__(self, num_classes: int, input_size: int, postprocess: PostprocessConfig | None = None):
        super().__init__()
        self.num_classes = num_classes
        self.input_size = input_size
        self.postprocess_config = postprocess or PostprocessConfig()

    @property
    @abstractmethod
    def input_spec(self) -> InputSpec: ...

    @abstractmethod
    def loss(self, images: Tensor, targets: list[Target]) -> dict[str, Tensor]:
        """Training losses on a batch of ``(B, 3, S, S)`` images in [0, 1]; key ``"loss"`` is the total."""

    @abstractmethod
    def predict(self, images: Tensor, metas: list[ImageMeta]) -> list[Detections]:
        """Post-processed detections per image, mapped to original-image pixels through ``metas``."""

    @property
    def num_priors(self) -> int | None:
        return None

    def param_groups(self, weight_decay: float) -> list[dict[str, Any]]:
        """The optimizer's parameter groups: one group of every trainable parameter by default.

        An adapter that follows a recipe with per-group settings overrides it (YOLOv5: ultralytics' three
        groups, BatchNorm weights and biases without decay). A group whose ``"kind"`` is ``"bias"`` gets the
        recipe's ``warmup_bias_lr`` during warm-up (``bench.training.schedule``).
        """
        return [{"params": [p for p in self.parameters() if p.requires_grad], "weight_decay": weight_decay,
                 "kind": "all"}]

    @property
    def notes(self) -> list[str]:
        """Choices made where the paper is ambiguous, shown beside the model in reports."""
        return []

    def fit_to_training_boxes(self, boxes: Sequence[np.ndarray], image_sizes: Sequence[tuple[int, int]], *,
                              seed: int = 0) -> dict[str, Any] | None:
        """Adapt data-dependent priors to the training set once, before training (never on resume: what it
        sets must live in the state dict). ``boxes``: each training image's non-crowd xyxy boxes in original
        pixels; ``image_sizes``: its ``(height, width)``. Returns what was found and done (the runner writes
        it to ``autoanchor.json``), or ``None`` when the model has nothing to fit (the default).
        YOLOv5's anchor-based adapter runs v5's AutoAnchor here."""
        return None

    def info(self) -> ModelInfo:
        from detectors.complexity import count_params  # late: complexity imports thop

        return ModelInfo(self.name, self.family, self.paper, self.input_size, self.num_classes,
                         count_params(self), self.num_priors, list(self.notes))
