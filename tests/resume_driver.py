"""``bench.run`` in a child process that kills itself with SIGKILL at a chosen point, for the resume tests.

The kill point is deterministic: just before a given training step runs, or just before a given checkpoint
is written (the log row of that iteration is then on disk, its checkpoint not). Children fork from a
multiprocessing fork server that imported the suite once, so each costs seconds, not a fresh interpreter's
import of torch and ultralytics. A child that finishes writes how many steps each stage trained.
"""

from __future__ import annotations

import json
import multiprocessing
import os
import signal
import sys
from collections import Counter
from pathlib import Path
from typing import Literal

import torch

import bench.run
import tests.fake_slimming  # registers tiny_fake and tiny_pruned
from bench.training import checkpoint
from bench.training.loop import Trainer

KillPoint = tuple[Literal["step", "checkpoint"], str, int]  # (where, stage, iteration)
_CONTEXT = multiprocessing.get_context("forkserver")
_CONTEXT.set_forkserver_preload([__name__])


def _die(kill: KillPoint | None, where: str, stage: str, iteration: int) -> None:
    if kill == (where, stage, iteration):
        os.kill(os.getpid(), signal.SIGKILL)


def _child(argv: list[str], kill: KillPoint | None, steps_file: str, log_file: str,
           fake_pruning: bool) -> None:
    with open(log_file, "ab") as log:  # tqdm and the summary go here, not into pytest's capture
        os.dup2(log.fileno(), 1)
        os.dup2(log.fileno(), 2)
    torch.set_num_threads(1)
    if fake_pruning:
        tests.fake_slimming.install(tests.fake_slimming.FakeSlimming())
    steps: Counter[str] = Counter()
    step, save = Trainer._step, checkpoint.save_atomic

    def counted_step(self, loss_module, images, targets, stage, iteration, accumulate):
        _die(kill, "step", stage.name, iteration)
        steps[stage.name] += 1
        return step(self, loss_module, images, targets, stage, iteration, accumulate)

    def killing_save(state, path):
        _die(kill, "checkpoint", state["stage"], int(state["iteration"]))
        save(state, path)

    Trainer._step = counted_step  # type: ignore[method-assign]
    checkpoint.save_atomic = killing_save
    code = bench.run.main(argv)
    Path(steps_file).write_text(json.dumps(steps))
    sys.exit(code)


def run(argv: list[str], workdir: Path, kill: KillPoint | None = None, fake_pruning: bool = False,
        timeout: float = 600) -> tuple[int | None, dict[str, int]]:
    """Run ``python -m bench.run ARGV`` as a child; its exit code (``-SIGKILL`` when killed) and, if it
    finished, the steps each stage trained."""
    workdir.mkdir(parents=True, exist_ok=True)
    steps_file = workdir / "steps.json"
    steps_file.unlink(missing_ok=True)
    child = _CONTEXT.Process(target=_child, args=(argv, kill, str(steps_file), str(workdir / "log.txt"),
                                                  fake_pruning))
    child.start()
    child.join(timeout)
    if child.is_alive():
        child.kill()
        child.join()
    steps = json.loads(steps_file.read_text()) if steps_file.exists() else {}
    return child.exitcode, steps
