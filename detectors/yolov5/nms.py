"""YOLOv5 v6.x's ``utils/general.py::non_max_suppression`` on the anchor head's decoded ``(B, N, 5 + nc)``.

Semantics kept: candidates need objectness > ``conf_thres``; a box's class scores become obj x cls; with
``multi_label`` (v5's val.py setting) every class whose obj x cls exceeds ``conf_thres`` gives its own
detection, else only the best class; at most ``max_nms`` = 30,000 boxes (highest scores) enter
``torchvision.ops.nms``, which runs per class by offsetting each class's boxes by ``class x max_wh`` (7,680
px); the first ``max_det`` survivors are kept, best first. Dropped on purpose: v5's wall-clock time limit
(0.3 s + 30 ms per image), which makes the output depend on the machine, and its unused merge-NMS and
auto-labelling branches.
"""

from __future__ import annotations

import torch
from torch import Tensor
from torchvision.ops import box_convert, nms

MAX_WH = 7680  # px: class offset of the batched NMS (v5)
MAX_NMS = 30000  # boxes into torchvision.ops.nms (v5)


def non_max_suppression(prediction: Tensor, conf_thres: float = 0.25, iou_thres: float = 0.45,
                        max_det: int = 300, multi_label: bool = False, agnostic: bool = False,
                        max_nms: int = MAX_NMS, max_wh: float = MAX_WH) -> list[Tensor]:
    """Per image an ``(K, 6)`` tensor of xyxy (input pixels), score, class, best first."""
    if not (0 <= conf_thres <= 1 and 0 <= iou_thres <= 1):
        raise ValueError(f"conf_thres {conf_thres} and iou_thres {iou_thres} must lie in [0, 1]")
    num_classes = prediction.shape[2] - 5
    multi_label = multi_label and num_classes > 1
    output = []
    for x in prediction:
        x = x[x[:, 4] > conf_thres]
        if not len(x):
            output.append(prediction.new_zeros((0, 6)))
            continue
        scores = x[:, 5:] * x[:, 4:5]
        boxes = box_convert(x[:, :4], "cxcywh", "xyxy")
        if multi_label:
            box_idx, cls_idx = (scores > conf_thres).nonzero(as_tuple=True)
            det = torch.cat((boxes[box_idx], scores[box_idx, cls_idx, None], cls_idx[:, None].float()), 1)
        else:
            best, cls_idx = scores.max(1, keepdim=True)
            det = torch.cat((boxes, best, cls_idx.float()), 1)[best.view(-1) > conf_thres]
        if len(det) > max_nms:
            det = det[det[:, 4].argsort(descending=True)[:max_nms]]
        offset = det[:, 5:6] * (0 if agnostic else max_wh)
        keep = nms(det[:, :4] + offset, det[:, 4], iou_thres)[:max_det]
        output.append(det[keep])
    return output
