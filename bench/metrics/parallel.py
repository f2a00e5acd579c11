"""Run one independent part of an evaluation in a forked child while the caller computes the rest.

The evaluator's parts (the IoU and NWD matchings with the COCO arrays and the bootstrap; TIDE, VOC and the
confusion matrix) share inputs but no intermediate results, and most of their time is NumPy work on
medium-sized arrays that threads would serialise on the GIL. A forked child inherits the inputs without
copying or pickling them and sends back only its (small) result, so on two cores the two halves overlap.
Without an idle core, without ``fork`` (Windows), in a process that has imported torch, or with
``BENCH_EVAL_PROCESSES=1`` the part runs in the calling process when its result is asked for
(``BENCH_EVAL_PROCESSES=2`` forks whatever the load); the results are the same either way (tested).
"""

from __future__ import annotations

import contextlib
import os
import pickle
import sys
import traceback
import warnings
from collections.abc import Callable, Iterator
from typing import Any, TypeVar

T = TypeVar("T")
ENV = "BENCH_EVAL_PROCESSES"


def _idle_cores() -> float:
    """Usable cores minus the 1-minute load average (which counts this process): about how many cores
    nothing else is using."""
    try:
        usable = len(os.sched_getaffinity(0))
    except AttributeError:  # not Linux
        usable = os.cpu_count() or 1
    try:
        load = os.getloadavg()[0]
    except (AttributeError, OSError):
        load = 1.0
    return usable - max(load, 1.0)


def parallel_enabled() -> bool:
    """Fork only where it can pay: ``fork`` exists, the user allows it, and about half a core or more is idle
    besides this process's (the 1-minute load also counts this process's own earlier runs). On a machine
    whose cores are all busy, the two halves would only take turns on the same
    cores and the fork's copy-on-write page faults would add time (measured: +15% wall on 2 loaded cores)."""
    wanted = os.environ.get(ENV, "").strip()
    if wanted.isdigit():
        return int(wanted) > 1 and hasattr(os, "fork")
    # Not beside torch (a run scoring its models): a fork after torch's OpenMP pool has run is not safe
    # (libgomp is not fork-aware), and a run's test split is small enough that the overlap gains nothing.
    return hasattr(os, "fork") and "torch" not in sys.modules and _idle_cores() >= 0.5


def _read_all(fd: int) -> bytes:
    chunks = []
    while chunk := os.read(fd, 1 << 20):
        chunks.append(chunk)
    return b"".join(chunks)


def run_beside(fn: Callable[..., T], *args: Any) -> Callable[[], T]:
    """Start ``fn(*args)`` in a forked child; the returned function waits for it and returns its result (or
    re-raises its exception). Without forking, the returned function computes ``fn(*args)`` itself, once.
    Either way, later calls return the same result."""
    done: list[T] = []
    if not parallel_enabled():
        def inline() -> T:
            if not done:
                done.append(fn(*args))
            return done[0]

        return inline
    read_fd, write_fd = os.pipe()
    with warnings.catch_warnings():  # Python 3.12+ warns about fork in a threaded process: the child runs
        warnings.simplefilter("ignore", DeprecationWarning)  # NumPy code only and exits without cleanup
        pid = os.fork()
    if pid == 0:  # the child: compute, send, leave without running the parent's exit handlers
        os.close(read_fd)
        try:
            payload = pickle.dumps(("ok", fn(*args)), protocol=pickle.HIGHEST_PROTOCOL)
        except BaseException as err:  # everything goes back to the parent
            try:
                payload = pickle.dumps(("error", err, traceback.format_exc()))
            except Exception:  # an exception that cannot be pickled: its text
                payload = pickle.dumps(("error", None, traceback.format_exc()))
        with os.fdopen(write_fd, "wb") as pipe:
            pipe.write(payload)
        os._exit(0)
    os.close(write_fd)

    def result() -> T:
        if done:
            return done[0]
        try:
            data = _read_all(read_fd)
        finally:
            os.close(read_fd)
            os.waitpid(pid, 0)
        if not data:
            raise RuntimeError(f"{fn.__name__}: the evaluation's worker process died without a result")
        status, *rest = pickle.loads(data)
        if status == "error":
            err, text = rest
            if err is not None:
                raise err
            raise RuntimeError(f"{fn.__name__} failed in the evaluation's worker process:\n{text}")
        done.append(rest[0])
        return rest[0]

    return result


@contextlib.contextmanager
def reaped(*parts: Callable[[], Any]) -> Iterator[None]:
    """On an error in the block, wait for the forked ``parts`` (their results dropped) before it propagates,
    so no child is left blocked on its pipe."""
    try:
        yield
    except BaseException:
        for part in parts:
            with contextlib.suppress(BaseException):
                part()
        raise
