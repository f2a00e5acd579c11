"""ImageNet VGG16 weights: torchvision's layouts load by index, and offline the error says what to do."""

from __future__ import annotations

from urllib.error import URLError

import pytest
import torch
from torch import nn
from torchvision.models import VGG16_BN_Weights, VGG16_Weights, vgg16, vgg16_bn

from detectors.ssd.vgg import VGG16


@pytest.mark.parametrize(("batch_norm", "reference", "weights"), [(False, vgg16, VGG16_Weights),
                                                                  (True, vgg16_bn, VGG16_BN_Weights)])
def test_torchvision_weights_load_and_compute_the_same_features(monkeypatch, batch_norm, reference,
                                                                weights) -> None:
    torch.manual_seed(0)
    ref = reference().eval()
    with torch.no_grad():  # non-trivial biases and BN statistics, so a wrong bias fold would show
        for m in ref.features:
            if isinstance(m, nn.Conv2d):
                m.bias.normal_(0, 0.1)
            elif isinstance(m, nn.BatchNorm2d):
                m.running_mean.normal_(0, 0.1)
                m.running_var.uniform_(0.5, 2.0)
    state = ref.state_dict()  # a stand-in for the download, same layout
    monkeypatch.setattr(type(weights.IMAGENET1K_V1), "get_state_dict", lambda self, **kw: state)
    body = VGG16(batch_norm=batch_norm)
    body.load_imagenet()
    x = torch.rand(1, 3, 64, 64)
    with torch.no_grad():
        expected = ref.features[:-1](x)  # torchvision's pool5 is 2x2/2; SSD's is 3x3/1 and comes later
        got = body.eval().features(x)
    torch.testing.assert_close(got, expected, rtol=1e-4, atol=1e-5)


def test_offline_error_names_the_file_and_where_to_put_it(monkeypatch) -> None:
    def offline(self, **kwargs):
        raise URLError("[Errno -3] Temporary failure in name resolution")

    monkeypatch.setattr(type(VGG16_Weights.IMAGENET1K_V1), "get_state_dict", offline)
    with pytest.raises(RuntimeError) as err:
        VGG16().load_imagenet()
    message = str(err.value)
    assert VGG16_Weights.IMAGENET1K_V1.url in message
    assert "hub" in message and "checkpoints" in message and "pretrained_backbone=False" in message
