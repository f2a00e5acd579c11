"""MFSSD and MFSSD-BN (Wang et al., arXiv 2108.10503): FSSD fusing conv4_3, conv5_3 and fc7 at 2:1:1.

The paper (seed 001) replaces FSSD's conv7_2 input by conv5_3 (conv7_2 "brings external noise") and widens
the conv4_3 branch to 512 channels so the fused map is 2:1:1 in favour of the small-object layer; MFSSD-BN
adds BatchNorm to the backbone. The full layer list is not published: the configuration below is the one of
the spec (§3) that reproduces both Table I counts exactly (33,709,664 and 33,713,888 with 20 classes).
MFSSD-Pruned (Table I: 22,785,625) is MFSSD-BN after the network-slimming stages of ``detectors.ssd.pruning``.
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
from detectors.ssd.priors import SIX_ON_CONV4_3_BOXES, PriorLevel, PriorSet, ssd300_levels
from detectors.ssd.slimming_plan import slimming_plan
from detectors.ssd.vgg import Fc6

MFSSD_PAPER = ("Wang, Zhang, Hong, Zhou, Small Object Detection Based on Modified FSSD and Model "
               "Compression, arXiv 2108.10503")

OPTIONS = frozenset({"pretrained_backbone", "prior_set", *ABLATION_OPTIONS})

# Fused channels per VGG tap: conv4_3 gets half of the 1024 (the paper's 2:1:1).
FUSION_CHANNELS = {"conv4_3": 512, "conv5_3": 256, "fc7": 256}
# FSSD's "new pyramid", which the paper keeps (§II.A): (channels, stride, padding), 38 -> 38/19/10/5/3/1.
PYRAMID = [(512, 1, 1), (512, 2, 1), (256, 2, 1), (256, 2, 1), (256, 1, 0), (256, 1, 0)]


def mfssd300_levels(prior_set: PriorSet = "voc") -> list[PriorLevel]:
    """11,620 priors: SSD300's sizes with 6 boxes on the 38x38 map (§III.A), boxes 6/6/6/6/4/4."""
    return ssd300_levels(prior_set, SIX_ON_CONV4_3_BOXES)


class MFSSDFeatures(FusedPyramid):
    """VGG16 -> 1x1 conv + BN + ReLU on conv4_3/conv5_3/fc7 -> bilinear to 38 -> concat + BN(1024) -> pyramid.

    ``batch_norm`` puts BN after the 13 VGG 3x3 convs (MFSSD-BN); the fusion and pyramid always use BN,
    which is what makes the plain MFSSD land on Table I's count. The fusion resolution is conv4_3's (38 at
    300).
    """

    def __init__(self, batch_norm: bool, pretrained_backbone: bool = False, fc6: Fc6 = "atrous"):
        super().__init__()
        self.vgg = vgg_body(pretrained_backbone, batch_norm, fc6)
        self.transforms = nn.ModuleDict({tap: conv_block(self.vgg.channels[tap], out, 1, batch_norm=True)
                                         for tap, out in FUSION_CHANNELS.items()})
        fused_channels = sum(FUSION_CHANNELS.values())
        self.fusion_bn = nn.BatchNorm2d(fused_channels)
        self.pyramid = conv_stack(fused_channels, PYRAMID, batch_norm=True)
        init_convs([self.transforms, self.pyramid], "kaiming_fan_out")  # as FSSD (PytorchSSD's init)
        self.out_channels = [channels for channels, _, _ in PYRAMID]
        self.map_names = [f"pyramid{i}" for i in range(len(PYRAMID))]

    def forward(self, x: Tensor) -> list[Tensor]:
        taps = self.vgg(x)
        size = taps["conv4_3"].shape[-1]
        fused = torch.cat([upsample_to(transform(taps[tap]), size)
                           for tap, transform in self.transforms.items()], 1)
        return run_in_sequence(self.pyramid, self.fusion_bn(fused))


_MFSSD_NOTES = [
    "fusion (paper §II.A): conv4_3 -> 512, conv5_3 -> 256, fc7 -> 256 channels (2:1:1), each a 1x1 conv "
    "without bias + BN + ReLU, bilinearly resized to 38 (align_corners=True, as FSSD), concat + BN(1024)",
    "pyramid: FSSD's six 3x3 layers on the 1024-channel map, each conv without bias + BN + ReLU; boxes "
    "6/6/6/6/4/4 with SSD300 sizes = 11,620 priors (paper §III.A: 6 boxes on conv4_3; Table IV)",
    "BN/bias placement is not published; four placements give Table I's count, this one keeps FSSD's concat "
    "BN and plain fc6/fc7 (spec §3); no SSD extras, no L2Norm",
]


def _build_mfssd(num_classes: int, batch_norm: bool, pretrained_backbone: bool, prior_set: PriorSet,
                 postprocess: PostprocessConfig | None, options: dict[str, Any] | None = None) -> SSDDetector:
    ablation = Ablation.from_options(options or {})
    notes = list(_MFSSD_NOTES)
    if batch_norm:
        notes.append("MFSSD-BN: the 13 VGG 3x3 convs lose their bias and gain BN (+4,224 parameters, "
                     "Table I); fc6/fc7 stay without BN")
    return assemble(lambda pretrained: MFSSDFeatures(batch_norm, pretrained, ablation.fc6),
                    mfssd300_levels(prior_set), 300, ablation, num_classes,
                    pretrained_backbone=pretrained_backbone, paper=MFSSD_PAPER, notes=notes,
                    postprocess=postprocess)


@register("mfssd300", family="ssd", input_size=300, options=OPTIONS)
def mfssd300(num_classes: int, *, pretrained_backbone: bool = False, prior_set: PriorSet = "voc",
             postprocess: PostprocessConfig | None = None, **ablation: Any) -> SSDDetector:
    return _build_mfssd(num_classes, False, pretrained_backbone, prior_set, postprocess, ablation)


@register("mfssd300_bn", family="ssd", input_size=300, options=OPTIONS)
def mfssd300_bn(num_classes: int, *, pretrained_backbone: bool = False, prior_set: PriorSet = "voc",
                postprocess: PostprocessConfig | None = None, **ablation: Any) -> SSDDetector:
    return _build_mfssd(num_classes, True, pretrained_backbone, prior_set, postprocess, ablation)


@register("mfssd300_pruned", family="ssd", input_size=300, plan=slimming_plan)
def mfssd300_pruned(num_classes: int, *, pretrained_backbone: bool = False, prior_set: PriorSet = "voc",
                    postprocess: PostprocessConfig | None = None) -> SSDDetector:
    """MFSSD-Pruned: the network its plan starts from is MFSSD-BN (ImageNet backbone when asked).

    Its registry plan (``detectors.ssd.slimming_plan``) sparse-trains it, prunes it by the BN-scale criterion
    (the suite's ``recipe.pruning``: a global ratio or threshold; Table I's count is then compared, not
    targeted) and fine-tunes it; ``detectors.registry.build_preview`` gives the pruned architecture without
    training.
    """
    model = _build_mfssd(num_classes, True, pretrained_backbone, prior_set, postprocess)
    model.notes.append("MFSSD-Pruned = MFSSD-BN after its training plan: sparse training with L1 on BN "
                       "scales, a global BN-scale cut (its note gives the criterion and the measured count), "
                       "fine-tuning")
    return model
