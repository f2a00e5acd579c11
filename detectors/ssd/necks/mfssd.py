"""MFSSD and MFSSD-BN (Wang et al., arXiv 2108.10503): FSSD fusing conv4_3, conv5_3 and fc7 at 2:1:1.

The paper (seed 001) replaces FSSD's conv7_2 input by conv5_3 (conv7_2 "brings external noise") and widens
the conv4_3 branch to 512 channels so the fused map is 2:1:1 in favour of the small-object layer; MFSSD-BN
adds BatchNorm to the backbone. The full layer list is not published: the configuration below is the one of
the spec (§3) that reproduces both Table I counts exactly (33,709,664 and 33,713,888 with 20 classes).
MFSSD-Pruned (Table I: 22,785,625) is MFSSD-BN after the network-slimming stages of ``detectors.ssd.pruning``.
"""

from __future__ import annotations

import torch
from torch import Tensor, nn

from detectors.base import PostprocessConfig
from detectors.registry import register
from detectors.ssd.detector import SSDDetector
from detectors.ssd.necks.fssd import (
    FSSD_PYRAMID_CHANNELS,
    FUSION_SIZE_300,
    conv_block,
    fssd300_levels,
    fssd_pyramid,
    pyramid_maps,
    upsample_to,
)
from detectors.ssd.necks.ssd import PriorSet
from detectors.ssd.pruning import prune_to_params
from detectors.ssd.vgg import VGG16

MFSSD_PAPER = ("Wang, Zhang, Hong, Zhou, Small Object Detection Based on Modified FSSD and Model "
               "Compression, arXiv 2108.10503")

# Fused channels per VGG tap: conv4_3 gets half of the 1024 (the paper's 2:1:1).
FUSION_CHANNELS = {"conv4_3": 512, "conv5_3": 256, "fc7": 256}
PRUNED_STRUCTURE_SEED = 0


class MFSSDFeatures(nn.Module):
    """VGG16 -> 1x1 conv + BN + ReLU on conv4_3/conv5_3/fc7 -> bilinear to 38 -> concat + BN(1024) -> pyramid.

    ``batch_norm`` puts BN after the 13 VGG 3x3 convs (MFSSD-BN); the fusion and pyramid always use BN,
    which is what makes the plain MFSSD land on Table I's count.
    """

    def __init__(self, batch_norm: bool, pretrained_backbone: bool = False):
        super().__init__()
        self.vgg = VGG16(batch_norm=batch_norm)
        if pretrained_backbone:
            self.vgg.load_imagenet()
        self.transforms = nn.ModuleDict({tap: conv_block(VGG16.channels[tap], out, 1, batch_norm=True)
                                         for tap, out in FUSION_CHANNELS.items()})
        fused_channels = sum(FUSION_CHANNELS.values())
        self.fusion_bn = nn.BatchNorm2d(fused_channels)
        self.pyramid = fssd_pyramid(fused_channels, batch_norm=True)
        for conv in [*self.transforms.modules(), *self.pyramid.modules()]:
            if isinstance(conv, nn.Conv2d):  # as FSSD (PytorchSSD's init)
                nn.init.kaiming_normal_(conv.weight, mode="fan_out")
        self.out_channels = list(FSSD_PYRAMID_CHANNELS)

    def forward(self, x: Tensor) -> list[Tensor]:
        taps = self.vgg(x)
        fused = torch.cat([upsample_to(transform(taps[tap]), FUSION_SIZE_300)
                           for tap, transform in self.transforms.items()], 1)
        x = self.fusion_bn(fused)
        return pyramid_maps(self.pyramid, x)


_MFSSD_NOTES = [
    "fusion (paper §II.A): conv4_3 -> 512, conv5_3 -> 256, fc7 -> 256 channels (2:1:1), each a 1x1 conv "
    "without bias + BN + ReLU, bilinearly resized to 38 (align_corners=True, as FSSD), concat + BN(1024)",
    "pyramid: FSSD's six 3x3 layers on the 1024-channel map, each conv without bias + BN + ReLU; boxes "
    "6/6/6/6/4/4 with SSD300 sizes = 11,620 priors (paper §III.A: 6 boxes on conv4_3; Table IV)",
    "BN/bias placement is not published; four placements give Table I's count, this one keeps FSSD's concat "
    "BN and plain fc6/fc7 (spec §3); no SSD extras, no L2Norm",
]


def _build_mfssd(num_classes: int, batch_norm: bool, pretrained_backbone: bool, prior_set: PriorSet,
                 postprocess: PostprocessConfig | None) -> SSDDetector:
    notes = list(_MFSSD_NOTES)
    if batch_norm:
        notes.append("MFSSD-BN: the 13 VGG 3x3 convs lose their bias and gain BN (+4,224 parameters, "
                     "Table I); fc6/fc7 stay without BN")
    return SSDDetector(MFSSDFeatures(batch_norm, pretrained_backbone), fssd300_levels(prior_set), num_classes,
                       300, paper=MFSSD_PAPER, notes=notes, clip_priors=False, postprocess=postprocess)


@register("mfssd300", family="ssd", input_size=300)
def mfssd300(num_classes: int, *, pretrained_backbone: bool = False, prior_set: PriorSet = "voc",
             postprocess: PostprocessConfig | None = None) -> SSDDetector:
    return _build_mfssd(num_classes, False, pretrained_backbone, prior_set, postprocess)


@register("mfssd300_bn", family="ssd", input_size=300)
def mfssd300_bn(num_classes: int, *, pretrained_backbone: bool = False, prior_set: PriorSet = "voc",
                postprocess: PostprocessConfig | None = None) -> SSDDetector:
    return _build_mfssd(num_classes, True, pretrained_backbone, prior_set, postprocess)


@register("mfssd300_pruned", family="ssd", input_size=300)
def mfssd300_pruned(num_classes: int, *, pretrained_backbone: bool = False, prior_set: PriorSet = "voc",
                    postprocess: PostprocessConfig | None = None) -> SSDDetector:
    """MFSSD-BN pruned to Table I's size by seeded stand-in BN scales: the architecture, not a trained model.

    The real MFSSD-Pruned comes from the runner's three stages on ``mfssd300_bn`` (sparse training, pruning,
    fine-tuning); this builder gives a model of the same size for listings, FLOPs and speed.
    """
    if pretrained_backbone:
        raise ValueError("mfssd300_pruned is the output of the slimming stages (detectors.ssd.pruning); load "
                         "the ImageNet backbone into mfssd300_bn, the model those stages start from")
    model = _build_mfssd(num_classes, True, False, prior_set, postprocess)
    batch_norms = [m for m in model.modules() if isinstance(m, nn.BatchNorm2d)]
    generator = torch.Generator().manual_seed(PRUNED_STRUCTURE_SEED)
    with torch.no_grad():
        for bn in batch_norms:  # stand-in for the scales that sparse training would leave
            bn.weight.copy_(torch.rand(bn.num_features, generator=generator))
    prune_to_params(model)
    with torch.no_grad():
        for bn in batch_norms:  # back to a fresh initialisation
            bn.weight.fill_(1.0)
    model.notes.append(f"structure only: channels ranked by BN scales drawn from U(0, 1) with seed "
                       f"{PRUNED_STRUCTURE_SEED}, weights freshly initialised; the trained MFSSD-Pruned "
                       f"comes from the runner's stages on mfssd300_bn (sparse training with L1 on BN "
                       f"scales, global pruning to Table I's size, fine-tuning)")
    return model
