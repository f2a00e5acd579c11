"""SSD300 and SSD512 (Liu et al., ECCV 2016): VGG16, L2Norm on conv4_3, and the paper's extra layers.

Also ``ssd300_11620``: SSD300 with MFSSD's 11,620 priors (6 boxes on conv4_3), the "SSD" that seed 001
retrained for its Tables II and IV.
"""

from __future__ import annotations

from typing import Any, Literal

from torch import Tensor, nn

from detectors.base import PostprocessConfig
from detectors.registry import register
from detectors.ssd.ablation import ABLATION_OPTIONS, Ablation, assemble
from detectors.ssd.detector import SSDDetector
from detectors.ssd.layers import SSD_EXTRAS, ssd_extras, vgg_body
from detectors.ssd.priors import (
    SIX_ON_CONV4_3_BOXES,
    SSD300_BOXES,
    SSD512_BOXES,
    PriorSet,
    ssd300_levels,
    ssd512_levels,
)
from detectors.ssd.vgg import Fc6, L2Norm

SSD_PAPER = "Liu et al., SSD: Single Shot MultiBox Detector, ECCV 2016"
OPTIONS = frozenset({"pretrained_backbone", "prior_set", *ABLATION_OPTIONS})
_EXTRA_NAMES = ["conv8_2", "conv9_2", "conv10_2", "conv11_2", "conv12_2"]


class SSDFeatures(nn.Module):
    """VGG16 conv4_3 (through L2Norm, scale 20) and fc7, then the extras: the SSD300/512 prediction maps.

    ``layout`` picks the extras (300: conv8_2 ... conv11_2; 512: up to conv12_2). With ``fc6="plain"`` the
    body is the full VGG16 (fc7 at half of conv5_3's side), conv5_3 predicts as the paper's ablation says
    ("add conv5_3 for prediction") and the extras start at conv9, so the maps keep SSD's sides.
    """

    def __init__(self, layout: Literal[300, 512], pretrained_backbone: bool = False, fc6: Fc6 = "atrous"):
        super().__init__()
        self.vgg = vgg_body(pretrained_backbone, fc6=fc6)
        self.l2norm = L2Norm(512, 20.0)
        specs = SSD_EXTRAS[layout] if fc6 == "atrous" else SSD_EXTRAS[layout][1:]
        self.extras = ssd_extras(specs, self.vgg.channels["fc7"])
        self.body_maps = ["conv4_3", "fc7"] if fc6 == "atrous" else ["conv4_3", "conv5_3", "fc7"]
        extra_names = _EXTRA_NAMES[: len(SSD_EXTRAS[layout])]
        # The paper's layer names (Table 3.2): the atrous fc7 is "conv7".
        body_names = ["conv4_3", "conv7"] if fc6 == "atrous" else self.body_maps
        self.map_names = body_names + (extra_names if fc6 == "atrous" else extra_names[1:])
        self.out_channels = [self.vgg.channels[n] for n in self.body_maps] + [spec[1] for spec in specs]

    def truncate(self, num_maps: int) -> None:
        """Keep the first ``num_maps`` maps: the extra stages after them go (no prediction uses them)."""
        num_maps = max(num_maps, len(self.body_maps))
        del self.extras[num_maps - len(self.body_maps):]
        self.map_names, self.out_channels = self.map_names[:num_maps], self.out_channels[:num_maps]

    def forward(self, x: Tensor) -> list[Tensor]:
        taps = self.vgg(x)
        maps = [self.l2norm(taps["conv4_3"]), *(taps[n] for n in self.body_maps[1:])]
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
_LAYOUT_NOTES = {
    SIX_ON_CONV4_3_BOXES: "11,620 priors: 6 boxes (adding {3, 1/3}) on conv4_3, boxes 6/6/6/6/4/4 with "
                          "SSD300's sizes; seed 001 Tables II/IV 'trained SSD and FSSD ... with 11,620 "
                          "preset frames' (MFSSD's §III.A layout); everything else is SSD300's",
}


def _build_ssd(layout: Literal[300, 512], boxes: tuple[int, ...], num_classes: int, pretrained_backbone: bool,
               prior_set: PriorSet, postprocess: PostprocessConfig | None,
               options: dict[str, Any]) -> SSDDetector:
    ablation = Ablation.from_options(options)
    levels = (ssd300_levels if layout == 300 else ssd512_levels)(prior_set, boxes)
    notes = list(_SSD_NOTES)
    if layout == 512:
        notes.append("SSD512 extras: conv8_2..conv11_2 3x3 s2 p1, conv12_2 4x4 p1 (lufficc/SSD); torchvision "
                     "has no SSD512 (its highres maps give 24,732 priors)")
    if boxes in _LAYOUT_NOTES:
        notes.append(_LAYOUT_NOTES[boxes])
    if ablation.fc6 == "plain":
        notes.append("plain fc6: the prediction maps are conv4_3 (L2Norm), conv5_3, fc7 and the extras from "
                     "conv9 on, whose sides equal SSD's, so the prior layout is unchanged; no L2Norm on "
                     "conv5_3 (the paper gives none); fc6/fc7 load the ImageNet classifier's fc1/fc2")
    return assemble(lambda pretrained: SSDFeatures(layout, pretrained, ablation.fc6), levels, layout,
                    ablation, num_classes, pretrained_backbone=pretrained_backbone, paper=SSD_PAPER,
                    notes=notes, postprocess=postprocess)


@register("ssd300", family="ssd", input_size=300, options=OPTIONS)
def ssd300(num_classes: int, *, pretrained_backbone: bool = False, prior_set: PriorSet = "voc",
           postprocess: PostprocessConfig | None = None, **ablation: Any) -> SSDDetector:
    return _build_ssd(300, SSD300_BOXES, num_classes, pretrained_backbone, prior_set, postprocess, ablation)


@register("ssd512", family="ssd", input_size=512, options=OPTIONS)
def ssd512(num_classes: int, *, pretrained_backbone: bool = False, prior_set: PriorSet = "voc",
           postprocess: PostprocessConfig | None = None, **ablation: Any) -> SSDDetector:
    return _build_ssd(512, SSD512_BOXES, num_classes, pretrained_backbone, prior_set, postprocess, ablation)


@register("ssd300_11620", family="ssd", input_size=300, options=OPTIONS)
def ssd300_11620(num_classes: int, *, pretrained_backbone: bool = False, prior_set: PriorSet = "voc",
                 postprocess: PostprocessConfig | None = None, **ablation: Any) -> SSDDetector:
    """SSD300 with MFSSD's 11,620 priors: the 'SSD' row of seed 001's Tables II and IV (11,620)."""
    return _build_ssd(300, SIX_ON_CONV4_3_BOXES, num_classes, pretrained_backbone, prior_set, postprocess,
                      ablation)
