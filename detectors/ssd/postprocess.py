"""SSD inference post-processing: softmax, decode, per-class top-k and NMS, best detections per image."""

from __future__ import annotations

import torch
from torch import Tensor
from torchvision.ops import batched_nms

from detectors.base import Detections, PostprocessConfig
from detectors.ssd.box_coder import SSDBoxCoder


class SSDPostprocess:
    """Raw head outputs -> per-image ``Detections`` with normalised xyxy boxes and 0-based labels.

    The whole batch goes through one ``batched_nms`` call: the NMS group of a candidate is
    ``image * num_classes + class``, so boxes of different images or classes never suppress each other.
    Boxes are clipped to the image before NMS (torchvision and the ports' ``clip`` do the same), so the
    overlaps NMS sees are those of the boxes reported.
    """

    def __init__(self, variances: tuple[float, float] = (0.1, 0.2)):
        self.coder = SSDBoxCoder(variances)

    @torch.no_grad()
    def __call__(self, loc: Tensor, conf: Tensor, priors: Tensor,
                 config: PostprocessConfig) -> list[Detections]:
        batch, num_priors, num_classes = conf.shape[0], conf.shape[1], conf.shape[2] - 1
        boxes = self.coder.decode(loc, priors).clamp_(0, 1)  # (B, P, 4)
        scores = conf.softmax(dim=-1)[..., 1:].transpose(1, 2)  # (B, C, P), background dropped

        top_scores, top_prior = scores.topk(min(config.pre_nms_topk, num_priors), dim=2)  # (B, C, K)
        image, cls, k = (top_scores > config.score_thresh).nonzero(as_tuple=True)
        prior = top_prior[image, cls, k]
        cand_scores = top_scores[image, cls, k]
        cand_boxes = boxes[image, prior]

        keep = batched_nms(cand_boxes, cand_scores, image * num_classes + cls, config.nms_iou)  # score-desc
        # Regroup by image keeping the score order (stable sort), then keep each image's best max_detections.
        keep = keep[image[keep].sort(stable=True).indices]
        kept_image = image[keep]
        counts = torch.bincount(kept_image, minlength=batch)
        starts = counts.cumsum(0) - counts
        rank = torch.arange(len(keep), device=keep.device) - starts[kept_image]
        keep = keep[rank < config.max_detections]

        sizes = torch.bincount(image[keep], minlength=batch).tolist()
        per_image = zip(cand_boxes[keep].split(sizes), cand_scores[keep].split(sizes), cls[keep].split(sizes),
                        strict=True)
        return [Detections(b, s, c) for b, s, c in per_image]
