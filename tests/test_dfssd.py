"""DF-SSD300/512: the deconvolution branch, weighted fusion, 9/6/6/6/6 priors, training and prediction."""

from __future__ import annotations

import math

import pytest
import torch
from test_mfssd import at_half_resolution, check_predictions, targets, train

from detectors.registry import build_model
from detectors.ssd.necks.dfssd import DFSSDFeatures, EnlargeMapPool, dfssd_levels


@pytest.mark.parametrize(("size", "enlarged", "maps"), [
    (300, 298, [(512, 38), (1024, 19), (512, 10), (256, 5), (256, 3)]),
    (512, 512, [(512, 64), (1024, 32), (512, 16), (256, 8), (256, 4)]),
])
def test_deconvolution_reaches_the_input_size_and_five_maps_come_out(size, enlarged, maps):
    with torch.device("meta"):  # shapes only
        features = DFSSDFeatures(size)
        conv4_3 = torch.empty(1, 512, maps[0][1], maps[0][1])
        assert features.enlarge.deconv(conv4_3).shape[-2:] == (enlarged, enlarged)
        assert features.enlarge(conv4_3).shape[-2:] == conv4_3.shape[-2:]
        outputs = features(torch.empty(1, 3, size, size))
    assert [(f.shape[1], f.shape[2]) for f in outputs] == maps
    assert features.out_channels == [c for c, _ in maps]
    assert features.transforms[0][0].in_channels == 512 + 256  # nconv4_3 = deconv'd conv4_3 + conv11_2


def test_fusion_weights_follow_equation_four():
    features = build_model("dfssd300", 20).features
    torch.testing.assert_close(features.fusion_weights, 1 + torch.tensor([0.3, 0.2, 0.15, 0.15, 0.2]))


def test_priors_nine_then_six_boxes_from_s_min_to_s_max():
    levels = dfssd_levels(300)
    assert [lv.boxes_per_location for lv in levels] == [9, 6, 6, 6, 6]
    assert [lv.feature_size for lv in levels] == [38, 19, 10, 5, 3]
    # Derived: feature side squared times boxes per location, summed over the five maps.
    assert sum(lv.num_priors for lv in levels) == 9 * 38**2 + 6 * (19**2 + 10**2 + 5**2 + 3**2) == 15_966
    assert [lv.shapes[0][0] for lv in levels] == pytest.approx([30, 90, 150, 210, 270])  # s_k = 0.1 ... 0.9
    assert levels[-1].shapes[1][0] == pytest.approx(math.sqrt(270 * 330))
    small = [side for shape in levels[0].shapes[6:] for side in shape]  # scale 0.05, ratios 1, 2, 1/2
    assert small == pytest.approx([15, 15, 15 * 2**0.5, 15 / 2**0.5, 15 / 2**0.5, 15 * 2**0.5])
    wide = dfssd_levels(512)
    assert [lv.feature_size for lv in wide] == [64, 32, 16, 8, 4]
    assert sum(lv.num_priors for lv in wide) == 9 * 64**2 + 6 * (32**2 + 16**2 + 8**2 + 4**2) == 45_024
    assert wide[0].shapes[0][0] == pytest.approx(51.2) and wide[0].shapes[6][0] == pytest.approx(25.6)


def test_registered_models_report_their_priors():
    assert build_model("dfssd300", 20).num_priors == 15_966


def test_dfssd300_trains_and_predicts():
    torch.manual_seed(0)
    model = build_model("dfssd300", 20)
    images = torch.rand(1, 3, 300, 300, generator=torch.Generator().manual_seed(0))
    losses = train(model, images, targets(300)[1:], steps=3, lr=2e-4)
    assert losses[-1] < 0.9 * losses[0], losses  # 2 updates: ~0.8 (the fusion moves slowly on a frozen body)
    check_predictions(model, images)


def test_dfssd512_trains_and_predicts_at_half_resolution():
    torch.manual_seed(0)
    model = at_half_resolution(build_model("dfssd512", 20))
    images = torch.rand(1, 3, 256, 256, generator=torch.Generator().manual_seed(0))
    losses = train(model, images, targets(256)[1:], steps=3, lr=2e-4)
    assert losses[-1] < 0.9 * losses[0], losses  # 2 updates: ~0.8 (the fusion moves slowly on a frozen body)
    check_predictions(model, images)


@pytest.mark.parametrize(("kernel", "padding", "side", "centre"), [(4, 1, 38, 0.5), (8, 0, 64, 3.5)])
def test_eq3_maps_every_conv4_3_pixel_to_its_deconvolution_window(kernel, padding, side, centre):
    enlarge = EnlargeMapPool(2, kernel, padding)
    enlarged = (side - 1) * 8 - 2 * padding + kernel  # Eq. 1: o' = s (i' - 1) + k - 2 p
    index = enlarge.source_index(side, enlarged, torch.device("cpu"))
    # Eq. 3: p_i = 8 p_(i+1) + ((t - 1) / 2 - padding); the position nearest each centre maps back to it
    centres = [round(8 * j + centre - 0.5) for j in range(side)]
    assert index[centres].tolist() == list(range(side))
    # Eq. 2's h is the nearest centre: monotone, each pixel owning the 8 positions around its centre
    assert (index.diff() >= 0).all() and torch.bincount(index).max() <= 8 + 4


def test_mapped_conv4_3_features_reach_the_pooled_map():
    """With the deconvolution zeroed, the output is the pooled Eq. 2 map of conv4_3 itself."""
    x = torch.randn(1, 3, 5, 5)
    exact = EnlargeMapPool(3, kernel=8, padding=0)  # 512's settings: each 8x8 cell is one pixel's window
    shifted = EnlargeMapPool(3, kernel=4, padding=1)  # 300's: a cell also sees its neighbour's 3 last rows
    for enlarge in (exact, shifted):
        torch.nn.init.zeros_(enlarge.deconv.weight)
        torch.nn.init.zeros_(enlarge.deconv.bias)
    with torch.no_grad():
        torch.testing.assert_close(exact(x), x.relu())
        neighbourhood = torch.nn.functional.max_pool2d(torch.nn.functional.pad(x.relu(), (0, 1, 0, 1)), 2, 1)
        torch.testing.assert_close(shifted(x)[..., :-1, :-1], neighbourhood[..., :-1, :-1])
