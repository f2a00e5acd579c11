"""YOLOv5 v6.x's loss (``utils/loss.py::ComputeLoss``) with ``hyp.scratch-low.yaml``'s gains, batch-mean.

Target assignment (``build_targets``): at every level a target is matched to each anchor whose width and
height ratios to it (and their inverses) all stay under ``anchor_t`` = 4; each match predicts from its own
cell and from the (up to) two neighbouring cells whose border is nearest the centre (offset g = 0.5), so a
centre within half a cell of a border is also learnt by the cell across it. Boxes regress with CIoU (the
ultralytics ``bbox_iou(CIoU=True)`` that v5's is; the only numerical difference is that v5 adds 1e-7 to the
heights inside the aspect-ratio arctangent), objectness is BCE towards the detached, clamped IoU (gr = 1) with
per-level balance 4.0 / 1.0 / 0.4, classes are BCE on one-hot targets (skipped for one class, as in v5).

v5 returns ``(lbox + lobj + lcls) * batch_size``; this returns the unscaled sum (the batch-mean convention of
every ``Detector.loss``), and the runner's ``loss_reduction = "sum"`` multiplies the batch back in.
"""

from __future__ import annotations

from dataclasses import dataclass

import torch
import torch.nn.functional as F
from torch import Tensor
from ultralytics.utils.metrics import bbox_iou

# Neighbour offsets in cells, times g = 0.5: own cell, then left, up, right, down neighbour (v5's j, k, l, m).
_NEIGHBOURS = torch.tensor([[0, 0], [1, 0], [0, 1], [-1, 0], [0, -1]], dtype=torch.float32) * 0.5


@dataclass(frozen=True)
class LossHyp:
    """``hyp.scratch-low.yaml`` (v6.x's default for training from scratch), before train.py's scaling."""

    box: float = 0.05
    obj: float = 1.0
    cls: float = 0.5
    cls_pw: float = 1.0
    obj_pw: float = 1.0
    anchor_t: float = 4.0
    label_smoothing: float = 0.0
    balance: tuple[float, ...] = (4.0, 1.0, 0.4)  # P3, P4, P5

    def scaled(self, num_levels: int, num_classes: int, image_size: int) -> tuple[float, float, float]:
        """train.py's gains: box x 3/nl, cls x nc/80 x 3/nl, obj x (imgsz/640)^2 x 3/nl."""
        layers = 3 / num_levels
        return (self.box * layers, self.obj * (image_size / 640) ** 2 * layers,
                self.cls * num_classes / 80 * layers)


@dataclass
class LevelTargets:
    """The assignments of one level: which prediction (image, anchor, row, column) learns which box."""

    image: Tensor
    anchor: Tensor
    row: Tensor
    col: Tensor
    box: Tensor  # (n, 4) xywh in cells, xy relative to the assigned cell's corner
    anchor_wh: Tensor  # (n, 2) the assigned anchor in cells
    label: Tensor  # (n,) class index


def build_targets(targets: Tensor, anchors: Tensor, grids: list[tuple[int, int]], strides: tuple[int, ...],
                  anchor_t: float) -> list[LevelTargets]:
    """v5's assignment. ``targets`` is ``(T, 6)``: image index, class, cx, cy, w, h in input pixels.

    ``anchors`` is ``(nl, na, 2)`` in cells of each level, ``grids`` the ``(ny, nx)`` of each level. The order
    of the assignments (offset-major, then anchor, then target) is v5's, which decides the objectness target
    where two assignments land on the same prediction (the later one wins, as in v5's indexed assignment).
    """
    out = []
    neighbours = _NEIGHBOURS.to(targets.device)
    for level, ((ny, nx), stride) in enumerate(zip(grids, strides, strict=True)):
        level_anchors = anchors[level]
        t = targets.new_zeros((0, 6))
        anchor_idx = torch.zeros(0, dtype=torch.long, device=targets.device)
        offsets = targets.new_zeros((0, 2))
        if len(targets):
            xywh = targets[:, 2:6] / stride
            ratio = xywh[None, :, 2:4] / level_anchors[:, None]  # (na, T, 2)
            matched = torch.max(ratio, 1 / ratio).amax(2) < anchor_t  # (na, T)
            anchor_idx, target_idx = matched.nonzero(as_tuple=True)
            t = torch.cat((targets[target_idx, :2], xywh[target_idx]), 1)
            gxy = t[:, 2:4]
            gxi = gxy.new_tensor([nx, ny]) - gxy
            near_low = ((gxy % 1 < 0.5) & (gxy > 1)).T  # left neighbour (x), upper neighbour (y)
            near_high = ((gxi % 1 < 0.5) & (gxi > 1)).T  # right neighbour (x), lower neighbour (y)
            use = torch.stack((torch.ones_like(near_low[0]), *near_low, *near_high))  # (5, n)
            t = t.repeat(5, 1, 1)[use]
            anchor_idx = anchor_idx.repeat(5, 1)[use]
            offsets = neighbours[:, None].expand(5, len(gxy), 2)[use]
        cells = (t[:, 2:4] - offsets).long()
        cells[:, 0].clamp_(0, nx - 1)
        cells[:, 1].clamp_(0, ny - 1)
        out.append(LevelTargets(
            image=t[:, 0].long(), anchor=anchor_idx, row=cells[:, 1], col=cells[:, 0],
            box=torch.cat((t[:, 2:4] - cells, t[:, 4:6]), 1),
            anchor_wh=level_anchors[anchor_idx], label=t[:, 1].long()))
    return out


def yolov5_loss(raw: list[Tensor], targets: Tensor, anchors: Tensor, strides: tuple[int, ...],
                num_classes: int, image_size: int, hyp: LossHyp | None = None) -> dict[str, Tensor]:
    """``raw``: the head's train-mode maps ``(B, na, ny, nx, 5 + nc)``; ``targets`` as in ``build_targets``.

    Returns ``loss`` = box + obj + cls (gains applied; batch-mean, i.e. v5's value divided by the batch size).
    """
    hyp = hyp or LossHyp()
    box_gain, obj_gain, cls_gain = hyp.scaled(len(raw), num_classes, image_size)
    device = raw[0].device
    cls_pos_weight = torch.tensor([hyp.cls_pw], device=device)
    obj_pos_weight = torch.tensor([hyp.obj_pw], device=device)
    positive, negative = 1.0 - 0.5 * hyp.label_smoothing, 0.5 * hyp.label_smoothing  # v5's smooth_BCE
    grids = [(p.shape[2], p.shape[3]) for p in raw]
    assigned = build_targets(targets.to(device, torch.float32), anchors.float(), grids, strides, hyp.anchor_t)
    lbox = torch.zeros((), device=device)
    lobj = torch.zeros((), device=device)
    lcls = torch.zeros((), device=device)
    for level, (pred, tg) in enumerate(zip(raw, assigned, strict=True)):
        pred = pred.float()
        tobj = torch.zeros(pred.shape[:4], device=device)
        n = len(tg.image)
        if n:
            picked = pred[tg.image, tg.anchor, tg.row, tg.col]  # (n, 5 + nc)
            pxy = picked[:, :2].sigmoid() * 2 - 0.5
            pwh = (picked[:, 2:4].sigmoid() * 2) ** 2 * tg.anchor_wh
            iou = bbox_iou(torch.cat((pxy, pwh), 1), tg.box, CIoU=True).squeeze(-1)
            lbox = lbox + (1.0 - iou).mean()
            tobj[tg.image, tg.anchor, tg.row, tg.col] = iou.detach().clamp(0)  # gr = 1: the IoU itself
            if num_classes > 1:
                onehot = torch.full_like(picked[:, 5:], negative)
                onehot[torch.arange(n, device=device), tg.label] = positive
                lcls = lcls + F.binary_cross_entropy_with_logits(picked[:, 5:], onehot,
                                                                 pos_weight=cls_pos_weight)
        level_obj = F.binary_cross_entropy_with_logits(pred[..., 4], tobj, pos_weight=obj_pos_weight)
        lobj = lobj + level_obj * hyp.balance[level]
    lbox, lobj, lcls = lbox * box_gain, lobj * obj_gain, lcls * cls_gain
    return {"loss": lbox + lobj + lcls, "loss_box": lbox.detach(), "loss_obj": lobj.detach(),
            "loss_cls": lcls.detach()}
