"""MDSSD300/512: Fusion Blocks, seven prediction maps, priors, parameter count, training and prediction."""

from __future__ import annotations

import math

import pytest
import torch
from test_mfssd import at_half_resolution, check_predictions, targets, train

from detectors.registry import build_model
from detectors.ssd.necks.mdssd import MDSSDFeatures, deconv_plan, mdssd_levels


@pytest.mark.parametrize(("size", "maps"), [
    (300, [(256, 75), (512, 38), (1024, 19), (512, 10), (256, 5), (256, 3), (256, 1)]),
    (512, [(256, 128), (512, 64), (1024, 32), (512, 16), (256, 8), (256, 4), (256, 2)]),
])
def test_seven_prediction_maps_at_the_native_input(size, maps):
    with torch.device("meta"):  # shapes only: the deconvolution stacks must land exactly on the shallow maps
        features = MDSSDFeatures(size)
        outputs = features(torch.empty(1, 3, size, size))
    assert [(f.shape[1], f.shape[2]) for f in outputs] == maps
    assert features.out_channels == [c for c, _ in maps]


# Parameter counts: snapshots of this implementation (the MDSSD paper gives none); the prior counts are
# derived in test_prior_levels_extend_ssd_with_a_finer_level.
@pytest.mark.parametrize(("name", "num_classes", "params", "priors"), [
    ("mdssd300", 20, 63_556_114, 31_232), ("mdssd300", 80, 72_129_034, 31_232),
    ("mdssd512", 20, 61_705_284, 90_096), ("mdssd512", 80, 70_554_804, 90_096),
])
def test_parameter_count_and_priors(name, num_classes, params, priors):
    with torch.device("meta"):
        info = build_model(name, num_classes).info()
    assert (info.params, info.priors) == (params, priors)


def test_prior_levels_extend_ssd_with_a_finer_level():
    levels = mdssd_levels(300)
    assert [lv.boxes_per_location for lv in levels] == [4, 4, 6, 6, 6, 4, 4]
    assert [lv.step for lv in levels] == [4, 8, 16, 32, 64, 100, 300]
    assert levels[0].shapes[:2] == ((15, 15), (math.sqrt(15 * 30),) * 2)
    assert levels[1].shapes[0] == (30, 30)  # conv4_3's SSD300 size, one level down
    assert [lv.feature_size for lv in levels] == [75, 38, 19, 10, 5, 3, 1]
    # Derived: feature side squared times boxes per location, summed over the seven maps.
    assert sum(lv.num_priors for lv in levels) == 4 * 75**2 + 4 * 38**2 + 6 * (19**2 + 10**2 + 5**2) \
        + 4 * 3**2 + 4 * 1**2 == 31_232
    wide = mdssd_levels(512)
    assert [lv.feature_size for lv in wide] == [128, 64, 32, 16, 8, 4, 2]
    assert [lv.boxes_per_location for lv in wide] == [4, 4, 6, 6, 6, 6, 4]
    assert wide[0].shapes[0] == pytest.approx((17.92, 17.92)) and wide[0].step == 4
    assert sum(lv.num_priors for lv in wide) == 4 * 128**2 + 4 * 64**2 + 6 * (32**2 + 16**2 + 8**2 + 4**2) \
        + 4 * 2**2 == 90_096


def test_fusion_block_layout():
    block = build_model("mdssd300", 20).features.fusion[0]
    deconvs = [m for m in block.high if isinstance(m, torch.nn.ConvTranspose2d)]
    assert [(d.out_channels, d.kernel_size[0], d.stride[0], d.padding[0]) for d in deconvs] == [
        (256, 3, 2, 1), (256, 2, 2, 0), (256, 3, 2, 1)]
    assert block.high[-1].weight[0] == 10 and block.low[-1].weight[0] == 20  # L2Norm scales high/low


@pytest.mark.parametrize("name", ["mdssd300", "mdssd512"])
def test_every_deconvolution_is_2x2_or_3x3_with_256_channels_and_one_conv_after_it(name):
    with torch.device("meta"):
        features = build_model(name, 20).features
    for block, channels in zip(features.fusion, (256, 512, 1024), strict=True):
        layers = list(block.high)
        deconvs = [i for i, m in enumerate(layers) if isinstance(m, torch.nn.ConvTranspose2d)]
        assert len(deconvs) == 3
        for i in deconvs:
            deconv, conv = layers[i], layers[i + 1]
            assert deconv.kernel_size in ((2, 2), (3, 3)) and deconv.out_channels == 256
            assert deconv.stride == (2, 2) and deconv.output_padding == (0, 0)
            assert isinstance(conv, torch.nn.Conv2d) and conv.in_channels == 256
        assert layers[deconvs[-1] + 1].out_channels == channels == block.low[0].out_channels


@pytest.mark.parametrize(("source", "target", "plan"), [
    (10, 75, [(3, 1), (2, 0), (3, 1)]), (5, 38, [(2, 0), (3, 1), (2, 0)]), (3, 19, [(3, 1), (2, 0), (3, 1)]),
    (16, 128, [(2, 0)] * 3), (4, 32, [(2, 0)] * 3),
])
def test_deconvolution_plans_reach_the_shallow_map(source, target, plan):
    assert deconv_plan(source, target) == plan
    side = source
    for kernel, padding in plan:  # out = 2 (in - 1) - 2 padding + kernel
        side = 2 * (side - 1) - 2 * padding + kernel
    assert side == target


def test_unreachable_deconvolution_plan_is_an_error():
    with pytest.raises(ValueError, match="cannot take 4 to 75"):
        deconv_plan(4, 75)


def test_mdssd300_trains_and_predicts():
    torch.manual_seed(0)
    model = build_model("mdssd300", 20)
    images = torch.rand(1, 3, 300, 300, generator=torch.Generator().manual_seed(0))
    losses = train(model, images, targets(300)[1:], steps=5, lr=5e-5)
    assert losses[-1] < 0.75 * losses[0], losses
    check_predictions(model, images)


def test_mdssd512_trains_and_predicts_at_half_resolution():
    torch.manual_seed(0)
    model = at_half_resolution(build_model("mdssd512", 20))
    images = torch.rand(1, 3, 256, 256, generator=torch.Generator().manual_seed(0))
    losses = train(model, images, targets(256)[1:], steps=5, lr=5e-5)
    assert losses[-1] < 0.75 * losses[0], losses
    check_predictions(model, images)
