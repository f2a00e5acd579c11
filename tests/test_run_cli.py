"""``python -m bench.run`` in-process on the tiny fake detectors: run-directory contract, faults, VOC data."""

from __future__ import annotations

import csv
import json
from pathlib import Path

import pytest
import torch

import bench.run
import bench.runner.model_job
from bench.run import main
from tests.fake_slimming import FakeSlimming, install  # registers tiny_fake, ..., tiny_pruned

MODEL_FILES = ["status.json", "info.json", "train_log.csv", "detections.json", "metrics.json",
               "bootstrap.json", "pr_curves.csv", "roc_curves.csv", "confusion.json", "speed.json",
               "complexity.json"]


REAL_BUILD_REPORT = bench.run.build_report


@pytest.fixture(autouse=True)
def reports_built(monkeypatch) -> list[Path]:
    """The report builder has its own tests; here it is only checked that every run ends by calling it."""
    calls: list[Path] = []
    monkeypatch.setattr(bench.run, "build_report", calls.append)
    return calls


def run(tmp_path: Path, out: Path, *args: str) -> int:
    return main(["--suite", "smoke", "--out", str(out), "--cache-dir", str(tmp_path / "cache"), *args])


def status(out: Path, model: str) -> dict:
    return json.loads((out / "models" / model / "status.json").read_text())


def test_run_writes_the_contract_and_records_failures(tmp_path: Path, reports_built: list[Path]) -> None:
    out = tmp_path / "run"
    assert run(tmp_path, out, "--models", "tiny_raise,tiny_fake") == 1  # one model failed
    assert reports_built == [out]

    manifest = json.loads((out / "manifest.json").read_text())
    assert manifest["suite"]["name"] == "smoke" and len(manifest["suite"]["sha256"]) == 64
    assert manifest["data"]["synthetic"] and manifest["data"]["format"] == "coco"
    assert manifest["data"]["splits"]["test"] == 4  # the suite's test_images limit
    assert manifest["device"]["type"] == "cpu" and manifest["precision"] == "fp32"
    assert manifest["budget"]["iterations"] == 6 and manifest["finished"]
    assert manifest["budget"]["models"]["tiny_fake"] == {"planned_iterations": 6, "trained_iterations": 6,
                                                         "completed": True}
    assert manifest["budget"]["not_completed"] == []
    assert manifest["weights"]["final_pt"] == "none" and "synthetic" in manifest["weights"]["why"]
    assert manifest["data_health"]["splits"] and "quality_problems" in manifest["data_health"]
    plan = json.loads((out / "plan.json").read_text())  # the resolved plan, stored before training
    assert plan["models"]["tiny_fake"]["budget"]["iterations"] == 6
    versions = {"python", "torch", "torchvision", "ultralytics", "numpy", "eval_engine"}
    assert versions <= set(manifest["versions"])
    gt = json.loads((out / "data" / "test_gt.json").read_text())
    assert len(gt["images"]) == 4

    fake = out / "models" / "tiny_fake"
    assert all((fake / name).is_file() for name in MODEL_FILES)
    assert not (fake / "checkpoint.pt").exists()  # a finished model keeps no resumable state
    assert not (fake / "final.pt").exists()  # nor, on synthetic data, its weights (the disk budget)
    assert status(out, "tiny_fake")["state"] == "done"
    info = json.loads((fake / "info.json").read_text())
    assert info["recipe"]["iterations"] == 6 and info["overrides"] is None and info["num_classes"] == 8
    metrics = json.loads((fake / "metrics.json").read_text())
    assert 0 <= metrics["coco"]["AP50"] <= 1
    # The manifest names the evaluator that produced every metrics.json.
    assert manifest["eval_engine"] == metrics["engine"] and metrics["engine"]["name"]
    assert manifest["versions"]["eval_engine"] == "{name} {version}".format(**metrics["engine"])
    detections = json.loads((fake / "detections.json").read_text())
    assert len(detections) == 4 * 8  # one detection per class per test image
    assert json.loads((fake / "complexity.json").read_text())["params"] == info["params"]

    failed = status(out, "tiny_raise")
    assert failed["state"] == "failed" and "fails on purpose" in failed["error"]
    assert "Traceback" in (out / "models" / "tiny_raise" / "error.txt").read_text()

    # --resume skips the finished model (its files untouched) and retries the failed one.
    metrics_file = fake / "metrics.json"
    mtime = metrics_file.stat().st_mtime_ns
    assert run(tmp_path, out, "--models", "tiny_raise,tiny_fake", "--resume") == 1
    assert metrics_file.stat().st_mtime_ns == mtime
    manifest = json.loads((out / "manifest.json").read_text())
    assert len(manifest["resumed"]) == 1


@pytest.mark.slow
def test_real_run_ends_in_the_real_report(tmp_path: Path, monkeypatch) -> None:
    """No stub: the run's own files make a report (its 18 figures dominate the time)."""
    monkeypatch.setattr(bench.run, "build_report", REAL_BUILD_REPORT)
    out = tmp_path / "run"
    assert run(tmp_path, out, "--models", "tiny_fake") == 0
    markdown = (out / "report.md").read_text(encoding="utf-8")
    models = markdown.split("## Models")[1].split("\n## ")[0]
    assert any(line.startswith("| tiny\\_fake | done | ssd | 64 |") for line in models.splitlines()), models
    assert "tiny_fake" in (out / "report.html").read_text(encoding="utf-8")


def test_a_broken_report_fails_the_run_and_keeps_the_results(tmp_path: Path, monkeypatch, capsys) -> None:
    import reports.build

    def broken(run_dir, tolerance=None):
        raise KeyError("a report bug")

    monkeypatch.setattr(bench.run, "build_report", REAL_BUILD_REPORT)
    monkeypatch.setattr(reports.build, "build_report", broken)
    out = tmp_path / "run"
    assert run(tmp_path, out, "--models", "tiny_fake") == 1
    assert f"report failed; the results are in {out}" in capsys.readouterr().err
    assert status(out, "tiny_fake")["state"] == "done"
    assert json.loads((out / "models" / "tiny_fake" / "metrics.json").read_text())["coco"]
    assert not (out / "report.md").exists()


def test_fail_fast_stops_and_nan_loss_is_a_failure(tmp_path: Path) -> None:
    out = tmp_path / "run"
    assert run(tmp_path, out, "--models", "tiny_nan,tiny_fake", "--fail-fast") == 1
    assert "non-finite loss" in status(out, "tiny_nan")["error"]
    assert status(out, "tiny_fake")["state"] == "pending"


def test_existing_run_directory_needs_resume(tmp_path: Path, capsys) -> None:
    out = tmp_path / "run"
    (out).mkdir()
    (out / "manifest.json").write_text("{}")
    assert run(tmp_path, out, "--models", "tiny_fake") == 2
    assert "--resume" in capsys.readouterr().err


def test_unknown_model_is_one_line_error(tmp_path: Path, capsys) -> None:
    assert run(tmp_path, tmp_path / "run", "--models", "yolov9") == 2
    err = capsys.readouterr().err
    assert err.count("\n") == 1 and "unknown model 'yolov9'" in err


def test_voc_format_data_end_to_end(tmp_path: Path) -> None:
    from bench.data.synth import generate

    voc_root = generate(tmp_path / "synth", images=20, seed=3, image_size=64)["voc"]
    out = tmp_path / "run"
    assert run(tmp_path, out, "--models", "tiny_fake", "--data", str(voc_root)) == 0
    manifest = json.loads((out / "manifest.json").read_text())
    assert manifest["data"]["format"] == "voc" and not manifest["data"]["synthetic"]
    assert manifest["data"]["split_names"] == {"train": "train", "test": "test"}
    assert manifest["data"]["splits"] == {"train": 14, "test": 3}  # 70/15/15 of 20 images
    metrics = json.loads((out / "models" / "tiny_fake" / "metrics.json").read_text())
    assert set(metrics["voc"]) >= {"mAP_11pt", "mAP_allpt"}


def test_voc07_without_data_says_where_voc_comes_from(tmp_path: Path, monkeypatch, capsys) -> None:
    monkeypatch.delenv("BENCH_VOC_ROOT", raising=False)
    out = tmp_path / "run"
    assert main(["--suite", "voc07", "--out", str(out)]) == 2
    err = capsys.readouterr().err
    assert "host.robots.ox.ac.uk" in err and "--data PATH" in err and "BENCH_VOC_ROOT" in err
    assert err.count("\n") == 1 and not out.exists()


def test_pruned_model_runs_sparse_prune_finetune_and_resumes_in_finetune(tmp_path: Path, monkeypatch) -> None:
    """The registry's slimming plan, executed by the runner (which knows no model by name)."""
    fake = FakeSlimming()
    install(fake, monkeypatch.setattr)
    # Keep the resumable state a finished model normally discards: the test resumes as if killed just before.
    monkeypatch.setattr(bench.runner.model_job, "discard_resume_state", lambda model_dir, job: None)
    out = tmp_path / "run"
    assert run(tmp_path, out, "--models", "tiny_pruned", "--keep-weights") == 0
    model_dir = out / "models" / "tiny_pruned"
    with (model_dir / "train_log.csv").open(newline="") as fh:
        rows = list(csv.DictReader(fh))
    logged = [(r["stage"], r["iteration"]) for r in rows]  # 6 iterations split 50/50, logged every 2
    assert logged == [("sparse", "2"), ("sparse", "3"), ("finetune", "2"), ("finetune", "3")]
    assert fake.calls[0] == "preview ratio=0.2"  # the plan (plan.json) counts the pruned architecture first
    assert [c for c in fake.calls if not c.startswith("preview")] == [
        "pruner reg=0.0001", *["sparsity_step"] * 3, "prune ratio=0.2"]  # by the criterion, the default
    assert (model_dir / "pruned.pt").is_file() and status(out, "tiny_pruned")["state"] == "done"
    training = status(out, "tiny_pruned")["training"]  # what each stage actually trained, for the report
    assert [(t["stage"], t["iterations"], t["planned_iterations"]) for t in training] == [
        ("sparse", 3, 3), ("finetune", 3, 3)]
    final = torch.load(model_dir / "final.pt", weights_only=True)["state_dict"]

    # As if killed after fine-tuning: resuming must reload the pruned model, not train or prune again.
    state = torch.load(model_dir / "checkpoint.pt", weights_only=True)
    assert state["stage"] == "finetune" and state["stage_done"]
    status_path = model_dir / "status.json"
    status_path.write_text(json.dumps({**status(out, "tiny_pruned"), "state": "running"}))
    fake.calls.clear()
    assert run(tmp_path, out, "--models", "tiny_pruned", "--resume", "--keep-weights") == 0
    assert fake.calls == ["load_pruned"]  # no sparse training, no pruning again
    resumed = torch.load(model_dir / "final.pt", weights_only=True)["state_dict"]
    assert all(torch.equal(final[k], resumed[k]) for k in final)
    assert [t["stage"] for t in status(out, "tiny_pruned")["training"]] == ["sparse", "finetune"]
