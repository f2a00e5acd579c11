"""The cluster launcher: Slurm job parameters checked through a fake ``sbatch`` (no cluster), option
validation, ``--collect`` states, and a local job requeued mid-training that resumes to the result of an
uninterrupted run (submitit's local executor, CPU, fixed seed)."""

from __future__ import annotations

import argparse
import csv
import json
import os
import signal
import subprocess
import sys
import threading
import time
from pathlib import Path

import pytest
import torch
from submitit.core.utils import DelayedSubmission

from bench.cluster.collect import LAUNCH_RECORD, collect, model_states
from bench.cluster.job import ClusterJob, JobSpec
from bench.cluster.launch import launch
from bench.cluster.options import parse_slurm_args, parse_time_minutes
from bench.errors import BenchInputError
from bench.io import read_json, write_json
from detectors import model_names

MODEL = "yolov5nu" if "yolov5nu" in model_names() else "yolov5n"  # the tiny ultralytics model
SMOKE = Path(__file__).resolve().parents[1] / "bench" / "suites" / "smoke.toml"


def arguments(tmp_path: Path, *argv: str) -> argparse.Namespace:
    """``bench.run``'s own namespace (smoke suite, a test cache), as the CLI hands it to the launcher."""
    from bench.run import parse_args

    return parse_args(["--suite", "smoke", "--cache-dir", str(tmp_path / "cache"), *argv])


@pytest.fixture
def fake_slurm(tmp_path: Path, monkeypatch) -> Path:
    """``srun`` and an ``sbatch`` that records each script and answers like Slurm (job ids 1001, 1002...)."""
    bin_dir = tmp_path / "bin"
    bin_dir.mkdir()
    (bin_dir / "srun").write_text("#!/bin/sh\nexit 0\n")
    (bin_dir / "sbatch").write_text(
        "#!/bin/sh\nn=$(( $(cat \"$0.count\" 2>/dev/null || echo 1000) + 1 ))\necho $n > \"$0.count\"\n"
        "echo \"$1\" >> \"$0.calls\"\necho \"Submitted batch job $n\"\n")
    for tool in ("srun", "sbatch"):
        (bin_dir / tool).chmod(0o755)
    monkeypatch.setenv("PATH", f"{bin_dir}{os.pathsep}{os.environ['PATH']}")
    return bin_dir


def sbatch_flags(script: Path) -> dict[str, str]:
    flags = {}
    for line in script.read_text().splitlines():
        if line.startswith("#SBATCH --"):
            key, _, value = line[len("#SBATCH --"):].partition("=")
            flags[key] = value or "<set>"
    return flags


def test_slurm_jobs_carry_the_requested_parameters(tmp_path: Path, fake_slurm: Path) -> None:
    out = tmp_path / "run"
    args = arguments(tmp_path, "--launcher", "slurm", "--gpus-per-job", "4", "--nodes", "2", "--partition",
                     "gpu", "--time", "1-02:00:00", "--mem", "64G", "--slurm-args", "account=vision qos=high",
                     "--slurm-args=--exclusive")
    assert launch(args, [MODEL, "ssd300"], out) == 0

    record = read_json(out / LAUNCH_RECORD)
    assert {name: job["job_id"] for name, job in record["jobs"].items()} == {MODEL: "1001", "ssd300": "1002"}
    assert len((fake_slurm / "sbatch.calls").read_text().split()) == 2
    flags = sbatch_flags(out / "jobs" / "1001_submission.sh")
    assert flags == flags | {
        "nodes": "2", "ntasks-per-node": "2", "gpus-per-node": "2",  # one rank per GPU, 4 GPUs over 2 nodes
        "partition": "gpu", "time": str(26 * 60), "mem": "64G", "account": "vision", "qos": "high",
        "exclusive": "<set>", "requeue": "<set>", "signal": "USR2@120", "job-name": f"smoke:{MODEL}",
        "cpus-per-task": "2"}  # smoke's 0 loader workers + 2
    assert flags["output"].startswith(str(out / "jobs"))  # logs beside the results, on the shared FS
    script = (out / "jobs" / "1001_submission.sh").read_text()
    assert "srun --unbuffered" in script and "-m submitit.core._submit" in script

    delayed = DelayedSubmission.load(out / "jobs" / "1001_submitted.pkl")
    job = delayed.function
    assert isinstance(job, ClusterJob) and job.attempt == 1
    argv = list(job.spec.argv)
    assert argv[:9] == ["--suite", "smoke", "--models", MODEL, "--out", str(out.resolve()), "--resume",
                        "--device", "cuda"]
    assert argv[argv.index("--cache-dir") + 1] == str((tmp_path / "cache").resolve())
    assert argv[-1] == "--no-report" and "--strict" not in argv  # the collect step builds the report
    plan = read_json(out / "plan.json")  # resolved once by the launcher, before any job starts
    assert set(plan["models"]) == {MODEL, "ssd300"} and plan["models"][MODEL]["budget"]["iterations"] == 6
    assert delayed._timeout_min == 26 * 60 and delayed._timeout_countdown == 3  # requeues on timeout

    requeued = job.checkpoint()  # submitit's protocol: the same job, next attempt
    assert isinstance(requeued, DelayedSubmission) and requeued.function.spec == job.spec
    assert requeued.function.attempt == 2

    # A second launch into the same run submits only what is not done.
    write_json({"state": "done", "stage": "done"}, out / "models" / MODEL / "status.json")
    assert launch(arguments(tmp_path, "--launcher", "slurm", "--gpus-per-job", "2", "--strict",
                            "--keep-weights"), [MODEL, "ssd300"], out) == 0
    record = read_json(out / LAUNCH_RECORD)
    assert record["jobs"]["ssd300"]["job_id"] == "1003" and record["jobs"][MODEL]["job_id"] == "1001"
    assert record["history"][0]["job_id"] == "1002"
    assert sbatch_flags(out / "jobs" / "1003_submission.sh")["gpus-per-node"] == "2"
    resubmitted = DelayedSubmission.load(out / "jobs" / "1003_submitted.pkl").function.spec.argv
    assert "--strict" in resubmitted and "--keep-weights" in resubmitted  # run-level flags jobs inherit


def test_a_refused_submission_is_one_named_line(tmp_path: Path, fake_slurm: Path) -> None:
    refusal = "sbatch: error: invalid partition specified: nope"
    (fake_slurm / "sbatch").write_text(f"#!/bin/sh\necho '{refusal}' >&2\nexit 1\n")
    with pytest.raises(BenchInputError, match=rf"sbatch refused the job of {MODEL}: {refusal}"):
        launch(arguments(tmp_path, "--launcher", "slurm", "--partition", "nope"), [MODEL], tmp_path / "run")
    (fake_slurm / "srun").unlink()
    with pytest.raises(BenchInputError, match="srun"):
        launch(arguments(tmp_path, "--launcher", "slurm"), [MODEL], tmp_path / "run")


def test_bad_launcher_options_are_input_errors(tmp_path: Path) -> None:
    cases = [(("--gpus-per-job", "3", "--nodes", "2"), "split evenly"),
             (("--gpus-per-job", "8"), "batch_size 4 cannot be split over the 8 ranks"),
             (("--time", "soon"), "not a Slurm time"),
             (("--mem", "lots"), "not a Slurm memory size"),
             (("--slurm-args", "=x"), "KEY=VALUE")]
    for extra, message in cases:
        with pytest.raises(BenchInputError, match=message):
            launch(arguments(tmp_path, "--launcher", "slurm", *extra), [MODEL], tmp_path / "run")
    with pytest.raises(BenchInputError, match="needs --gpus-per-job"):
        launch(arguments(tmp_path, "--launcher", "local", "--device", "cuda", "--gpus-per-job", "0"), [MODEL],
               tmp_path / "run")
    assert not (tmp_path / "run").exists()  # nothing submitted, nothing written
    assert [parse_time_minutes(t) for t in ("90", "1:30:00", "2-00", "0-0:45", "10:30")] == [90, 90, 2880, 45,
                                                                                          10]
    assert parse_slurm_args(["account=a --constraint=h100", "exclusive"]) == {
        "account": "a", "constraint": "h100", "exclusive": True}


def test_collect_tells_running_lost_and_finished_models_apart(tmp_path: Path, monkeypatch, capsys) -> None:
    out = tmp_path / "run"
    write_json({"suite": {}}, out / "manifest.json")
    dead = subprocess.Popen([sys.executable, "-c", "pass"])
    dead.wait()
    write_json({"launcher": "local", "folder": "jobs", "host": os.uname().nodename,
                "jobs": {"a": {"job_id": str(dead.pid)}, "b": {"job_id": str(os.getpid())},
                         "c": {"job_id": str(dead.pid)}}}, out / LAUNCH_RECORD)
    for name, state in (("a", "done"), ("b", "running"), ("c", "running")):
        write_json({"state": state, "stage": "train:train", "error": None},
                   out / "models" / name / "status.json")
    built: list[Path] = []
    monkeypatch.setattr("reports.build.build_report",
                        lambda run: built.append(run) or (run / "r.md", run / "r.html"))

    rows = {r["model"]: r["state"] for r in model_states(out)}
    assert rows == {"a": "done", "b": "running", "c": "lost"}  # c's job process is gone
    assert collect(out) == 3 and built == []  # b still runs: no report yet
    assert "2 of 3 models finished" in capsys.readouterr().err

    write_json({"state": "done", "stage": "done", "error": None}, out / "models" / "b" / "status.json")
    assert collect(out) == 1 and built == [out]  # all over, c lost: report built, non-zero status
    assert "its job ended before the model finished" in capsys.readouterr().out
    with pytest.raises(BenchInputError, match="not a run directory"):
        collect(tmp_path / "nothing")


def longer_smoke(tmp_path: Path, iterations: int) -> Path:
    """The smoke suite with more iterations, so a signal sent after the first checkpoint lands mid-run."""
    path = tmp_path / "smoke_long.toml"
    path.write_text(f'base = "{SMOKE}"\ndescription = "smoke, longer"\n[recipe]\niterations = {iterations}\n')
    return path


def log_rows(path: Path) -> list[dict[str, str]]:
    with path.open(newline="") as fh:
        return [{k: v for k, v in row.items() if k != "seconds"} for row in csv.DictReader(fh)]


@pytest.mark.slow
def test_local_job_requeued_mid_training_resumes_to_the_uninterrupted_result(tmp_path: Path, monkeypatch,
                                                                            capsys) -> None:
    """The uninterrupted run is launched as a user types it (``--launcher local --wait``, then
    ``--collect``); the requeued one through ``launch``, so the test can signal its job mid-training."""
    monkeypatch.setenv("OMP_NUM_THREADS", "1")  # both runs' jobs: the same threads, the same arithmetic
    suite = str(longer_smoke(tmp_path, 12))
    reference = tmp_path / "reference"
    command = [sys.executable, "-m", "bench.run", "--suite", suite, "--models", MODEL, "--out",
               str(reference), "--cache-dir", str(tmp_path / "cache"), "--launcher", "local", "--wait",
               "--keep-weights"]
    launched = subprocess.run(command, cwd=SMOKE.parents[2], env={**os.environ, "YOLO_OFFLINE": "1"},
                              capture_output=True, text=True)
    assert launched.returncode == 0, launched.stderr[-3000:]
    assert read_json(reference / LAUNCH_RECORD)["launcher"] == "local"
    assert (reference / "report.html").is_file()
    from bench.run import main

    capsys.readouterr()
    assert main(["--collect", str(reference)]) == 0
    assert f"{MODEL}" in (shown := capsys.readouterr().out) and "done" in shown
    assert main(["--collect", str(tmp_path / "nothing")]) == 2  # one line, exit 2

    out = tmp_path / "requeued"
    result: dict[str, int] = {}
    waiter = threading.Thread(target=lambda: result.update(code=launch(
        arguments(tmp_path, "--suite", suite, "--launcher", "local", "--wait", "--keep-weights"), [MODEL],
        out)))
    waiter.start()
    model_dir = out / "models" / MODEL
    deadline = time.monotonic() + 300
    while not ((model_dir / "checkpoint.pt").exists() and (model_dir / "job.json").exists()):
        assert time.monotonic() < deadline and waiter.is_alive(), "no checkpoint appeared"
        time.sleep(0.02)
    pid = read_json(model_dir / "job.json")["attempts"][-1]["pid"]
    os.kill(pid, signal.SIGSTOP)  # paused, its checkpoint cannot change while it is read
    at_kill = torch.load(model_dir / "checkpoint.pt", weights_only=True)
    assert at_kill["stage"] == "train" and not at_kill["stage_done"] and at_kill["iteration"] < 12
    os.kill(pid, signal.SIGUSR2)  # what Slurm (and submitit's local controller) send before a time limit
    os.kill(pid, signal.SIGCONT)
    waiter.join(timeout=600)
    assert result["code"] == 0

    attempts = read_json(model_dir / "job.json")["attempts"]
    assert [a["attempt"] for a in attempts] == [1, 2] and attempts[0]["pid"] != attempts[1]["pid"]
    assert attempts[0]["outcome"].startswith("exited (144)")  # submitit's local requeue status
    assert attempts[1]["resumed_from"] == {"stage": "train", "iteration": int(at_kill["iteration"]),
                                           "stage_done": False}
    assert attempts[1]["outcome"] == "finished"

    a, b = reference / "models" / MODEL, model_dir
    weights = [torch.load(d / "final.pt", weights_only=True)["model"] for d in (a, b)]
    for name, tensor in weights[0].items():
        assert torch.equal(tensor, weights[1][name]), name
    assert (a / "detections.json").read_text() == (b / "detections.json").read_text()
    metrics = [json.loads((d / "metrics.json").read_text()) for d in (a, b)]
    assert metrics[0]["coco"] == metrics[1]["coco"] and metrics[0]["voc"] == metrics[1]["voc"]
    assert log_rows(a / "train_log.csv") == log_rows(b / "train_log.csv")
    assert read_json(b / "status.json")["state"] == "done"
    assert (out / "report.html").is_file()  # the waiting launcher collected and built the report


def test_job_spec_is_what_a_job_runs(tmp_path: Path) -> None:
    """JobSpec round-trips through submitit's pickle (cloudpickle) unchanged."""
    spec = JobSpec(MODEL, tmp_path, ("--models", MODEL), ("tests.fake_detector",))
    path = tmp_path / "job.pkl"
    DelayedSubmission(ClusterJob(spec)).dump(path)
    assert DelayedSubmission.load(path).function.spec == spec
