"""Layers several SSD necks are built from: conv blocks, resizing, stage runners, init loops, SSD's extras.

Each neck in ``detectors.ssd.necks`` is a leaf that composes these with its own paper's tables; no neck
imports another. What lives here is what two or more papers describe in the same words (SSD's VGG16 body and
extra layers, a 1x1/3x3 conv block, FSSD-style bilinear alignment).
"""

from __future__ import annotations

from collections.abc import Iterable, Sequence
from typing import Literal

import torch.nn.functional as F
from torch import Tensor, nn

from detectors.ssd.vgg import VGG16, Fc6

Init = Literal["xavier", "kaiming_fan_out"]


def conv_block(in_channels: int, out_channels: int, kernel: int, stride: int = 1, padding: int = 0,
               batch_norm: bool = False) -> nn.Sequential:
    """Conv + ReLU, or conv without bias + BN + ReLU (the BN already provides the shift)."""
    conv = nn.Conv2d(in_channels, out_channels, kernel, stride=stride, padding=padding, bias=not batch_norm)
    layers: list[nn.Module] = [conv, nn.BatchNorm2d(out_channels)] if batch_norm else [conv]
    return nn.Sequential(*layers, nn.ReLU(inplace=True))


def conv_stack(in_channels: int, specs: Sequence[tuple[int, int, int]], batch_norm: bool) -> nn.ModuleList:
    """3x3 conv blocks applied in sequence, one per ``(channels, stride, padding)``; each output is a map."""
    layers, prev = [], in_channels
    for out, stride, padding in specs:
        layers.append(conv_block(prev, out, 3, stride, padding, batch_norm))
        prev = out
    return nn.ModuleList(layers)


def upsample_to(x: Tensor, size: int) -> Tensor:
    """Bilinear resize to ``size x size`` with ``align_corners=True`` (PytorchSSD's FSSD fusion)."""
    return F.interpolate(x, size=(size, size), mode="bilinear", align_corners=True)


def run_in_sequence(stages: Iterable[nn.Module], x: Tensor) -> list[Tensor]:
    """Apply ``stages`` one after the other and return every stage's output (finest first)."""
    maps = []
    for stage in stages:
        x = stage(x)
        maps.append(x)
    return maps


def init_convs(modules: Iterable[nn.Module], init: Init) -> None:
    """Re-initialise every (transposed) convolution among ``modules`` and zero its bias.

    ``xavier``: Xavier-uniform, the SSD ports' choice for the extras (amdegroot, lufficc);
    ``kaiming_fan_out``: He-normal with fan-out, PytorchSSD's choice for FSSD's fusion and pyramid.
    """
    for module in modules:
        for conv in module.modules():
            if not isinstance(conv, nn.Conv2d | nn.ConvTranspose2d):
                continue
            if init == "xavier":
                nn.init.xavier_uniform_(conv.weight)
            else:
                nn.init.kaiming_normal_(conv.weight, mode="fan_out")
            if conv.bias is not None:
                nn.init.zeros_(conv.bias)


def vgg_body(pretrained_backbone: bool, batch_norm: bool = False, fc6: Fc6 = "atrous") -> VGG16:
    """SSD's VGG16, with torchvision's ImageNet weights when ``pretrained_backbone``."""
    vgg = VGG16(batch_norm=batch_norm, fc6=fc6)
    if pretrained_backbone:
        vgg.load_imagenet()
    return vgg


# SSD's extra stages after fc7, conv8 onwards (Liu et al. 2016 Fig. 2; lufficc/SSD for 512):
# (reduction channels, output channels, kernel, stride, padding) of the 1x1 + kxk pair.
SSD_EXTRAS: dict[int, list[tuple[int, int, int, int, int]]] = {
    300: [(256, 512, 3, 2, 1), (128, 256, 3, 2, 1), (128, 256, 3, 1, 0), (128, 256, 3, 1, 0)],
    512: [(256, 512, 3, 2, 1), (128, 256, 3, 2, 1), (128, 256, 3, 2, 1), (128, 256, 3, 2, 1),
          (128, 256, 4, 1, 1)],
}


def ssd_extra(in_channels: int, mid: int, out: int, kernel: int, stride: int, padding: int) -> nn.Sequential:
    """One SSD extra stage: 1x1 reduction then a 3x3 (or 4x4) conv, each followed by ReLU."""
    return nn.Sequential(nn.Conv2d(in_channels, mid, 1), nn.ReLU(inplace=True),
                         nn.Conv2d(mid, out, kernel, stride=stride, padding=padding), nn.ReLU(inplace=True))


def ssd_extras(specs: Sequence[tuple[int, int, int, int, int]], in_channels: int = 1024) -> nn.ModuleList:
    """SSD's extra stages for ``specs`` (a slice of ``SSD_EXTRAS``), Xavier-initialised as the ports do."""
    stages = []
    for mid, out, kernel, stride, padding in specs:
        stages.append(ssd_extra(in_channels, mid, out, kernel, stride, padding))
        in_channels = out
    extras = nn.ModuleList(stages)
    init_convs([extras], "xavier")
    return extras


class FusedPyramid(nn.Module):
    """FSSD's neck shape (FSSD, MFSSD): taps fused into one map, then a ``pyramid`` of stride-2 layers, one
    prediction map each. Subclasses build ``pyramid``, ``map_names`` and ``out_channels``."""

    pyramid: nn.ModuleList
    map_names: list[str]
    out_channels: list[int]

    def truncate(self, num_maps: int) -> None:
        """Keep the first ``num_maps`` pyramid layers (the later ones feed no prediction)."""
        del self.pyramid[num_maps:]
        self.map_names, self.out_channels = self.map_names[:num_maps], self.out_channels[:num_maps]
