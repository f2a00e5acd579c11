"""MDSSD300/512 (Cui et al., arXiv 1805.07009): SSD whose three finest maps are Fusion Modules.

A Fusion Block upsamples a deep SSD map x8 with three stride-2 deconvolutions and adds it to a shallow VGG map
with the same downsampling gap (conv8_2 -> conv3_3, conv9_2 -> conv4_3, conv10_2 -> fc7, paper §(1)). The
seven prediction maps are the three Fusion Modules and SSD's conv8_2 ... conv11_2. Appendix B (exact deconv
settings) is not available: the choices below are the spec's (§4), and give 76,205,586 parameters for
MDSSD300 with 20 classes.
"""

from __future__ import annotations

from typing import Literal

import torch
from torch import Tensor, nn

from detectors.base import PostprocessConfig
from detectors.registry import register
from detectors.ssd.detector import SSDDetector
from detectors.ssd.necks.ssd import (
    SSD300_PRIOR_SIZES,
    SSD512_PRIOR_SIZES,
    PriorSet,
    PriorSizes,
    SSDFeatures,
    sized_levels,
)
from detectors.ssd.priors import PriorLevel
from detectors.ssd.vgg import VGG16, L2Norm

MDSSD_PAPER = ("Cui et al., MDSSD: Multi-scale Deconvolutional Single Shot Detector for Small Objects, "
               "arXiv 1805.07009")

DECONV_CHANNELS = 256  # paper: "the kernel size of the deconvolution layer is 2x2 or 3x3 with 256 channels"
HIGH_NORM_SCALE, LOW_NORM_SCALE = 10.0, 20.0

# Fusion Modules 1-3: (shallow VGG tap, deep extra index, module channels). The channels are the paper's
# 256/512/1024, i.e. those of the shallow map, which is then the same size as the x8-upsampled deep map.
_MODULES = [("conv3_3", 0, 256), ("conv4_3", 1, 512), ("fc7", 2, 1024)]

# (kernel, padding) of the three stride-2 deconvolutions per module. At 512 every step doubles exactly
# (16/8/4 -> 128/64/32); at 300 the odd sizes need mixed kernels: 10->19->38->75, 5->10->19->38, 3->5->10->19.
_DECONVS: dict[int, list[list[tuple[int, int]]]] = {
    300: [[(3, 1), (4, 1), (3, 1)], [(2, 0), (3, 1), (4, 1)], [(3, 1), (2, 0), (3, 1)]],
    512: [[(2, 0)] * 3] * 3,
}
_CONV3_3_SIZE = {300: 75, 512: 128}
# SSD's boxes per location on the maps MDSSD shares with SSD, after 4 on the new conv3_3-resolution level.
_BOXES = {300: (4, 4, 6, 6, 6, 4, 4), 512: (4, 4, 6, 6, 6, 6, 4)}


class FusionBlock(nn.Module):
    """deep: 3 x (deconv x2, 3x3 conv, ReLU), L2Norm; shallow: 3x3 conv, L2Norm; their sum: 3x3 conv, ReLU.

    The first two deconvolutions have 256 channels (the paper's) and the last one widens to the module's
    channels so the branches can be summed; with a conv after each deconvolution this reproduces the spec's
    count for MDSSD300 exactly (§4: 76,205,586 with 20 classes).
    """

    def __init__(self, deep_channels: int, shallow_channels: int, channels: int,
                 deconvs: list[tuple[int, int]]):
        super().__init__()
        layers: list[nn.Module] = []
        widths = [DECONV_CHANNELS] * (len(deconvs) - 1) + [channels]
        prev = deep_channels
        for (kernel, padding), width in zip(deconvs, widths, strict=True):
            layers += [nn.ConvTranspose2d(prev, width, kernel, stride=2, padding=padding),
                       nn.Conv2d(width, width, 3, padding=1), nn.ReLU(inplace=True)]
            prev = width
        self.high = nn.Sequential(*layers, L2Norm(channels, HIGH_NORM_SCALE))
        self.low = nn.Sequential(nn.Conv2d(shallow_channels, channels, 3, padding=1),
                                 L2Norm(channels, LOW_NORM_SCALE))
        self.fuse = nn.Conv2d(channels, channels, 3, padding=1)
        for conv in self.modules():
            if isinstance(conv, nn.Conv2d | nn.ConvTranspose2d):  # as SSD's extras
                nn.init.xavier_uniform_(conv.weight)
                nn.init.zeros_(conv.bias)

    def forward(self, deep: Tensor, shallow: Tensor) -> Tensor:
        return torch.relu(self.fuse(self.high(deep) + self.low(shallow)))


class MDSSDFeatures(nn.Module):
    """SSD's VGG16 and extras up to conv11_2; predicts on Fusion Modules 1-3 and conv8_2 ... conv11_2."""

    def __init__(self, input_size: Literal[300, 512], pretrained_backbone: bool = False):
        super().__init__()
        ssd = SSDFeatures(input_size, pretrained_backbone)  # SSD's body and extras, not its conv4_3 L2Norm
        self.vgg = ssd.vgg
        self.extras = ssd.extras[:4]  # conv8_2 ... conv11_2 (SSD512's conv12_2 is not used)
        deep_channels = ssd.out_channels[2:6]
        self.fusion = nn.ModuleList(
            FusionBlock(deep_channels[deep], VGG16.channels[tap], channels, deconvs)
            for (tap, deep, channels), deconvs in zip(_MODULES, _DECONVS[input_size], strict=True))
        self.out_channels = [channels for _, _, channels in _MODULES] + deep_channels

    def forward(self, x: Tensor) -> list[Tensor]:
        taps = self.vgg(x)
        deep, y = [], taps["fc7"]
        for stage in self.extras:
            y = stage(y)
            deep.append(y)
        fused = [block(deep[d], taps[tap]) for block, (tap, d, _) in zip(self.fusion, _MODULES, strict=True)]
        return fused + deep


def mdssd_prior_sizes(ssd: PriorSizes, conv3_3_size: int) -> PriorSizes:
    """SSD's sizes on the six finest maps MDSSD shares with SSD, plus a conv3_3-resolution level before them.

    The new level halves conv4_3's step and minimum size and stops at conv4_3's minimum: 15-30 px, step 4 at
    300 (the spec's recommendation), 17.92-35.84 px at 512. SSD512's 1x1 map is not a prediction map here.
    """
    return PriorSizes((conv3_3_size, *ssd.feature_sizes[:6]), (ssd.steps[0] / 2, *ssd.steps[:6]),
                      (ssd.min_sizes[0] / 2, *ssd.min_sizes[:6]), (ssd.min_sizes[0], *ssd.max_sizes[:6]))


def mdssd_levels(input_size: Literal[300, 512], prior_set: PriorSet = "voc") -> list[PriorLevel]:
    """31,232 priors at 300 (75/38/19/10/5/3/1), 90,096 at 512 (128/64/32/16/8/4/2)."""
    ssd = {300: SSD300_PRIOR_SIZES, 512: SSD512_PRIOR_SIZES}[input_size][prior_set]
    return sized_levels(mdssd_prior_sizes(ssd, _CONV3_3_SIZE[input_size]), _BOXES[input_size], input_size)


_MDSSD_NOTES = [
    "Fusion Block (paper §(2)): deep map -> 3 x (stride-2 deconv, 3x3 conv, ReLU) with 256, 256, C channels "
    "-> L2Norm(scale 10); shallow map -> 3x3 conv -> L2Norm(scale 20); sum -> 3x3 conv -> ReLU (the "
    "paper's order; the spec adds a ReLU before the conv). C = 256/512/1024 for conv3_3/conv4_3/fc7; this "
    "layout reproduces the spec's 76,205,586 parameters (MDSSD300, 20 classes); Appendix B is not "
    "available",
    "seven prediction maps: Fusion Modules 1-3 and SSD's conv8_2 ... conv11_2; no L2Norm on conv4_3 outside "
    "the Fusion Block",
]


def _build_mdssd(input_size: Literal[300, 512], num_classes: int, pretrained_backbone: bool,
                 prior_set: PriorSet, postprocess: PostprocessConfig | None) -> SSDDetector:
    notes = list(_MDSSD_NOTES)
    if input_size == 300:
        notes.append("300: deconv (kernel, padding) per module (3,1)(4,1)(3,1): 10->19->38->75, "
                     "(2,0)(3,1)(4,1): 5->10->19->38, (3,1)(2,0)(3,1): 3->5->10->19; boxes 4/4/6/6/6/4/4 on "
                     "75/38/19/10/5/3/1 with sizes 15, 30, 60, 111, 162, 213, 264 (max 30 ... 315) and steps "
                     "4, 8, 16, 32, 64, 100, 300 = 31,232 priors (spec §4)")
    else:
        notes.append("512: deconvs 2x2 stride 2 (exact doubling: 16->128, 8->64, 4->32); prediction maps "
                     "128/64/32/16/8/4/2 (SSD512's extras up to conv11_2); derived as at 300: each map "
                     "shared with SSD512 keeps SSD512's boxes and sizes, the new 128 level gets 4 boxes of "
                     "17.92 px (half of conv4_3's 35.84, max 35.84) at step 4: boxes 4/4/6/6/6/6/4 = 90,096 "
                     "priors")
    return SSDDetector(MDSSDFeatures(input_size, pretrained_backbone), mdssd_levels(input_size, prior_set),
                       num_classes, input_size, paper=MDSSD_PAPER, notes=notes, clip_priors=False,
                       postprocess=postprocess)


@register("mdssd300", family="ssd", input_size=300)
def mdssd300(num_classes: int, *, pretrained_backbone: bool = False, prior_set: PriorSet = "voc",
             postprocess: PostprocessConfig | None = None) -> SSDDetector:
    return _build_mdssd(300, num_classes, pretrained_backbone, prior_set, postprocess)


@register("mdssd512", family="ssd", input_size=512)
def mdssd512(num_classes: int, *, pretrained_backbone: bool = False, prior_set: PriorSet = "voc",
             postprocess: PostprocessConfig | None = None) -> SSDDetector:
    return _build_mdssd(512, num_classes, pretrained_backbone, prior_set, postprocess)
