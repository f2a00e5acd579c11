"""MDSSD300/512 (Cui et al., arXiv 1805.07009): SSD whose three finest maps are Fusion Modules.

A Fusion Block upsamples a deep SSD map x8 with three stride-2 deconvolutions and adds it to a shallow VGG map
with the same downsampling gap (conv8_2 -> conv3_3, conv9_2 -> conv4_3, conv10_2 -> fc7, paper §(1)). The
seven prediction maps are the three Fusion Modules and SSD's conv8_2 ... conv11_2. Appendix B (exact deconv
settings) is not available; the block follows the body text (§(2)): "The kernel size of the deconvolution
layer is 2×2 or 3×3 with 256 channels. Each deconvolution layer is followed by one convolution layer."
"""

from __future__ import annotations

from typing import Any, Literal

import torch
from torch import Tensor, nn

from detectors.base import PostprocessConfig
from detectors.registry import register
from detectors.ssd.ablation import ABLATION_OPTIONS, Ablation, assemble
from detectors.ssd.detector import SSDDetector
from detectors.ssd.layers import SSD_EXTRAS, init_convs, run_in_sequence, ssd_extras, vgg_body
from detectors.ssd.priors import (
    SSD300_PRIOR_SIZES,
    SSD512_PRIOR_SIZES,
    PriorLevel,
    PriorSet,
    PriorSizes,
    sized_levels,
)
from detectors.ssd.vgg import VGG16, L2Norm

MDSSD_PAPER = ("Cui et al., MDSSD: Multi-scale Deconvolutional Single Shot Detector for Small Objects, "
               "arXiv 1805.07009")

# The Fusion Block pairs fc7 (19x19) with conv10_2: the plain VGG16 body (fc7 at 10x10) breaks that pairing,
# so MDSSD takes every ablation switch except fc6.
OPTIONS = frozenset({"pretrained_backbone", "prior_set", *(ABLATION_OPTIONS - {"fc6"})})

DECONV_CHANNELS = 256  # paper: "the kernel size of the deconvolution layer is 2x2 or 3x3 with 256 channels"
HIGH_NORM_SCALE, LOW_NORM_SCALE = 10.0, 20.0

# Fusion Modules 1-3: (shallow VGG tap, deep extra index, module channels). The channels are the paper's
# 256/512/1024, i.e. those of the shallow map, which is then the same size as the x8-upsampled deep map.
_MODULES = [("conv3_3", 0, 256), ("conv4_3", 1, 512), ("fc7", 2, 1024)]

UPSAMPLING_STEPS = 3  # three stride-2 deconvolutions: x8, the gap between each shallow and deep map
# Map sides at the native inputs: shallow (conv3_3, conv4_3, fc7) and deep (conv8_2, conv9_2, conv10_2).
_SHALLOW_SIZES = {300: (75, 38, 19), 512: (128, 64, 32)}
_DEEP_SIZES = {300: (10, 5, 3), 512: (16, 8, 4)}
# SSD's boxes per location on the maps MDSSD shares with SSD, after 4 on the new conv3_3-resolution level.
_BOXES = {300: (4, 4, 6, 6, 6, 4, 4), 512: (4, 4, 6, 6, 6, 6, 4)}


def deconv_plan(source: int, target: int, steps: int = UPSAMPLING_STEPS) -> list[tuple[int, int]]:
    """(kernel, padding) of each stride-2 deconvolution taking a ``source``-sided map to ``target``.

    A stride-2 transposed convolution gives ``out = 2 (in - 1) - 2 padding + kernel + output_padding``.
    With the paper's kernels and no output padding there are two useful steps: kernel 2, padding 0 doubles
    (``out = 2 in``); kernel 3, padding 1 gives ``out = 2 in - 1``. (Kernel 3, padding 0 gives ``2 in + 1``,
    which no SSD map needs; kernel 3, padding 1, output_padding 1 doubles too, with an asymmetric footprint,
    so 2x2 is the doubling step.) Walking back from the target, an even side can only come from ``side / 2``
    by (2, 0) and an odd one from ``(side + 1) / 2`` by (3, 1), so the plan is unique. 300:
    10 -> 19 -> 38 -> 75 is (3, 1), (2, 0), (3, 1); 5 -> 10 -> 19 -> 38 is (2, 0), (3, 1), (2, 0);
    3 -> 5 -> 10 -> 19 is (3, 1), (2, 0), (3, 1). 512: every step doubles (16 -> 128, 8 -> 64, 4 -> 32).
    """
    plan, side = [], target
    for _ in range(steps):
        plan.append((2, 0) if side % 2 == 0 else (3, 1))
        side = (side + 1) // 2
    if side != source:
        raise ValueError(f"{steps} stride-2 deconvolutions with 2x2/3x3 kernels cannot take {source} to "
                         f"{target}")
    return plan[::-1]


class FusionBlock(nn.Module):
    """deep: 3 x (2x2/3x3 deconv x2, 3x3 conv, ReLU), L2Norm; shallow: 3x3 conv, L2Norm; sum: conv, ReLU.

    Every deconvolution has 256 channels (the paper's) and is followed by one 3x3 convolution; those convs
    keep 256 channels except the last, which brings the upper branch to the module's channels (256/512/1024)
    so the two branches can be summed.
    """

    def __init__(self, deep_channels: int, shallow_channels: int, channels: int,
                 deconvs: list[tuple[int, int]]):
        super().__init__()
        layers: list[nn.Module] = []
        widths = [DECONV_CHANNELS] * (len(deconvs) - 1) + [channels]
        prev = deep_channels
        for (kernel, padding), width in zip(deconvs, widths, strict=True):
            layers += [nn.ConvTranspose2d(prev, DECONV_CHANNELS, kernel, stride=2, padding=padding),
                       nn.Conv2d(DECONV_CHANNELS, width, 3, padding=1), nn.ReLU(inplace=True)]
            prev = width
        self.high = nn.Sequential(*layers, L2Norm(channels, HIGH_NORM_SCALE))
        self.low = nn.Sequential(nn.Conv2d(shallow_channels, channels, 3, padding=1),
                                 L2Norm(channels, LOW_NORM_SCALE))
        self.fuse = nn.Conv2d(channels, channels, 3, padding=1)
        init_convs([self], "xavier")  # as SSD's extras

    def forward(self, deep: Tensor, shallow: Tensor) -> Tensor:
        return torch.relu(self.fuse(self.high(deep) + self.low(shallow)))


class MDSSDFeatures(nn.Module):
    """SSD's VGG16 and extras up to conv11_2; predicts on Fusion Modules 1-3 and conv8_2 ... conv11_2.

    ``layout`` picks SSD300's or SSD512's extras; at another ``input_size`` the deconvolution plans follow
    the measured map sides (an error where 2x2/3x3 steps cannot reach them).
    """

    def __init__(self, layout: Literal[300, 512], pretrained_backbone: bool = False,
                 input_size: int | None = None):
        super().__init__()
        self.vgg = vgg_body(pretrained_backbone)  # SSD's body; no L2Norm on conv4_3 outside the Fusion Block
        extras = SSD_EXTRAS[layout][:4]  # conv8_2 ... conv11_2 (SSD512's conv12_2 is not used)
        self.extras = ssd_extras(extras)
        deep_channels = [spec[1] for spec in extras]
        shallow_sides, deep_sides = _map_sides(layout, input_size or layout)
        plans = [deconv_plan(deep, shallow) for deep, shallow in zip(deep_sides, shallow_sides, strict=True)]
        self.fusion = nn.ModuleList(
            FusionBlock(deep_channels[deep], self.vgg.channels[tap], channels, plan)
            for (tap, deep, channels), plan in zip(_MODULES, plans, strict=True))
        self.out_channels = [channels for _, _, channels in _MODULES] + deep_channels
        self.map_names = ["module1", "module2", "module3", "conv8_2", "conv9_2", "conv10_2", "conv11_2"]

    def truncate(self, num_maps: int) -> None:
        """Drop conv11_2 when no kept map needs it (conv8_2 ... conv10_2 feed the Fusion Blocks)."""
        if num_maps < len(self.map_names):
            del self.extras[3:]
            self.map_names, self.out_channels = self.map_names[:6], self.out_channels[:6]

    def forward(self, x: Tensor) -> list[Tensor]:
        taps = self.vgg(x)
        deep = run_in_sequence(self.extras, taps["fc7"])
        fused = [block(deep[d], taps[tap]) for block, (tap, d, _) in zip(self.fusion, _MODULES, strict=True)]
        return fused + deep


def _map_sides(layout: Literal[300, 512], size: int) -> tuple[list[int], list[int]]:
    """Sides of conv3_3/conv4_3/fc7 and conv8_2/conv9_2/conv10_2 at a ``size`` input (meta-device probe)."""
    if size == layout:
        return list(_SHALLOW_SIZES[layout]), list(_DEEP_SIZES[layout])
    with torch.device("meta"):
        taps = VGG16()(torch.empty(1, 3, size, size))
        deep = run_in_sequence(ssd_extras(SSD_EXTRAS[layout][:3]), taps["fc7"])
    return [int(taps[t].shape[-1]) for t, _, _ in _MODULES], [int(d.shape[-1]) for d in deep]


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
    return sized_levels(mdssd_prior_sizes(ssd, _SHALLOW_SIZES[input_size][0]), _BOXES[input_size],
                        input_size)


_MDSSD_NOTES = [
    "Fusion Block as seed 002's text says (§(2)): deep map -> 3 x (stride-2 deconv with a 2x2 or 3x3 "
    "kernel and 256 channels, then one 3x3 conv, ReLU) -> L2Norm(scale 10); shallow map -> 3x3 conv -> "
    "L2Norm(scale 20); sum -> 3x3 conv -> ReLU. The convs after the deconvs keep 256 channels except the "
    "last, which gives the module's C = 256/512/1024 (conv3_3/conv4_3/fc7) for the sum; Appendix B is not "
    "available. The earlier 4x4, 256/256/C-wide deconvolutions (the spec's withdrawn §4 layout, 76,205,586 "
    "parameters) are gone",
    "deconv kernels derived from out = 2 (in - 1) - 2 padding + kernel (output_padding 0): (2, 0) doubles, "
    "(3, 1) gives 2 in - 1; walking back from the shallow side, an even side needs (2, 0) and an odd one "
    "(3, 1), so each chain is unique (``deconv_plan``)",
    "seven prediction maps: Fusion Modules 1-3 and SSD's conv8_2 ... conv11_2; no L2Norm on conv4_3 outside "
    "the Fusion Block; L2Norm scales 10 (high) / 20 (low) are a student port's, the paper gives none",
]


def _build_mdssd(layout: Literal[300, 512], num_classes: int, pretrained_backbone: bool,
                 prior_set: PriorSet, postprocess: PostprocessConfig | None,
                 options: dict[str, Any]) -> SSDDetector:
    ablation = Ablation.from_options(options)
    notes = list(_MDSSD_NOTES)
    if layout == 300:
        notes.append("300: deconv (kernel, padding) per module (3,1)(2,0)(3,1): 10->19->38->75, "
                     "(2,0)(3,1)(2,0): 5->10->19->38, (3,1)(2,0)(3,1): 3->5->10->19; boxes 4/4/6/6/6/4/4 on "
                     "75/38/19/10/5/3/1 with sizes 15, 30, 60, 111, 162, 213, 264 (max 30 ... 315) and steps "
                     "4, 8, 16, 32, 64, 100, 300 = 31,232 priors (spec §4)")
    else:
        notes.append("512: every deconv 2x2 stride 2 (exact doubling: 16->128, 8->64, 4->32; the paper's "
                     "'tiny modifications' for 512 are in the unavailable Appendix B); prediction maps "
                     "128/64/32/16/8/4/2 (SSD512's extras up to conv11_2); derived as at 300: each map "
                     "shared with SSD512 keeps SSD512's boxes and sizes, the new 128 level gets 4 boxes of "
                     "17.92 px (half of conv4_3's 35.84, max 35.84) at step 4: boxes 4/4/6/6/6/6/4 = 90,096 "
                     "priors")
    return assemble(lambda pretrained: MDSSDFeatures(layout, pretrained, ablation.input_size),
                    mdssd_levels(layout, prior_set), layout, ablation, num_classes,
                    pretrained_backbone=pretrained_backbone, paper=MDSSD_PAPER, notes=notes,
                    postprocess=postprocess)


@register("mdssd300", family="ssd", input_size=300, options=OPTIONS)
def mdssd300(num_classes: int, *, pretrained_backbone: bool = False, prior_set: PriorSet = "voc",
             postprocess: PostprocessConfig | None = None, **ablation: Any) -> SSDDetector:
    return _build_mdssd(300, num_classes, pretrained_backbone, prior_set, postprocess, ablation)


@register("mdssd512", family="ssd", input_size=512, options=OPTIONS)
def mdssd512(num_classes: int, *, pretrained_backbone: bool = False, prior_set: PriorSet = "voc",
             postprocess: PostprocessConfig | None = None, **ablation: Any) -> SSDDetector:
    return _build_mdssd(512, num_classes, pretrained_backbone, prior_set, postprocess, ablation)
