"""``kill -9`` in the middle of training, then ``--resume``: the final weights, detections and metrics equal
those of an uninterrupted run (CPU, fixed seed). Real subprocesses on the ``smoke`` suite with yolov5n."""

from __future__ import annotations

import csv
import json
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest
import torch

ROOT = Path(__file__).resolve().parents[1]


def command(out: Path, cache: Path, *extra: str) -> list[str]:
    return [sys.executable, "-m", "bench.run", "--suite", "smoke", "--models", "yolov5n", "--out", str(out),
            "--cache-dir", str(cache), "--keep-weights", "--no-report", *extra]


def environment() -> dict[str, str]:
    return {**os.environ, "OMP_NUM_THREADS": "1", "YOLO_OFFLINE": "1"}


def log_rows(path: Path) -> list[dict[str, str]]:
    with path.open(newline="") as fh:
        return [{k: v for k, v in row.items() if k != "seconds"} for row in csv.DictReader(fh)]


@pytest.mark.slow
def test_kill_9_then_resume_gives_identical_results(tmp_path: Path) -> None:
    cache = tmp_path / "cache"
    reference = tmp_path / "reference"
    subprocess.run(command(reference, cache), cwd=ROOT, env=environment(), check=True, capture_output=True)

    killed = tmp_path / "killed"
    ckpt = killed / "models" / "yolov5n" / "checkpoint.pt"
    proc = subprocess.Popen(command(killed, cache), cwd=ROOT, env=environment(), stdout=subprocess.DEVNULL,
                            stderr=subprocess.DEVNULL)
    deadline = time.monotonic() + 300
    while not ckpt.exists() and proc.poll() is None and time.monotonic() < deadline:
        time.sleep(0.02)
    proc.send_signal(signal.SIGKILL)
    assert proc.wait() == -signal.SIGKILL
    status = json.loads((killed / "models" / "yolov5n" / "status.json").read_text())
    assert status["state"] == "running" and status["stage"] == "train:train"  # killed mid-training
    assert torch.load(ckpt, weights_only=True)["iteration"] < 6

    subprocess.run(command(killed, cache, "--resume"), cwd=ROOT, env=environment(), check=True,
                   capture_output=True)

    a, b = (run / "models" / "yolov5n" for run in (reference, killed))
    weights = [torch.load(d / "final.pt", weights_only=True)["model"] for d in (a, b)]
    for name, tensor in weights[0].items():
        assert torch.equal(tensor, weights[1][name]), name
    assert (a / "detections.json").read_text() == (b / "detections.json").read_text()
    metrics = [json.loads((d / "metrics.json").read_text()) for d in (a, b)]
    assert metrics[0]["coco"] == metrics[1]["coco"] and metrics[0]["voc"] == metrics[1]["voc"]
    assert log_rows(a / "train_log.csv") == log_rows(b / "train_log.csv")
    assert json.loads((b / "status.json").read_text())["state"] == "done"
