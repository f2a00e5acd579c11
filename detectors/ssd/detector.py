"""An SSD-family detector is a feature extractor plus the shared head, priors, loss and post-processing.

Every variant (SSD300/512, FSSD, MFSSD, MDSSD, DF-SSD) is an instance of ``SSDDetector`` that differs only
in ``features`` (a module returning the prediction maps, finest first, with ``out_channels``) and its prior
levels.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from typing import ClassVar

import torch
from torch import Tensor, nn

from detectors.base import Detections, Detector, ImageMeta, InputSpec, PostprocessConfig, Target
from detectors.ssd.head import SSDHead
from detectors.ssd.loss import MultiBoxLoss
from detectors.ssd.postprocess import SSDPostprocess
from detectors.ssd.priors import PriorLevel, generate_priors

# torchvision's ImageNet normalisation, which its IMAGENET1K_V1 VGG16 and VGG16-BN weights were trained with.
# The original SSD used Caffe's 0-255 mean subtraction for Caffe weights; with unit-scale inputs a randomly
# initialised VGG16 also trains (on the 0-255 scale it diverges at lr 1e-3), and one normalisation serves the
# plain and the BN body alike.
IMAGENET_MEAN = (0.485, 0.456, 0.406)
IMAGENET_STD = (0.229, 0.224, 0.225)
_LOW_PRECISION = (torch.float16, torch.bfloat16)


class SSDDetector(Detector):
    """``features`` -> SSD head; ``prediction_maps`` (indices into the features' maps) keeps a subset.

    A map left out of ``prediction_maps`` gets no head. Its layers may still feed later maps (SSD's extras)
    or be left without any use (a fusion branch feeding only that map): such outputs enter the computation
    multiplied by zero, so every parameter takes part in backward (DDP requires it) and the predictions are
    exactly those of the kept maps.
    """

    family = "ssd"
    # Box decoding and input normalisation lose too much in fp16 (prior centres 1/300 apart, std ~0.22):
    # ``half()`` and ``to(float16)`` leave these buffers in fp32 (``_apply``), and ``bench.speed`` too.
    fp32_buffers: ClassVar[tuple[str, ...]] = ("priors", "mean", "std")

    def __init__(self, features: nn.Module, levels: list[PriorLevel], num_classes: int, input_size: int, *,
                 paper: str, notes: list[str] | None = None, clip_priors: bool = False,
                 variances: tuple[float, float] = (0.1, 0.2), postprocess: PostprocessConfig | None = None,
                 prediction_maps: Sequence[int] | None = None):
        super().__init__(num_classes, input_size, postprocess)
        self.paper = paper
        self._notes = list(notes or [])
        self.levels = list(levels)
        self.features = features
        channels = list(features.out_channels)
        self.prediction_maps = list(range(len(channels)) if prediction_maps is None else prediction_maps)
        if len(self.prediction_maps) != len(levels):
            raise ValueError(f"{len(levels)} prior levels for {len(self.prediction_maps)} prediction maps")
        boxes_per_location = [lv.boxes_per_location for lv in levels]
        self.head = SSDHead([channels[i] for i in self.prediction_maps], boxes_per_location, num_classes + 1)
        priors = generate_priors(self.levels, input_size, clip_priors)
        self.register_buffer("priors", priors, persistent=False)
        self.register_buffer("mean", torch.tensor(IMAGENET_MEAN).view(1, 3, 1, 1), persistent=False)
        self.register_buffer("std", torch.tensor(IMAGENET_STD).view(1, 3, 1, 1), persistent=False)
        self.criterion = MultiBoxLoss(variances=variances)
        self.postprocess = SSDPostprocess(variances=variances)

    @property
    def input_spec(self) -> InputSpec:
        return InputSpec(self.input_size, "stretch", IMAGENET_MEAN, IMAGENET_STD)

    @property
    def num_priors(self) -> int:
        return int(self.priors.shape[0])

    @property
    def notes(self) -> list[str]:
        return self._notes

    def _apply(self, fn: Callable[[Tensor], Tensor], recurse: bool = True) -> SSDDetector:
        super()._apply(fn, recurse)
        for name in self.fp32_buffers:  # a half-precision copy keeps its priors and normalisation in fp32
            buffer = self._buffers.get(name)
            if buffer is not None and buffer.dtype in _LOW_PRECISION:
                self._buffers[name] = buffer.float()
        return self

    def forward(self, images: Tensor) -> tuple[Tensor, Tensor]:
        """``(B, 3, S, S)`` RGB in [0, 1] -> box offsets ``(B, P, 4)`` and class logits ``(B, P, C + 1)``."""
        x = ((images.to(self.mean.dtype) - self.mean) / self.std).to(images.dtype)  # normalised in fp32
        maps = self.features(x)
        if self.prediction_maps == list(range(len(maps))):
            return self.head(maps)
        kept = [maps[i] for i in self.prediction_maps]
        unused = [m for i, m in enumerate(maps) if i not in self.prediction_maps]
        tie = sum(m.float().mean() for m in unused) * 0.0  # see the class docstring
        return self.head([kept[0] + tie.to(kept[0].dtype), *kept[1:]])

    def loss(self, images: Tensor, targets: list[Target]) -> dict[str, Tensor]:
        loc, conf = self(images)
        size = float(self.input_size)
        normalised = [Target(t.boxes / size, t.labels) for t in targets]
        return self.criterion(loc, conf, self.priors, normalised)

    def predict(self, images: Tensor, metas: list[ImageMeta]) -> list[Detections]:
        loc, conf = self(images)
        results = self.postprocess(loc, conf, self.priors, self.postprocess_config)
        size = float(self.input_size)
        return [Detections(meta.to_original(d.boxes * size), d.scores, d.labels)
                for d, meta in zip(results, metas, strict=True)]
