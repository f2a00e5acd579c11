"""Suite variants (``[variants.NAME]``): a registry model under a new name with bound build options and its
own recipe keys; bad variants fail at load with the file and the dotted key."""

from __future__ import annotations

import csv
import dataclasses
from pathlib import Path

import numpy as np
import pytest

from bench.data.records import ImageRecord
from bench.errors import BenchInputError
from bench.plan.resolve import plan_for
from bench.run import main
from bench.suite.spec import load_suite
from bench.suite.variants import learned_prior_options, training_box_shapes
from detectors.registry import build_model, model_spec
from detectors.ssd.priors import kmeans_prior_shapes

ROOT = Path(__file__).resolve().parents[1]
BASE = """
name = "t"
models = ["ssd300", "vt_squares"]
[recipe]
iterations = 10
batch_size = 4
[overrides.ssd300]
reason = "the base model's own override"
lr = 2e-3
weight_decay = 1e-4
"""
SQUARES = """
[variants.vt_squares]
model = "ssd300"
reason = "squares only, for the test"
build = { aspect_ratios = [] }
weight_decay = 3e-4
ssd_augment = { expand_p = 0.0 }
"""


def write(tmp_path: Path, text: str, name: str = "suite.toml") -> Path:
    path = tmp_path / name
    path.write_text(text)
    return path


def test_a_variant_is_its_base_model_with_bound_options_and_its_own_recipe_keys(tmp_path: Path) -> None:
    suite = load_suite(str(write(tmp_path, BASE + SQUARES)))
    spec, base = model_spec("vt_squares"), model_spec("ssd300")
    assert (spec.family, spec.input_size) == (base.family, base.input_size)
    assert spec.plan_factory is base.plan_factory
    assert "aspect_ratios" not in spec.options and "aspect_ratios" in base.options  # bound, not overridable
    model = build_model("vt_squares", 20)
    assert model.name == "vt_squares" and model.num_priors == 3880  # SSD300 with 2 squares per cell
    assert any("suite variant 'vt_squares' of ssd300: squares only" in n for n in model.notes)
    recipe = suite.recipe_for("vt_squares")
    assert recipe.lr == 2e-3  # its base model's override applies first
    assert recipe.weight_decay == 3e-4 and recipe.ssd_augment.expand_p == 0.0  # then its own keys
    assert recipe.ssd_augment.expand_max_ratio == 4.0  # a nested table stays partial
    assert suite.recipe_for("ssd300").weight_decay == 1e-4  # the base itself is untouched
    assert [o.label for o in suite.overrides_for("vt_squares")] == ["ssd300", "variants.vt_squares"]
    plan = plan_for(suite, with_cost=False)["models"]["vt_squares"]
    assert plan["variant"]["model"] == "ssd300" and plan["variant"]["build"] == {"aspect_ratios": []}
    assert plan["augmentation"] == {"policy": "ssd", "params": {"expand_p": 0.0, "expand_max_ratio": 4.0}}
    assert plan["params"]["run"] < plan_for(suite, with_cost=False)["models"]["ssd300"]["params"]["run"]
    load_suite(str(write(tmp_path, BASE + SQUARES, "again.toml")))  # the same definition again: fine


@pytest.mark.parametrize(("variant", "key", "message"), [
    ('model = "ssd300"\nreason = "r"\nbuild = { anchors = 3 }\n', "variants.vt_bad.build.anchors",
     "has no build option 'anchors'; it declares"),
    ('model = "ssd300"\nreason = "r"\nbuild = { prediction_layers = ["conv99"] }\n', "variants.vt_bad.build",
     "unknown prediction layer 'conv99'"),
    ('model = "ssd300"\nreason = "r"\nbuild = { pretrained_backbone = true }\n',
     "variants.vt_bad.build.pretrained_backbone", "recipe key"),
    ('model = "ssd301"\nreason = "r"\n', "variants.vt_bad.model", "no registered model 'ssd301'"),
    ('model = "ssd300"\n', "variants.vt_bad.reason", "reason"),
    ('model = "ssd300"\nreason = "r"\nlearning_rate = 0.1\n', "variants.vt_bad.learning_rate", "unknown key"),
    ('model = "ssd300"\nreason = "r"\nlr = "high"\n', "variants.vt_bad.lr", "must be float"),
    ('model = "ssd300"\nreason = "r"\nssd_augment = { expand_p = 2.0 }\n', "variants.vt_bad.ssd_augment",
     "probability"),
    ('model = "yolov5n"\nreason = "r"\nlearned_priors = { shapes = 9 }\n', "variants.vt_bad.learned_priors",
     "no learned prior shapes"),
])
def test_bad_variants_name_file_and_key(tmp_path: Path, variant: str, key: str, message: str) -> None:
    path = write(tmp_path, BASE.replace("vt_squares", "vt_bad") + "[variants.vt_bad]\n" + variant)
    with pytest.raises(BenchInputError) as err:
        load_suite(str(path))
    assert err.value.field == key and message in err.value.detail and err.value.path == str(path.resolve())


def test_variant_names_are_checked_against_the_registry_and_each_other(tmp_path: Path) -> None:
    shadow = BASE + '[variants.ssd512]\nmodel = "ssd300"\nreason = "r"\n'
    with pytest.raises(BenchInputError, match="is a registered model"):
        load_suite(str(write(tmp_path, shadow)))
    load_suite(str(write(tmp_path, BASE + SQUARES)))
    redefined = BASE + SQUARES.replace("aspect_ratios = []", "aspect_ratios = [2]")
    with pytest.raises(BenchInputError, match="already defined differently"):
        load_suite(str(write(tmp_path, redefined, "other.toml")))
    chained = BASE + SQUARES + '[variants.vt_chain]\nmodel = "vt_squares"\nreason = "r"\n'
    with pytest.raises(BenchInputError, match="not another variant"):
        load_suite(str(write(tmp_path, chained, "chained.toml")))


def test_an_unknown_build_option_exits_2_with_one_line(tmp_path: Path, capsys) -> None:
    path = write(tmp_path, BASE.replace("vt_squares", "vt_typo")
                 + '[variants.vt_typo]\nmodel = "ssd300"\nreason = "r"\nbuild = { aspect_ratio = [2] }\n')
    assert main(["--suite", str(path), "--plan"]) == 2
    err = capsys.readouterr().err
    assert err.count("\n") == 1 and "variants.vt_typo.build.aspect_ratio" in err and "aspect_ratios" in err


def test_learned_priors_are_kmeans_of_the_training_boxes_at_the_input(tmp_path: Path) -> None:
    text = (BASE.replace("vt_squares", "vt_learned") + '[variants.vt_learned]\nmodel = "ssd300"\n'
            'reason = "r"\nlearned_priors = { shapes = 3, seed = 1 }\n')
    suite = load_suite(str(write(tmp_path, text)))
    rng = np.random.default_rng(0)
    records = []
    for i in range(20):  # images of two shapes: the normalisation is per image width and height
        w, h = (200, 100) if i % 2 else (100, 400)
        xy = rng.uniform(0, 50, (3, 2))
        boxes = np.hstack([xy, xy + rng.uniform(5, 60, (3, 2))])
        boxes[0, 2] = w + 30  # out of the image: clipped, as the loader repairs it
        records.append(ImageRecord(i, f"{i}.jpg", w, h, boxes, np.zeros(3, np.int64)))
    data = type("Data", (), {"train": type("Split", (), {"records": records})()})()
    wh = training_box_shapes(records)
    assert wh.shape == (60, 2) and wh.max() <= 1 and wh[0, 0] == (100 - records[0].boxes[0, 0]) / 100
    options = learned_prior_options(suite, "vt_learned", data)
    np.testing.assert_allclose(options["prior_shapes"], kmeans_prior_shapes(wh, 3, seed=1))
    assert learned_prior_options(suite, "ssd300", data) == {}
    assert "prior_shapes" in model_spec("vt_learned").options


def test_ssd_augment_defaults_are_the_transforms(tmp_path: Path) -> None:
    from bench.data.transforms import SSD_AUGMENT
    from bench.suite.spec import SSDAugment

    for name, value in dataclasses.asdict(SSDAugment()).items():
        assert getattr(SSD_AUGMENT, name) == value


def test_the_ablation_suite_lists_every_row_of_the_registry() -> None:
    """``--plan`` of ``ssd_ablation``: every model seed 003's registry rows name (and compare against) runs,
    each variant with its reason and switch."""
    suite = load_suite("ssd_ablation")
    with (ROOT / "reports" / "papers" / "003_ssd.csv").open(newline="") as fh:
        rows = list(csv.DictReader(fh))
    named = {r["model"] for r in rows} | {r["reference"] for r in rows if r["reference"]}
    assert named <= set(suite.models)
    plan = plan_for(suite, with_cost=False)["models"]
    assert set(plan) == set(suite.models) and set(suite.variants) <= set(plan)
    assert all(plan[name]["variant"]["reason"].startswith("seed 00") for name in suite.variants)
    assert plan["ssd300_no_augment"]["augmentation"] == {"policy": "none"}
    assert plan["ssd512_no_zoom_out"]["augmentation"]["params"]["expand_p"] == 0.0
    assert plan["ssd300_at_512"]["input"]["size"] == 512
    assert plan["ssd300_learned_priors"]["variant"]["learned_priors"]["shapes"] == 30
    assert build_model("ssd300_conv7", 20).num_priors == 8664  # Table 3.2's row, through the variant
