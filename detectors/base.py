"""The one interface every detector adapter implements, and the small value types it speaks.

Division of labour with the data pipeline (``bench.data``): the pipeline does the geometry (resize or
letterbox to ``protocol.size``, boxes mapped into network-input pixels) and hands over float RGB images in
[0, 1]; the detector does its own normalisation (mean/std, channel order) inside ``forward``, so the same
batch serves every model of a family and exported/fused models stay self-contained.
"""

from __future__ import annotations

from abc import ABC, abstractmethod
from dataclasses import dataclass, field
from typing import Literal

import torch
from torch import Tensor, nn


@dataclass(frozen=True)
class InputProtocol:
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

    def to(self, device: torch.device | str) -> Target:
        return Target(self.boxes.to(device), self.labels.to(device))


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


class Detector(nn.Module, ABC):
    """Base class of every adapter.

    ``forward(images)`` returns the raw network outputs (what FLOPs and the ``model`` speed protocol time);
    ``loss`` and ``predict`` are what the runner calls.
    """

    name: str = "detector"
    family: str = "unknown"
    paper: str = ""

    def __init__(self, num_classes: int, input_size: int, postprocess: PostprocessConfig | None = None):
        super().__init__()
        self.num_classes = num_classes
        self.input_size = input_size
        self.postprocess_config = postprocess or PostprocessConfig()

    @property
    @abstractmethod
    def protocol(self) -> InputProtocol: ...

    @abstractmethod
    def loss(self, images: Tensor, targets: list[Target]) -> dict[str, Tensor]:
        """Training losses on a batch of ``(B, 3, S, S)`` images in [0, 1]; key ``"loss"`` is the total."""

    @abstractmethod
    def predict(self, images: Tensor, metas: list[ImageMeta]) -> list[Detections]:
        """Post-processed detections per image, mapped to original-image pixels through ``metas``."""

    @property
    def num_priors(self) -> int | None:
        return None

    @property
    def notes(self) -> list[str]:
        """Choices made where the paper is ambiguous, shown beside the model in reports."""
        return []

    def info(self) -> ModelInfo:
        from detectors.complexity import count_params  # late: complexity imports thop

        return ModelInfo(self.name, self.family, self.paper, self.input_size, self.num_classes,
                         count_params(self), self.num_priors, list(self.notes))
