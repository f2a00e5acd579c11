"""submitit executors for the launcher: the Slurm job parameters and the local executor's GPU groups.

Every submitit file (sbatch script, pickled job, logs ``<id>_<task>_log.{out,err}``) goes to
``<run>/jobs/``, beside the results, so the whole run is one directory on the shared file system.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import submitit

from bench.cluster.options import LauncherOptions

JOBS_FOLDER = "jobs"
SIGNAL_DELAY_S = 120  # USR2 this long before the time limit: enough to leave a collective and exit


def jobs_folder(out: Path) -> Path:
    return out / JOBS_FOLDER


def slurm_parameters(options: LauncherOptions, job_name: str, cpus_per_task: int) -> dict[str, Any]:
    """``SlurmExecutor.update_parameters`` keywords of one model's job.

    One task per GPU (``ntasks_per_node = gpus_per_node``), so submitit's ``TorchDistributedEnvironment``
    gives each task its rank; ``--requeue`` lets Slurm itself requeue a preempted job as well. Keys given
    with ``--slurm-args`` replace these (they are applied last, as sbatch parameters).
    """
    params: dict[str, Any] = {
        "job_name": job_name, "nodes": options.nodes, "ntasks_per_node": options.tasks_per_node,
        "cpus_per_task": options.cpus_per_task or cpus_per_task, "time": options.time_minutes,
        "signal_delay_s": SIGNAL_DELAY_S,
    }
    if options.gpus_per_node:
        params["gpus_per_node"] = options.gpus_per_node
    if options.partition:
        params["partition"] = options.partition
    extra: dict[str, Any] = {"requeue": True}
    if options.mem is not None:
        extra["mem"] = options.mem
    extra.update(options.slurm_args)
    params["additional_parameters"] = extra
    return params


def slurm_executor(out: Path, options: LauncherOptions) -> submitit.SlurmExecutor:
    """Needs ``srun`` and ``sbatch`` on PATH (a Slurm login node)."""
    return submitit.SlurmExecutor(folder=jobs_folder(out), max_num_timeout=options.max_requeues)


def local_executor(out: Path, options: LauncherOptions) -> submitit.LocalExecutor:
    return submitit.LocalExecutor(folder=jobs_folder(out), max_num_timeout=options.max_requeues)


def local_parameters(options: LauncherOptions, gpus: tuple[int, ...]) -> dict[str, Any]:
    """One task per GPU of ``gpus`` (``CUDA_VISIBLE_DEVICES`` of the job), one task on CPU."""
    return {"timeout_min": options.time_minutes, "tasks_per_node": options.tasks_per_node,
            "gpus_per_node": len(gpus), "visible_gpus": gpus, "signal_delay_s": SIGNAL_DELAY_S}


def gpu_groups(available: int, per_job: int) -> list[tuple[int, ...]]:
    """Disjoint GPU index groups of ``per_job`` GPUs on this machine (a single empty group on CPU)."""
    if per_job == 0:
        return [()]
    return [tuple(range(i, i + per_job)) for i in range(0, available - per_job + 1, per_job)]
