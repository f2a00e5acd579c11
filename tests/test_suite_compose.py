"""Suites compose: ``base`` inheritance with a deep merge, overrides by family, group and model, and the
named errors of a missing base, a cycle and a key a base gets wrong."""

from __future__ import annotations

import json
import sys
from pathlib import Path

import pytest

from bench.errors import BenchInputError
from bench.suite.spec import SUITES_DIR, bundled_suites, load_suite
from bench.training.schedule import base_accumulation, effective_weight_decay

if sys.version_info >= (3, 11):
    import tomllib
else:
    import tomli as tomllib

BASE = """
name = "base"
description = "the base"
protocol = "identical"
models = ["ssd300", "yolov5n"]
[budget]
description = "base budget"
[recipe]
iterations = 100
batch_size = 8
lr = 1e-3
milestones = [0.5, 0.75]
input_size = { yolov5 = 320 }
augment = { ssd = "ssd", yolov5 = "yolo" }
[data.synthetic]
images = 50
seed = 3
"""


def write(path: Path, text: str) -> Path:
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(text)
    return path


def test_child_inherits_and_deep_merges(tmp_path: Path) -> None:
    write(tmp_path / "parts" / "base.toml", BASE)
    child = write(tmp_path / "child.toml", """base = "parts/base.toml"
models = ["ssd300"]
[recipe]
lr = 4e-3
milestones = [0.9]
input_size = { yolov5 = 640 }
[data.synthetic]
images = 60
""")
    suite = load_suite(str(child))
    assert suite.name == "child" and suite.description == "the base"  # name is never inherited
    assert suite.models == ["ssd300"] and suite.protocol == "identical"
    r = suite.recipe
    assert (r.lr, r.batch_size, r.iterations, r.milestones) == (4e-3, 8, 100, [0.9])  # lists replace
    assert r.input_size == {"yolov5": 640} and r.augment == {"ssd": "ssd", "yolov5": "yolo"}  # tables merge
    assert (suite.data.synthetic.images, suite.data.synthetic.seed) == (60, 3)
    assert suite.files == [str((tmp_path / "parts" / "base.toml").resolve()), str(child.resolve())]
    edited = load_suite(str(child)).sha256
    write(tmp_path / "parts" / "base.toml", BASE.replace("batch_size = 8", "batch_size = 16"))
    assert load_suite(str(child)).sha256 != edited  # the hash covers the bases


def test_a_file_setting_epochs_drops_the_inherited_iterations(tmp_path: Path) -> None:
    write(tmp_path / "base.toml", BASE)
    child = write(tmp_path / "child.toml", 'base = "base.toml"\n[recipe]\nepochs = 3\n')
    recipe = load_suite(str(child)).recipe
    assert (recipe.epochs, recipe.iterations) == (3, None)


def test_several_bases_merge_left_to_right(tmp_path: Path) -> None:
    write(tmp_path / "base.toml", BASE)
    write(tmp_path / "fast.toml", "[recipe]\nlr = 0.02\nbatch_size = 2\n")
    write(tmp_path / "slow.toml", "[recipe]\nlr = 0.005\n")
    child = write(tmp_path / "child.toml", 'base = ["base.toml", "fast.toml", "slow.toml"]\n')
    recipe = load_suite(str(child)).recipe
    assert (recipe.lr, recipe.batch_size) == (0.005, 2)


@pytest.mark.parametrize(("files", "message"), [
    ({"a.toml": 'base = "b.toml"\n' + BASE, "b.toml": 'base = "a.toml"\n'},
     "cycle: a.toml -> b.toml -> a.toml"),
    ({"a.toml": 'base = "a.toml"\n' + BASE}, "cycle: a.toml -> a.toml"),
    ({"a.toml": 'base = "missing.toml"\n' + BASE}, "base suite 'missing.toml' not found"),
    ({"a.toml": "base = 3\n" + BASE}, "must be a file name or a list of file names"),
])
def test_inheritance_errors_are_named(tmp_path: Path, files: dict[str, str], message: str) -> None:
    for name, text in files.items():
        write(tmp_path / name, text)
    with pytest.raises(BenchInputError) as err:
        load_suite(str(tmp_path / "a.toml"))
    assert message in str(err.value) and err.value.field == "base"


def test_errors_in_a_base_name_the_base(tmp_path: Path) -> None:
    base = write(tmp_path / "base.toml", BASE + "[speed]\nwarmpu = 3\n")
    child = write(tmp_path / "child.toml", 'base = "base.toml"\n')
    with pytest.raises(BenchInputError) as err:
        load_suite(str(child))
    assert err.value.path == str(base.resolve()) and err.value.field == "speed.warmpu"
    write(tmp_path / "base.toml", BASE.replace("lr = 1e-3", "lr = 'fast'"))
    with pytest.raises(BenchInputError) as err:
        load_suite(str(child))
    assert err.value.path == str(base.resolve()) and err.value.field == "recipe.lr"
    assert "must be float" in str(err.value)


OVERRIDES = """
[overrides.family.yolov5]
reason = "family reason"
lr = 0.01
batch_size = 64
momentum = 0.937

[overrides.group.small]
reason = "group reason"
models = ["yolov5n", "ssd300"]
batch_size = 16
warmup_iterations = 7

[overrides.yolov5n]
reason = "model reason"
batch_size = 128
"""


def test_override_precedence_model_over_group_over_family(tmp_path: Path) -> None:
    suite = load_suite(str(write(tmp_path / "s.toml", BASE + OVERRIDES)))
    n = suite.recipe_for("yolov5n", "yolov5")
    assert (n.batch_size, n.lr, n.momentum, n.warmup_iterations) == (128, 0.01, 0.937, 7)
    s = suite.recipe_for("yolov5s", "yolov5")  # family only
    assert (s.batch_size, s.lr, s.warmup_iterations) == (64, 0.01, 500)
    ssd = suite.recipe_for("ssd300", "ssd")  # group only
    assert (ssd.batch_size, ssd.lr, ssd.warmup_iterations) == (16, 1e-3, 7)
    assert suite.recipe_for("fssd300", "ssd") is suite.recipe
    layers = suite.overrides_for("yolov5n", "yolov5")
    assert [(o.kind, o.reason) for o in layers] == [("family", "family reason"), ("group", "group reason"),
                                                    ("model", "model reason")]


def test_overrides_of_base_and_child_both_apply_with_their_reasons(tmp_path: Path) -> None:
    base = write(tmp_path / "base.toml", BASE + OVERRIDES)
    child = write(tmp_path / "child.toml", 'base = "base.toml"\n[overrides.family.yolov5]\n'
                                           'reason = "child reason"\nlr = 0.02\n')
    suite = load_suite(str(child))
    r = suite.recipe_for("yolov5s", "yolov5")
    assert (r.lr, r.batch_size) == (0.02, 64)  # the child's layer over the base's, which still applies
    family = [o for o in suite.overrides_for("yolov5s", "yolov5") if o.kind == "family"]
    assert [(o.reason, o.source) for o in family] == [("family reason", str(base.resolve())),
                                                      ("child reason", str(child.resolve()))]


def test_an_override_setting_epochs_replaces_iterations(tmp_path: Path) -> None:
    path = write(tmp_path / "s.toml", BASE + '[overrides.yolov5n]\nreason = "r"\nepochs = 300\n')
    r = load_suite(str(path)).recipe_for("yolov5n", "yolov5")
    assert (r.epochs, r.iterations) == (300, None)


@pytest.mark.parametrize(("extra", "key", "message"), [
    ('[overrides.group.g]\nreason = "r"\nlr = 0.1\n', "overrides.group.g.models", "non-empty 'models'"),
    ('[overrides.family.ssd]\nlr = 0.1\n', "overrides.family.ssd.reason", "reason"),
    ('[overrides.family.ssd]\nreason = "r"\nlearning_rate = 0.1\n', "overrides.family.ssd.learning_rate",
     "unknown key"),
    ('[overrides.group.g]\nreason = "r"\nmodels = ["ssd300"]\nbatch_size = "big"\n',
     "overrides.group.g.batch_size", "must be int"),
])
def test_bad_overrides_name_the_key(tmp_path: Path, extra: str, key: str, message: str) -> None:
    with pytest.raises(BenchInputError) as err:
        load_suite(str(write(tmp_path / "s.toml", BASE + extra)))
    assert err.value.field == key and message in str(err.value)


def _tables(value: dict, prefix: str = "") -> list[tuple[str, str]]:
    out = []
    scalars = {k: v for k, v in value.items() if not isinstance(v, dict)}
    if len([k for k in scalars if k != "reason"]) >= 3:
        out.append((prefix, json.dumps({k: v for k, v in scalars.items() if k != "reason"}, sort_keys=True)))
    for k, v in value.items():
        if isinstance(v, dict):
            out += _tables(v, f"{prefix}.{k}" if prefix else k)
    return out


def test_no_suite_file_repeats_another_files_block() -> None:
    """A table of three or more values (reasons aside) appears once among all suite files: no copies."""
    seen: dict[str, str] = {}
    for path in sorted(SUITES_DIR.rglob("*.toml")):
        for where, content in _tables(tomllib.loads(path.read_text())):
            here = f"{path.relative_to(SUITES_DIR)}:{where}"
            assert content not in seen, f"{here} repeats {seen[content]}"
            seen[content] = here


def test_yolov5s_step_per_image_is_the_same_in_every_sgd_suite() -> None:
    """Per image, ultralytics' update: lr 0.01 on the summed loss and weight decay 5e-4 per 64 images,
    whatever the suite's batch (the GPU suites); the CPU suites train all models with AdamW (not compared)."""
    steps = {}
    for name in bundled_suites():
        suite = load_suite(name)
        if "yolov5s" not in suite.models:
            continue
        recipe = suite.recipe_for("yolov5s", "yolov5")
        if recipe.optimizer != "sgd":
            continue
        accumulate = base_accumulation(recipe)
        images = recipe.batch_size * accumulate
        per_image_lr = recipe.lr if recipe.loss_reduction == "sum" else recipe.lr / images
        per_image_decay = effective_weight_decay(recipe) / images
        steps[name] = (per_image_lr, round(per_image_decay, 15), recipe.momentum)
    assert {"voc07", "voc07_512", "voc07_paper", "coco", "coco_paper"} <= set(steps)
    assert len(set(steps.values())) == 1, steps
    assert next(iter(steps.values())) == (0.01, round(5e-4 / 64, 15), 0.937)
