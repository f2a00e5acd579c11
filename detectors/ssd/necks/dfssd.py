"""DF-SSD300/512 (Zhao, Zhou, Zhai, CAAI Trans. Intell. Syst. 2020): deconvolution + weighted feature fusion.

Seed 004 (in Chinese) enlarges conv4_3 to the input resolution with one deconvolution (§2.1 step 2: at 300
stride 8, kernel 4, padding 1, 38 -> 298; at 512 stride 8, kernel 8, padding 0, 64 -> 512), maps conv4_3's
pixels onto it by Eq. 2-3 (step 3), pools it back to the conv4_3 size (step 4) and concatenates the upsampled
conv11_2 into ``nconv4_3`` (steps 5-6). Eq. (4) then fuses nconv4_3, conv7 (fc7), conv8_2, conv9_2 and
conv10_2, with extra weights 0.3/0.2/0.15/0.15/0.2, into the finest prediction map; the other four stay SSD
prediction maps (§2.3: maps 38/19/10/5/3, 9/6/6/6/6 boxes, s_min 0.1, s_max 0.9).
"""

from __future__ import annotations

from typing import Any, Literal

import torch
from torch import Tensor, nn

from detectors.base import PostprocessConfig
from detectors.registry import register
from detectors.ssd.ablation import ABLATION_OPTIONS, Ablation, assemble
from detectors.ssd.detector import SSDDetector
from detectors.ssd.layers import (
    SSD_EXTRAS,
    conv_block,
    init_convs,
    run_in_sequence,
    ssd_extras,
    upsample_to,
    vgg_body,
)
from detectors.ssd.priors import PriorLevel, ssd_levels
from detectors.ssd.vgg import L2Norm

DFSSD_PAPER = ("Zhao, Zhou, Zhai, SSD small target detection algorithm based on deconvolution and feature "
               "fusion, CAAI Transactions on Intelligent Systems 15(2):310-316, 2020, "
               "doi 10.11992/tis.201905035")
# conv7 is a prediction map of its own and fc7's side fixes the fusion: no plain-VGG fc6 here. No prior_set
# either: the paper uses the same scales on VOC and KITTI.
OPTIONS = frozenset({"pretrained_backbone", *(ABLATION_OPTIONS - {"fc6"})})

ENLARGE_STRIDE = 8
_ENLARGE_KERNEL_PADDING = {300: (4, 1), 512: (8, 0)}  # paper §2.1 step 2
# Without autograd, the enlarged map (512 x 512 x 512 per image at 512, 0.5 GB in fp32) is computed for this
# many elements at a time: whole images, at least one.
ENLARGE_CHUNK_ELEMENTS = 2**28
FUSION_CHANNELS = 512
# Eq. (4): F = V + sum_i a_i v_i, V the plain sum of the same five maps; the a_i are tuned in the paper.
FUSION_EXTRA_WEIGHTS = (0.3, 0.2, 0.15, 0.15, 0.2)  # nconv4_3, conv7, conv8_2, conv9_2, conv10_2

S_MIN, S_MAX = 0.1, 0.9  # §2.3
SMALL_SCALE, SMALL_RATIOS = 0.05, (1.0, 2.0, 0.5)  # the three extra shapes of the 9-box level (spec §5)
_FEATURE_SIZES = {300: (38, 19, 10, 5, 3), 512: (64, 32, 16, 8, 4)}
_STEPS = {300: (8, 16, 32, 64, 100), 512: (8, 16, 32, 64, 128)}  # SSD's steps for these maps


class EnlargeMapPool(nn.Module):
    """§2.1 steps 2-4: deconv4_3 = deconv(conv4_3); conv4_3's pixels mapped onto it (Eq. 2-3); ReLU; pool.

    Eq. 3, p_i = u_i p_(i+1) + ((t_i - 1) / 2 - padding), places conv4_3 pixel j at the centre
    ``stride * j + (kernel - 1) / 2 - padding`` of deconv4_3 (8 j + 0.5 at 300, 8 j + 3.5 at 512), the centre
    of the window that pixel's deconvolution writes. Eq. 2, g(x, y) = f(h(x, y)), then gives every deconv4_3
    position the conv4_3 feature of the pixel whose mapped centre is nearest (no ties: the offsets are
    half-integers). The mapped features are added to deconv4_3 (the paper maps them "onto" it and gives no
    other operation; the sum keeps its 512 channels and adds no parameter). The deconvolution alone is not
    equivalent: at 300 its 4-wide windows cover 4 of every 8 positions, so the 8x8 max-pool of step 4 sees
    the bias alone at the others, where the mapping puts conv4_3's own features.
    """

    def __init__(self, channels: int, kernel: int, padding: int, stride: int = ENLARGE_STRIDE):
        super().__init__()
        self.stride, self.offset = stride, (kernel - 1) / 2 - padding
        self.deconv = nn.ConvTranspose2d(channels, channels, kernel, stride=stride, padding=padding)
        self.pool = nn.MaxPool2d(stride, stride, ceil_mode=True)

    def source_index(self, source_side: int, enlarged_side: int, device: torch.device) -> Tensor:
        """h of Eq. 2 along one axis: for every deconv4_3 position, the conv4_3 pixel nearest by Eq. 3."""
        positions = torch.arange(enlarged_side, device=device, dtype=torch.float64)
        nearest = torch.floor((positions - self.offset) / self.stride + 0.5).long()
        return nearest.clamp_(0, source_side - 1)

    def forward(self, x: Tensor) -> Tensor:
        per_image = x.shape[1] * (x.shape[-1] * self.stride) ** 2
        chunk = max(1, ENLARGE_CHUNK_ELEMENTS // per_image)
        if torch.is_grad_enabled() or len(x) <= chunk:
            return self._enlarge(x)
        return torch.cat([self._enlarge(part) for part in x.split(chunk)])  # same values, bounded memory

    def _enlarge(self, x: Tensor) -> Tensor:
        enlarged = self.deconv(x)
        rows = self.source_index(x.shape[-2], enlarged.shape[-2], x.device)
        cols = self.source_index(x.shape[-1], enlarged.shape[-1], x.device)
        mapped = x.index_select(2, rows).index_select(3, cols)
        return self.pool(enlarged.add_(mapped).relu_())  # in place: a deconvolution backward needs no output


class DFSSDFeatures(nn.Module):
    """SSD's VGG16 (conv4_3 through L2Norm) and extras up to conv11_2, plus the enlarge-and-fuse branch."""

    def __init__(self, layout: Literal[300, 512], pretrained_backbone: bool = False):
        super().__init__()
        self.vgg = vgg_body(pretrained_backbone)
        self.l2norm = L2Norm(512, 20.0)  # SSD's, on conv4_3
        extras = SSD_EXTRAS[layout][:4]  # conv8_2 ... conv11_2 (SSD512's conv12_2 is not used)
        self.extras = ssd_extras(extras)
        self.enlarge = EnlargeMapPool(512, *_ENLARGE_KERNEL_PADDING[layout])  # 38 -> 298 -> 38 at 300
        init_convs([self.enlarge], "xavier")
        deep_channels = [spec[1] for spec in extras]  # conv8_2 ... conv11_2
        sources = [512 + deep_channels[3], 1024, *deep_channels[:3]]  # nconv4_3, fc7, conv8_2 ... conv10_2
        self.transforms = nn.ModuleList(conv_block(c, FUSION_CHANNELS, 1) for c in sources)
        self.register_buffer("fusion_weights", 1.0 + torch.tensor(FUSION_EXTRA_WEIGHTS), persistent=False)
        self.out_channels = [FUSION_CHANNELS, 1024, *deep_channels[:3]]
        self.map_names = ["fusion", "conv7", "conv8_2", "conv9_2", "conv10_2"]

    def forward(self, x: Tensor) -> list[Tensor]:
        taps = self.vgg(x)
        conv4_3 = self.l2norm(taps["conv4_3"])
        size = conv4_3.shape[-1]
        deep = run_in_sequence(self.extras, taps["fc7"])
        nconv4_3 = torch.cat([self.enlarge(conv4_3), upsample_to(deep[3], size)], 1)
        sources = [nconv4_3, taps["fc7"], *deep[:3]]
        resized = torch.stack([upsample_to(t(s), size)
                               for t, s in zip(self.transforms, sources, strict=True)])
        fused = (resized * self.fusion_weights.view(-1, 1, 1, 1, 1)).sum(0)
        return [fused, taps["fc7"], *deep[:3]]


def dfssd_levels(input_size: Literal[300, 512]) -> list[PriorLevel]:
    """15,966 priors at 300 (9/6/6/6/6 on 38/19/10/5/3), 45,024 at 512 (on 64/32/16/8/4).

    Scales s_k = 0.1 + 0.2 (k - 1) (SSD's linear rule with the paper's s_min/s_max), s_6 = 1.1 for the last
    level's sqrt(s_k s_k+1) box; every level has SSD's 6 shapes (ratios 1, 1', 2, 1/2, 3, 1/3); the finest
    level adds 3 shapes at scale 0.05 with ratios 1, 2, 1/2.
    """
    sizes = _FEATURE_SIZES[input_size]
    m = len(sizes)
    pixels = [(S_MIN + (S_MAX - S_MIN) * k / (m - 1)) * input_size for k in range(m + 1)]  # k = m: s_6 = 1.1
    levels = ssd_levels(input_size, list(sizes), list(_STEPS[input_size]), pixels[:-1], pixels[1:],
                        [(2.0, 3.0)] * len(sizes))
    small = SMALL_SCALE * input_size
    extra = tuple((small * r**0.5, small / r**0.5) for r in SMALL_RATIOS)
    return [PriorLevel(levels[0].feature_size, levels[0].step, levels[0].shapes + extra), *levels[1:]]


_DFSSD_NOTES = [
    "Eq. (4) read literally: F = V + sum a_i v_i with V the plain sum of the same maps, so nconv4_3, conv7, "
    "conv8_2, conv9_2, conv10_2 enter with weights 1.3/1.2/1.15/1.15/1.2 (the text adds the tuned a_i "
    "'on top of equal-weight direct addition')",
    "fusion alignment is unspecified: each input goes through a 1x1 conv to 512 + ReLU and a bilinear resize "
    "(align_corners=True) to the conv4_3 size; the fused map replaces conv4_3 as the finest prediction map "
    "and conv7 ... conv10_2 stay prediction maps (spec §5); conv11_2 only feeds nconv4_3",
    "the deconvolution keeps 512 channels; step 3's Eq. 2-3 mapping adds to every deconv4_3 position the "
    "conv4_3 feature whose Eq. 3 centre (8 j + (k - 1) / 2 - p) is nearest (the paper names no combining "
    "operation: the sum adds no parameter), then ReLU and an 8x8/8 max-pool (ceil mode) back to conv4_3's "
    "side, so nconv4_3 has 512 + 256 = 768 channels; conv4_3 goes through SSD's L2Norm (scale 20) first",
    "priors: s_min 0.1, s_max 0.9 over 5 maps; 6 SSD shapes per location plus, on the finest map, 3 shapes "
    "at scale 0.05 with ratios 1, 2, 1/2 (the paper only gives the count 9); unclipped; the same for every "
    "prior_set (the paper uses these scales on both VOC and KITTI)",
]


def _build_dfssd(layout: Literal[300, 512], num_classes: int, pretrained_backbone: bool,
                 postprocess: PostprocessConfig | None, options: dict[str, Any]) -> SSDDetector:
    ablation = Ablation.from_options(options)
    notes = list(_DFSSD_NOTES)
    if layout == 512:
        notes.append("512: SSD512's extras up to conv11_2 (2x2), prediction maps 64/32/16/8/4 with steps "
                     "8/16/32/64/128 and sizes 51.2/153.6/256/358.4/460.8 px (+25.6 px small shapes): 45,024 "
                     "priors; the paper gives only the deconvolution settings for 512")
    return assemble(lambda pretrained: DFSSDFeatures(layout, pretrained), dfssd_levels(layout), layout,
                    ablation, num_classes, pretrained_backbone=pretrained_backbone, paper=DFSSD_PAPER,
                    notes=notes, postprocess=postprocess)


@register("dfssd300", family="ssd", input_size=300, options=OPTIONS)
def dfssd300(num_classes: int, *, pretrained_backbone: bool = False,
             postprocess: PostprocessConfig | None = None, **ablation: Any) -> SSDDetector:
    return _build_dfssd(300, num_classes, pretrained_backbone, postprocess, ablation)


@register("dfssd512", family="ssd", input_size=512, options=OPTIONS)
def dfssd512(num_classes: int, *, pretrained_backbone: bool = False,
             postprocess: PostprocessConfig | None = None, **ablation: Any) -> SSDDetector:
    return _build_dfssd(512, num_classes, pretrained_backbone, postprocess, ablation)
