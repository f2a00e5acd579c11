"""A tiny registered ``Detector`` for the runner's tests: trains in milliseconds, and can fail on purpose.

``tiny_fake`` learns each image's first box and label from a global-pooled feature; ``tiny_nan`` returns a NaN
loss and ``tiny_raise`` raises, to exercise the runner's fault handling.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from detectors import Detections, Detector, ImageMeta, InputSpec, PostprocessConfig, Target, register
from detectors.registry import model_names


class TinyDetector(Detector):
    family = "ssd"
    paper = "test double"

    def __init__(self, num_classes: int, input_size: int = 64, postprocess: PostprocessConfig | None = None,
                 failure: str | None = None):
        super().__init__(num_classes, input_size, postprocess)
        self.failure = failure
        # No BatchNorm: DDP then averages exactly the full batch's gradient (tested in test_ddp.py).
        self.body = nn.Sequential(nn.Conv2d(3, 8, 3, stride=4, padding=1), nn.ReLU(), nn.AdaptiveAvgPool2d(1),
                                  nn.Flatten())
        self.box = nn.Linear(8, 4)
        self.cls = nn.Linear(8, num_classes)

    @property
    def input_spec(self) -> InputSpec:
        return InputSpec(self.input_size, "stretch", (0.5, 0.5, 0.5), (0.25, 0.25, 0.25))

    def forward(self, images: Tensor) -> tuple[Tensor, Tensor]:
        features = self.body((images - 0.5) / 0.25)
        xy = self.box(features).sigmoid() * self.input_size
        boxes = torch.cat([xy[:, :2].minimum(xy[:, 2:]), xy[:, :2].maximum(xy[:, 2:]) + 1], dim=1)
        return boxes, self.cls(features)

    def loss(self, images: Tensor, targets: list[Target]) -> dict[str, Tensor]:
        if self.failure == "raise":
            raise RuntimeError("tiny_raise fails on purpose")
        boxes, logits = self(images)
        whole = images.new_tensor([0.0, 0.0, self.input_size, self.input_size])
        gt_boxes = torch.stack([t.boxes[0] if len(t.boxes) else whole for t in targets])
        gt_labels = torch.stack([t.labels[0] if len(t.labels) else t.labels.new_tensor(0) for t in targets])
        loss_box = F.smooth_l1_loss(boxes / self.input_size, gt_boxes / self.input_size)
        loss_cls = F.cross_entropy(logits, gt_labels)
        loss = loss_box + loss_cls
        if self.failure == "nan":
            loss = loss * float("nan")
        return {"loss": loss, "loss_box": loss_box, "loss_cls": loss_cls}

    def predict(self, images: Tensor, metas: list[ImageMeta]) -> list[Detections]:
        boxes, logits = self(images)
        scores = logits.softmax(dim=1)
        labels = torch.arange(self.num_classes)
        return [Detections(meta.to_original(box.expand(self.num_classes, 4).clone()), score, labels)
                for box, score, meta in zip(boxes, scores, metas, strict=True)]


def _builder(failure: str | None):
    def build(num_classes: int, *, postprocess: PostprocessConfig | None = None, **_ignored) -> Detector:
        return TinyDetector(num_classes, 64, postprocess, failure)

    return build


for _name, _failure in (("tiny_fake", None), ("tiny_nan", "nan"), ("tiny_raise", "raise")):
    if _name not in model_names():
        register(_name, family="ssd", input_size=64)(_builder(_failure))
