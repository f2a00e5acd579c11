"""Timers of the speed harness: one call of a step, device work included, and the stopping rule.

On CUDA each iteration is bracketed by CUDA events after a ``synchronize`` and waits for its end event, so a
figure is the latency of one complete iteration, never overlapped with the next; on CPU it is
``time.perf_counter``. Warm-up iterations are capped by the same time budget as the timed ones, so a slow
model cannot keep the other ranks of a DDP job waiting for minutes of untimed work.
"""

from __future__ import annotations

import time
from collections.abc import Callable
from typing import TYPE_CHECKING, Protocol

import numpy as np
import torch
from tqdm import tqdm

if TYPE_CHECKING:
    from bench.speed.config import SpeedConfig


class Timer(Protocol):
    """Times one call of ``step``, including the device work it queued."""

    name: str

    def __call__(self, step: Callable[[], object]) -> float:
        """Seconds from just before ``step`` starts to when all its work has finished."""
        ...


class PerfCounterTimer:
    name = "perf_counter"

    def __call__(self, step: Callable[[], object]) -> float:
        start = time.perf_counter()
        step()
        return time.perf_counter() - start


class CudaEventTimer:
    """CUDA events on the device's current stream; the GPU is idle when the start event is recorded."""

    name = "cuda_events"

    def __init__(self, device: torch.device | str) -> None:
        self.device = torch.device(device)
        self._start = torch.cuda.Event(enable_timing=True)
        self._end = torch.cuda.Event(enable_timing=True)

    def __call__(self, step: Callable[[], object]) -> float:
        torch.cuda.synchronize(self.device)  # no earlier work may run inside the timed window
        stream = torch.cuda.current_stream(self.device)
        self._start.record(stream)
        step()
        self._end.record(stream)
        self._end.synchronize()
        return self._start.elapsed_time(self._end) / 1000.0


def timer_for(device: torch.device) -> Timer:
    """CUDA events on a GPU, ``time.perf_counter`` elsewhere."""
    return CudaEventTimer(device) if device.type == "cuda" else PerfCounterTimer()


def time_iterations(step: Callable[[], object], timer: Timer, config: SpeedConfig, label: str) -> np.ndarray:
    """Per-iteration seconds of the timed iterations, after up to ``config.warmup`` untimed ones.

    Both loops stop at ``config.max_seconds`` of their own work (at least one timed iteration).
    """
    samples: list[float] = []
    elapsed = warm = 0.0
    total = config.warmup + config.iterations
    with tqdm(total=total, desc=label, leave=False, disable=not config.progress) as bar:
        for _ in range(config.warmup):
            warm += timer(step)
            bar.update()
            if warm >= config.max_seconds:
                break
        while len(samples) < config.iterations and elapsed < config.max_seconds:
            samples.append(timer(step))
            elapsed += samples[-1]
            bar.update()
    return np.asarray(samples)
