"""``python -m bench.run --suite S --launcher slurm|local``: a submitit job per model, one run directory.

Each job runs ``python -m bench.run --suite S --models NAME --out RUN --resume`` (``bench.cluster.job``) with
DDP over its GPUs. Before anything is submitted the suite, the models, the data and the job geometry are
checked here, so a typo costs one line on stderr instead of a queue of failing jobs; the synthetic data set
is generated once here too, not by every job. ``launch.json`` in the run directory records the jobs, so
``--collect`` can tell a running job from one that died, and a second ``--launcher ... --resume`` submits only
the models that are neither done nor still running.
"""

from __future__ import annotations

import argparse
import dataclasses
import socket
import sys
import time
from collections.abc import Sequence
from pathlib import Path
from typing import TYPE_CHECKING, Any

from bench.cluster.collect import LAUNCH_RECORD, collect, job_activity, model_status
from bench.cluster.options import LauncherOptions
from bench.errors import BenchInputError
from bench.io import read_json, write_json
from bench.suite.spec import Suite, load_suite, suite_path

# bench.run options a job inherits from the launching command: (namespace attribute, flag, kind), kind
# "path" (made absolute), "value" or "switch" (a store_true flag, passed when set). --suite, --models, --out,
# --resume and --device are set per job, and every job gets --no-report (the collect step builds the report
# once every model has finished); a new run-level flag jobs need goes here.
PASS_THROUGH = (("data", "--data", "path"), ("cache_dir", "--cache-dir", "path"),
                ("wandb_project", "--wandb-project", "value"), ("mlflow_uri", "--mlflow-uri", "value"),
                ("strict", "--strict", "switch"), ("keep_weights", "--keep-weights", "switch"),
                ("weights", "--weights", "value"))
POLL_SECONDS = {"local": 1.0, "slurm": 60.0}

if TYPE_CHECKING:
    from bench.cluster.job import JobSpec
    from bench.data.resolve import ResolvedData


def launch(args: argparse.Namespace, models: Sequence[str], out: Path, *,
           imports: Sequence[str] = ()) -> int:
    """Submit one job per unfinished model of ``models`` into run directory ``out``; returns an exit status.

    ``args`` is ``bench.run``'s namespace (with ``add_launcher_arguments``' options). Without ``--wait`` it
    returns 0 once every job is submitted (the local launcher stays until every job has *started*, since it
    hands out GPUs); with ``--wait`` it waits for the jobs and returns ``collect(out)``. ``imports`` are
    modules each job imports first (detectors registered outside this package).
    """
    options = LauncherOptions.from_args(args)
    out = Path(out).resolve()
    suite = load_suite(args.suite)
    check_geometry(suite, models, options)
    device = job_device(args, options)
    data = preflight_data(suite, args)
    record = read_json(out / LAUNCH_RECORD) if (out / LAUNCH_RECORD).is_file() else None
    specs = []
    for name in models:
        why = skip_reason(out, record, name)
        if why:
            print(f"{name}: {why}, not submitted", file=sys.stderr)
            continue
        specs.append(job_spec(args, name, out, device, imports))
    out.mkdir(parents=True, exist_ok=True)
    # The resolved plan of every model, once, before any job starts: each job trains its model's entry.
    from bench.runner.run_dir import resolved_plan

    resolved_plan(out, suite, list(models), data, options.world_size)
    record = new_record(record, options, suite)
    write_json(record, out / LAUNCH_RECORD)
    jobs = submit_slurm(specs, out, options, suite, record) if options.launcher == "slurm" else \
        submit_local(specs, out, options, record)
    print(f"{len(jobs)} {options.launcher} job(s) in {out}; follow with: python -m bench.run --collect {out}",
          file=sys.stderr)
    if not options.wait:
        return 0
    wait_for(jobs, out, POLL_SECONDS[options.launcher])
    return collect(out)


def check_geometry(suite: Suite, models: Sequence[str], options: LauncherOptions) -> None:
    """The global batch is split over the job's ranks: it must divide evenly for every model."""
    for name in models:
        batch = suite.recipe_for(name).batch_size
        if batch % options.world_size:
            raise BenchInputError(suite.path, f"{name}: batch_size {batch} cannot be split over the "
                                              f"{options.world_size} ranks of one job",
                                  field="recipe.batch_size")


def job_device(args: argparse.Namespace, options: LauncherOptions) -> str:
    """``cuda`` when the job has GPUs (each rank then takes ``cuda:LOCAL_RANK``), else ``--device``."""
    if options.gpus_per_job:
        return "cuda"
    if str(args.device).startswith("cuda"):
        raise BenchInputError("--device", f"{args.device} needs --gpus-per-job >= 1 with --launcher")
    return str(args.device)


def preflight_data(suite: Suite, args: argparse.Namespace) -> ResolvedData:
    """Resolve the data once here: a bad --data (or, with --strict, a data-quality problem) fails now, and
    the synthetic set is cached for the jobs."""
    from bench.data.resolve import resolve_data

    return resolve_data(suite.data, args.data, Path(args.cache_dir), suite.path or Path(args.suite),
                        strict=bool(getattr(args, "strict", False)))


def job_spec(args: argparse.Namespace, name: str, out: Path, device: str, imports: Sequence[str]) -> JobSpec:
    from bench.cluster.job import JobSpec

    suite_arg = Path(args.suite)
    suite_text = str(suite_path(args.suite).resolve()) if suite_arg.suffix == ".toml" or suite_arg.exists() \
        else args.suite
    argv = ["--suite", suite_text, "--models", name, "--out", str(out), "--resume", "--device", device]
    for attribute, flag, kind in PASS_THROUGH:
        value = getattr(args, attribute, None)
        if kind == "switch":
            argv += [flag] if value else []
        elif value is not None:  # paths made absolute: a job's working directory is not guaranteed
            argv += [flag, str(Path(value).expanduser().resolve()) if kind == "path" else str(value)]
    argv.append("--no-report")
    return JobSpec(model=name, out=out, argv=tuple(argv), imports=tuple(imports))


def skip_reason(out: Path, record: dict[str, Any] | None, name: str) -> str | None:
    """Why ``name`` needs no new job: finished earlier, or its job is still queued or running."""
    if model_status(out / "models" / name).get("state") == "done":
        return "done in an earlier run"
    job = (record or {}).get("jobs", {}).get(name)
    if job is not None and job_activity(out, record, job) == "active":
        return f"job {job['job_id']} still active"
    return None


def new_record(previous: dict[str, Any] | None, options: LauncherOptions, suite: Suite) -> dict[str, Any]:
    record = previous or {"jobs": {}, "history": []}
    record.update(launcher=options.launcher, folder="jobs", host=socket.gethostname(), suite=suite.name,
                  options=dataclasses.asdict(options))
    return record


def _note_job(record: dict[str, Any], out: Path, name: str, job: Any, gpus: Sequence[int] | None) -> None:
    from bench.runner.manifest import now

    old = record["jobs"].get(name)
    if old is not None:
        record["history"].append({"model": name, **old})
    record["jobs"][name] = {"job_id": str(job.job_id), "submitted": now(),
                            "gpus": None if gpus is None else list(gpus)}
    write_json(record, out / LAUNCH_RECORD)


def submit_slurm(specs: list[JobSpec], out: Path, options: LauncherOptions, suite: Suite,
                 record: dict[str, Any]) -> list[Any]:
    from submitit.core.utils import FailedJobError, FailedSubmissionError

    from bench.cluster.executors import slurm_executor, slurm_parameters
    from bench.cluster.job import ClusterJob

    if not specs:
        return []
    try:
        executor = slurm_executor(out, options)
    except RuntimeError as err:  # submitit: no srun on PATH
        raise BenchInputError("--launcher slurm", f"{err} (run it on a Slurm login node)") from None
    jobs = []
    for spec in specs:
        cpus = suite.recipe_for(spec.model).workers + 2
        executor.update_parameters(**slurm_parameters(options, f"{suite.name}:{spec.model}", cpus))
        try:
            job = executor.submit(ClusterJob(spec))
        except (FailedJobError, FailedSubmissionError) as err:  # sbatch said no: its last line says why
            lines = str(err).strip().splitlines() or ["no message"]
            raise BenchInputError("--launcher slurm", f"sbatch refused the job of {spec.model}: {lines[-1]} "
                                  f"({len(jobs)} job(s) submitted before it)") from None
        _note_job(record, out, spec.model, job, None)
        print(f"{spec.model}: submitted as Slurm job {job.job_id}", file=sys.stderr)
        jobs.append(job)
    return jobs


def submit_local(specs: list[JobSpec], out: Path, options: LauncherOptions,
                 record: dict[str, Any]) -> list[Any]:
    """Start jobs on this machine, at most ``max_parallel`` at a time, each on its own GPUs."""
    from bench.cluster.executors import gpu_groups, local_executor, local_parameters
    from bench.cluster.job import ClusterJob

    if not specs:
        return []
    available = 0
    if options.gpus_per_job:
        import torch

        available = torch.cuda.device_count()
    groups = gpu_groups(available, options.gpus_per_job)
    if not groups:
        raise BenchInputError("--gpus-per-job", f"{options.gpus_per_job} GPUs per job, {available} present")
    parallel = options.max_parallel or (len(groups) if options.gpus_per_job else 1)
    if options.gpus_per_job:
        parallel = min(parallel, len(groups))
    else:
        groups = groups * parallel
    executor = local_executor(out, options)
    queue, running, jobs = list(specs), [], []
    while queue:
        for entry in [e for e in running if e[0].done()]:
            running.remove(entry)
            groups.append(entry[1])
        while queue and len(running) < parallel:
            spec, gpus = queue.pop(0), groups.pop(0)
            executor.update_parameters(**local_parameters(options, gpus))
            job = executor.submit(ClusterJob(spec))
            _note_job(record, out, spec.model, job, gpus)
            print(f"{spec.model}: started as local job {job.job_id}" + (f" on GPUs {list(gpus)}" if gpus
                                                                          else ""), file=sys.stderr)
            running.append((job, gpus))
            jobs.append(job)
        if queue:
            time.sleep(POLL_SECONDS["local"])
    return jobs


def wait_for(jobs: list[Any], out: Path, poll: float) -> None:
    """Until every job has ended, printing each model's state when it changes."""
    shown: dict[str, str] = {}
    while True:
        for status_file in sorted((out / "models").glob("*/status.json")):
            status = model_status(status_file.parent)
            state = f"{status.get('state')} ({status.get('stage')})"
            if shown.get(status_file.parent.name) != state:
                shown[status_file.parent.name] = state
                print(f"{status_file.parent.name}: {state}", file=sys.stderr)
        if all(job.done() for job in jobs):
            return
        time.sleep(poll)
