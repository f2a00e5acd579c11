"""SSD box coding: ground-truth boxes as (cx, cy, w, h) offsets from priors, scaled by the variances.

Same maths as torchvision's ``det_utils.BoxCoder(weights=(10, 10, 5, 5))``, written here because that
coder works on 2-D xyxy anchors (``encode_single``/``decode_single``), while SSD priors are centre-form and
shared by the whole batch: broadcasting ``(B, P, 4)`` against ``(P, 4)`` avoids expanding and re-converting
the priors on every call.
"""

from __future__ import annotations

import torch
from torch import Tensor
from torchvision.ops import box_convert


class SSDBoxCoder:
    """Between normalised xyxy boxes and SSD regression targets (Liu et al. 2016, eq. 2)."""

    def __init__(self, variances: tuple[float, float] = (0.1, 0.2)):
        self.center_variance, self.size_variance = variances

    def encode(self, boxes: Tensor, priors: Tensor) -> Tensor:
        """xyxy ``boxes (..., 4)`` and cxcywh ``priors`` broadcastable to them -> offsets ``(..., 4)``."""
        cxcywh = box_convert(boxes, "xyxy", "cxcywh")
        centre = (cxcywh[..., :2] - priors[..., :2]) / (priors[..., 2:] * self.center_variance)
        size = torch.log(cxcywh[..., 2:] / priors[..., 2:]) / self.size_variance
        return torch.cat([centre, size], dim=-1)

    def decode(self, offsets: Tensor, priors: Tensor) -> Tensor:
        """Offsets ``(..., 4)`` and cxcywh ``priors`` broadcastable to them -> xyxy boxes ``(..., 4)``."""
        centre = priors[..., :2] + offsets[..., :2] * self.center_variance * priors[..., 2:]
        size = priors[..., 2:] * torch.exp(offsets[..., 2:] * self.size_variance)
        return box_convert(torch.cat([centre, size], dim=-1), "cxcywh", "xyxy")
