"""The anchor-based YOLOv5 v6.x of seed 000 (``yolov5n`` ... ``yolov5x``) behind the ``Detector`` interface.

Seed 000 runs ultralytics/yolov5's ``train.py --cfg yolov5{n,s,m,l,x}.yaml --weights ''``; v6.x is the
release whose yaml files those are (Conv 6x6 stem, SPPF). The network is ``network.AnchorYOLOv5``, the loss
``loss.yolov5_loss``, the post-processing ``nms.non_max_suppression``, AutoAnchor
``autoanchor.check_anchors``.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

import numpy as np
import torch
from torch import Tensor

from detectors.base import Detections, Detector, ImageMeta, InputSpec, PostprocessConfig, Target
from detectors.registry import Builder, register
from detectors.yolov5.autoanchor import AnchorCheck, check_anchors, letterboxed_box_wh
from detectors.yolov5.loss import LossHyp, yolov5_loss
from detectors.yolov5.network import SCALES, AnchorYOLOv5
from detectors.yolov5.nms import MAX_NMS, MAX_WH, non_max_suppression
from detectors.yolov5.optim import ultralytics_param_groups

STRIDE = 32  # coarsest feature stride (P5): the input side must be a multiple of it


class YOLOv5Detector(Detector):
    """One YOLOv5 v6.x scale for ``num_classes`` classes, from random initialisation.

    ``forward`` in train mode returns the three raw head maps ``(B, 3, ny, nx, 5 + K)``; in eval mode the
    decoded ``(B, N, 5 + K)`` (cx, cy, w, h in input pixels, objectness, class scores; N = 25,200 at 640).
    """

    family = "yolov5"
    paper = "YOLOv5 v6.x (Ultralytics, anchor-based), as trained by seed 000"

    def __init__(self, scale: str, num_classes: int, input_size: int = 640,
                 postprocess: PostprocessConfig | None = None, hyp: LossHyp | None = None):
        if scale not in SCALES:
            raise ValueError(f"unknown YOLOv5 scale {scale!r}; expected one of {', '.join(SCALES)}")
        if input_size <= 0 or input_size % STRIDE:
            raise ValueError(f"YOLOv5 input size must be a positive multiple of {STRIDE}, got {input_size}")
        super().__init__(num_classes, input_size, postprocess)
        self.name = f"yolov5{scale}"
        self.hyp = hyp or LossHyp()
        self.model = AnchorYOLOv5(scale, num_classes)

    @property
    def input_spec(self) -> InputSpec:
        # v5 letterboxes with grey 114 and feeds RGB in [0, 1] without mean/std normalisation.
        return InputSpec(self.input_size, "letterbox", mean=(0.0, 0.0, 0.0), std=(1.0, 1.0, 1.0))

    @property
    def num_priors(self) -> int:
        head = self.model.detect
        return head.num_anchors * sum((self.input_size // s) ** 2 for s in head.strides)

    @property
    def notes(self) -> list[str]:
        box, obj, cls = self.hyp.scaled(self.model.detect.num_levels, self.num_classes, self.input_size)
        return [
            "ultralytics/yolov5 v6.x yolov5{n,s,m,l,x}.yaml rebuilt from ultralytics 8's Conv/C3/SPPF/"
            "Concat blocks (parameter counts equal v6.x's summaries); ultralytics 8's SPPF drops the SiLU "
            "after cv1, restored here as in v5.",
            "Anchor-based Detect: 3 anchors per level on P3/P4/P5, (10,13, 16,30, 33,23), (30,61, 62,45, "
            "59,119), (116,90, 156,198, 373,326); xy = 2 sigmoid - 0.5, wh = (2 sigmoid)^2 x anchor; v5's "
            "objectness/class bias prior.",
            f"Loss: v5's ComputeLoss with hyp.scratch-low (anchor_t {self.hyp.anchor_t}, CIoU, objectness "
            f"BCE on the IoU, balance {'/'.join(map(str, self.hyp.balance))}); gains scaled as train.py does "
            f"for {self.num_classes} classes at {self.input_size} px: box {box:.4g}, obj {obj:.4g}, "
            f"cls {cls:.4g}. Returned without v5's x batch size (the batch-mean convention); "
            "loss_reduction 'sum' restores it.",
            "NMS: v5's (objectness > score threshold, multi-label obj x cls, class offset "
            f"{MAX_WH} px, at most {MAX_NMS} boxes into NMS); the score threshold, IoU and detections per "
            "image come from the suite's evaluation protocol, pre_nms_topk is not used, v5's NMS time limit "
            "is dropped (it makes results machine-dependent).",
            "AutoAnchor (check_anchors: refit by k-means + evolution only when BPR <= 0.98) is v5's default "
            "(train.py without --noautoanchor); it runs when the runner calls fit_to_training_boxes().",
            "Random initialisation (--weights ''): nothing is downloaded.",
        ]

    def forward(self, images: Tensor) -> list[Tensor] | Tensor:
        return self.model(images)

    def loss(self, images: Tensor, targets: list[Target]) -> dict[str, Tensor]:
        """v5's loss of the batch without its ``* batch_size``: ``"loss"`` = box + obj + cls.

        Boxes without area are left out (v5's loader never passes them; a negative width would otherwise
        pass the anchor-ratio test).
        """
        raw = self.model.detect.raw_maps(self.model.body(images))  # also in eval mode (validation loss)
        rows = []
        for i, target in enumerate(targets):
            xyxy = target.boxes.to(images.device, torch.float32).reshape(-1, 4)
            index = xyxy.new_full((len(xyxy), 1), float(i))
            label = target.labels.to(images.device, torch.float32).view(-1, 1)
            xywh = torch.cat(((xyxy[:, :2] + xyxy[:, 2:]) / 2, xyxy[:, 2:] - xyxy[:, :2]), 1)
            rows.append(torch.cat((index, label, xywh), 1)[(xywh[:, 2:] > 0).all(1)])
        table = torch.cat(rows) if rows else images.new_zeros((0, 6))
        # The gains scale with the model's input size, as v5 scales them once by --img (multi-scale or not).
        return yolov5_loss(raw, table, self.model.detect.anchors, self.model.detect.strides, self.num_classes,
                           self.input_size, self.hyp)

    @torch.no_grad()
    def predict(self, images: Tensor, metas: list[ImageMeta]) -> list[Detections]:
        if self.training:
            raise RuntimeError("YOLOv5Detector.predict needs eval mode (call model.eval()): in train mode "
                               "the head returns undecoded maps and BatchNorm uses batch statistics")
        cfg = self.postprocess_config
        kept = non_max_suppression(self(images).float(), conf_thres=cfg.score_thresh, iou_thres=cfg.nms_iou,
                                   max_det=cfg.max_detections, multi_label=True)
        return [Detections(meta.to_original(k[:, :4]), k[:, 4], k[:, 5].long())
                for k, meta in zip(kept, metas, strict=True)]

    def param_groups(self, weight_decay: float) -> list[dict[str, Any]]:
        """Ultralytics' groups: decayed weights, undecayed BatchNorm weights, undecayed biases ("bias")."""
        return ultralytics_param_groups(self, weight_decay)

    def autoanchor(self, box_wh: Sequence[np.ndarray], *, seed: int = 0, gen: int = 1000) -> AnchorCheck:
        """v5's ``check_anchors`` on the training boxes' per-image wh at the input size; sets the anchors if
        they were replaced. Run once before training (not on resume: the anchors are in the state dict)."""
        head = self.model.detect
        result = check_anchors(box_wh, head.anchors_pixels().cpu().numpy(), thr=self.hyp.anchor_t,
                               img_size=self.input_size, gen=gen, seed=seed)
        if result.replaced:
            self.set_anchors(result.anchors)
        return result

    def fit_to_training_boxes(self, boxes: Sequence[np.ndarray], image_sizes: Sequence[tuple[int, int]], *,
                              seed: int = 0) -> dict[str, Any]:
        """The runner's hook before training: AutoAnchor on every training image's (non-crowd) xyxy boxes in
        original pixels with its ``(height, width)``; returns what was found and done (for the run folder)."""
        return self.autoanchor(letterboxed_box_wh(boxes, image_sizes, self.input_size), seed=seed).as_dict()

    def set_anchors(self, anchors_px: np.ndarray | Tensor) -> None:
        """Replace the ``(3, 3, 2)`` anchors (input pixels, levels P3-P5, small to large within a level).

        Stored in grid units rounded to fp16 precision, as by v5's ``model.half().float()`` after AutoAnchor.
        """
        head = self.model.detect
        new = torch.as_tensor(np.asarray(anchors_px, dtype=np.float32)).view_as(head.anchors)
        order = new.prod(-1).mean(-1)
        if order[-1] < order[0]:  # v5's check_anchor_order: anchor size must grow with the stride
            new = new.flip(0)
        strides = torch.tensor(head.strides, dtype=torch.float32).view(-1, 1, 1)
        head.anchors.copy_((new / strides).half().float())

    def fuse(self) -> YOLOv5Detector:
        """Fold BatchNorm into the convs (v5's ``fuse``) for timing and FLOPs; inference only."""
        self.model.fuse()
        return self


def _builder(scale: str) -> Builder:
    def build(num_classes: int, *, input_size: int = 640,
              postprocess: PostprocessConfig | None = None) -> YOLOv5Detector:
        return YOLOv5Detector(scale, num_classes, input_size, postprocess)

    return build


for _scale in SCALES:
    register(f"yolov5{_scale}", family="yolov5", input_size=640)(_builder(_scale))
