"""SSD inference post-processing: softmax, decode, per-class top-k and NMS, best detections per image."""

from __future__ import annotations

import torch
from torch import Tensor
from torchvision.ops import batched_nms

from detectors.base import Detections, PostprocessConfig
from detectors.ssd.box_coder import SSDBoxCoder


class SSDPostprocess:
    """Raw head outputs -> per-image ``Detections`` with normalised xyxy boxes and 0-based labels.

    Always in fp32, whatever the head's dtype (fp16 softmax scores and box offsets lose the small boxes), and
    one image at a time: an image's scores are ``(P, C + 1)``, where the whole batch's would be about 2 GB for
    MDSSD512 at batch 32. NMS runs per image with the class as its group, on float64 boxes: torchvision's
    ``batched_nms`` offsets each group's boxes by ``group x (max coordinate + 1)`` (on CUDA up to 5,000
    boxes, on CPU up to 1,000), which in fp32 moves small boxes by more than their overlaps can tolerate;
    float64 keeps every decision that of a per-class NMS. Boxes are clipped to the image before NMS
    (torchvision and the ports' ``clip`` do the same), so the overlaps NMS sees are those of the boxes
    reported.
    """

    def __init__(self, variances: tuple[float, float] = (0.1, 0.2)):
        self.coder = SSDBoxCoder(variances)

    @torch.no_grad()
    def __call__(self, loc: Tensor, conf: Tensor, priors: Tensor,
                 config: PostprocessConfig) -> list[Detections]:
        priors = priors.float()
        return [self._one_image(loc[i].float(), conf[i].float(), priors, config) for i in range(len(loc))]

    def _one_image(self, loc: Tensor, conf: Tensor, priors: Tensor, config: PostprocessConfig) -> Detections:
        num_priors = conf.shape[0]
        scores = conf.softmax(dim=-1)[:, 1:].T  # (C, P), background dropped
        top_scores, top_prior = scores.topk(min(config.pre_nms_topk, num_priors), dim=1)  # (C, K)
        cls, k = (top_scores > config.score_thresh).nonzero(as_tuple=True)
        prior = top_prior[cls, k]
        cand_scores = top_scores[cls, k]
        cand_boxes = self.coder.decode(loc[prior], priors[prior]).clamp_(0, 1)
        keep = batched_nms(cand_boxes.double(), cand_scores.double(), cls, config.nms_iou)  # score-descending
        keep = keep[: config.max_detections]
        return Detections(cand_boxes[keep], cand_scores[keep], cls[keep])
