"""Network slimming of MFSSD-BN: sparsity step, pruning by the γ criterion (ratio or threshold) and in
count-target mode, the registered preview, reload, fine-tuning."""

from __future__ import annotations

import copy

import pytest
import torch
import torch_pruning as tp
from test_mfssd import targets, train
from torch import nn

from bench.errors import BenchInputError
from detectors.plans import Transform
from detectors.registry import build_model, build_preview
from detectors.ssd import pruning
from detectors.ssd.detector import SSDDetector
from detectors.ssd.pruning import (
    accuracy_holds,
    load_pruned,
    make_slimming_pruner,
    prune_by_criterion,
    prune_to_params,
    save_pruned,
    sparsity_step,
)
from detectors.ssd.slimming_plan import slimming_plan

EXAMPLE = torch.zeros(1, 3, 300, 300)
# Seed 001 (MFSSD), Table I "Parameters comparision before/after pruning": MFSSD-Pruned 22,785,625 (86.92 MB,
# 66.7 % of MFSSD-BN's 33,713,888). Written here, not imported, so a wrong constant in the module fails.
MFSSD_PRUNED_PARAMS = 22_785_625


def test_the_module_targets_table_one() -> None:
    assert pruning.MFSSD_PRUNED_PARAMS == MFSSD_PRUNED_PARAMS


def trainable(model: nn.Module) -> int:
    return sum(p.numel() for p in model.parameters() if p.requires_grad)


def batch_norms(model: nn.Module) -> dict[str, nn.BatchNorm2d]:
    return {name: m for name, m in model.named_modules() if isinstance(m, nn.BatchNorm2d)}


@pytest.fixture(scope="module")
def images() -> torch.Tensor:
    return torch.rand(2, 3, 300, 300, generator=torch.Generator().manual_seed(0))


def sparse_mfssd_bn(seed: int = 1) -> SSDDetector:
    """MFSSD-BN with seeded U(0, 1) BN scales, as sparse training leaves them (spread, many near zero)."""
    torch.manual_seed(0)
    model = build_model("mfssd300_bn", 20)
    generator = torch.Generator().manual_seed(seed)
    with torch.no_grad():
        for bn in batch_norms(model).values():
            bn.weight.copy_(torch.rand(bn.num_features, generator=generator))
    return model


# Each lateral BN shares channels with the concat BN: their |gamma| is ranked as the mean of the two.
COUPLED = {"features.fusion_bn", *(f"features.transforms.{tap}.1" for tap in ("conv4_3", "conv5_3", "fc7"))}


def pruned_and_kept(model: nn.Module, before: dict[str, torch.Tensor]) -> tuple[torch.Tensor, torch.Tensor]:
    """The scales pruned and kept in the BNs not coupled to another BN (survivors are original channels)."""
    pruned, kept = [], []
    for name, bn in batch_norms(model).items():
        if name in COUPLED:
            continue
        survivors = bn.weight.detach()
        is_kept = torch.isin(before[name], survivors)
        assert is_kept.sum() == len(survivors)
        pruned.append(before[name][~is_kept])
        kept.append(survivors)
    return torch.cat(pruned), torch.cat(kept)


@pytest.fixture(scope="module")
def slimmed() -> tuple[SSDDetector, dict[str, torch.Tensor]]:
    """MFSSD-BN with seeded U(0, 1) BN scales, pruned to Table I's count (count-target mode); those scales."""
    model = sparse_mfssd_bn()
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
    pruned, kept = pruned_and_kept(model, before)
    assert pruned.max() < kept.min()
    assert len(pruned) > 1000
    assert "COUNT-TARGET mode" in model.notes[-1] and model.prune_reports[-1]["mode"] == "count_target"


def test_prune_by_ratio_cuts_that_share_of_channels_globally_and_measures_the_count(images):
    model = sparse_mfssd_bn()
    before = {name: bn.weight.detach().clone() for name, bn in batch_norms(model).items()}
    params_before = trainable(model)
    report = prune_by_criterion(model, EXAMPLE, ratio=0.3)
    assert (report.mode, report.requested) == ("ratio", 0.3)
    assert report.channels_before - report.channels_after == int(0.3 * report.channels_before)  # no cap hit
    assert report.ratio == pytest.approx(0.3, abs=1 / report.channels_before)
    assert (report.params_before, report.params_after) == (params_before, trainable(model))  # measured
    assert report.params_after < params_before and report.paper_params == MFSSD_PRUNED_PARAMS
    pruned, kept = pruned_and_kept(model, before)
    assert pruned.max() <= report.threshold < kept.min()
    assert model.prune_reports[-1] == report.to_dict() and "by ratio 0.3" in model.notes[-1]
    assert "Table I: 22,785,625" in model.notes[-1]
    model.eval()
    with torch.no_grad():
        loc, conf = model(images[:1])
    assert loc.shape == (1, 11_620, 4) and conf.shape == (1, 11_620, 21)


def test_prune_by_threshold_keeps_every_scale_above_it_and_never_empties_a_layer():
    model = sparse_mfssd_bn(seed=2)
    doomed = model.features.pyramid[2][1]  # a BN of its own (no coupled BN): every scale below threshold
    with torch.no_grad():
        doomed.weight.mul_(0.01)
    before = {name: bn.weight.detach().clone() for name, bn in batch_norms(model).items()}
    report = prune_by_criterion(model, EXAMPLE, threshold=0.25)
    assert report.mode == "threshold" and report.threshold == 0.25
    assert doomed.num_features == 1 and doomed.weight.item() == before["features.pyramid.2.1"].max()
    pruned, kept = pruned_and_kept(model, before)
    assert pruned.max() < 0.25 and (kept[kept != doomed.weight.item()] >= 0.25).all()
    assert report.params_after == trainable(model)


def test_criterion_arguments_are_checked():
    model = sparse_mfssd_bn()
    with pytest.raises(ValueError, match="exactly one"):
        prune_by_criterion(model, EXAMPLE, ratio=0.2, threshold=0.1)
    with pytest.raises(ValueError, match=r"\[0, 1\)"):
        prune_by_criterion(model, EXAMPLE, ratio=1.0)


def test_accuracy_gate_for_another_round():
    assert accuracy_holds(81.2, 80.0, max_drop=1.5) and not accuracy_holds(81.2, 79.5, max_drop=1.5)


def test_registered_pruned_model_previews_its_plan_cut_deterministically():
    """The listing's MFSSD-Pruned is the default plan's cut (20 % of the channels by |gamma|) on seeded
    stand-in scales; in count-target mode the preview lands on Table I's count."""
    model, again = build_preview("mfssd300_pruned", 20), build_preview("mfssd300_pruned", 20)
    assert model.name == "mfssd300_pruned" and model.num_priors == 11_620
    (report,) = model.prune_reports
    assert report["mode"] == "ratio" and report["requested"] == 0.2
    assert report["channels_before"] - report["channels_after"] == int(0.2 * report["channels_before"])
    assert report["params_after"] == model.info().params < 33_713_888
    widths = [bn.num_features for bn in batch_norms(model).values()]
    assert widths == [bn.num_features for bn in batch_norms(again).values()]
    assert all((bn.weight == 1).all() for bn in batch_norms(model).values())
    assert "structure only" in model.notes[-1] and "20% of prunable channels" in model.notes[-1]
    assert build_model("mfssd300_pruned", 20).info().params == 33_713_888  # its plan starts from MFSSD-BN
    counted = slimming_plan({"mode": "count_target"}).preview(build_model("mfssd300_pruned", 20))
    assert abs(counted.info().params - MFSSD_PRUNED_PARAMS) <= 0.01 * MFSSD_PRUNED_PARAMS
    assert counted.prune_reports[-1]["mode"] == "count_target"


def prune_step(settings: dict) -> Transform:
    (step,) = [s for s in slimming_plan(settings).steps if isinstance(s, Transform)]
    return step


def test_the_plan_prunes_by_the_criterion_and_measures_the_count():
    """The prune step of MFSSD-Pruned's plan: the ratio sets the cut, the parameter count comes out of it."""
    counts = {}
    for ratio in (0.1, 0.3):
        model = prune_step({"ratio": ratio}).apply(sparse_mfssd_bn(), EXAMPLE)
        (report,) = model.prune_reports
        assert (report["mode"], report["requested"]) == ("ratio", ratio)
        assert report["params_after"] == trainable(model)  # measured on the pruned network
        assert "by ratio" in model.notes[-1] and "COUNT-TARGET" not in model.notes[-1]
        counts[ratio] = trainable(model)
    assert 22_785_625 * 0.5 < counts[0.3] < counts[0.1] < 33_713_888
    by_threshold = prune_step({"threshold": 0.25}).apply(sparse_mfssd_bn(), EXAMPLE)
    assert by_threshold.prune_reports[-1]["mode"] == "threshold"


def test_the_plan_labels_count_target_mode():
    notes = " ".join(slimming_plan({"mode": "count_target"}).notes)
    assert "count-target mode: the count is not a result" in notes
    assert "measured" in " ".join(slimming_plan({}).notes)
    with pytest.raises(ValueError, match="one round"):
        slimming_plan({"rounds": 2})


def test_plan_defaults_are_the_suite_recipe_defaults():
    from dataclasses import asdict

    from bench.suite.spec import PruningRecipe
    from detectors.ssd.slimming_plan import DEFAULTS

    assert asdict(PruningRecipe()) == DEFAULTS


@pytest.mark.parametrize(("settings", "message"), [
    ({"rounds": 2}, "'rounds' must be 1"),
    ({"mode": "trimmed"}, None),
    ({"ratio": 1.0}, r"\[0, 1\)"),
    ({"threshold": 0.0}, "> 0"),
])
def test_pruning_recipe_rejects_bad_settings(settings, message, tmp_path):
    from bench.suite.spec import PruningRecipe, load_suite

    if message is not None:
        with pytest.raises(ValueError, match=message):
            PruningRecipe(**settings)
    suite = tmp_path / "suite.toml"  # and through a suite file: a named error
    suite.write_text('models = ["mfssd300_pruned"]\n[recipe]\niterations = 2\n[recipe.pruning]\n'
                     + "".join(f"{k} = {v!r}\n" for k, v in settings.items()))
    with pytest.raises(BenchInputError) as err:
        load_suite(str(suite))
    assert err.value.field.startswith("recipe.pruning")


def test_save_and_reload_with_weights_only(slimmed, images, tmp_path):
    model, _ = slimmed
    path = tmp_path / "pruned.pt"
    save_pruned(model, path)
    assert set(torch.load(path, weights_only=True)) >= {"base", "state_dict", "priors"}
    restored = load_pruned(path)
    assert trainable(restored) == trainable(model)
    assert restored.notes == model.notes and restored.levels == model.levels
    assert restored.prune_reports == model.prune_reports and restored.prune_reports
    model.eval()
    restored.eval()
    with torch.no_grad():
        expected, actual = model(images[:1]), restored(images[:1])
    torch.testing.assert_close(actual, expected, rtol=0, atol=0)


def test_fine_tuning_the_pruned_model_lowers_its_loss(slimmed, images):
    losses = train(copy.deepcopy(slimmed[0]), images, targets(300))
    assert losses[-1] < 0.75 * losses[0], losses


def test_sparsity_step_reaches_sync_batchnorm_scales():
    """Under multi-GPU DDP the trainer turns BatchNorm2d into SyncBatchNorm: the L1 term must still apply."""
    model = nn.Sequential(nn.Conv2d(3, 4, 3), nn.BatchNorm2d(4), nn.ReLU(), nn.Conv2d(4, 2, 1))
    pruner = tp.pruner.BNScalePruner(model, torch.zeros(1, 3, 8, 8), tp.importance.BNScaleImportance(),
                                     reg=0.1, ignored_layers=[model[3]])
    model = nn.SyncBatchNorm.convert_sync_batchnorm(model)
    with torch.no_grad():
        model[1].weight.copy_(torch.tensor([0.5, -0.5, 2.0, -1.0]))
    model[1].weight.grad = torch.zeros(4)
    sparsity_step(pruner, model)
    torch.testing.assert_close(model[1].weight.grad, torch.tensor([0.1, -0.1, 0.1, -0.1]))


def test_the_resolved_plan_counts_the_pruned_network_of_the_recipes_settings(tmp_path):
    """``--plan``'s parameter count of MFSSD-Pruned follows the suite's pruning settings (its preview)."""
    from bench.plan.resolve import plan_for
    from bench.suite.spec import load_suite

    suite = tmp_path / "suite.toml"
    suite.write_text('models = ["mfssd300_pruned", "pt_ratio30"]\n[recipe]\niterations = 2\n'
                     '[variants.pt_ratio30]\nmodel = "mfssd300_pruned"\nreason = "a deeper cut"\n'
                     'pruning = { ratio = 0.3 }\n')
    plan = plan_for(load_suite(str(suite)), num_classes=20, with_cost=False)["models"]
    default, deeper = (plan[n]["params"]["run"] for n in ("mfssd300_pruned", "pt_ratio30"))
    assert default == build_preview("mfssd300_pruned", 20).info().params  # the listing's: ratio 0.2
    assert deeper < default < 33_713_888
    assert "the 30% of prunable channels" in plan["pt_ratio30"]["training_plan"]["notes"][0]
