"""The SSD ablation switches (seed 003 Tables 3.1-3.3, seed 000 §3.5): layouts, every switch trains a step."""

from __future__ import annotations

import math

import numpy as np
import pytest
import torch
from test_mfssd import targets, train

from detectors.registry import BuildOptionError, build_model
from detectors.ssd.ablation import retile
from detectors.ssd.priors import kmeans_prior_shapes, shape_iou, ssd300_levels


def on_meta(name: str, **options):
    with torch.device("meta"):
        model = build_model(name, 20, **options).eval()
        size = model.input_size
        maps = model.features(torch.empty(1, 3, size, size))
        loc, _ = model(torch.empty(1, 3, size, size))
    assert loc.shape[1] == model.num_priors  # the head and the priors agree
    return model, maps


def ratios(model) -> set[float]:
    return {round(max(w / h, h / w), 6) for lv in model.levels for w, h in lv.shapes}


@pytest.mark.parametrize(("kept", "priors", "boxes"), [
    ([2, 3], 8732, [4, 6, 6, 6, 4, 4]),  # SSD's own: {1, 2, 1/2, 3, 1/3}
    ([2], 7760, [4] * 6),  # without {3, 1/3}
    ([], 3880, [2] * 6),  # also without {2, 1/2}
])
def test_aspect_ratio_sets_of_table_3_1(kept, priors, boxes):
    model, _ = on_meta("ssd300", aspect_ratios=kept)
    assert model.num_priors == priors and [lv.boxes_per_location for lv in model.levels] == boxes
    assert ratios(model) == {1.0, *(float(r) for r in kept)}


# Seed 003 §4.2.4 / Table 3.2: dropping layers, the priors are re-tiled to keep the total near 8,732.
@pytest.mark.parametrize(("layers", "priors", "boxes"), [
    (["conv4_3", "conv7", "conv8_2", "conv9_2", "conv10_2", "conv11_2"], 8732, [4, 6, 6, 6, 4, 4]),
    (["conv4_3", "conv7", "conv8_2", "conv9_2", "conv10_2"], 8737, [4, 6, 6, 6, 5]),
    (["conv4_3", "conv7", "conv8_2", "conv9_2"], 8742, [4, 6, 6, 8]),
    (["conv4_3", "conv7", "conv8_2"], 8842, [4, 6, 9]),
    (["conv4_3", "conv7"], 9386, [4, 10]),
    (["conv7"], 8664, [24]),  # the paper's count for this row
])
def test_prediction_layers_of_table_3_2_keep_the_prior_count_near_8732(layers, priors, boxes):
    model, maps = on_meta("ssd300", prediction_layers=layers)
    assert model.num_priors == priors and [lv.boxes_per_location for lv in model.levels] == boxes
    assert [model.features.map_names[i] for i in model.prediction_maps] == layers
    assert len(maps) == max(2, len(layers))  # extras after the last kept map are removed, not computed
    every_scale = {lv.shapes[0] for lv in ssd300_levels()}
    assert every_scale <= {s for lv in model.levels for s in lv.shapes}  # each scale keeps its square box


def test_retile_moves_shapes_to_the_nearest_kept_level():
    levels = ssd300_levels()
    out = retile(levels, [0, 5])  # conv8_2..conv10_2 are nearer conv11_2 from index 3 on (ties: coarser)
    assert out[0].shapes[:4] == levels[0].shapes and out[1].shapes[:4] == levels[5].shapes
    assert levels[1].shapes[0] in out[0].shapes and levels[4].shapes[0] in out[1].shapes


def test_plain_fc6_keeps_ssd_map_sides_and_predicts_on_conv5_3():
    plain, maps = on_meta("ssd300", fc6="plain")
    assert [m.shape[-1] for m in maps] == [38, 19, 10, 5, 3, 1] and plain.num_priors == 8732
    assert plain.features.map_names[:3] == ["conv4_3", "conv5_3", "fc7"]
    assert [m.shape[1] for m in maps] == [512, 512, 4096, 256, 256, 256]
    assert (plain.features.vgg.fc6.kernel_size, plain.features.vgg.pool5.stride) == ((7, 7), 2)
    assert any("plain fc6" in note for note in plain.notes)
    for name in ("fssd300", "mfssd300_bn"):  # the fusion variants take the plain body as well
        model, _ = on_meta(name, fc6="plain")
        assert model.features.vgg.fc7.out_channels == 4096
    for name in ("mdssd300", "dfssd300"):  # their maps pair with fc7's 19x19: the option is not declared
        with pytest.raises(BuildOptionError, match="fc6"):
            build_model(name, 20, fc6="plain")


@pytest.mark.parametrize(("name", "size", "sides"), [
    ("ssd300", 384, [48, 24, 12, 6, 4, 2]),
    ("fssd300", 320, [40, 20, 10, 5, 3, 1]),
    ("mdssd300", 320, [80, 40, 20, 10, 5, 3, 1]),
    ("dfssd300", 320, [40, 20, 10, 5, 3]),
])
def test_input_resolution_measures_the_maps_and_scales_the_priors(name, size, sides):
    native, _ = on_meta(name)
    model, maps = on_meta(name, input_size=size)
    assert model.input_size == size and [m.shape[-1] for m in maps] == sides
    assert [lv.feature_size for lv in model.levels] == sides
    assert [lv.step for lv in model.levels] == pytest.approx([size / s for s in sides])
    scale = size / native.input_size
    assert model.levels[0].shapes[0][0] == pytest.approx(native.levels[0].shapes[0][0] * scale)


def test_too_small_an_input_is_a_clear_error():
    with pytest.raises(ValueError, match="input_size 128 is too small"):
        build_model("ssd300", 20, input_size=128)


def test_kmeans_recovers_box_clusters():
    rng = np.random.default_rng(0)
    centres = np.array([[0.02, 0.03], [0.1, 0.05], [0.3, 0.6]])
    wh = np.concatenate([c * rng.uniform(0.9, 1.1, (200, 2)) for c in centres])
    wh = np.vstack([wh, [[0.0, 0.1], [np.nan, 0.2]]])  # no area / not finite: ignored
    shapes = kmeans_prior_shapes(wh, 3, seed=0)
    np.testing.assert_allclose(shapes, centres, rtol=0.05)
    assert (np.diff(shapes.prod(1)) > 0).all()  # smallest first
    assert shape_iou(wh[:600], shapes).max(1).mean() > 0.8
    np.testing.assert_array_equal(shapes, kmeans_prior_shapes(wh, 3, seed=0))  # deterministic
    with pytest.raises(ValueError, match="cannot give 700"):
        kmeans_prior_shapes(wh, 700)


def test_learned_prior_shapes_go_to_the_level_of_the_nearest_scale():
    shapes = [(0.1, 0.1), (0.08, 0.14), (0.5, 0.4), (0.9, 0.85)]
    model, _ = on_meta("ssd300", prior_shapes=shapes)
    pixel = [tuple(300 * v for v in s) for s in shapes]
    by_level = [lv.shapes for lv in model.levels]
    assert pixel[0] in by_level[0] and pixel[1] in by_level[0]  # 30 px and ~32 px: conv4_3's 30
    assert pixel[2] in by_level[3] and pixel[3] in by_level[5]  # 134 px -> conv9_2's 162, 262 px -> 264
    assert all(by_level)  # a level without a learned shape of its scale takes the nearest one
    assert model.num_priors == sum(lv.num_priors for lv in model.levels)


def test_unknown_switch_values_are_errors():
    with pytest.raises(ValueError, match="this model's layers: conv4_3, conv7"):
        build_model("ssd300", 20, prediction_layers=["conv6"])
    with pytest.raises(ValueError, match="aspect_ratios"):
        build_model("ssd300", 20, aspect_ratios=[0.5])
    with pytest.raises(BuildOptionError, match="zoom_out"):
        build_model("ssd300", 20, zoom_out=4.0)


@pytest.mark.parametrize("name", ["fssd300", "mfssd300", "mdssd300", "dfssd512"])
def test_every_variant_takes_the_prior_switches(name):
    model, _ = on_meta(name, aspect_ratios=[2])
    assert 3.0 not in ratios(model)
    full, _ = on_meta(name)
    names = full.features.map_names
    model, _ = on_meta(name, prediction_layers=names[1:])  # its finest map dropped
    assert len(model.levels) == len(names) - 1 and model.num_priors < full.num_priors + 1000


SWITCHES = [
    {"aspect_ratios": [2]},
    {"aspect_ratios": []},
    {"fc6": "plain"},
    {"prediction_layers": ["conv7", "conv8_2", "conv9_2", "conv10_2", "conv11_2"]},  # conv4_3's L2Norm idle
    {"input_size": 320},
    {"prior_shapes": [(0.05, 0.08), (0.2, 0.15), (0.45, 0.5), (0.8, 0.7)]},
]


@pytest.mark.parametrize("switch", SWITCHES, ids=[next(iter(s)) + str(i) for i, s in enumerate(SWITCHES)])
def test_each_switch_builds_and_trains_a_step(switch):
    torch.manual_seed(0)
    model = build_model("ssd300", 20, **switch)
    size = model.input_size
    images = torch.rand(1, 3, size, size, generator=torch.Generator().manual_seed(0))
    before = [p.detach().clone() for p in model.head.parameters()]
    losses = train(model, images, targets(size)[1:], steps=2, lr=1e-4)
    assert all(math.isfinite(v) and v > 0 for v in losses)
    assert not all(torch.equal(p, b) for p, b in zip(model.head.parameters(), before, strict=True))
    trainable = [p for n, p in model.named_parameters() if not n.startswith("features.vgg.")]
    assert all(p.grad is not None and torch.isfinite(p.grad).all() for p in trainable)  # DDP needs every one


def test_plain_fc6_and_fc7_load_the_imagenet_classifier(monkeypatch):
    """The plain body's fc6/fc7 are torchvision's fc1/fc2 as convolutions: at the centre of a 7x7 pool5 map
    the 7x7 fc6 (padding 3) sees exactly the classifier's input."""
    from torchvision.models import VGG16_Weights, vgg16

    from detectors.ssd.vgg import VGG16

    torch.manual_seed(0)
    reference = vgg16().eval()
    state = reference.state_dict()
    monkeypatch.setattr(type(VGG16_Weights.IMAGENET1K_V1), "get_state_dict", lambda self, **kw: state)
    body = VGG16(fc6="plain")
    body.load_imagenet()
    x = torch.rand(1, 3, 224, 224)
    with torch.no_grad():
        flat = torch.flatten(reference.avgpool(reference.features(x)), 1)
        expected = torch.relu(reference.classifier[3](torch.relu(reference.classifier[0](flat))))
        fc7 = body.eval()(x)["fc7"]
    assert fc7.shape[-2:] == (7, 7)
    torch.testing.assert_close(fc7[0, :, 3, 3], expected[0], rtol=1e-4, atol=1e-4)


# --- the switches through the runner: a suite inheriting smoke, two variants, `python -m bench.run` ---------

TINY_ABLATION = """
base = "{smoke}"
name = "ablation_tiny"
models = ["e2e_squares", "e2e_learned"]

[recipe]
iterations = 1
batch_size = 2

[data]
test_images = 2

[speed]
protocols = ["model"]
iterations = 1

[variants.e2e_squares]
model = "ssd300"
reason = "test: squares only, on two layers, without augmentation"
build = {{ aspect_ratios = [], prediction_layers = ["conv4_3", "conv7"] }}
augment = {{ ssd = "none" }}

[variants.e2e_learned]
model = "ssd300"
reason = "test: learned prior shapes, no zoom-out"
build = {{ prediction_layers = ["conv4_3", "conv7"] }}
learned_priors = {{ shapes = 4, seed = 0 }}
ssd_augment = {{ expand_p = 0.0 }}
"""


def coco_box_shapes(gt_path) -> np.ndarray:
    """Widths and heights of a COCO file's boxes over their image's width and height (an independent read
    of what the runner trained on)."""
    import json

    gt = json.loads(gt_path.read_text())
    sides = {im["id"]: (im["width"], im["height"]) for im in gt["images"]}
    return np.array([(a["bbox"][2] / sides[a["image_id"]][0], a["bbox"][3] / sides[a["image_id"]][1])
                     for a in gt["annotations"] if not a["iscrowd"]])


def test_ablation_switches_run_through_the_runner(tmp_path, monkeypatch):
    """Each variant runs in its own model directory with its build switches, its learned priors (k-means on
    the run's training boxes) and its recipe keys (augmentation policy, zoom-out) reaching training."""
    import json
    from pathlib import Path

    import bench.run
    import bench.runner.model_job
    from bench.run import main

    smoke = Path(__file__).resolve().parents[1] / "bench" / "suites" / "smoke.toml"
    suite = tmp_path / "ablation_tiny.toml"
    suite.write_text(TINY_ABLATION.format(smoke=smoke))
    seen = {}
    real = bench.runner.model_job.training_dataset

    def recording(data, model, recipe, family, ctx):
        dataset = real(data, model, recipe, family, ctx)
        seen[model.name] = (dataset.augment, recipe.ssd_augment.expand_p)
        return dataset

    monkeypatch.setattr(bench.runner.model_job, "training_dataset", recording)
    monkeypatch.setattr(bench.run, "build_report", lambda out: None)
    out = tmp_path / "run"
    assert main(["--suite", str(suite), "--out", str(out), "--cache-dir", str(tmp_path / "cache")]) == 0
    assert seen == {"e2e_squares": ("none", 0.5), "e2e_learned": ("ssd", 0.0)}
    info = {n: json.loads((out / "models" / n / "info.json").read_text()) for n in seen}
    assert all(json.loads((out / "models" / n / "status.json").read_text())["state"] == "done" for n in seen)
    # ssd300's layout re-tiled onto conv4_3 and conv7, then squares only: 2 and 6 boxes (not 8,732)
    assert info["e2e_squares"]["priors"] == 38 ** 2 * 2 + 19 ** 2 * 6
    assert any(n.startswith("suite variant 'e2e_squares' of ssd300") for n in info["e2e_squares"]["notes"])
    assert info["e2e_squares"]["overrides"]["values"] == {"augment": {"ssd": "none"}}

    shapes = kmeans_prior_shapes(coco_box_shapes(out / "data" / "train_gt.json"), 4, seed=0)
    expected = build_model("e2e_learned", info["e2e_learned"]["num_classes"], prior_shapes=shapes.tolist())
    assert info["e2e_learned"]["priors"] == expected.num_priors
    assert any("4 learned prior shapes" in n for n in info["e2e_learned"]["notes"])
    plan = json.loads((out / "plan.json").read_text())["models"]
    assert plan["e2e_learned"]["variant"]["learned_priors"]["shapes"] == 4
    assert plan["e2e_squares"]["augmentation"] == {"policy": "none"}


def test_the_zoom_out_setting_reaches_the_loader():
    import dataclasses
    from types import SimpleNamespace

    from bench.data.transforms import SSD_AUGMENT
    from bench.runner.model_prep import training_dataset
    from bench.suite.spec import Recipe, SSDAugment

    recipe = Recipe(iterations=1, ssd_augment=SSDAugment(expand_p=0.0, expand_max_ratio=2.0))
    with torch.device("meta"):
        protocol = build_model("ssd300", 2).input_spec
    dataset = training_dataset(SimpleNamespace(train=[]), SimpleNamespace(input_spec=protocol), recipe, "ssd",
                               None)
    expected = dataclasses.replace(SSD_AUGMENT, expand_p=0.0, expand_max_ratio=2.0)
    assert getattr(dataset, "ssd_config", None) == expected
