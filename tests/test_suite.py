"""Suite files: every bundled suite loads, and bad files fail with the file and the dotted key named."""

from __future__ import annotations

from pathlib import Path

import pytest

from bench.errors import BenchInputError
from bench.suite.spec import bundled_suites, load_suite

MINIMAL = """
name = "t"
models = ["ssd300", "yolov5n"]
[recipe]
iterations = 10
batch_size = 4
"""


def write(tmp_path: Path, text: str) -> Path:
    path = tmp_path / "suite.toml"
    path.write_text(text)
    return path


def test_bundled_suites_load() -> None:
    expected = {"coco_small", "smoke", "voc07", "voc07_512", "voc07_paper", "voc07_512_paper", "coco",
                "coco_paper", "seed000_coco", "seed000_coco_paper", "seed000_voc", "seed000_voc_paper"}
    assert expected <= set(bundled_suites())
    assert not {"gpu", "ssd_recipe", "voc0712"} & set(bundled_suites())  # common/ holds parts, not suites
    for name in bundled_suites():
        suite = load_suite(name)
        assert suite.models and suite.sha256 and suite.budget_description and suite.protocol != "custom"
    coco_small = load_suite("coco_small")
    assert len(coco_small.models) == 15 and coco_small.budget.rule == "schedule"
    assert coco_small.data.root is None  # the synthetic default
    assert {load_suite(n).protocol for n in ("voc07", "voc07_512", "coco")} == {"identical"}
    assert {load_suite(n).protocol for n in ("voc07_paper", "voc07_512_paper", "coco_paper")} == {"paper"}


def test_minimal_suite_gets_defaults(tmp_path: Path) -> None:
    suite = load_suite(str(write(tmp_path, MINIMAL)))
    assert suite.recipe.iterations == 10 and suite.recipe.epochs is None
    assert suite.recipe.lr == 1e-3 and suite.evaluation.nms_iou == 0.45
    assert suite.recipe_for("ssd300") is suite.recipe


@pytest.mark.parametrize(("extra", "key", "message"), [
    ("[recipe.schedul]\n", "recipe.schedul", "unknown key"),
    ("[data]\nformat = 'pascal'\n", "data.format", "must be one of"),
    ("[evaluation]\nnms_iou = 'high'\n", "evaluation.nms_iou", "must be float"),
    ("[speed]\niterations = 1.5\n", "speed.iterations", "must be int"),
    ("[data.synthetic]\nimages = true\n", "data.synthetic.images", "must be int"),
    ("[overrides.ssd300]\nlr = 0.01\n", "overrides.ssd300.reason", "reason"),
    ("[overrides.ssd300]\nreason = 'paper'\nlearning_rate = 0.01\n", "overrides.ssd300.learning_rate",
     "unknown key"),
])
def test_bad_keys_name_file_and_key(tmp_path: Path, extra: str, key: str, message: str) -> None:
    path = write(tmp_path, MINIMAL + extra)
    with pytest.raises(BenchInputError) as err:
        load_suite(str(path))
    assert err.value.field == key and err.value.path == str(path)
    assert message in str(err.value)


def test_recipe_needs_exactly_one_schedule_length(tmp_path: Path) -> None:
    with pytest.raises(BenchInputError, match="exactly one of 'iterations' and 'epochs'") as err:
        load_suite(str(write(tmp_path, MINIMAL.replace("iterations = 10", "iterations = 10\nepochs = 2"))))
    assert err.value.field == "recipe"


def test_override_replaces_only_its_keys(tmp_path: Path) -> None:
    path = write(tmp_path, MINIMAL + "[overrides.ssd300]\nreason = 'the paper uses 4e-3'\nlr = 4e-3\n"
                                     "pruning = { sparsity = 1e-3 }\n")
    suite = load_suite(str(path))
    recipe = suite.recipe_for("ssd300", "ssd")
    assert recipe.lr == 4e-3 and recipe.batch_size == 4 and recipe.pruning.sparsity == 1e-3
    assert recipe.pruning.finetune_fraction == suite.recipe.pruning.finetune_fraction  # nested: merged
    assert suite.recipe_for("yolov5n", "yolov5").lr == 1e-3
    [override] = suite.overrides_for("ssd300", "ssd")
    assert (override.reason, override.kind, override.target) == ("the paper uses 4e-3", "model", "ssd300")
    assert set(override.values) == {"lr", "pruning"} and override.source == str(path.resolve())


def test_invalid_toml_and_missing_suite(tmp_path: Path) -> None:
    with pytest.raises(BenchInputError, match="not valid TOML"):
        load_suite(str(write(tmp_path, "name = ")))
    with pytest.raises(BenchInputError, match=r"bundled suites: .*coco_small"):
        load_suite("no_such_suite")


def test_synthetic_test_limit_does_not_apply_to_data_given_by_path(tmp_path: Path) -> None:
    from bench.data.resolve import resolve_data
    from bench.suite.spec import DataConfig, SplitNames, SyntheticData

    config = DataConfig(synthetic=SyntheticData(images=30, seed=1, image_size=64, test_images=2),
                        splits={"coco": SplitNames("train", "test")})
    synthetic = resolve_data(config, None, tmp_path / "cache", tmp_path / "suite.toml")
    assert synthetic.synthetic and len(synthetic.test) == 2
    real = resolve_data(config, str(synthetic.root), tmp_path / "cache", tmp_path / "suite.toml")
    assert not real.synthetic and len(real.test) > 2  # the same files, given with --data: the whole split
