"""A failure on one DDP rank (issue 13, failure 5), with two gloo processes running ``bench.run``.

- rank 1 alone gets a NaN loss: the finiteness test is collective, so both ranks fail the model at the same
  step, and the run goes on with the next model;
- rank 1 alone raises mid-training while rank 0 waits in a collective: rank 1 records the failure and aborts
  the job after the failure agreement times out, instead of the job hanging until NCCL's watchdog.
Either way the run ends within a bound and the models before keep their results.
"""

from __future__ import annotations

import json
import os
import socket
import time
from pathlib import Path

import pytest
import torch
import torch.multiprocessing as mp
from torch import Tensor

import tests.fake_detector
from detectors import PostprocessConfig, Target, register
from detectors.registry import model_names

BOUND_SECONDS = 240  # spawning and importing twice dominates; a hang would be NCCL's/gloo's 10+ minutes


class RankFailure(tests.fake_detector.TinyDetector):
    """The tiny detector, failing on rank 1 only, at its third loss call (mid-training)."""

    def loss(self, images: Tensor, targets: list[Target]) -> dict[str, Tensor]:
        losses = super().loss(images, targets)
        self.calls = getattr(self, "calls", 0) + 1
        if self.failure and os.environ.get("RANK") == "1" and self.calls == 3:
            if self.failure == "rank1_nan":
                losses["loss"] = losses["loss"] * float("nan")
            else:
                raise RuntimeError("rank 1 fails on purpose")
        return losses


def _builder(failure: str | None):
    def build(num_classes: int, *, postprocess: PostprocessConfig | None = None) -> RankFailure:
        return RankFailure(num_classes, 64, postprocess, failure)

    return build


for _name, _failure in (("tiny_nan_rank1", "rank1_nan"), ("tiny_raise_rank1", "rank1_raise"),
                        ("tiny_after", None)):
    if _name not in model_names():
        register(_name, family="ssd", input_size=64)(_builder(_failure))


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def run_rank(rank: int, world: int, port: int, out: Path, cache: Path, models: str) -> None:
    os.environ.update(MASTER_ADDR="127.0.0.1", MASTER_PORT=str(port), RANK=str(rank), LOCAL_RANK=str(rank),
                      WORLD_SIZE=str(world), LOCAL_WORLD_SIZE=str(world))
    torch.set_num_threads(1)
    import bench.run

    bench.run.build_report = lambda out: None  # the report has its own tests
    code = bench.run.main(["--suite", "smoke", "--models", models, "--out", str(out), "--keep-weights",
                           "--cache-dir", str(cache)])
    (out / f"exit_{rank}").write_text(str(code))


def launch(tmp_path: Path, models: str) -> tuple[Path, float, Exception | None]:
    out = tmp_path / "run"
    start = time.monotonic()
    try:
        mp.start_processes(run_rank, args=(2, free_port(), out, tmp_path / "cache", models), nprocs=2,
                           start_method="spawn")
        error = None
    except mp.ProcessExitedException as err:
        error = err
    return out, time.monotonic() - start, error


def status(out: Path, model: str) -> dict:
    return json.loads((out / "models" / model / "status.json").read_text())


@pytest.mark.slow
def test_nan_on_one_rank_fails_the_model_on_every_rank_and_the_run_goes_on(tmp_path: Path) -> None:
    out, seconds, error = launch(tmp_path, "tiny_fake,tiny_nan_rank1,tiny_after")
    assert error is None and seconds < BOUND_SECONDS
    assert [(out / f"exit_{r}").read_text() for r in (0, 1)] == ["1", "1"]  # one model failed
    failed = status(out, "tiny_nan_rank1")
    assert failed["state"] == "failed" and "non-finite loss at iteration 2 (train) on another rank" in failed[
        "error"] and "'loss': nan" in failed["error"] and "(rank 1)" in failed["error"]
    for name in ("tiny_fake", "tiny_after"):
        assert status(out, name)["state"] == "done" and (out / "models" / name / "metrics.json").is_file()


@pytest.mark.slow
def test_a_failure_the_other_rank_cannot_see_aborts_the_job(tmp_path: Path, monkeypatch) -> None:
    monkeypatch.setenv("BENCH_FAILURE_AGREEMENT_SECONDS", "3")  # read by the spawned processes
    out, seconds, error = launch(tmp_path, "tiny_fake,tiny_raise_rank1,tiny_after")
    assert isinstance(error, mp.ProcessExitedException) and error.exit_code == 1 and error.error_index == 1
    assert seconds < BOUND_SECONDS
    failed = status(out, "tiny_raise_rank1")
    assert failed["state"] == "failed" and "rank 1 fails on purpose (rank 1)" in failed["error"]
    trace = (out / "models" / "tiny_raise_rank1" / "error.txt").read_text()
    assert "RuntimeError: rank 1 fails on purpose" in trace and "failure agreement within 3 s" in trace
    done = out / "models" / "tiny_fake"
    assert status(out, "tiny_fake")["state"] == "done" and (done / "final.pt").is_file()
    assert (done / "metrics.json").is_file()
    assert status(out, "tiny_after")["state"] == "pending"  # --resume runs it (and retries the failed one)
