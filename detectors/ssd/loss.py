"""SSD's MultiBox loss: Smooth-L1 on matched priors plus softmax cross-entropy with 3:1 hard negatives."""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import Tensor

from detectors.base import Target, mean_over_replicas
from detectors.ssd.box_coder import SSDBoxCoder
from detectors.ssd.matcher import match_priors, pad_targets


class MultiBoxLoss:
    """Liu et al. 2016 eq. 1 with α = 1: ``(L_loc + L_conf) / N``, ``N`` the number of positives in the batch.

    Negatives are the background priors with the highest classification loss, at most ``neg_pos_ratio`` per
    positive of the same image (amdegroot, lufficc, Caffe ``MAX_NEGATIVE``). Mining ranks all images at once
    with one sort; nothing loops over images.

    The loss is computed in fp32 whatever the head's dtype (under AMP an fp16 ``N`` rounds above 2,048
    positives and overflows above 65,504). Under DDP, ``N`` is the mean positive count over the processes
    (``detectors.base.mean_over_replicas``), so after DDP's gradient average the update is that of
    ``sum(L) / sum(N)`` over the global batch, independent of the number of GPUs.
    """

    def __init__(self, variances: tuple[float, float] = (0.1, 0.2), iou_threshold: float = 0.5,
                 neg_pos_ratio: int = 3):
        self.coder = SSDBoxCoder(variances)
        self.iou_threshold = iou_threshold
        self.neg_pos_ratio = neg_pos_ratio

    def __call__(self, loc: Tensor, conf: Tensor, priors: Tensor, targets: list[Target]) -> dict[str, Tensor]:
        """``loc (B, P, 4)``, ``conf (B, P, C + 1)``, cxcywh ``priors (P, 4)``, targets scaled to [0, 1]."""
        with torch.no_grad():
            matched = match_priors(priors, pad_targets(targets), self.iou_threshold)
        loc, conf = loc.float(), conf.float()
        positive = matched.labels > 0  # (B, P)
        num_pos = positive.sum()

        anchors = priors.expand_as(loc)[positive]
        regression = self.coder.encode(matched.boxes[positive], anchors)
        loss_box = F.smooth_l1_loss(loc[positive], regression, reduction="sum")

        ce = F.cross_entropy(conf.flatten(0, 1), matched.labels.flatten(), reduction="none").view_as(positive)
        selected = positive | self._hard_negatives(ce.detach(), positive)
        loss_cls = ce[selected].sum()

        norm = mean_over_replicas(num_pos.float()).clamp(min=1.0)
        loss_box, loss_cls = loss_box / norm, loss_cls / norm
        return {"loss": loss_box + loss_cls, "loss_box": loss_box, "loss_cls": loss_cls}

    def _hard_negatives(self, ce: Tensor, positive: Tensor) -> Tensor:
        """Per image, the ``ratio x positives`` background priors with the largest loss: a ``(B, P)`` mask."""
        background_loss = ce.masked_fill(positive, -torch.inf)  # positives rank last
        order = background_loss.argsort(dim=1, descending=True)
        pos_per_image = positive.sum(dim=1, keepdim=True)
        num_neg = (self.neg_pos_ratio * pos_per_image).clamp(max=positive.shape[1] - pos_per_image)
        # Mark the first num_neg entries of each image's order: one sort and a scatter, not a second sort.
        in_quota = torch.arange(positive.shape[1], device=ce.device) < num_neg
        return torch.zeros_like(positive).scatter_(1, order, in_quota)
