"""FSSD300 (Li & Zhou 2017, arXiv 1712.00960): fuse conv4_3, fc7 and conv7_2 at 38x38, then a new pyramid.

Layout of the PyTorch port lzx1413/PytorchSSD ``models/FSSD_vgg.py`` (the one whose parameter count,
34,132,960 with 20 classes, is the FSSD row of MFSSD's Table I). The pyramid builder and the 11,620-prior
configuration are exported for MFSSD, which reuses them with a 1024-channel fusion and BN.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from detectors.base import PostprocessConfig
from detectors.registry import register
from detectors.ssd.detector import SSDDetector
from detectors.ssd.necks.ssd import SSD300_PRIOR_SIZES, PriorSet, prior_sizes, sized_levels
from detectors.ssd.priors import PriorLevel
from detectors.ssd.vgg import VGG16

FSSD_PAPER = "Li & Zhou, FSSD: Feature Fusion Single Shot Multibox Detector, arXiv 1712.00960"

FSSD_PYRAMID_CHANNELS = [512, 512, 256, 256, 256, 256]
_PYRAMID_STRIDE_PADDING = [(1, 1), (2, 1), (2, 1), (2, 1), (1, 0), (1, 0)]  # 38 -> 38, 19, 10, 5, 3, 1
FSSD300_BOXES = (6, 6, 6, 6, 4, 4)  # PytorchSSD / dlyldxwl; Caffe's 4/6/6/4/4/4 would give 8,682 priors
FUSION_SIZE_300 = 38


def conv_block(in_channels: int, out_channels: int, kernel: int, stride: int = 1, padding: int = 0,
               batch_norm: bool = False) -> nn.Sequential:
    """Conv + ReLU, or conv without bias + BN + ReLU (the BN already provides the shift)."""
    conv = nn.Conv2d(in_channels, out_channels, kernel, stride=stride, padding=padding, bias=not batch_norm)
    layers: list[nn.Module] = [conv, nn.BatchNorm2d(out_channels)] if batch_norm else [conv]
    return nn.Sequential(*layers, nn.ReLU(inplace=True))


def fssd_pyramid(in_channels: int, batch_norm: bool) -> nn.ModuleList:
    """FSSD's "new pyramid" on the fused 38x38 map: six 3x3 conv blocks giving 38/19/10/5/3/1 maps.

    Apply the layers in sequence and predict on every output; channels are ``FSSD_PYRAMID_CHANNELS``.
    """
    layers, prev = [], in_channels
    for out, (stride, padding) in zip(FSSD_PYRAMID_CHANNELS, _PYRAMID_STRIDE_PADDING, strict=True):
        layers.append(conv_block(prev, out, 3, stride, padding, batch_norm))
        prev = out
    return nn.ModuleList(layers)


def fssd300_levels(prior_set: PriorSet = "voc") -> list[PriorLevel]:
    """11,620 priors: SSD300's sizes and steps with boxes 6/6/6/6/4/4 on the pyramid's 38/19/10/5/3/1 maps."""
    return sized_levels(prior_sizes(SSD300_PRIOR_SIZES, prior_set), FSSD300_BOXES, 300)


def upsample_to(x: Tensor, size: int) -> Tensor:
    """Bilinear resize to ``size x size`` with ``align_corners=True``, as PytorchSSD's fusion does."""
    return F.interpolate(x, size=(size, size), mode="bilinear", align_corners=True)


class FSSDFeatures(nn.Module):
    """VGG16 -> conv6/7 extras -> 1x1 transforms of conv4_3, fc7, conv7_2 -> concat, BN(768) -> pyramid."""

    def __init__(self, pretrained_backbone: bool = False):
        super().__init__()
        self.vgg = VGG16(batch_norm=False)
        if pretrained_backbone:
            self.vgg.load_imagenet()
        # PytorchSSD extras: conv6_2 unpadded (19 -> 17), so conv7_2 is 9x9 (Caffe: 10x10; same parameters).
        self.extras = nn.Sequential(
            nn.Conv2d(1024, 256, 1), nn.ReLU(inplace=True), nn.Conv2d(256, 512, 3), nn.ReLU(inplace=True),
            nn.Conv2d(512, 128, 1), nn.ReLU(inplace=True), nn.Conv2d(128, 256, 3, stride=2, padding=1),
            nn.ReLU(inplace=True))
        self.transforms = nn.ModuleList(conv_block(c, 256, 1) for c in (512, 1024, 256))
        self.fusion_bn = nn.BatchNorm2d(768)
        self.pyramid = fssd_pyramid(768, batch_norm=False)
        for conv in [*self.extras.modules(), *self.transforms.modules(), *self.pyramid.modules()]:
            if isinstance(conv, nn.Conv2d):  # PytorchSSD's init
                nn.init.kaiming_normal_(conv.weight, mode="fan_out")
                nn.init.zeros_(conv.bias)
        self.out_channels = list(FSSD_PYRAMID_CHANNELS)

    def forward(self, x: Tensor) -> list[Tensor]:
        taps = self.vgg(x)
        sources = [taps["conv4_3"], taps["fc7"], self.extras(taps["fc7"])]
        fused = [upsample_to(t(s), FUSION_SIZE_300) for t, s in zip(self.transforms, sources, strict=True)]
        x = self.fusion_bn(torch.cat(fused, 1))
        return pyramid_maps(self.pyramid, x)


def pyramid_maps(pyramid: nn.ModuleList, x: Tensor) -> list[Tensor]:
    """Run the pyramid layers in sequence; every layer's output is a prediction map (finest first)."""
    maps = []
    for layer in pyramid:
        x = layer(x)
        maps.append(x)
    return maps


_FSSD_NOTES = [
    "PytorchSSD layout: BN(768) on the concat, boxes 6/6/6/6/4/4 with SSD300 sizes (11,620 priors); the "
    "Caffe original uses 4/6/6/4/4/4 (8,682 priors)",
    "conv6_2 unpadded as in PytorchSSD, so conv7_2 is 9x9 before the bilinear (align_corners=True) "
    "upsampling",
    "no L2Norm on conv4_3 and no SSD extras beyond conv7_2 (not used by FSSD)",
    "priors unclipped; matching, loss and post-processing shared with SSD",
]


@register("fssd300", family="ssd", input_size=300)
def fssd300(num_classes: int, *, pretrained_backbone: bool = False, prior_set: PriorSet = "voc",
            postprocess: PostprocessConfig | None = None) -> SSDDetector:
    return SSDDetector(FSSDFeatures(pretrained_backbone), fssd300_levels(prior_set), num_classes, 300,
                       paper=FSSD_PAPER, notes=list(_FSSD_NOTES), clip_priors=False, postprocess=postprocess)
