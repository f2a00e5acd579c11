"""FLOPs are 2 x MACs; transposed convolutions are counted per input element, not per output element."""

from __future__ import annotations

import pytest
from torch import nn

from detectors.complexity import count_flops


class _Deconv(nn.Module):
    def __init__(self) -> None:
        super().__init__()
        self.up = nn.ConvTranspose2d(3, 8, kernel_size=4, stride=8, padding=1)

    def forward(self, x):
        return self.up(x)


def test_conv_transpose_macs_are_per_input_element() -> None:
    # 3 x 10 x 10 inputs, each scattered into 8 output channels through a 4x4 kernel.
    expected_macs = 3 * 10 * 10 * 8 * 4 * 4
    assert count_flops(_Deconv(), 10) == pytest.approx(2 * expected_macs / 1e9)


def test_plain_conv_matches_the_textbook_count() -> None:
    conv = nn.Sequential(nn.Conv2d(3, 16, 3, padding=1))
    assert count_flops(conv, 8) == pytest.approx(2 * 8 * 8 * 16 * 3 * 9 / 1e9)
