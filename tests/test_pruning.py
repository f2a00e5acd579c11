"""Network slimming of MFSSD-BN: sparsity step, global BN-scale pruning to Table I's size, reload, tuning."""

from __future__ import annotations

import copy

import pytest
import torch
from test_mfssd import targets, train
from torch import nn

from detectors.registry import build_model
from detectors.ssd.detector import SSDDetector
from detectors.ssd.pruning import (
    MFSSD_PRUNED_PARAMS,
    load_pruned,
    make_slimming_pruner,
    prune_to_params,
    save_pruned,
    sparsity_step,
)

EXAMPLE = torch.zeros(1, 3, 300, 300)


def trainable(model: nn.Module) -> int:
    return sum(p.numel() for p in model.parameters() if p.requires_grad)


def batch_norms(model: nn.Module) -> dict[str, nn.BatchNorm2d]:
    return {name: m for name, m in model.named_modules() if isinstance(m, nn.BatchNorm2d)}


@pytest.fixture(scope="module")
def images() -> torch.Tensor:
    return torch.rand(2, 3, 300, 300, generator=torch.Generator().manual_seed(0))


@pytest.fixture(scope="module")
def slimmed() -> tuple[SSDDetector, dict[str, torch.Tensor]]:
    """MFSSD-BN with seeded U(0, 1) BN scales (as sparse training leaves them), pruned; and those scales."""
    torch.manual_seed(0)
    model = build_model("mfssd300_bn", 20)
    generator = torch.Generator().manual_seed(1)
    with torch.no_grad():
        for bn in batch_norms(model).values():
            bn.weight.copy_(torch.rand(bn.num_features, generator=generator))
    before = {name: bn.weight.detach().clone() for name, bn in batch_norms(model).items()}
    return prune_to_params(model, MFSSD_PRUNED_PARAMS, EXAMPLE), before


def test_sparsity_step_adds_the_l1_subgradient_to_every_bn_scale(images):
    torch.manual_seed(0)
    model = build_model("mfssd300_bn", 20)
    pruner = make_slimming_pruner(model, EXAMPLE, reg=1e-3)
    with torch.no_grad():
        model.features.pyramid[2][1].weight.mul_(-1)  # a negative scale must be pulled up, not down
    model.loss(images, targets(300))["loss"].backward()
    bns = batch_norms(model)
    grads = {name: bn.weight.grad.clone() for name, bn in bns.items()}
    sparsity_step(pruner, model)
    for name, bn in bns.items():
        torch.testing.assert_close(bn.weight.grad - grads[name], 1e-3 * torch.sign(bn.weight.detach()))


def test_prunes_to_table_one_size_and_keeps_the_head(slimmed, images):
    model, _ = slimmed
    assert abs(trainable(model) - MFSSD_PRUNED_PARAMS) <= 0.01 * MFSSD_PRUNED_PARAMS
    assert [conv.out_channels for conv in model.head.conf] == [6 * 21] * 4 + [4 * 21] * 2
    assert model.features.out_channels == [conv.in_channels for conv in model.head.loc]
    assert max(model.features.out_channels) < 512  # the pyramid itself was thinned
    model.eval()
    with torch.no_grad():
        loc, conf = model(images[:1])
    assert loc.shape == (1, 11_620, 4) and conf.shape == (1, 11_620, 21)
    assert "network slimming" in model.notes[-1]


def test_pruning_is_one_global_threshold_on_the_bn_scales(slimmed):
    """For BNs not coupled to another BN, every pruned scale is below every kept scale, across layers."""
    model, before = slimmed
    laterals = (f"features.transforms.{tap}.1" for tap in ("conv4_3", "conv5_3", "fc7"))
    coupled = {"features.fusion_bn", *laterals}  # each lateral BN shares channels with the concat BN
    pruned, kept = [], []
    for name, bn in batch_norms(model).items():
        if name in coupled:
            continue
        survivors = bn.weight.detach()
        is_kept = torch.isin(before[name], survivors)
        assert is_kept.sum() == len(survivors)  # the survivors are original channels
        pruned.append(before[name][~is_kept])
        kept.append(survivors)
    assert torch.cat(pruned).max() < torch.cat(kept).min()
    assert sum(len(p) for p in pruned) > 1000


def test_registered_pruned_model_has_table_one_size_deterministically():
    model, again = build_model("mfssd300_pruned", 20), build_model("mfssd300_pruned", 20)
    assert model.name == "mfssd300_pruned"
    assert abs(model.info().params - MFSSD_PRUNED_PARAMS) <= 0.01 * MFSSD_PRUNED_PARAMS
    assert model.num_priors == 11_620
    widths = [bn.num_features for bn in batch_norms(model).values()]
    assert widths == [bn.num_features for bn in batch_norms(again).values()]
    assert all((bn.weight == 1).all() for bn in batch_norms(model).values())
    with pytest.raises(ValueError, match="mfssd300_bn"):
        build_model("mfssd300_pruned", 20, pretrained_backbone=True)


def test_save_and_reload_with_weights_only(slimmed, images, tmp_path):
    model, _ = slimmed
    path = tmp_path / "pruned.pt"
    save_pruned(model, path)
    assert set(torch.load(path, weights_only=True)) >= {"base", "state_dict", "priors"}
    restored = load_pruned(path)
    assert trainable(restored) == trainable(model)
    assert restored.notes == model.notes and restored.levels == model.levels
    model.eval()
    restored.eval()
    with torch.no_grad():
        expected, actual = model(images[:1]), restored(images[:1])
    torch.testing.assert_close(actual, expected, rtol=0, atol=0)


def test_fine_tuning_the_pruned_model_lowers_its_loss(slimmed, images):
    losses = train(copy.deepcopy(slimmed[0]), images, targets(300))
    assert losses[-1] < 0.75 * losses[0], losses
