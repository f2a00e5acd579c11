"""The launcher's command-line options and their validation, kept apart from submitit so parsing is cheap.

``add_launcher_arguments(parser)`` adds them to ``python -m bench.run``; ``LauncherOptions.from_args`` turns
the parsed namespace into a validated value (bad values raise ``BenchInputError``: one line, exit 2).
"""

from __future__ import annotations

import argparse
import re
import shlex
from dataclasses import dataclass, field
from typing import Any, Literal

from bench.errors import BenchInputError

LauncherName = Literal["slurm", "local"]
LAUNCHERS: tuple[LauncherName, ...] = ("slurm", "local")
DEFAULT_TIME = "24:00:00"  # per attempt; a timed-out job is requeued and resumes from its checkpoint
_MEM = re.compile(r"^\d+(\.\d+)?[KMGT]?B?$", re.IGNORECASE)


def add_launcher_arguments(parser: argparse.ArgumentParser) -> None:
    """The ``--launcher`` family and ``--collect``; ``None`` defaults mean "not given"."""
    group = parser.add_argument_group("cluster launcher (one submitit job per model)")
    group.add_argument("--launcher", choices=LAUNCHERS,
                       help="submit one job per model through submitit instead of training in this process")
    group.add_argument("--collect", metavar="DIR",
                       help="show the per-model state of a launched run; build its report once all finished")
    group.add_argument("--wait", action="store_true",
                       help="keep the launching process until every job has finished, then collect")
    group.add_argument("--gpus-per-job", type=int, metavar="N",
                       help="GPUs of one job in total, one DDP rank each; N >= 1 implies --device cuda "
                            "(default: 1 for slurm; local: 1 with --device cuda, else 0 = one CPU process)")
    group.add_argument("--nodes", type=int, default=1, help="nodes per job; --gpus-per-job is split evenly")
    group.add_argument("--partition", help="Slurm partition")
    group.add_argument("--time", help=f"wall-clock limit per attempt: MIN, HH:MM:SS or D-HH:MM:SS "
                                      f"(default {DEFAULT_TIME}); on timeout the job is requeued")
    group.add_argument("--mem", help="memory per node in Slurm syntax, e.g. 64G (0: the whole node)")
    group.add_argument("--slurm-args", action="append", default=[], metavar="'KEY=VALUE ...'",
                       help="extra sbatch parameters, e.g. 'account=vision qos=high exclusive' (repeatable)")
    group.add_argument("--cpus-per-task", type=int, metavar="N",
                       help="CPUs per rank (default: the recipe's data-loader workers + 2)")
    group.add_argument("--max-requeues", type=int, default=3,
                       help="how often a job may time out and be requeued (preemptions do not count)")
    group.add_argument("--max-parallel", type=int, metavar="N",
                       help="local: jobs running at once (default: GPUs // --gpus-per-job, or 1 on CPU, "
                            "so a time-capped suite is not skewed by jobs competing for the same cores)")


def parse_time_minutes(text: str) -> int:
    """Slurm's time formats (MIN, MIN:SEC, HH:MM:SS, D-HH, D-HH:MM, D-HH:MM:SS) as whole minutes, >= 1."""
    days, _, rest = text.strip().rpartition("-")
    parts = rest.split(":")
    if not all(p.isdigit() for p in parts) or len(parts) > 3 or (days and not days.isdigit()):
        raise BenchInputError("--time", f"{text!r} is not a Slurm time (MIN, HH:MM:SS or D-HH:MM:SS)")
    values = [int(p) for p in parts]
    if days:  # D-HH, D-HH:MM, D-HH:MM:SS
        hours, minutes, seconds = (*values, 0, 0)[:3]
        total = int(days) * 1440 + hours * 60 + minutes + seconds / 60
    elif len(values) == 3:
        total = values[0] * 60 + values[1] + values[2] / 60
    elif len(values) == 2:  # MIN:SEC
        total = values[0] + values[1] / 60
    else:
        total = values[0]
    if total < 1:
        raise BenchInputError("--time", f"{text!r} is shorter than one minute")
    return max(1, round(total))


def parse_slurm_args(values: list[str]) -> dict[str, Any]:
    """``'account=x qos=high exclusive --constraint=a100'`` -> ``{"account": "x", ..., "exclusive": True}``.

    Keys use submitit's underscore spelling, so a key given here replaces the launcher's own value for it.
    """
    out: dict[str, Any] = {}
    for value in values:
        for token in shlex.split(value):
            key, sep, val = token.lstrip("-").partition("=")
            key = key.replace("-", "_")
            if not re.fullmatch(r"[a-z][a-z0-9_]*", key):
                raise BenchInputError("--slurm-args", f"{token!r} is not KEY=VALUE or a bare flag")
            out[key] = val if sep else True
    return out


@dataclass(frozen=True)
class LauncherOptions:
    launcher: LauncherName
    gpus_per_job: int
    nodes: int = 1
    partition: str | None = None
    time_minutes: int = 1440
    mem: str | None = None
    slurm_args: dict[str, Any] = field(default_factory=dict)
    cpus_per_task: int | None = None
    max_requeues: int = 3
    max_parallel: int | None = None
    wait: bool = False

    @property
    def gpus_per_node(self) -> int:
        return self.gpus_per_job // self.nodes

    @property
    def tasks_per_node(self) -> int:
        """One DDP rank per GPU; a CPU job is one process."""
        return max(1, self.gpus_per_node)

    @property
    def world_size(self) -> int:
        return self.tasks_per_node * self.nodes

    @classmethod
    def from_args(cls, args: argparse.Namespace) -> LauncherOptions:
        launcher = args.launcher
        if launcher not in LAUNCHERS:
            raise BenchInputError("--launcher", f"unknown {launcher!r}; known: {', '.join(LAUNCHERS)}")
        gpus = args.gpus_per_job
        if gpus is None:  # a cluster is for GPUs; this machine follows --device
            gpus = 1 if launcher == "slurm" or str(getattr(args, "device", "cpu")).startswith("cuda") else 0
        nodes = args.nodes or 1
        if gpus < 0 or nodes < 1:
            raise BenchInputError("--gpus-per-job", "needs --gpus-per-job >= 0 and --nodes >= 1")
        if nodes > 1 and (gpus == 0 or gpus % nodes):
            raise BenchInputError("--nodes", f"--gpus-per-job {gpus} cannot be split evenly over {nodes} "
                                             "nodes")
        if launcher == "local" and nodes > 1:
            raise BenchInputError("--nodes", "the local launcher runs on this machine only (use --nodes 1)")
        if args.mem is not None and not _MEM.match(args.mem):
            raise BenchInputError("--mem", f"{args.mem!r} is not a Slurm memory size such as 64G or 500M")
        if args.max_requeues < 0 or (args.max_parallel is not None and args.max_parallel < 1):
            raise BenchInputError("--max-requeues", "needs --max-requeues >= 0 and --max-parallel >= 1")
        if args.cpus_per_task is not None and args.cpus_per_task < 1:
            raise BenchInputError("--cpus-per-task", "needs at least one CPU")
        return cls(launcher=launcher, gpus_per_job=gpus, nodes=nodes, partition=args.partition,
                   time_minutes=parse_time_minutes(args.time or DEFAULT_TIME), mem=args.mem,
                   slurm_args=parse_slurm_args(args.slurm_args or []), cpus_per_task=args.cpus_per_task,
                   max_requeues=args.max_requeues, max_parallel=args.max_parallel, wait=bool(args.wait))
