"""The baselines' other prior layouts (seed 001 Tables II and IV): SSD300 with 11,620 and FSSD with 8,732."""

from __future__ import annotations

import pytest
import torch
from test_mfssd import check_predictions, targets, train

from detectors.registry import build_model

LAYOUTS = {  # name: (params at 20 and 80 classes, priors, boxes per location, the model it re-lays)
    "ssd300_11620": ((26_515_936, 35_088_736), 11_620, [6, 6, 6, 6, 4, 4], "ssd300"),
    "fssd300_8732": ((33_902_510, 39_433_910), 8_732, [4, 6, 6, 6, 4, 4], "fssd300"),
}


@pytest.mark.parametrize("name", list(LAYOUTS))
def test_counts_and_layout(name):
    (params20, params80), priors, boxes, base = LAYOUTS[name]
    with torch.device("meta"):
        model, model80, original = build_model(name, 20), build_model(name, 80), build_model(base, 20)
    assert (model.info().params, model80.info().params, model.num_priors) == (params20, params80, priors)
    assert [lv.boxes_per_location for lv in model.levels] == boxes
    # Only the conv4_3-resolution level changes (4 <-> 6 boxes): every other level and the network are the
    # base model's, and the sizes are SSD300's.
    assert model.levels[1:] == original.levels[1:]
    assert model.levels[0].shapes[:4] == original.levels[0].shapes[:4]
    assert model.info().params - original.info().params == (boxes[0] - original.levels[0].boxes_per_location
                                                            ) * (4 + 21) * (512 * 9 + 1)
    assert any("seed 001" in note and f"{priors:,}" in note for note in model.notes)


@pytest.mark.parametrize("name", list(LAYOUTS))
def test_trains_and_predicts_in_original_pixels(name):
    torch.manual_seed(0)
    model = build_model(name, 20)
    images = torch.rand(1, 3, 300, 300, generator=torch.Generator().manual_seed(0))
    losses = train(model, images, targets(300)[1:], steps=4, lr=3e-4)  # neither has BN after a 1x1 map
    assert all(torch.isfinite(torch.tensor(losses)))
    assert losses[-1] < 0.8 * losses[0], losses
    check_predictions(model, images)
