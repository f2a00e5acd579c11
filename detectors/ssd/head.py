"""The SSD prediction head: one 3x3 box-regression conv and one 3x3 classification conv per level."""

from __future__ import annotations

import torch
from torch import Tensor, nn


class SSDHead(nn.Module):
    """Turns ``L`` feature maps into ``(B, P, 4)`` box offsets and ``(B, P, C + 1)`` class logits.

    The output order (level, row, column, box) matches ``detectors.ssd.priors.generate_priors``.
    """

    def __init__(self, in_channels: list[int], boxes_per_location: list[int], num_classes_with_bg: int):
        super().__init__()
        if len(in_channels) != len(boxes_per_location):
            raise ValueError("one boxes_per_location entry per feature map is required")
        self.num_classes_with_bg = num_classes_with_bg
        self.loc = nn.ModuleList(
            nn.Conv2d(c, a * 4, 3, padding=1) for c, a in zip(in_channels, boxes_per_location, strict=True)
        )
        self.conf = nn.ModuleList(
            nn.Conv2d(c, a * num_classes_with_bg, 3, padding=1)
            for c, a in zip(in_channels, boxes_per_location, strict=True)
        )
        for conv in [*self.loc, *self.conf]:
            nn.init.xavier_uniform_(conv.weight)
            nn.init.zeros_(conv.bias)

    @staticmethod
    def _flatten(x: Tensor, last: int) -> Tensor:
        b = x.shape[0]
        return x.permute(0, 2, 3, 1).reshape(b, -1, last)

    def forward(self, features: list[Tensor]) -> tuple[Tensor, Tensor]:
        loc = torch.cat([self._flatten(h(f), 4) for h, f in zip(self.loc, features, strict=True)], 1)
        conf = torch.cat(
            [self._flatten(h(f), self.num_classes_with_bg) for h, f in zip(self.conf, features, strict=True)],
            1,
        )
        return loc, conf
