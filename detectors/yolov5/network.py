"""The anchor-based YOLOv5 (v6.x) network: ultralytics' blocks laid out as ``models/yolov5{n,s,m,l,x}.yaml``.

Backbone and neck are ultralytics' ``Conv``, ``C3``, ``SPPF``, ``Concat`` and ``nn.Upsample``, wired exactly
as the v6.0-v6.2 yaml files (``LAYOUT`` below is that yaml, row for row) with v5's depth/width scaling
(``max(round(n * depth), 1)`` repeats, channels rounded up to a multiple of 8). Only ``AnchorDetect`` (the
head) is written here. One deviation in the installed ultralytics has to be undone: its ``SPPF`` builds
``cv1`` without activation, whereas v5's SPPF applies SiLU there; ``build_backbone_neck`` restores the SiLU.
"""

from __future__ import annotations

import math

import torch
from torch import Tensor, nn
from ultralytics.nn.modules import C3, SPPF, Concat, Conv
from ultralytics.utils.ops import make_divisible
from ultralytics.utils.torch_utils import fuse_conv_and_bn, initialize_weights

# (depth_multiple, width_multiple) of yolov5{n,s,m,l,x}.yaml.
SCALES: dict[str, tuple[float, float]] = {
    "n": (0.33, 0.25), "s": (0.33, 0.50), "m": (0.67, 0.75), "l": (1.0, 1.0), "x": (1.33, 1.25),
}
# The yaml's anchors in input pixels: P3/8, P4/16, P5/32, three (w, h) each.
DEFAULT_ANCHORS: tuple[tuple[float, ...], ...] = (
    (10, 13, 16, 30, 33, 23), (30, 61, 62, 45, 59, 119), (116, 90, 156, 198, 373, 326),
)
STRIDES = (8, 16, 32)
DETECT_FROM = (17, 20, 23)  # the layers Detect reads (P3, P4, P5)

# [from, repeats, module, args] of the v6.x backbone (layers 0-9) and head (10-23), as in the yaml.
LAYOUT: tuple[tuple[int | tuple[int, ...], int, str, tuple], ...] = (
    (-1, 1, "Conv", (64, 6, 2, 2)),  # 0-P1/2
    (-1, 1, "Conv", (128, 3, 2)),  # 1-P2/4
    (-1, 3, "C3", (128,)),
    (-1, 1, "Conv", (256, 3, 2)),  # 3-P3/8
    (-1, 6, "C3", (256,)),
    (-1, 1, "Conv", (512, 3, 2)),  # 5-P4/16
    (-1, 9, "C3", (512,)),
    (-1, 1, "Conv", (1024, 3, 2)),  # 7-P5/32
    (-1, 3, "C3", (1024,)),
    (-1, 1, "SPPF", (1024, 5)),  # 9
    (-1, 1, "Conv", (512, 1, 1)),
    (-1, 1, "Upsample", ()),
    ((-1, 6), 1, "Concat", ()),  # cat backbone P4
    (-1, 3, "C3", (512, False)),  # 13
    (-1, 1, "Conv", (256, 1, 1)),
    (-1, 1, "Upsample", ()),
    ((-1, 4), 1, "Concat", ()),  # cat backbone P3
    (-1, 3, "C3", (256, False)),  # 17 (P3/8-small)
    (-1, 1, "Conv", (256, 3, 2)),
    ((-1, 14), 1, "Concat", ()),  # cat head P4
    (-1, 3, "C3", (512, False)),  # 20 (P4/16-medium)
    (-1, 1, "Conv", (512, 3, 2)),
    ((-1, 10), 1, "Concat", ()),  # cat head P5
    (-1, 3, "C3", (1024, False)),  # 23 (P5/32-large)
)


class BackboneNeck(nn.Module):
    """Layers 0-23 of the yaml; ``forward`` returns the P3, P4 and P5 features Detect reads."""

    def __init__(self, layers: list[nn.Module], sources: list[int | tuple[int, ...]],
                 out_channels: list[int]):
        super().__init__()
        self.layers = nn.ModuleList(layers)
        self.sources = sources
        self.out_channels = out_channels
        wanted = {j for f in sources if isinstance(f, tuple) for j in f if j != -1} | set(DETECT_FROM)
        self._keep = frozenset(wanted)

    def forward(self, x: Tensor) -> list[Tensor]:
        saved: dict[int, Tensor] = {}
        for i, (layer, source) in enumerate(zip(self.layers, self.sources, strict=True)):
            x = layer([x if j == -1 else saved[j] for j in source]) if isinstance(source, tuple) else layer(x)
            if i in self._keep:
                saved[i] = x
        return [saved[i] for i in DETECT_FROM]


def build_backbone_neck(scale: str) -> BackboneNeck:
    """Parse ``LAYOUT`` at one scale the way v5's ``parse_model`` does."""
    depth, width = SCALES[scale]
    channels: list[int] = []
    layers: list[nn.Module] = []
    sources: list[int | tuple[int, ...]] = []
    for i, (source, repeats, kind, args) in enumerate(LAYOUT):
        c1 = 3 if i == 0 else channels[-1]
        n = max(round(repeats * depth), 1) if repeats > 1 else repeats
        if kind in ("Conv", "C3", "SPPF"):
            c2 = make_divisible(args[0] * width, 8)
            if kind == "Conv":
                layer: nn.Module = Conv(c1, c2, *args[1:])
            elif kind == "C3":
                layer = C3(c1, c2, n, *args[1:])
            else:
                layer = SPPF(c1, c2, *args[1:])
                layer.cv1.act = nn.SiLU()  # v5's SPPF.cv1 is Conv(c1, c_, 1, 1) with its default SiLU
        elif kind == "Upsample":
            layer, c2 = nn.Upsample(None, 2, "nearest"), c1
        else:  # Concat
            assert isinstance(source, tuple)
            layer, c2 = Concat(1), sum(channels[j] for j in source)
        layers.append(layer)
        sources.append(source)
        channels.append(c2)
    return BackboneNeck(layers, sources, [channels[i] for i in DETECT_FROM])


class AnchorDetect(nn.Module):
    """v5's ``Detect``: per level a 1x1 conv to ``na * (5 + nc)`` outputs (xywh, objectness, classes).

    ``anchors`` is a buffer in grid units (input pixels / stride) as in v5, so an AutoAnchor result travels
    with the state dict. Train mode returns the raw maps ``(B, na, ny, nx, 5 + nc)``; eval mode returns the
    decoded ``(B, N, 5 + nc)``: xy = (2 sigmoid - 0.5 + cell) * stride, wh = (2 sigmoid)^2 * anchor, in input
    pixels, then sigmoid objectness and class scores.
    """

    def __init__(self, num_classes: int, in_channels: list[int],
                 anchors: tuple[tuple[float, ...], ...] = DEFAULT_ANCHORS,
                 strides: tuple[int, ...] = STRIDES):
        super().__init__()
        self.num_classes = num_classes
        self.outputs = num_classes + 5
        self.num_levels = len(anchors)
        self.num_anchors = len(anchors[0]) // 2
        self.strides = strides
        pixels = torch.tensor(anchors, dtype=torch.float32).view(self.num_levels, self.num_anchors, 2)
        self.register_buffer("anchors", pixels / torch.tensor(strides, dtype=torch.float32).view(-1, 1, 1))
        self.m = nn.ModuleList(nn.Conv2d(c, self.num_anchors * self.outputs, 1) for c in in_channels)
        self._initialize_biases()

    def _initialize_biases(self) -> None:
        """v5's prior: about 8 objects per 640-px image at each level, class probability 0.6 / (nc - 1)."""
        with torch.no_grad():
            for conv, stride in zip(self.m, self.strides, strict=True):
                bias = conv.bias.view(self.num_anchors, self.outputs)
                bias[:, 4] += math.log(8 / (640 / stride) ** 2)
                bias[:, 5:] += math.log(0.6 / (self.num_classes - 0.999999))

    def anchors_pixels(self) -> Tensor:
        """``(nl, na, 2)`` anchor sizes in input pixels."""
        return self.anchors * self.anchors.new_tensor(self.strides).view(-1, 1, 1)

    def forward(self, features: list[Tensor]) -> list[Tensor] | Tensor:
        raw = self.raw_maps(features)
        if self.training:
            return raw
        return torch.cat([self.decode(y, i) for i, y in enumerate(raw)], 1)

    def raw_maps(self, features: list[Tensor]) -> list[Tensor]:
        """Per level the undecoded ``(B, na, ny, nx, 5 + nc)`` the loss reads, in either mode."""
        raw = []
        for conv, x in zip(self.m, features, strict=True):
            y = conv(x)
            b, _, ny, nx = y.shape
            raw.append(y.view(b, self.num_anchors, self.outputs, ny, nx).permute(0, 1, 3, 4, 2).contiguous())
        return raw

    def decode(self, raw: Tensor, level: int) -> Tensor:
        """Raw ``(B, na, ny, nx, no)`` of one level to ``(B, na * ny * nx, no)`` boxes in input pixels."""
        b, _, ny, nx, _ = raw.shape
        stride = self.strides[level]
        ys, xs = torch.meshgrid(torch.arange(ny, device=raw.device, dtype=raw.dtype),
                                torch.arange(nx, device=raw.device, dtype=raw.dtype), indexing="ij")
        cell = torch.stack((xs, ys), -1).view(1, 1, ny, nx, 2)
        anchor = (self.anchors[level] * stride).to(raw.dtype).view(1, self.num_anchors, 1, 1, 2)
        y = raw.sigmoid()
        xy = (y[..., :2] * 2 - 0.5 + cell) * stride
        wh = (y[..., 2:4] * 2) ** 2 * anchor
        return torch.cat((xy, wh, y[..., 4:]), -1).view(b, -1, self.outputs)


class AnchorYOLOv5(nn.Module):
    """Backbone, neck and anchor-based head of one YOLOv5 v6.x scale."""

    def __init__(self, scale: str, num_classes: int):
        super().__init__()
        self.body = build_backbone_neck(scale)
        self.detect = AnchorDetect(num_classes, self.body.out_channels)
        initialize_weights(self)  # v5 and ultralytics: BatchNorm eps 1e-3, momentum 0.03

    def forward(self, images: Tensor) -> list[Tensor] | Tensor:
        return self.detect(self.body(images))

    def fuse(self) -> AnchorYOLOv5:
        """Fold every ``Conv``'s BatchNorm into its convolution, as v5's ``fuse()``; inference only."""
        for module in self.modules():
            if isinstance(module, Conv) and hasattr(module, "bn"):
                module.conv = fuse_conv_and_bn(module.conv, module.bn)
                delattr(module, "bn")
                module.forward = module.forward_fuse
        return self
