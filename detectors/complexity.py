"""Model complexity as the reports state it: parameters and GFLOPs.

Definitions (the ones the seed papers' tables and ultralytics use):
- parameters: every ``nn.Parameter`` element, frozen or not; BatchNorm contributes gamma and beta, never its
  running statistics (buffers). Frozen parameters count because size is a property of the architecture, not
  of a training stage, and because the published ultralytics counts include YOLO's fixed DFL projection (16);
- GFLOPs: 2 x multiply-accumulates counted by ``thop`` for one image at the model's input size (batch 1), on
  the inference graph: eval mode with every BatchNorm that directly follows a convolution folded into it.
  thop counts convolutions (transposed too), linear layers, average pooling, unfused normalisation and
  ``nn.Upsample`` modules; ReLU, max pooling and functional ops (``F.interpolate``, L2Norm, concatenation, the
  weighted sums of fusion necks) count zero, as in every published thop/ultralytics figure.
"""

from __future__ import annotations

import copy

import thop
import torch
from torch import nn
from torch.nn.utils.fusion import fuse_conv_bn_eval

from detectors.base import BATCH_NORMS

__all__ = ["BATCH_NORMS", "FLOPS_DEFINITION", "count_flops", "count_params", "fuse_conv_bn"]

FLOPS_DEFINITION = ("2 x multiply-accumulates of one (1, 3, S, S) forward, conv+BN fused, counted by thop")


def count_params(model: nn.Module) -> int:
    """Number of parameter elements (BatchNorm: gamma and beta only; buffers never count)."""
    return sum(p.numel() for p in model.parameters())


def fuse_conv_bn(model: nn.Module) -> nn.Module:
    """Fold BatchNorm into the convolution before it, in place, on an eval-mode model.

    A model with its own ``fuse()`` (ultralytics models, or any ``Detector`` that defines the hook) fuses
    itself; otherwise every ``Conv2d`` directly followed by ``BatchNorm2d`` inside an ``nn.Sequential`` (the
    layout of every conv block in this package) is folded and the BatchNorm replaced by ``Identity``.
    """
    own_fuse = getattr(model, "fuse", None)
    if callable(own_fuse):
        return own_fuse() or model
    for seq in [m for m in model.modules() if isinstance(m, nn.Sequential)]:
        for i in range(len(seq) - 1):
            conv, bn = seq[i], seq[i + 1]
            if isinstance(conv, nn.Conv2d) and isinstance(bn, nn.BatchNorm2d):
                seq[i], seq[i + 1] = fuse_conv_bn_eval(conv, bn), nn.Identity()
    return model


def _count_conv_transpose(module: nn.ConvTranspose2d, inputs: tuple[torch.Tensor], _: torch.Tensor) -> None:
    """Transposed conv: each *input* element multiplies into ``out_channels / groups x k_h x k_w`` outputs.

    thop counts it like a forward conv over the *output* (``out.numel() x in/groups x k``), which overstates a
    stride-s deconvolution by s^2 (x64 for DF-SSD's stride-8 deconv).
    """
    x = inputs[0]
    kernel = module.kernel_size[0] * module.kernel_size[1]
    macs = x.numel() * (module.out_channels // module.groups) * kernel
    module.total_ops += float(macs)


def count_flops(model: nn.Module, input_size: int) -> float:
    """GFLOPs = 2 x MACs / 1e9 of one ``(1, 3, S, S)`` forward of the fused eval-mode model (see module doc).

    Works on a deep copy, so the caller's model is untouched. The copy goes to the meta device, where thop
    counts the same shapes without computing anything (one DF-SSD512 image costs ~10 s of CPU); a model
    whose forward needs real values is counted on its own device.
    """
    try:
        return _count_flops(copy.deepcopy(model).to("meta"), input_size)
    except Exception:  # a forward that needs real tensors (data-dependent shapes): count on real ones
        return _count_flops(copy.deepcopy(model), input_size)


def _count_flops(model: nn.Module, input_size: int) -> float:
    """``count_flops`` on ``model`` itself, on its device: fuses it in place (give it a copy)."""
    device = next(model.parameters()).device
    fused = fuse_conv_bn(model.eval())
    image = torch.zeros(1, 3, input_size, input_size, device=device)
    with torch.no_grad():
        macs, _ = thop.profile(fused, inputs=(image,), verbose=False,
                               custom_ops={nn.ConvTranspose2d: _count_conv_transpose})
    return 2.0 * float(macs) / 1e9
