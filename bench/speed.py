"""Speed of a detector under named protocols, each figure recorded with everything that defines it.

Protocols (``PROTOCOL_DEFINITIONS`` is written into every ``speed.json``):

- ``model``: the forward pass alone (raw network outputs) on one preprocessed image, batch 1;
- ``e2e``: one image file per iteration through the whole inference path: decode, the model's input geometry
  (stretch or letterbox), forward, NMS with the recorded settings, boxes rescaled to original pixels;
- ``throughput``: the forward pass on a batch of preprocessed images, reported as images per second.

Every measurement runs ``warmup`` untimed iterations, then timed ones until ``iterations`` are done or
``max_seconds`` of timed work have accumulated, whichever comes first (at least one). On CUDA each iteration
is bracketed by CUDA events after a ``synchronize`` and waits for its end event, so a figure is the latency of
one complete iteration, never overlapped with the next; on CPU it is ``time.perf_counter``. Models are timed
on a deep copy in eval mode, conv+BN folded (``detectors.complexity.fuse_conv_bn``) unless disabled, in fp32
and, on CUDA, in fp16 (``model.half()``: weights and inputs in half precision).
"""

from __future__ import annotations

import copy
import itertools
import json
import platform
import re
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Literal, Protocol

import numpy as np
import torch
from torch import Tensor, nn
from tqdm import tqdm

from bench.data.loader import load_image
from bench.data.transforms import letterbox, resize_stretch
from detectors.base import Detector, ImageMeta, InputProtocol
from detectors.complexity import fuse_conv_bn

ProtocolName = Literal["model", "e2e", "throughput"]
PROTOCOLS: tuple[ProtocolName, ...] = ("model", "e2e", "throughput")

PROTOCOL_DEFINITIONS = {
    "model": "forward pass only (raw network outputs, no post-processing) on one preprocessed image, batch 1",
    "e2e": "per image file, batch 1: decode (torchvision.io), resize or letterbox per the model's input "
           "protocol, forward, NMS (settings in `nms`), boxes rescaled to original-image pixels",
    "throughput": "forward pass only on a batch of `batch` preprocessed images",
    "iterations": "`warmup` untimed iterations, then timed ones until `iterations` are done or `max_seconds` "
                  "of timed work have accumulated, whichever comes first (at least one)",
    "latency": "mean, median (p50) and 90th percentile of the per-iteration time, device work included: CUDA "
               "events after a synchronize, waiting for the end event (`cuda_events`), or time.perf_counter "
               "on CPU (`perf_counter`)",
    "fps": "images per second: batch x 1000 / mean_ms",
    "fused": "true when conv+BN folding was requested and no BatchNorm layer is left in the timed model "
             "(also true for models without BatchNorm)",
    "precision": "fp32, or fp16 on CUDA only (model.half(): weights and inputs in half precision)",
}

_BATCH_NORMS = (nn.BatchNorm1d, nn.BatchNorm2d, nn.BatchNorm3d, nn.SyncBatchNorm)


@dataclass(frozen=True)
class SpeedConfig:
    """Iteration counts of every measurement; the defaults are the full protocol (meant for CUDA)."""

    warmup: int = 50
    iterations: int = 500
    max_seconds: float = 30.0  # timed seconds after which a measurement stops early
    throughput_batch: int = 32
    fp16: bool = True  # also time in fp16 (CUDA only; ignored on CPU)
    fuse: bool = True  # fold conv+BN before timing
    progress: bool = True  # tqdm bar per measurement

    def __post_init__(self) -> None:
        if self.warmup < 0 or self.iterations < 1 or self.throughput_batch < 1 or not self.max_seconds > 0:
            raise ValueError(f"invalid speed counts: {self}")

    @classmethod
    def for_device(cls, device: torch.device | str) -> SpeedConfig:
        """The full protocol on CUDA; on CPU the same code with counts a 2-core machine can afford."""
        if torch.device(device).type == "cuda":
            return cls()
        return cls(warmup=2, iterations=10, max_seconds=5.0, throughput_batch=4)


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


def device_name(device: torch.device | str) -> str:
    """GPU name, or the CPU model from /proc/cpuinfo (``platform`` where that file does not exist)."""
    device = torch.device(device)
    if device.type == "cuda":
        return torch.cuda.get_device_name(device)
    cpuinfo = Path("/proc/cpuinfo")
    found = re.search(r"^model name\s*:\s*(.+)$", cpuinfo.read_text(), re.M) if cpuinfo.exists() else None
    return found.group(1).strip() if found else (platform.processor() or platform.machine())


def time_iterations(step: Callable[[], object], timer: Timer, config: SpeedConfig, label: str) -> np.ndarray:
    """Per-iteration seconds of the timed iterations, after ``config.warmup`` untimed ones (module doc)."""
    samples: list[float] = []
    elapsed = 0.0
    total = config.warmup + config.iterations
    with tqdm(total=total, desc=label, leave=False, disable=not config.progress) as bar:
        for _ in range(config.warmup):
            timer(step)
            bar.update()
        while len(samples) < config.iterations and elapsed < config.max_seconds:
            samples.append(timer(step))
            elapsed += samples[-1]
            bar.update()
    return np.asarray(samples)


def summarise(samples: np.ndarray, batch: int) -> dict[str, float | int]:
    """The recorded statistics of per-iteration ``samples`` (seconds) at ``batch`` images per iteration."""
    mean_ms = float(samples.mean() * 1000)
    p50_ms, p90_ms = (float(v) * 1000 for v in np.percentile(samples, [50, 90]))
    return {"iterations": len(samples), "timed_seconds": float(samples.sum()), "mean_ms": mean_ms,
            "p50_ms": p50_ms, "p90_ms": p90_ms, "fps": batch * 1000.0 / mean_ms}


def prepare_image(path: Path, protocol: InputProtocol, image_id: int = 0) -> tuple[Tensor, ImageMeta]:
    """Decode a file and apply the model's evaluation geometry: float RGB ``(3, S, S)`` in [0, 1] + meta."""
    image = load_image(str(path))
    no_boxes = torch.zeros(0, 4)
    if protocol.resize == "letterbox":
        out, _, meta = letterbox(image, no_boxes, protocol.size, protocol.pad_value, image_id)
    else:
        out, _, meta = resize_stretch(image, no_boxes, protocol.size, image_id)
    return out, meta


def _timed_copy(model: Detector, device: torch.device, half: bool, fuse: bool) -> tuple[Detector, bool]:
    """An eval-mode copy on ``device``, optionally conv+BN folded and in half precision; and whether fused."""
    timed = copy.deepcopy(model).eval()
    if fuse:
        timed = fuse_conv_bn(timed)
    fused = fuse and not any(isinstance(m, _BATCH_NORMS) for m in timed.modules())
    timed = timed.to(device)
    return (timed.half() if half else timed), fused


def _iteration(model: Detector, protocol: ProtocolName, images: list[Tensor], paths: Sequence[Path],
           device: torch.device, dtype: torch.dtype, batch: int) -> Callable[[], object]:
    """The work of one iteration of ``protocol``; inputs that are not part of it are prepared here, once."""
    if protocol == "e2e":
        files = itertools.cycle(paths)

        def end_to_end() -> object:
            image, meta = prepare_image(next(files), model.protocol)
            return model.predict(image[None].to(device, dtype), [meta])

        return end_to_end
    inputs = torch.stack([images[i % len(images)] for i in range(batch)]).to(device, dtype)
    return lambda: model(inputs)


def measure_speed(model: Detector, protocols: Sequence[ProtocolName], config: SpeedConfig,
                  device: torch.device | str, sample_images: Sequence[Path], *,
                  timer: Timer | None = None) -> dict[str, Any]:
    """Time ``model`` under each protocol (module doc) and return the ``speed.json`` document.

    ``sample_images`` are image files (the test split's first few): ``e2e`` cycles through them, ``model`` and
    ``throughput`` use them preprocessed. ``timer`` replaces the device's own (tests inject one).
    """
    unknown = set(protocols) - set(PROTOCOLS)
    if unknown:
        raise ValueError(f"unknown speed protocols {sorted(unknown)}; known: {', '.join(PROTOCOLS)}")
    if not sample_images:
        raise ValueError("measure_speed needs at least one sample image")
    device = torch.device(device)
    timer = timer or timer_for(device)
    images = [prepare_image(path, model.protocol)[0] for path in sample_images]
    post = model.postprocess_config
    nms = {"score_thresh": post.score_thresh, "iou": post.nms_iou, "max_detections": post.max_detections}
    common = {"device": str(device), "device_name": device_name(device), "timer": timer.name,
              "warmup": config.warmup, "threads": torch.get_num_threads()}
    precisions = [("fp32", torch.float32)]
    if config.fp16 and device.type == "cuda":
        precisions.append(("fp16", torch.float16))
    results = []
    for precision, dtype in precisions:
        timed, fused = _timed_copy(model, device, dtype == torch.float16, config.fuse)
        for protocol in protocols:
            batch = config.throughput_batch if protocol == "throughput" else 1
            step = _iteration(timed, protocol, images, sample_images, device, dtype, batch)
            with torch.inference_mode():
                samples = time_iterations(step, timer, config, f"speed {protocol} {precision}")
            results.append({"protocol": protocol, **common, "precision": precision, "batch": batch,
                            "fused": fused, **summarise(samples, batch),
                            "nms": nms if protocol == "e2e" else None})
    return {"protocol_definitions": PROTOCOL_DEFINITIONS, "results": results}


def save(speed: dict[str, Any], model_dir: Path) -> Path:
    """Write ``model_dir/speed.json`` (the run-directory contract) and return its path."""
    path = Path(model_dir) / "speed.json"
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(json.dumps(speed, indent=2, allow_nan=False))
    return path

