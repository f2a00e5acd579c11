"""FSSD300 (Li & Zhou 2017, arXiv 1712.00960): fuse conv4_3, fc7 and conv7_2 at 38x38, then a new pyramid.

Layout of the PyTorch port lzx1413/PytorchSSD ``models/FSSD_vgg.py`` (the one whose parameter count,
34,132,960 with 20 classes, is the FSSD row of MFSSD's Table I). Also ``fssd300_8732``: the same network with
SSD300's 8,732-prior layout, seed 001 Table IV's "FSSD VGG 78.8 65.8 8732" row.
"""

from __future__ import annotations

from typing import Any

import torch
from torch import Tensor, nn

from detectors.base import PostprocessConfig
from detectors.registry import register
from detectors.ssd.ablation import ABLATION_OPTIONS, Ablation, assemble
from detectors.ssd.detector import SSDDetector
from detectors.ssd.layers import (
    FusedPyramid,
    conv_block,
    conv_stack,
    init_convs,
    run_in_sequence,
    upsample_to,
    vgg_body,
)
from detectors.ssd.priors import SSD300_BOXES, PriorLevel, PriorSet, ssd300_levels
from detectors.ssd.vgg import Fc6

FSSD_PAPER = "Li & Zhou, FSSD: Feature Fusion Single Shot Multibox Detector, arXiv 1712.00960"
OPTIONS = frozenset({"pretrained_backbone", "prior_set", *ABLATION_OPTIONS})

# The "new pyramid" on the fused 38x38 map: six 3x3 conv blocks, (channels, stride, padding), 38 -> 38, 19,
# 10, 5, 3, 1; every output is a prediction map.
FSSD_PYRAMID = [(512, 1, 1), (512, 2, 1), (256, 2, 1), (256, 2, 1), (256, 1, 0), (256, 1, 0)]
FSSD_PYRAMID_CHANNELS = [channels for channels, _, _ in FSSD_PYRAMID]
FSSD300_BOXES = (6, 6, 6, 6, 4, 4)  # PytorchSSD / dlyldxwl; Caffe's 4/6/6/4/4/4 would give 8,682 priors


def fssd300_levels(prior_set: PriorSet = "voc") -> list[PriorLevel]:
    """11,620 priors: SSD300's sizes and steps with boxes 6/6/6/6/4/4 on the pyramid's 38/19/10/5/3/1 maps."""
    return ssd300_levels(prior_set, FSSD300_BOXES)


class FSSDFeatures(FusedPyramid):
    """VGG16 -> conv6/7 extras -> 1x1 transforms of conv4_3, fc7, conv7_2 -> concat, BN(768) -> pyramid.

    The fusion resolution is conv4_3's (38 at 300), so any input size works.
    """

    def __init__(self, pretrained_backbone: bool = False, fc6: Fc6 = "atrous"):
        super().__init__()
        self.vgg = vgg_body(pretrained_backbone, fc6=fc6)
        fc7 = self.vgg.channels["fc7"]
        # PytorchSSD extras: conv6_2 unpadded (19 -> 17), so conv7_2 is 9x9 (Caffe: 10x10; same parameters).
        self.extras = nn.Sequential(
            nn.Conv2d(fc7, 256, 1), nn.ReLU(inplace=True), nn.Conv2d(256, 512, 3), nn.ReLU(inplace=True),
            nn.Conv2d(512, 128, 1), nn.ReLU(inplace=True), nn.Conv2d(128, 256, 3, stride=2, padding=1),
            nn.ReLU(inplace=True))
        self.transforms = nn.ModuleList(conv_block(c, 256, 1) for c in (512, fc7, 256))
        self.fusion_bn = nn.BatchNorm2d(768)
        self.pyramid = conv_stack(768, FSSD_PYRAMID, batch_norm=False)
        init_convs([self.extras, self.transforms, self.pyramid], "kaiming_fan_out")  # PytorchSSD's init
        self.out_channels = list(FSSD_PYRAMID_CHANNELS)
        self.map_names = [f"pyramid{i}" for i in range(len(FSSD_PYRAMID))]

    def forward(self, x: Tensor) -> list[Tensor]:
        taps = self.vgg(x)
        size = taps["conv4_3"].shape[-1]
        sources = [taps["conv4_3"], taps["fc7"], self.extras(taps["fc7"])]
        fused = [upsample_to(t(s), size) for t, s in zip(self.transforms, sources, strict=True)]
        return run_in_sequence(self.pyramid, self.fusion_bn(torch.cat(fused, 1)))


_FSSD_NOTES = [
    "PytorchSSD layout: BN(768) on the concat, boxes 6/6/6/6/4/4 with SSD300 sizes (11,620 priors); the "
    "Caffe original uses 4/6/6/4/4/4 (8,682 priors)",
    "conv6_2 unpadded as in PytorchSSD, so conv7_2 is 9x9 before the bilinear (align_corners=True) "
    "upsampling",
    "no L2Norm on conv4_3 and no SSD extras beyond conv7_2 (not used by FSSD)",
    "priors unclipped; matching, loss and post-processing shared with SSD",
]


def _build_fssd(boxes: tuple[int, ...], num_classes: int, pretrained_backbone: bool, prior_set: PriorSet,
                postprocess: PostprocessConfig | None, options: dict[str, Any],
                extra_notes: tuple[str, ...] = ()) -> SSDDetector:
    ablation = Ablation.from_options(options)
    levels = ssd300_levels(prior_set, boxes)
    return assemble(lambda pretrained: FSSDFeatures(pretrained, ablation.fc6), levels, 300, ablation,
                    num_classes, pretrained_backbone=pretrained_backbone, paper=FSSD_PAPER,
                    notes=[*_FSSD_NOTES, *extra_notes], postprocess=postprocess)


@register("fssd300", family="ssd", input_size=300, options=OPTIONS)
def fssd300(num_classes: int, *, pretrained_backbone: bool = False, prior_set: PriorSet = "voc",
            postprocess: PostprocessConfig | None = None, **ablation: Any) -> SSDDetector:
    return _build_fssd(FSSD300_BOXES, num_classes, pretrained_backbone, prior_set, postprocess, ablation)


@register("fssd300_8732", family="ssd", input_size=300, options=OPTIONS)
def fssd300_8732(num_classes: int, *, pretrained_backbone: bool = False, prior_set: PriorSet = "voc",
                 postprocess: PostprocessConfig | None = None, **ablation: Any) -> SSDDetector:
    """FSSD300 with SSD300's 8,732 priors: seed 001 Table IV's "FSSD VGG 78.8 65.8 8732" row."""
    return _build_fssd(SSD300_BOXES, num_classes, pretrained_backbone, prior_set, postprocess, ablation, (
        "8,732 priors: SSD300's layout (boxes 4/6/6/6/4/4, SSD300 sizes) on the pyramid's 38/19/10/5/3/1 "
        "maps, for seed 001 Table IV's 'FSSD VGG 78.8 65.8 8732' row; the network is fssd300's (only the "
        "conv4_3-resolution head has 4 instead of 6 boxes)",))
