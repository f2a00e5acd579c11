"""``nox -s gpu`` on a machine without CUDA skips with a message (exit 0); the harness records every check's
outcome and rewrites its JSON after each; the CPU dry run drives one real check through the Trainer."""

from __future__ import annotations

import json
import time
from pathlib import Path

import pytest
import torch

from bench.gpu_check import Check, CheckContext, CheckSkipped, all_checks, expect, main, run_checks
from bench.gpu_check.table import markdown_rows

ISSUE_CHECKS = {"amp_training_step", "cuda_event_timing", "channels_last_cudnn_benchmark", "nccl_ddp",
                "peak_memory", "ssd300_throughput_vs_torchvision", "cuda_startup", "resume_on_cuda",
                "pruned_on_cuda", "amp_slimming_l1", "ddp_rank_failure", "device_errors"}


def test_without_cuda_it_skips_with_a_message(tmp_path: Path, monkeypatch, capsys) -> None:
    monkeypatch.setattr(torch.cuda, "is_available", lambda: False)
    out = tmp_path / "gpu.json"
    assert main(["--out", str(out)]) == 0
    assert "gpu check skipped: torch sees no CUDA GPU" in capsys.readouterr().err
    document = json.loads(out.read_text())
    assert document["skipped"] and "checks" not in document
    assert document["environment"]["torch"] == torch.__version__
    assert markdown_rows(document).startswith("(skipped")


def test_every_outcome_is_recorded_and_the_json_rewritten_after_each_check(tmp_path: Path) -> None:
    out = tmp_path / "gpu.json"
    seen_mid_run: list[list[str]] = []

    def passes(ctx: CheckContext) -> dict:
        return {"figure": 1.5}

    def fails(ctx: CheckContext) -> dict:
        expect(False, "the figure is off", figure=0.1)
        return {}

    def crashes(ctx: CheckContext) -> dict:
        raise RuntimeError("boom")

    def skips(ctx: CheckContext) -> dict:
        raise CheckSkipped("needs 2 GPUs")

    def spends_the_budget(ctx: CheckContext) -> dict:
        seen_mid_run.append([c["status"] for c in json.loads(out.read_text())["checks"]])
        ctx.deadline = time.monotonic() - 1
        return {}

    checks = [Check(f.__name__, f, f.__name__) for f in (passes, fails, crashes, skips, spends_the_budget,
                                                           passes)]
    ctx = CheckContext(torch.device("cpu"), tmp_path, time.monotonic() + 60, quick=True)
    document: dict = {"environment": {}}
    assert run_checks(checks, ctx, document, out) == 1
    written = json.loads(out.read_text())
    statuses = [(c["name"], c["status"]) for c in written["checks"]]
    assert statuses == [("passes", "passed"), ("fails", "failed"), ("crashes", "failed"),
                        ("skips", "skipped"), ("spends_the_budget", "passed"), ("passes", "skipped")]
    by_name = {c["name"]: c for c in written["checks"]}
    assert by_name["fails"]["error"] == "the figure is off" and by_name["fails"]["result"] == {"figure": 0.1}
    crash = by_name["crashes"]
    assert "RuntimeError: boom" in crash["error"] and "Traceback" in crash["traceback"]
    assert by_name["skips"]["reason"] == "needs 2 GPUs"
    assert written["checks"][-1]["reason"].startswith("time budget")
    assert written["summary"] == {"passed": 2, "failed": 2, "skipped": 2}
    assert seen_mid_run == [["passed", "failed", "failed", "skipped", "running"]]  # on disk before it ran


def test_the_issue_checks_are_all_there_and_unknown_names_are_refused(capsys) -> None:
    names = [c.name for c in all_checks()]
    assert len(names) == len(set(names)) and set(names) >= ISSUE_CHECKS
    assert main(["--device", "cpu", "--only", "nope"]) == 2
    assert "unknown check(s) nope" in capsys.readouterr().err


def test_readme_rows_come_from_a_result_only() -> None:
    throughput = {"amp": {"ours_images_per_s": 900.0, "torchvision_images_per_s": 600.0,
                          "ratio_ours_over_torchvision": 1.5}}
    env = {"gpu_name": "NVIDIA Test", "driver": "1.0", "cuda_build": "13.0", "torch": "x"}
    document = {"environment": env,
                "started": "2026-01-02T00:00:00",
                "checks": [{"name": "ssd300_throughput_vs_torchvision", "status": "passed", "seconds": 9.0,
                            "result": throughput},
                           {"name": "nccl_ddp", "status": "skipped", "seconds": 0.0}]}
    text = markdown_rows(document)
    assert "NVIDIA Test, driver 1.0, CUDA 13.0" in text and "| `nccl_ddp` | skipped |" in text
    assert "900.0 / 600.0 (1.5)" in text


@pytest.mark.slow
def test_cpu_dry_run_drives_the_amp_check_through_the_trainer(tmp_path: Path) -> None:
    out = tmp_path / "dry.json"
    assert main(["--device", "cpu", "--only", "amp_training_step", "--out", str(out), "--workdir",
                 str(tmp_path / "work")]) == 0
    (check,) = json.loads(out.read_text())["checks"]
    assert check["status"] == "passed", check.get("traceback")
    assert set(check["result"]) == {"ssd300", "yolov5n", "yolov5nu"}
    assert all(r["changed_tensors"] > 0.3 and r["iterations"] == 2 for r in check["result"].values())
