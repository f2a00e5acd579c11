"""YOLOv5u n/s/m/l/x (``yolov5nu`` ... ``yolov5xu``): ultralytics 8's model, loss and NMS behind ``Detector``.

This is ultralytics' *YOLOv5u*: the YOLOv5 backbone and neck with the anchor-free, decoupled YOLOv8 ``Detect``
head (distribution focal loss, task-aligned assignment), not the anchor-based v6.x release that seed 000
trains (that one is ``yolov5n`` ... ``yolov5x``, ``detectors.yolov5.detector``). The architecture comes from
the yaml packaged with ultralytics, so nothing is downloaded.
"""

from __future__ import annotations

import math
import os
from typing import Any

# Before ultralytics is imported: it decides at import time whether it is online (else it probes DNS).
os.environ.setdefault("YOLO_OFFLINE", "1")

import torch
from torch import Tensor
from torchvision.ops import box_convert
from ultralytics.cfg import get_cfg
from ultralytics.nn.tasks import DetectionModel
from ultralytics.utils import DEFAULT_CFG
from ultralytics.utils.nms import non_max_suppression

from detectors.base import (
    Detections,
    Detector,
    ImageMeta,
    InputSpec,
    PostprocessConfig,
    Target,
)
from detectors.registry import Builder, register
from detectors.yolov5.optim import ultralytics_param_groups

SCALES = ("n", "s", "m", "l", "x")
STRIDE = 32  # coarsest feature stride (P5): the input side must be a multiple of it
# Ultralytics' trainer accumulates gradients up to this nominal batch of a loss multiplied by the batch size,
# so its lr0 acts on a loss this many times larger than the batch-size-independent one returned here.
ULTRALYTICS_NOMINAL_BATCH = 64


class YOLOv5uDetector(Detector):
    """Ultralytics' ``DetectionModel`` built from ``yolov5{scale}.yaml`` for ``num_classes`` classes.

    ``forward`` follows ultralytics' modes: in eval mode it returns the decoded predictions ``(B, 4 + K, A)``
    (xywh in input pixels, then sigmoid class scores; A = 8,400 anchor points at 640), in train mode the raw
    head outputs ``{"boxes", "scores", "feats"}`` that the loss consumes.
    """

    family = "yolov5"
    paper = ("YOLOv5u (ultralytics 8): the YOLOv5 backbone and neck with the anchor-free v8 Detect head, "
             "not the anchor-based YOLOv5 of seed 000")

    def __init__(self, scale: str, num_classes: int, input_size: int = 640,
                 postprocess: PostprocessConfig | None = None):
        if scale not in SCALES:
            raise ValueError(f"unknown YOLOv5 scale {scale!r}; expected one of {', '.join(SCALES)}")
        if input_size <= 0 or input_size % STRIDE:
            raise ValueError(f"YOLOv5 input size must be a positive multiple of {STRIDE}, got {input_size}")
        super().__init__(num_classes, input_size, postprocess)
        self.name = f"yolov5{scale}u"
        self.model = DetectionModel(f"yolov5{scale}.yaml", nc=num_classes, verbose=False)
        # The lazily built v8DetectionLoss reads its gains (box 7.5, cls 0.5, dfl 1.5) from ``model.args``.
        self.model.args = get_cfg(DEFAULT_CFG)

    @property
    def input_spec(self) -> InputSpec:
        return InputSpec(self.input_size, "letterbox", mean=(0.0, 0.0, 0.0), std=(1.0, 1.0, 1.0))

    @property
    def notes(self) -> list[str]:
        return [
            "ultralytics 8 YOLOv5u: YOLOv5 backbone and neck with the anchor-free YOLOv8 Detect head (DFL, "
            "reg_max 16, task-aligned assigner); the seed-000 YOLOv5 is the original anchor-based head.",
            "Loss is ultralytics' v8DetectionLoss (CIoU + DFL boxes, BCE classes, gains 7.5/0.5/1.5) "
            "divided by the batch size; ultralytics' lr0 assumes the loss summed over a nominal batch of "
            f"{ULTRALYTICS_NOMINAL_BATCH}.",
            "NMS is ultralytics' non_max_suppression with multi-label boxes, as in its own validator.",
            "Random initialisation: no pretrained weights are downloaded.",
        ]

    def forward(self, images: Tensor) -> Tensor | dict[str, Tensor | list[Tensor]]:
        out = self.model(images)
        # Eval mode returns (decoded, raw head dict); keep the decoded tensor, which is what NMS needs.
        return out[0] if isinstance(out, tuple) else out

    def loss(self, images: Tensor, targets: list[Target]) -> dict[str, Tensor]:
        """Ultralytics' detection loss divided by the batch size; ``"loss"`` = box + cls + dfl.

        ``v8DetectionLoss`` normalises each term by the batch's total assigned target score (floored at 1) and
        then multiplies by the batch size. Dividing that factor back out makes the loss, and so a good lr,
        independent of the batch size (once the batch's objects carry more than a unit of target score), as
        the SSD loss is. Ultralytics' own SGD recipe (lr0 0.01, weight decay 5e-4, gradients accumulated to a
        nominal batch of 64) is therefore lr 0.64 and weight decay 5e-4 / 64 here; Adam-type optimisers are
        insensitive to the scale, apart from weight decay.
        """
        batch_size, _, height, width = images.shape
        counts = torch.tensor([len(t.labels) for t in targets], device=images.device)
        boxes = torch.cat([t.boxes for t in targets]).to(images.device, torch.float32)
        labels = torch.cat([t.labels for t in targets]).to(images.device)
        batch = {
            "img": images,
            "batch_idx": torch.repeat_interleave(torch.arange(batch_size, device=images.device), counts),
            "cls": labels.view(-1, 1).float(),
            "bboxes": box_convert(boxes, "xyxy", "cxcywh") / boxes.new_tensor([width, height, width, height]),
        }
        criterion = getattr(self.model, "criterion", None)
        if criterion is not None and criterion.device != images.device:
            self.model.criterion = None  # built on another device: let ultralytics rebuild it here
        # ``model.loss`` runs the forward itself and accepts both modes' outputs (eval mode: validation loss).
        summed, _ = self.model.loss(batch)
        terms = summed / batch_size
        box, cls, dfl = terms.detach()
        return {"loss": terms.sum(), "loss_box": box, "loss_cls": cls, "loss_dfl": dfl}

    @torch.no_grad()
    def predict(self, images: Tensor, metas: list[ImageMeta]) -> list[Detections]:
        if self.training:
            raise RuntimeError("YOLOv5uDetector.predict needs eval mode (call model.eval()): in train mode "
                               "ultralytics returns undecoded outputs and BatchNorm uses batch statistics")
        cfg = self.postprocess_config
        # ``pre_nms_topk`` (SSD's per-class cap) has no counterpart: ultralytics keeps 30,000 boxes per image.
        # An unbounded time limit: ultralytics otherwise stops NMS silently after 2 s + 50 ms per image,
        # dropping the remaining images' detections on a slow CPU.
        kept = non_max_suppression(self(images), conf_thres=cfg.score_thresh, iou_thres=cfg.nms_iou,
                                   max_det=cfg.max_detections, multi_label=True, max_time_img=math.inf)
        return [Detections(meta.to_original(k[:, :4]), k[:, 4], k[:, 5].long())
                for k, meta in zip(kept, metas, strict=True)]

    def param_groups(self, weight_decay: float) -> list[dict[str, Any]]:
        """Ultralytics' groups: decayed weights, undecayed BatchNorm weights, undecayed biases ("bias")."""
        return ultralytics_param_groups(self, weight_decay)

    def fuse(self) -> YOLOv5uDetector:
        """Fold BatchNorm into the convs (ultralytics' ``fuse``) for timing and FLOPs; inference only."""
        self.model.fuse(verbose=False)
        return self


def _builder(scale: str) -> Builder:
    def build(num_classes: int, *, input_size: int = 640,
              postprocess: PostprocessConfig | None = None) -> YOLOv5uDetector:
        return YOLOv5uDetector(scale, num_classes, input_size, postprocess)

    return build


for _scale in SCALES:
    register(f"yolov5{_scale}u", family="yolov5", input_size=640)(_builder(_scale))
