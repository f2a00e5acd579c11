"""MDSSD300/512: Fusion Blocks, seven prediction maps, priors, parameter count, training and prediction."""

from __future__ import annotations

import math

import pytest
import torch
from test_mfssd import at_half_resolution, check_predictions, targets, train

from detectors.registry import build_model
from detectors.ssd.necks.mdssd import MDSSDFeatures, mdssd_levels


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


def test_mdssd300_matches_the_spec_parameter_count_and_priors():
    info = build_model("mdssd300", 20).info()
    assert (info.params, info.priors) == (76_205_586, 31_232)


def test_prior_levels_extend_ssd_with_a_finer_level():
    levels = mdssd_levels(300)
    assert [lv.boxes_per_location for lv in levels] == [4, 4, 6, 6, 6, 4, 4]
    assert [lv.step for lv in levels] == [4, 8, 16, 32, 64, 100, 300]
    assert levels[0].shapes[:2] == ((15, 15), (math.sqrt(15 * 30),) * 2)
    assert levels[1].shapes[0] == (30, 30)  # conv4_3's SSD300 size, one level down
    wide = mdssd_levels(512)
    assert [lv.feature_size for lv in wide] == [128, 64, 32, 16, 8, 4, 2]
    assert [lv.boxes_per_location for lv in wide] == [4, 4, 6, 6, 6, 6, 4]
    assert wide[0].shapes[0] == pytest.approx((17.92, 17.92)) and wide[0].step == 4
    assert sum(lv.num_priors for lv in wide) == 90_096


def test_fusion_block_layout():
    block = build_model("mdssd300", 20).features.fusion[0]
    deconvs = [m for m in block.high if isinstance(m, torch.nn.ConvTranspose2d)]
    assert [(d.out_channels, d.kernel_size[0], d.stride[0]) for d in deconvs] == [(256, 3, 2), (256, 4, 2),
                                                                                  (256, 3, 2)]
    assert block.high[-1].weight[0] == 10 and block.low[-1].weight[0] == 20  # L2Norm scales high/low


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
