"""Budgets in work, not in seconds (issue 11): each model trains the iterations its plan derives before
training; the same command gives bit-identical weights, detections and metrics on an idle and on a loaded
machine; the wall-clock safety net, when it triggers, is reported loudly; what ``final.pt`` keeps."""

from __future__ import annotations

import csv
import json
import subprocess
import sys
from pathlib import Path

import pytest
import torch

import bench.run
import tests.fake_detector  # registers tiny_fake
from bench.run import main

SMOKE = Path(__file__).resolve().parents[1] / "bench" / "suites" / "smoke.toml"


@pytest.fixture(autouse=True)
def no_report(monkeypatch) -> None:
    monkeypatch.setattr(bench.run, "build_report", lambda out: None)  # the report has its own tests


def suite_file(tmp_path: Path, body: str) -> str:
    path = tmp_path / "suite.toml"
    path.write_text(f'base = "{SMOKE}"\ndescription = "smoke variant"\n{body}')
    return str(path)


def run(tmp_path: Path, suite: str, out: Path, *args: str) -> int:
    return main(["--suite", suite, "--out", str(out), "--cache-dir", str(tmp_path / "cache"), *args])


def read(path: Path) -> dict:
    return json.loads(path.read_text())


def log_rows(path: Path) -> list[dict[str, str]]:
    with path.open(newline="") as fh:
        return [{k: v for k, v in row.items() if k != "seconds"} for row in csv.DictReader(fh)]


# yolov5n at 64 px: ~0.042 forward GFLOPs, so 4e9 training FLOPs at batch 4 give 8 of at most 20 iterations.
EQUAL_COMPUTE = """models = ["yolov5n"]
[budget]
rule = "equal_compute"
train_flops = 4e9
[recipe]
iterations = 20
max_train_seconds = 600.0  # the safety net: present, never reached
"""


def busy_cores(n: int) -> list[subprocess.Popen]:
    return [subprocess.Popen([sys.executable, "-c", "while True: pass"]) for _ in range(n)]


@pytest.mark.slow
def test_same_command_gives_identical_results_on_an_idle_and_a_loaded_machine(tmp_path: Path, capsys) -> None:
    suite = suite_file(tmp_path, EQUAL_COMPUTE)
    assert main(["--suite", suite, "--plan"]) == 0  # what a user sees before running
    printed = json.loads(capsys.readouterr().out)
    planned = printed["models"]["yolov5n"]["budget"]["iterations"]
    assert 4 <= planned < 20 and "equal compute" in printed["models"]["yolov5n"]["budget"]["why"]

    idle, loaded = tmp_path / "idle", tmp_path / "loaded"
    assert run(tmp_path, suite, idle, "--keep-weights") == 0
    load = busy_cores(2)
    try:
        assert run(tmp_path, suite, loaded, "--keep-weights") == 0
    finally:
        for proc in load:
            proc.kill()
            proc.wait()

    for out in (idle, loaded):
        assert read(out / "plan.json")["models"]["yolov5n"]["budget"]["iterations"] == planned
        budget = read(out / "models" / "yolov5n" / "status.json")["budget"]
        assert budget == {"planned_iterations": planned, "trained_iterations": planned, "completed": True}
        assert read(out / "manifest.json")["budget"]["models"]["yolov5n"] == budget
    a, b = idle / "models" / "yolov5n", loaded / "models" / "yolov5n"
    weights = [torch.load(d / "final.pt", weights_only=True)["model"] for d in (a, b)]
    for name, tensor in weights[0].items():
        assert torch.equal(tensor, weights[1][name]), name
    for name in ("detections.json", "bootstrap.json", "autoanchor.json"):
        assert (a / name).read_text() == (b / name).read_text(), name
    metrics = [read(d / "metrics.json") for d in (a, b)]
    for key in ("coco", "voc", "per_class", "small_objects"):
        assert metrics[0][key] == metrics[1][key], key
    assert log_rows(a / "train_log.csv") == log_rows(b / "train_log.csv")


def test_safety_net_that_stops_a_model_is_reported_loudly(tmp_path: Path, capsys) -> None:
    suite = suite_file(tmp_path, "[recipe]\nmax_train_seconds = 1e-9\n")
    out = tmp_path / "run"
    assert run(tmp_path, suite, out, "--models", "tiny_fake") == 0
    captured = capsys.readouterr()
    assert "tiny_fake: BUDGET NOT COMPLETED" in captured.err and "after 1 of 6 planned" in captured.err
    assert "BUDGET NOT COMPLETED" in captured.out  # the final summary too
    status = read(out / "models" / "tiny_fake" / "status.json")
    assert status["budget"]["completed"] is False and status["budget"]["trained_iterations"] == 1
    assert status["training"][0]["stopped_by_time"] and not status["training"][0]["budget_completed"]
    manifest = read(out / "manifest.json")
    assert manifest["budget"]["not_completed"] == ["tiny_fake"]
    assert "budget not completed" in manifest["budget"]["models"]["tiny_fake"]["note"]


def test_plan_flag_trains_nothing_and_the_run_trains_what_it_printed(tmp_path: Path, capsys) -> None:
    out = tmp_path / "run"
    assert main(["--suite", "smoke", "--models", "tiny_fake", "--plan", "--out", str(out)]) == 0
    printed = json.loads(capsys.readouterr().out)
    assert not out.exists()
    assert printed["models"]["tiny_fake"]["budget"] == {"rule": "schedule", "iterations": 6,
                                                        "why": "the recipe's 6 iterations"}
    assert run(tmp_path, "smoke", out, "--models", "tiny_fake") == 0
    stored = read(out / "plan.json")
    assert stored["models"]["tiny_fake"]["budget"] == printed["models"]["tiny_fake"]["budget"]
    assert stored["data"]["train_images"] == printed["data"]["train_images"]  # the synthetic spec's count
    status = read(out / "models" / "tiny_fake" / "status.json")
    assert status["budget"]["trained_iterations"] == 6
    # where the model's time went: wall and CPU seconds of every stage, the README's breakdown
    assert set(status["stage_seconds"]) == {"build", "train", "evaluate", "speed"}
    for stage, seconds in status["stage_seconds"].items():
        assert set(seconds) == {"wall", "cpu"} and all(v >= 0 for v in seconds.values()), stage
    assert status["stage_seconds"]["train"]["wall"] > 0


def test_final_weights_full_fp16_or_none(tmp_path: Path) -> None:
    sizes = {}
    for policy in ("full", "fp16"):
        out = tmp_path / policy
        assert run(tmp_path, "smoke", out, "--models", "tiny_fake", "--weights", policy) == 0
        final = out / "models" / "tiny_fake" / "final.pt"
        saved = torch.load(final, weights_only=True)
        dtypes = {t.dtype for t in saved["model"].values()}
        assert dtypes == ({torch.float16} if policy == "fp16" else {torch.float32})
        assert read(out / "manifest.json")["weights"] == {"final_pt": policy, "why": f"--weights {policy}"}
        sizes[policy] = sum(t.numel() * t.element_size() for t in saved["model"].values())
        model = tests.fake_detector.TinyDetector(8)
        model.load_state_dict(saved["model"])  # fp16 weights load into the fp32 model
    assert sizes["fp16"] * 2 == sizes["full"]
    out = tmp_path / "default"
    assert run(tmp_path, "smoke", out, "--models", "tiny_fake") == 0
    assert not (out / "models" / "tiny_fake" / "final.pt").exists()
    assert read(out / "manifest.json")["weights"]["final_pt"] == "none"


def test_coco_small_budget_is_declared_before_training() -> None:
    """The main job's rule: equal iterations for the two models that learn on a CPU, a smoke budget for the
    others (not trained; MFSSD-Pruned one iteration per stage), each scored on a test subset; every model's
    planned stages add up to its budget."""
    from bench.plan.resolve import plan_for
    from bench.suite.spec import load_suite

    suite = load_suite("coco_small")
    plan = plan_for(suite, with_cost=False)["models"]
    assert suite.budget.rule == "schedule" and not suite.budget.paper_budget
    learners = {name: plan[name]["budget"]["iterations"] for name in ("yolov5n", "yolov5s")}
    assert learners["yolov5n"] == learners["yolov5s"] == suite.recipe.iterations >= 100
    for name, model in plan.items():
        stages = [s["iterations"] for s in model["stages"]]
        assert sum(stages) == model["budget"]["iterations"], name
        if name not in learners:  # smoke budget, with its reason
            smoke = [1, 1] if name == "mfssd300_pruned" else [0]
            assert stages == smoke and model["overrides"], name
            assert model["recipe"]["eval_images"] == 2, name
        else:
            assert model["recipe"]["eval_images"] is None, name
