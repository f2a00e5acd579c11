"""MFSSD300 and MFSSD300-BN: Table I parameter counts, the 2:1:1 fusion, training and prediction on CPU.

The helpers here (``targets``, ``train``, ``at_half_resolution``, ``check_predictions``) are shared with the
MDSSD, DF-SSD and pruning tests.
"""

from __future__ import annotations

from collections.abc import Iterator
from contextlib import contextmanager

import pytest
import torch

from detectors.base import ImageMeta, Target
from detectors.registry import build_model
from detectors.ssd.detector import SSDDetector
from detectors.ssd.priors import PriorLevel

# Two images (BN needs more than one value per channel on the 1x1 map), as fractions of the input side.
_BOXES = [torch.tensor([[0.1, 0.13, 0.4, 0.67]]),
          torch.tensor([[0.03, 0.03, 0.17, 0.2], [0.33, 0.4, 0.93, 0.97]])]
_LABELS = [torch.tensor([3]), torch.tensor([0, 7])]


def targets(size: int) -> list[Target]:
    """Ground truth of the two test images in ``size x size`` network-input pixels."""
    return [Target(boxes * size, labels) for boxes, labels in zip(_BOXES, _LABELS, strict=True)]


def meta(size: int) -> ImageMeta:
    """A 480x640 original stretched to ``size x size``."""
    return ImageMeta(0, (480, 640), scale=(size / 480, size / 640))


@contextmanager
def frozen_backbone(model: SSDDetector) -> Iterator[None]:
    """Train without the VGG body: it is SSD's, and skipping its backward keeps these tests fast."""
    params = list(model.features.vgg.parameters())
    for p in params:
        p.requires_grad_(False)
    try:
        yield
    finally:
        for p in params:
            p.requires_grad_(True)


def train(model: SSDDetector, images: torch.Tensor, targets: list[Target], steps: int = 3,
          lr: float = 1e-4) -> list[float]:
    """Losses of ``steps`` Adam steps on one batch (the last one after ``steps - 1`` updates)."""
    model.train()
    losses = []
    with frozen_backbone(model):
        optimizer = torch.optim.Adam([p for p in model.parameters() if p.requires_grad], lr=lr)
        for _ in range(steps):
            loss = model.loss(images, targets)
            assert set(loss) == {"loss", "loss_box", "loss_cls"}
            optimizer.zero_grad()
            loss["loss"].backward()
            optimizer.step()
            losses.append(loss["loss"].item())
    return losses


def at_half_resolution(model: SSDDetector) -> SSDDetector:
    """``model``'s feature network on a half-size input, with the priors of its halved maps.

    The 512 networks are fully convolutional and their maps halve exactly at 256, where they train four
    times faster: same steps, half the box sizes, a fresh head.
    """
    levels = [PriorLevel(lv.feature_size // 2, lv.step, tuple((w / 2, h / 2) for w, h in lv.shapes))
              for lv in model.levels]
    return SSDDetector(model.features, levels, model.num_classes, model.input_size // 2, paper=model.paper)


def check_predictions(model: SSDDetector, images: torch.Tensor) -> None:
    """Detections are best-first, at most ``max_detections``, in original-image pixels inside the image."""
    model.eval()
    original = meta(model.input_size)
    with torch.no_grad():
        detections = model.predict(images, [original] * len(images))
    height, width = original.orig_size
    for det in detections:
        assert 0 < len(det.boxes) <= model.postprocess_config.max_detections
        assert (det.scores[:-1] >= det.scores[1:]).all()
        assert ((det.labels >= 0) & (det.labels < model.num_classes)).all()
        assert (det.boxes >= 0).all()
        assert (det.boxes[:, 0::2] <= width).all() and (det.boxes[:, 1::2] <= height).all()
        assert (det.boxes[:, 2:] >= det.boxes[:, :2]).all()
        assert det.boxes[:, 2].max() > model.input_size  # mapped back to the 640-wide original


@pytest.fixture(scope="module")
def images() -> torch.Tensor:
    return torch.rand(2, 3, 300, 300, generator=torch.Generator().manual_seed(0))


@pytest.mark.parametrize(("name", "params"), [("mfssd300", 33_709_664), ("mfssd300_bn", 33_713_888)])
def test_table_one_parameter_counts_and_priors(name, params):
    model = build_model(name, 20)
    info = model.info()
    assert (info.params, info.priors) == (params, 11_620)
    assert [lv.boxes_per_location for lv in model.levels] == [6, 6, 6, 6, 4, 4]


def test_fusion_is_two_to_one_to_one_and_bn_only_in_the_bn_variant():
    plain, bn = build_model("mfssd300", 20).features, build_model("mfssd300_bn", 20).features
    assert [t[0].out_channels for t in plain.transforms.values()] == [512, 256, 256]
    assert plain.fusion_bn.num_features == 1024
    plain_vgg_bns = sum(isinstance(m, torch.nn.BatchNorm2d) for m in plain.vgg.modules())
    bn_vgg_bns = sum(isinstance(m, torch.nn.BatchNorm2d) for m in bn.vgg.modules())
    assert (plain_vgg_bns, bn_vgg_bns) == (0, 13)


@pytest.mark.parametrize("name", ["mfssd300", "mfssd300_bn"])
def test_trains_and_predicts(name, images):
    torch.manual_seed(0)
    model = build_model(name, 20)
    shapes = []
    model.head.register_forward_pre_hook(lambda _, args: shapes.append([tuple(f.shape[1:]) for f in args[0]]))
    losses = train(model, images, targets(300))
    assert shapes[0] == [(512, 38, 38), (512, 19, 19), (256, 10, 10), (256, 5, 5), (256, 3, 3), (256, 1, 1)]
    assert all(torch.isfinite(torch.tensor(losses)))
    assert losses[-1] < 0.75 * losses[0], losses
    check_predictions(model, images[:1])
