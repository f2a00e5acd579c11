"""``nox -s gpu`` / ``python -m bench.gpu_check``: run on a GPU the paths the CPU tests cannot reach.

Every check is a function of a ``CheckContext`` returning its measured figures; it raises ``CheckFailed``
(a broken expectation, with details), ``CheckSkipped`` (e.g. NCCL DDP with one GPU) or anything else (an
error). Each outcome is recorded per check, and the JSON (GPU name, driver, CUDA, cuDNN, NCCL and torch
versions, then one entry per check) is rewritten after every check, so a crash or a timeout still leaves
everything measured so far. The whole run is bounded by ``--budget`` seconds (default 540, inside the
10 minutes one modern GPU is given); a check that would start after it is recorded as skipped.

Without CUDA it prints why it skipped and exits 0. ``--device cpu`` is a developer's dry run instead: every
check runs its code path on the CPU at toy sizes, with the CUDA-only expectations left out, to check the
checker itself. Exit status: 0 nothing failed, 1 some check failed, 2 bad arguments.
"""

from __future__ import annotations

import argparse
import gc
import sys
import tempfile
import time
import traceback
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from datetime import datetime, timezone
from pathlib import Path
from typing import Any

import torch

from bench.io import read_json, write_json

DEFAULT_BUDGET_S = 540.0


class CheckFailed(AssertionError):
    def __init__(self, message: str, details: dict[str, Any] | None = None) -> None:
        super().__init__(message)
        self.details = details or {}


class CheckSkipped(Exception):
    """The check cannot run here (reason in the message); not a failure."""


def expect(condition: bool, message: str, **details: Any) -> None:
    if not condition:
        raise CheckFailed(message, details)


@dataclass
class CheckContext:
    device: torch.device
    workdir: Path  # scratch space: run directories, suites, the synthetic data cache
    deadline: float  # time.monotonic() after which no further check starts
    quick: bool = False  # dry-run sizes (the CPU self-test)

    @property
    def cuda(self) -> bool:
        return self.device.type == "cuda"

    def remaining(self) -> float:
        return self.deadline - time.monotonic()

    def size(self, real: int, toy: int) -> int:
        """``real`` on a GPU run, ``toy`` in the CPU dry run."""
        return toy if self.quick else real


@dataclass(frozen=True)
class Check:
    name: str
    run: Callable[[CheckContext], dict[str, Any]]
    what: str


def all_checks() -> list[Check]:
    """In order of importance: a run cut short by the budget still has the issue-13 checks."""
    from bench.gpu_check import memory, runs, slimming, steps

    return [*steps.CHECKS, *runs.CHECKS, slimming.CHECK, *memory.CHECKS]


def now() -> str:
    return datetime.now(timezone.utc).isoformat(timespec="seconds")


def run_checks(checks: Sequence[Check], ctx: CheckContext, document: dict[str, Any], out: Path) -> int:
    """Run ``checks`` in order, recording each in ``document["checks"]``; returns the exit status."""
    entries = document.setdefault("checks", [])
    for check in checks:
        entry: dict[str, Any] = {"name": check.name, "what": check.what, "status": "running",
                                 "started": now()}
        entries.append(entry)
        write_json(document, out)
        if ctx.remaining() <= 0:
            entry.update(status="skipped", reason="time budget spent before this check started", seconds=0.0)
            continue
        print(f"[gpu check] {check.name}: {check.what}", file=sys.stderr, flush=True)
        start = time.monotonic()
        try:
            entry.update(status="passed", result=check.run(ctx))
        except CheckSkipped as skip:
            entry.update(status="skipped", reason=str(skip))
        except CheckFailed as fail:
            entry.update(status="failed", error=str(fail), result=fail.details)
        except Exception as err:  # one broken check must not hide the others
            entry.update(status="failed", error=f"{type(err).__name__}: {err}",
                         traceback=traceback.format_exc()[-6000:])
        finally:
            entry["seconds"] = round(time.monotonic() - start, 2)
            _release(ctx)
            write_json(document, out)
        print(f"[gpu check] {check.name}: {entry['status']} in {entry['seconds']} s"
              + (f" ({entry.get('error') or entry.get('reason')})" if entry["status"] != "passed" else ""),
              file=sys.stderr, flush=True)
    counts = {s: sum(e["status"] == s for e in entries) for s in ("passed", "failed", "skipped")}
    document.update(summary=counts, finished=now())
    write_json(document, out)
    return 1 if counts["failed"] else 0


def _release(ctx: CheckContext) -> None:
    gc.collect()
    if ctx.cuda:
        torch.cuda.synchronize()
        torch.cuda.empty_cache()
        torch.cuda.reset_peak_memory_stats()


def parse_args(argv: list[str]) -> argparse.Namespace:
    parser = argparse.ArgumentParser(prog="python -m bench.gpu_check", description=__doc__.split("\n")[0])
    parser.add_argument("--out", type=Path, help="the JSON (default results/gpu_check/<gpu>-<when>.json)")
    parser.add_argument("--device", default="cuda", help="cuda (the check) or cpu (a dry run of the checker)")
    parser.add_argument("--only", help="comma-separated check names (default: all)")
    parser.add_argument("--budget", type=float, default=DEFAULT_BUDGET_S, help="seconds for all checks")
    parser.add_argument("--workdir", type=Path, help="scratch folder (default: a temporary one)")
    parser.add_argument("--table", type=Path, metavar="JSON",
                        help="print the README rows of an earlier result instead of running")
    return parser.parse_args(argv)


def main(argv: list[str] | None = None) -> int:
    from bench.gpu_check.environment import environment, slug

    args = parse_args(sys.argv[1:] if argv is None else argv)
    if args.table is not None:
        from bench.gpu_check.table import markdown_rows

        print(markdown_rows(read_json(args.table)))
        return 0
    device = torch.device(args.device)
    env = environment(device)
    out = args.out or Path("results") / "gpu_check" / f"{slug(env)}-{datetime.now():%Y%m%d-%H%M%S}.json"
    document: dict[str, Any] = {"environment": env, "started": now(), "budget_s": args.budget}
    if device.type == "cuda" and not torch.cuda.is_available():
        reason = "torch sees no CUDA GPU here, so there is nothing this check can measure"
        document["skipped"] = reason
        write_json(document, out)
        print(f"gpu check skipped: {reason} (torch {torch.__version__}, CUDA build "
              f"{torch.version.cuda or 'none'}); wrote {out}", file=sys.stderr)
        return 0
    checks = all_checks()
    if args.only:
        wanted = [n.strip() for n in args.only.split(",") if n.strip()]
        unknown = sorted(set(wanted) - {c.name for c in checks})
        if unknown:
            print(f"error: --only: unknown check(s) {', '.join(unknown)}; known: "
                  f"{', '.join(c.name for c in checks)}", file=sys.stderr)
            return 2
        checks = [c for c in checks if c.name in wanted]
    document["dry_run"] = device.type != "cuda"
    with tempfile.TemporaryDirectory(prefix="gpu_check_") as scratch:
        workdir = args.workdir or Path(scratch)
        workdir.mkdir(parents=True, exist_ok=True)
        deadline = time.monotonic() + args.budget
        ctx = CheckContext(device, workdir.resolve(), deadline, quick=device.type != "cuda")
        code = run_checks(checks, ctx, document, out)
    s = document["summary"]
    print(f"gpu check: {s['passed']} passed, {s['failed']} failed, {s['skipped']} skipped; wrote {out}",
          file=sys.stderr)
    return code
