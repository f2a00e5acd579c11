"""What runs inside one submitit job: ``python -m bench.run`` for one model, resumable, on every rank.

The job is a ``submitit.helpers.Checkpointable``: on preemption or timeout submitit calls ``checkpoint()``,
pickles the ``DelayedSubmission`` it returns and requeues the job. Nothing but the argument list and an
attempt counter travels in that pickle; the training state lives in the shared run directory
(``models/<name>/checkpoint.pt``, written by the trainer), and every attempt runs ``bench.run`` with
``--resume``, which continues from the last checkpoint (finished stages are skipped, finished models too).

``models/<name>/job.json`` records every attempt (job id, host, pid, world size, where it resumed from) so
``--collect`` can show requeues and a killed job is traceable to its log in ``<run>/jobs/``.
"""

from __future__ import annotations

import importlib
import os
import socket
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import submitit
from submitit.helpers import Checkpointable, DelayedSubmission

from bench.io import read_json, write_json
from bench.runner.manifest import now

JOB_RECORD = "job.json"


class ClusterJobError(RuntimeError):
    """``bench.run`` ended with a non-zero status: the job is marked failed (the reason is in error.txt)."""


@dataclass(frozen=True)
class JobSpec:
    """One model's job: the ``bench.run`` arguments (``--models NAME --out DIR --resume`` included)."""

    model: str
    out: Path  # absolute; must be on a file system every node of the cluster sees
    argv: tuple[str, ...]
    imports: tuple[str, ...] = ()  # modules imported first, e.g. ones that register extra detectors

    @property
    def model_dir(self) -> Path:
        return self.out / "models" / self.model


class ClusterJob(Checkpointable):
    """Callable submitted once per model; ``checkpoint()`` requeues it unchanged but for the attempt count."""

    def __init__(self, spec: JobSpec, attempt: int = 1) -> None:
        self.spec = spec
        self.attempt = attempt

    def __call__(self) -> dict[str, Any]:
        for module in self.spec.imports:
            importlib.import_module(module)
        env = submitit.JobEnvironment()
        # RANK, WORLD_SIZE, LOCAL_RANK, MASTER_ADDR/PORT for bench.distributed.init_from_env (a task per
        # GPU). Every task keeps all of its node's GPUs visible: init_from_env picks cuda:LOCAL_RANK.
        submitit.helpers.TorchDistributedEnvironment().export(set_cuda_visible_devices=False, overwrite=True)
        main_rank = env.global_rank == 0
        if main_rank:
            record_attempt(self.spec, self.attempt, env)
        try:
            from bench.run import main

            code = main(list(self.spec.argv))
        except SystemExit as stop:  # submitit's requeue exits from its signal handler, mid-training
            if main_rank:
                record_end(self.spec, None, f"exited ({stop.code}): requeued or stopped")
            raise
        except BaseException as err:
            if main_rank:
                record_end(self.spec, None, f"{type(err).__name__}: {err}")
            raise
        if main_rank:
            record_end(self.spec, code, "finished" if code == 0 else "bench.run failed")
        if code != 0:
            raise ClusterJobError(f"{self.spec.model}: bench.run exited with status {code}; "
                                f"see {self.spec.model_dir / 'error.txt'}")
        return {"model": self.spec.model, "exit_code": code, "attempt": self.attempt}

    def checkpoint(self, *args: Any, **kwargs: Any) -> DelayedSubmission:
        """Called by submitit on USR2 (preemption or timeout): requeue; the trainer's checkpoint resumes."""
        return DelayedSubmission(ClusterJob(self.spec, self.attempt + 1))


def resume_point(model_dir: Path) -> dict[str, Any] | None:
    """Stage and iteration of the checkpoint an attempt starts from (``None``: from the start)."""
    path = model_dir / "checkpoint.pt"
    if not path.is_file():
        return None
    import torch

    try:  # mmap: only the few scalar entries are read, not the weights
        state = torch.load(path, map_location="cpu", weights_only=True, mmap=True)
    except Exception as err:  # an unreadable checkpoint is bench.run's to report; record why here
        return {"error": f"{type(err).__name__}: {err}"}
    return {"stage": state.get("stage"), "iteration": int(state.get("iteration", 0)),
            "stage_done": bool(state.get("stage_done", False))}


def record_attempt(spec: JobSpec, attempt: int, env: Any) -> None:
    path = spec.model_dir / JOB_RECORD
    record = read_json(path) if path.is_file() else {"model": spec.model, "attempts": []}
    record["attempts"].append({
        "attempt": attempt, "job_id": env.job_id, "host": socket.gethostname(), "pid": os.getpid(),
        "world_size": env.num_tasks, "nodes": env.num_nodes, "started": now(), "ended": None,
        "exit_code": None, "outcome": None, "resumed_from": resume_point(spec.model_dir)})
    write_json(record, path)


def record_end(spec: JobSpec, code: int | None, outcome: str) -> None:
    path = spec.model_dir / JOB_RECORD
    record = read_json(path)
    record["attempts"][-1].update(ended=now(), exit_code=code, outcome=outcome)
    write_json(record, path)
