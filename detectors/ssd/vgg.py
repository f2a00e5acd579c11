"""VGG16 as SSD uses it: conv1_1..conv5_3, pool5 3x3/1, dilated fc6 and fc7 as convolutions.

The layer order mirrors ``torchvision.models.vgg16().features`` (and ``vgg16_bn``) so ImageNet weights load by
index. ``pool3`` uses ``ceil_mode`` so a 300 input gives a 38x38 conv4_3 (75 -> 38).

``fc6="plain"`` is the other body of SSD's ablation (seed 003 §4.2.3, "Atrous is faster"): the full VGG16 with
pool5 2x2/2 and fc6/fc7 as the unsubsampled 7x7/4096 and 1x1/4096 convolutions of the ImageNet classifier.
"""

from __future__ import annotations

from pathlib import Path
from typing import ClassVar, Literal

import torch
from torch import Tensor, nn

_CFG = [64, 64, "M", 128, 128, "M", 256, 256, 256, "C", 512, 512, 512, "M", 512, 512, 512]
_TAPS = {7: "conv3_3", 10: "conv4_3", 13: "conv5_3"}  # 1-based index of the conv whose ReLU output is tapped

Fc6 = Literal["atrous", "plain"]
FC6_CHOICES: tuple[Fc6, ...] = ("atrous", "plain")


class L2Norm(nn.Module):
    """Channel-wise L2 normalisation with a learnable per-channel scale (ParseNet; SSD's conv4_3).

    Computed in fp32 and returned in the input's dtype: in fp16 the eps of 1e-10 underflows to 0 (a zero
    feature vector then gives 0/0), and a 512-channel norm is where fp16 loses the most.
    """

    def __init__(self, channels: int, scale: float = 20.0, eps: float = 1e-10):
        super().__init__()
        self.eps = eps
        self.weight = nn.Parameter(torch.full((channels,), float(scale)))

    def forward(self, x: Tensor) -> Tensor:
        wide = x.float()
        out = wide / (wide.norm(dim=1, keepdim=True) + self.eps) * self.weight.float().view(1, -1, 1, 1)
        return out.to(x.dtype)


class VGG16(nn.Module):
    """The SSD VGG16 body. ``forward`` returns a dict with ``conv3_3``, ``conv4_3``, ``conv5_3`` and ``fc7``.

    ``batch_norm=True`` gives the 13 3x3 convs without bias and each followed by BatchNorm (MFSSD-BN);
    fc6/fc7 never get BN, as in SSD. ``fc6`` chooses SSD's atrous fc6/fc7 (3x3 dilation 6, 1024 channels,
    after a 3x3/1 pool5) or the plain VGG16 ones (pool5 2x2/2 in ceil mode, 7x7 and 1x1 convs of 4096): the
    plain fc7 is then half the size of conv5_3 (10x10 at 300) with 4096 channels (``self.channels``).
    """

    channels: ClassVar[dict[str, int]] = {"conv3_3": 256, "conv4_3": 512, "conv5_3": 512, "fc7": 1024}

    def __init__(self, batch_norm: bool = False, fc6: Fc6 = "atrous"):
        super().__init__()
        if fc6 not in FC6_CHOICES:
            raise ValueError(f"unknown fc6 {fc6!r}; choose one of {list(FC6_CHOICES)}")
        self.batch_norm = batch_norm
        self.fc6_kind = fc6
        layers: list[nn.Module] = []
        self._tap_index: dict[int, str] = {}
        in_ch, n_conv = 3, 0
        for v in _CFG:
            if v in ("M", "C"):
                layers.append(nn.MaxPool2d(2, 2, ceil_mode=v == "C"))
                continue
            n_conv += 1
            layers.append(nn.Conv2d(in_ch, v, 3, padding=1, bias=not batch_norm))
            if batch_norm:
                layers.append(nn.BatchNorm2d(v))
            layers.append(nn.ReLU(inplace=True))
            if n_conv in _TAPS:
                self._tap_index[len(layers) - 1] = _TAPS[n_conv]
            in_ch = v
        self.features = nn.Sequential(*layers)
        if fc6 == "atrous":
            self.pool5 = nn.MaxPool2d(3, 1, padding=1)
            self.fc6 = nn.Conv2d(512, 1024, 3, padding=6, dilation=6)
            self.fc7 = nn.Conv2d(1024, 1024, 1)
        else:
            self.pool5 = nn.MaxPool2d(2, 2, ceil_mode=True)
            self.fc6 = nn.Conv2d(512, 4096, 7, padding=3)
            self.fc7 = nn.Conv2d(4096, 4096, 1)
            self.channels = {**VGG16.channels, "fc7": 4096}
        self._init_weights()

    def _init_weights(self) -> None:
        for m in self.modules():
            if isinstance(m, nn.Conv2d):
                nn.init.kaiming_normal_(m.weight, mode="fan_out", nonlinearity="relu")
                if m.bias is not None:
                    nn.init.zeros_(m.bias)
            elif isinstance(m, nn.BatchNorm2d):
                nn.init.ones_(m.weight)
                nn.init.zeros_(m.bias)
        for fc in (self.fc6, self.fc7):  # torchvision's choice for the converted fc layers
            nn.init.xavier_uniform_(fc.weight)

    def forward(self, x: Tensor) -> dict[str, Tensor]:
        taps: dict[str, Tensor] = {}
        for i, layer in enumerate(self.features):
            x = layer(x)
            if i in self._tap_index:
                taps[self._tap_index[i]] = x
        x = torch.relu(self.fc6(self.pool5(x)))
        taps["fc7"] = torch.relu(self.fc7(x))
        return taps

    def load_imagenet(self) -> None:
        """Load torchvision's ImageNet VGG16 conv weights (atrous fc6/fc7 stay Xavier-initialised).

        The plain fc6/fc7 are the ImageNet classifier's first two layers reshaped into convolutions. Uses
        ``IMAGENET1K_V1`` of ``vgg16`` / ``vgg16_bn``, both trained with the ImageNet mean/std that
        ``SSDDetector`` applies (the Caffe-converted ``IMAGENET1K_FEATURES`` expect 0-255 inputs instead).
        Offline, raises a ``RuntimeError`` naming the file to download and the folder to put it in.
        """
        from torchvision.models import VGG16_BN_Weights, VGG16_Weights

        weights = VGG16_BN_Weights.IMAGENET1K_V1 if self.batch_norm else VGG16_Weights.IMAGENET1K_V1
        target = Path(torch.hub.get_dir()) / "checkpoints" / Path(weights.url).name
        try:
            state = weights.get_state_dict(progress=False, check_hash=False)
        except Exception as err:  # URLError, socket errors, SSL errors: all mean "not available offline"
            raise RuntimeError(
                f"could not load ImageNet VGG16 weights ({err.__class__.__name__}: {err}). This machine "
                f"seems offline: download {weights.url} on a connected machine and place it at {target}, "
                f"or build with pretrained_backbone=False") from err
        own = {k[len("features."):]: v for k, v in state.items() if k.startswith("features.")}
        if self.batch_norm:
            own = _fold_conv_bias_into_bn(own)
        missing, unexpected = self.features.load_state_dict(own, strict=False)
        if missing or unexpected:
            raise RuntimeError(f"VGG16 weight layout mismatch: missing {missing}, unexpected {unexpected}")
        if self.fc6_kind == "plain":
            with torch.no_grad():
                for conv, index in ((self.fc6, 0), (self.fc7, 3)):
                    conv.weight.copy_(state[f"classifier.{index}.weight"].view_as(conv.weight))
                    conv.bias.copy_(state[f"classifier.{index}.bias"])


def _fold_conv_bias_into_bn(state: dict[str, Tensor]) -> dict[str, Tensor]:
    """torchvision's ``vgg16_bn`` convs carry a bias; ours do not, since BN follows each of them.

    ``BN(conv(x) + b)`` equals ``BN'(conv(x))`` with ``running_mean' = running_mean - b`` (in training BN
    subtracts the batch mean, so ``b`` has no effect at all): the weights load exactly.
    """
    state = dict(state)
    for key in [k for k in state if k.endswith(".bias")]:
        bn = f"{int(key.split('.')[0]) + 1}.running_mean"  # the BN right after this conv
        if bn in state:
            state[bn] = state[bn] - state.pop(key)
    return state
