"""The resolved plan (``bench.plan``): every value issue 9 lists, ultralytics' and the papers' numbers as the
trainer will apply them, and the equal-compute budget derived from FLOPs before training."""

from __future__ import annotations

import io
import json
import math
from pathlib import Path

import numpy as np
import pytest

from bench.errors import BenchInputError
from bench.plan.resolve import budgeted_recipe, plan_for, print_plan
from bench.suite.spec import load_suite

KEYS = {"family", "overrides", "input", "schedule", "stages", "optimizer", "lr", "warmup", "ema",
        "augmentation", "precision", "pretrained", "seed", "budget", "cost", "recipe"}


def test_plan_covers_every_setting_and_is_json() -> None:
    out = io.StringIO()
    plan = print_plan(load_suite("voc07"), ["yolov5s", "ssd300"], file=out, with_cost=False)
    assert json.loads(out.getvalue()) == plan
    assert plan["suite"]["protocol"] == "identical" and "common/ssd_recipe.toml" in plan["suite"]["files"]
    assert plan["data"]["train_split"] == "VOC2007:trainval+VOC2012:trainval"
    assert plan["data"]["num_classes"] == 20 and plan["data"]["train_images"] == 16551
    for model in plan["models"].values():
        assert set(model) >= KEYS
        assert model["schedule"]["epochs"] == pytest.approx(232) and model["schedule"]["batch_size"] == 32
        assert model["cost"]["total_train_flops"] is None  # with_cost=False
    ssd, yolo = plan["models"]["ssd300"], plan["models"]["yolov5s"]
    assert ssd["pretrained"]["backbone"] and not yolo["pretrained"]["backbone"]
    assert (ssd["augmentation"]["policy"], yolo["augmentation"]["policy"]) == ("ssd", "mosaic")
    assert yolo["augmentation"]["params"]["translate"] == 0.1 and yolo["input"]["size"] == 320
    assert [o["kind"] for o in yolo["overrides"]] == ["family"]


def test_seed000_batches_follow_ultralytics_accumulation_and_decay() -> None:
    plan = plan_for(load_suite("seed000_coco_paper"), with_cost=False)
    per_epoch = {m: 118287 // b for m, b in (("yolov5n", 128), ("yolov5m", 40))}
    n, m = plan["models"]["yolov5n"], plan["models"]["yolov5m"]
    assert (n["schedule"]["batch_size"], n["schedule"]["accumulate"]) == (128, 1)
    assert (m["schedule"]["batch_size"], m["schedule"]["accumulate"]) == (40, 2)  # round(64 / 40)
    assert n["optimizer"]["weight_decay_applied"] == pytest.approx(5e-4 * 128 / 64)
    assert m["optimizer"]["weight_decay_applied"] == pytest.approx(5e-4 * 80 / 64)
    assert m["optimizer"]["nesterov"] and m["optimizer"]["loss_reduction"] == "sum"
    assert m["schedule"]["iterations"] == 300 * per_epoch["yolov5m"] and m["input"]["size"] == 640
    nw = max(round(3 * per_epoch["yolov5m"]), 100)
    assert m["warmup"]["iterations"] == nw
    start, peak, last = m["lr"]["phases"]
    assert (start["iteration"], start["lr"], start["bias_lr"], start["momentum"]) == (0, 0.0, 0.1, 0.8)
    lf = (1 - 3 / 300) * (1 - 0.01) + 0.01  # train.py's linear lf at epoch 3, where the warm-up ends
    assert peak["iteration"] == nw and peak["lr"] == pytest.approx(0.01 * lf) and peak["momentum"] == 0.937
    assert last["lr"] == pytest.approx(0.01 * ((1 - 299 / 300) * 0.99 + 0.01))
    groups = {g["kind"]: g["weight_decay"] for g in m["optimizer"]["param_groups"]}
    assert groups.get("bias") == 0.0 and max(groups.values()) == pytest.approx(5e-4 * 80 / 64)
    assert m["ema"] == {"decay": 0.9999, "tau": 2000.0}


def test_mfssd_and_ssd_phases_are_the_papers() -> None:
    plan = plan_for(load_suite("voc07_paper"), ["mfssd300", "ssd300", "mdssd300"], with_cost=False)
    per_epoch = 16551 // 64
    phases = {p["phase"].split(" (")[0]: p for p in plan["models"]["mfssd300"]["lr"]["phases"]}
    assert phases["end of warm-up"]["iteration"] == 5 * per_epoch and phases["end of warm-up"]["lr"] == 0.4
    assert [phases[f"step {k}"]["epoch"] for k in (1, 2, 3)] == pytest.approx([150, 200, 250], abs=0.01)
    assert [phases[f"step {k}"]["lr"] for k in (1, 2, 3)] == pytest.approx([0.04, 0.004, 0.0004])
    ssd = {p["phase"].split(" (")[0]: p for p in plan["models"]["ssd300"]["lr"]["phases"]}
    assert ssd["warm-up start"]["lr"] == pytest.approx(1e-3 / 3) and ssd["end of warm-up"]["iteration"] == 500
    assert (ssd["step 1"]["iteration"], ssd["step 2"]["iteration"]) == (80000, 100000)
    assert "give no training recipe" in plan["models"]["mdssd300"]["overrides"][0]["reason"]


def test_equal_compute_budget_comes_from_flops_alone(tmp_path: Path) -> None:
    path = tmp_path / "s.toml"
    path.write_text('models = ["yolov5n", "yolov5s", "ssd300"]\nprotocol = "identical"\n'
                    '[budget]\nrule = "equal_compute"\ntrain_flops = 5e10\nmin_iterations = 2\n'
                    '[recipe]\niterations = 100\nbatch_size = 2\ninput_size = { yolov5 = 64 }\n')
    suite = load_suite(str(path))
    plan = plan_for(suite)
    assert plan == plan_for(suite)  # deterministic: a pure function of the suite and the architectures
    iterations = {}
    for name, model in plan["models"].items():
        per_iteration = 3 * model["cost"]["forward_gflops"] * 1e9 * 2
        expected = min(100, max(2, math.floor(5e10 / per_iteration)))
        assert model["budget"]["iterations"] == expected, (name, model["budget"])
        iterations[name] = expected
        assert budgeted_recipe(suite, name, plan).iterations == expected
    assert iterations["yolov5n"] == 100 and "capped" in plan["models"]["yolov5n"]["budget"]["why"]
    assert iterations["yolov5n"] > iterations["yolov5s"] > iterations["ssd300"] == 2
    assert "raised to min_iterations" in plan["models"]["ssd300"]["budget"]["why"]


def test_plan_rejects_names_the_registry_lacks(tmp_path: Path) -> None:
    path = tmp_path / "s.toml"
    path.write_text('models = ["ssd300"]\n[recipe]\niterations = 4\n'
                    '[overrides.group.g]\nreason = "r"\nmodels = ["ssd300", "ssd301"]\nlr = 0.1\n')
    with pytest.raises(BenchInputError) as err:
        plan_for(load_suite(str(path)), with_cost=False)
    assert "ssd301" in str(err.value) and err.value.field == "overrides.group.g"


def test_per_image_lr_matches_the_linear_interpolation_of_train_py() -> None:
    """The plan's warm-up lrs are the trainer's: np.interp over [0, nw] like ultralytics' train.py."""
    plan = plan_for(load_suite("voc07"), ["yolov5s"], with_cost=False)["models"]["yolov5s"]
    nw = plan["warmup"]["iterations"]
    assert nw == max(3 * (16551 // 32), 100)
    lf = (1 - 3 / 232) * 0.99 + 0.01
    peak = next(p for p in plan["lr"]["phases"] if p["iteration"] == nw)
    assert peak["lr"] == pytest.approx(float(np.interp(nw, [0, nw], [0.0, 0.01 * lf])))
    assert plan["lr"]["per_image_step"] == 0.01 and plan["schedule"]["accumulate"] == 2
