"""SSD300 and SSD512 (Liu et al., ECCV 2016): VGG16, L2Norm on conv4_3, and the paper's extra layers.

Also the home of SSD's prior-size tables, which FSSD and its descendants reuse with other box counts.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Literal

from torch import Tensor, nn

from detectors.base import PostprocessConfig
from detectors.registry import register
from detectors.ssd.detector import SSDDetector
from detectors.ssd.priors import PriorLevel, ssd_levels
from detectors.ssd.vgg import VGG16, L2Norm

PriorSet = Literal["voc", "coco"]

SSD_PAPER = "Liu et al., SSD: Single Shot MultiBox Detector, ECCV 2016"


@dataclass(frozen=True)
class PriorSizes:
    """One SSD prior configuration in input pixels (Caffe ``ssd_pascal*.py`` / ``ssd_coco*.py``)."""

    feature_sizes: tuple[int, ...]
    steps: tuple[float, ...]
    min_sizes: tuple[float, ...]
    max_sizes: tuple[float, ...]


SSD300_PRIOR_SIZES: dict[str, PriorSizes] = {
    "voc": PriorSizes((38, 19, 10, 5, 3, 1), (8, 16, 32, 64, 100, 300),
                      (30, 60, 111, 162, 213, 264), (60, 111, 162, 213, 264, 315)),
    "coco": PriorSizes((38, 19, 10, 5, 3, 1), (8, 16, 32, 64, 100, 300),
                       (21, 45, 99, 153, 207, 261), (45, 99, 153, 207, 261, 315)),
}
SSD512_PRIOR_SIZES: dict[str, PriorSizes] = {
    "voc": PriorSizes((64, 32, 16, 8, 4, 2, 1), (8, 16, 32, 64, 128, 256, 512),
                      (35.84, 76.8, 153.6, 230.4, 307.2, 384.0, 460.8),
                      (76.8, 153.6, 230.4, 307.2, 384.0, 460.8, 537.6)),
    "coco": PriorSizes((64, 32, 16, 8, 4, 2, 1), (8, 16, 32, 64, 128, 256, 512),
                       (20.48, 51.2, 133.12, 215.04, 296.96, 378.88, 460.8),
                       (51.2, 133.12, 215.04, 296.96, 378.88, 460.8, 542.72)),
}

_RATIOS_FOR_BOXES: dict[int, tuple[float, ...]] = {4: (2.0,), 6: (2.0, 3.0)}


def prior_sizes(table: dict[str, PriorSizes], prior_set: str) -> PriorSizes:
    """``table[prior_set]`` with an error that names the choices."""
    try:
        return table[prior_set]
    except KeyError:
        raise ValueError(f"unknown prior_set {prior_set!r}; choose one of {sorted(table)}") from None


def sized_levels(sizes: PriorSizes, boxes: tuple[int, ...], image_size: int) -> list[PriorLevel]:
    """SSD levels for ``sizes`` with 4 ({1, 1', 2, 1/2}) or 6 (plus {3, 1/3}) boxes per location per level."""
    if len(boxes) != len(sizes.feature_sizes):
        raise ValueError(f"{len(boxes)} box counts for {len(sizes.feature_sizes)} levels")
    try:
        ratios = [_RATIOS_FOR_BOXES[b] for b in boxes]
    except KeyError as err:
        raise ValueError(f"SSD levels have 4 or 6 boxes per location, not {err.args[0]}") from None
    return ssd_levels(image_size, list(sizes.feature_sizes), list(sizes.steps), list(sizes.min_sizes),
                      list(sizes.max_sizes), ratios)


def ssd300_levels(prior_set: PriorSet = "voc") -> list[PriorLevel]:
    """The 8,732 SSD300 priors: boxes 4/6/6/6/4/4 on 38/19/10/5/3/1."""
    return sized_levels(prior_sizes(SSD300_PRIOR_SIZES, prior_set), (4, 6, 6, 6, 4, 4), 300)


def ssd512_levels(prior_set: PriorSet = "voc") -> list[PriorLevel]:
    """The 24,564 SSD512 priors: boxes 4/6/6/6/6/4/4 on 64/32/16/8/4/2/1."""
    return sized_levels(prior_sizes(SSD512_PRIOR_SIZES, prior_set), (4, 6, 6, 6, 6, 4, 4), 512)


def _extra(in_channels: int, mid: int, out: int, kernel: int, stride: int, padding: int) -> nn.Sequential:
    """One SSD extra stage: 1x1 reduction then a 3x3 (or 4x4) conv, each followed by ReLU."""
    return nn.Sequential(nn.Conv2d(in_channels, mid, 1), nn.ReLU(inplace=True),
                         nn.Conv2d(mid, out, kernel, stride=stride, padding=padding), nn.ReLU(inplace=True))


# (mid, out, kernel, stride, padding) per extra stage, conv8 onwards.
_EXTRAS = {
    300: [(256, 512, 3, 2, 1), (128, 256, 3, 2, 1), (128, 256, 3, 1, 0), (128, 256, 3, 1, 0)],
    512: [(256, 512, 3, 2, 1), (128, 256, 3, 2, 1), (128, 256, 3, 2, 1), (128, 256, 3, 2, 1),
          (128, 256, 4, 1, 1)],
}


class SSDFeatures(nn.Module):
    """VGG16 conv4_3 (through L2Norm, scale 20) and fc7, then the extras: the SSD300/512 prediction maps."""

    def __init__(self, input_size: Literal[300, 512], pretrained_backbone: bool = False):
        super().__init__()
        self.vgg = VGG16(batch_norm=False)
        if pretrained_backbone:
            self.vgg.load_imagenet()
        self.l2norm = L2Norm(512, 20.0)
        stages, in_channels = [], 1024
        for mid, out, kernel, stride, padding in _EXTRAS[input_size]:
            stages.append(_extra(in_channels, mid, out, kernel, stride, padding))
            in_channels = out
        self.extras = nn.ModuleList(stages)
        for conv in self.extras.modules():  # amdegroot/lufficc: Xavier on the extras
            if isinstance(conv, nn.Conv2d):
                nn.init.xavier_uniform_(conv.weight)
                nn.init.zeros_(conv.bias)
        self.out_channels = [512, 1024] + [spec[1] for spec in _EXTRAS[input_size]]

    def forward(self, x: Tensor) -> list[Tensor]:
        taps = self.vgg(x)
        maps = [self.l2norm(taps["conv4_3"]), taps["fc7"]]
        x = taps["fc7"]
        for stage in self.extras:
            x = stage(x)
            maps.append(x)
        return maps


_SSD_NOTES = [
    "priors unclipped (clip=False), as the Caffe VOC scripts; torchvision clips w/h only",
    "prior sizes from the Caffe/lufficc tables for the data set (prior_set='voc' or 'coco'); torchvision's "
    "ssd300_vgg16 always uses its COCO scales",
    "matching: best prior per ground truth forced, then IoU >= 0.5; 3:1 hard negatives; variances 0.1/0.2",
    "ImageNet mean/std input normalisation and torchvision's IMAGENET1K_V1 VGG16 weights (the original used "
    "Caffe weights on 0-255 inputs); fc6/fc7 Xavier-initialised, since torchvision's fc layers are 4096-wide "
    "classifiers (the ports convert vgg16_reducedfc.pth)",
]


def _build_ssd(input_size: Literal[300, 512], levels: list[PriorLevel], num_classes: int,
               pretrained_backbone: bool, postprocess: PostprocessConfig | None) -> SSDDetector:
    features = SSDFeatures(input_size, pretrained_backbone)
    notes = list(_SSD_NOTES)
    if input_size == 512:
        notes.append("SSD512 extras: conv8_2..conv11_2 3x3 s2 p1, conv12_2 4x4 p1 (lufficc/SSD); torchvision "
                     "has no SSD512 (its highres maps give 24,732 priors)")
    return SSDDetector(features, levels, num_classes, input_size, paper=SSD_PAPER, notes=notes,
                       clip_priors=False, postprocess=postprocess)


@register("ssd300", family="ssd", input_size=300)
def ssd300(num_classes: int, *, pretrained_backbone: bool = False, prior_set: PriorSet = "voc",
           postprocess: PostprocessConfig | None = None) -> SSDDetector:
    return _build_ssd(300, ssd300_levels(prior_set), num_classes, pretrained_backbone, postprocess)


@register("ssd512", family="ssd", input_size=512)
def ssd512(num_classes: int, *, pretrained_backbone: bool = False, prior_set: PriorSet = "voc",
           postprocess: PostprocessConfig | None = None) -> SSDDetector:
    return _build_ssd(512, ssd512_levels(prior_set), num_classes, pretrained_backbone, postprocess)
