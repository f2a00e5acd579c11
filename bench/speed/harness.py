"""Speed of a detector under named protocols, each figure recorded with everything that defines it.

Protocols (``PROTOCOL_DEFINITIONS`` is written into every ``speed.json``):

- ``model``: the forward pass alone (raw network outputs) on one preprocessed image, batch 1;
- ``e2e``: one image file per iteration through the whole inference path: decode, the model's input geometry
  (stretch or letterbox), forward, NMS with the recorded settings, boxes rescaled to original pixels;
- ``throughput``: the forward pass on a batch of preprocessed images, reported as images per second.

Every measurement runs ``warmup`` untimed iterations, then timed ones until ``iterations`` are done or
``max_seconds`` of timed work have accumulated, whichever comes first (at least one); timers and the stopping
rule are in ``bench.speed.timers``. Models are timed on a deep copy in eval mode, conv+BN folded
(``detectors.complexity.fuse_conv_bn``) unless disabled, in fp32 (TF32 disabled on CUDA, recorded as
``tf32``) and, on CUDA, in fp16 (``half_precision``: weights and inputs in half precision, the buffers
a detector keeps in fp32 excepted). A throughput batch that does not fit the GPU is halved until it does; the
row records the batch timed and the ``requested_batch``.
"""

from __future__ import annotations

import contextlib
import copy
import itertools
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import Any, Literal

import numpy as np
import torch
from torch import Tensor

from bench.data.loader import load_image
from bench.data.transforms import letterbox, resize_stretch
from bench.environment import device_name, tf32_disabled
from bench.io import write_json
from bench.speed.config import SpeedConfig
from bench.speed.half_precision import to_half
from bench.speed.timers import Timer, time_iterations, timer_for
from detectors.base import BATCH_NORMS, Detector, ImageMeta, InputSpec
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
    "precision": "fp32, or fp16 on CUDA only (weights and inputs in half precision; the buffers a detector "
                 "declares in fp32_buffers and modules with an eps below fp16's range stay fp32)",
    "tf32": "CUDA fp32 rows: whether TF32 matmuls/convolutions were allowed (false: true fp32); else null",
    "requested_batch": "the configured batch; `batch` is smaller when it did not fit in GPU memory (halved)",
}


def summarise(samples: np.ndarray, batch: int) -> dict[str, float | int]:
    """The recorded statistics of per-iteration ``samples`` (seconds) at ``batch`` images per iteration."""
    mean_ms = float(samples.mean() * 1000)
    p50_ms, p90_ms = (float(v) * 1000 for v in np.percentile(samples, [50, 90]))
    return {"iterations": len(samples), "timed_seconds": float(samples.sum()), "mean_ms": mean_ms,
            "p50_ms": p50_ms, "p90_ms": p90_ms, "fps": batch * 1000.0 / mean_ms}


def prepare_image(path: Path, geometry: InputSpec, image_id: int = 0) -> tuple[Tensor, ImageMeta]:
    """Decode a file and apply the model's evaluation geometry: float RGB ``(3, S, S)`` in [0, 1] + meta."""
    image = load_image(str(path))
    no_boxes = torch.zeros(0, 4)
    if geometry.resize == "letterbox":
        out, _, meta = letterbox(image, no_boxes, geometry.size, geometry.pad_value, image_id)
    else:
        out, _, meta = resize_stretch(image, no_boxes, geometry.size, image_id)
    return out, meta


def _timed_copy(model: Detector, device: torch.device, half: bool, fuse: bool) -> tuple[Detector, bool]:
    """An eval-mode copy on ``device``, optionally conv+BN folded and in half precision; and whether fused."""
    timed = copy.deepcopy(model).eval()
    if fuse:
        timed = fuse_conv_bn(timed)
    fused = fuse and not any(isinstance(m, BATCH_NORMS) for m in timed.modules())
    timed = timed.to(device)
    return (to_half(timed) if half else timed), fused


def _iteration(model: Detector, protocol: ProtocolName, images: list[Tensor], paths: Sequence[Path],
           device: torch.device, dtype: torch.dtype, batch: int) -> Callable[[], object]:
    """The work of one iteration of ``protocol``; inputs that are not part of it are prepared here, once."""
    if protocol == "e2e":
        files = itertools.cycle(paths)

        def end_to_end() -> object:
            image, meta = prepare_image(next(files), model.input_spec)
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
    images = [prepare_image(path, model.input_spec)[0] for path in sample_images]
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
        true_fp32 = device.type == "cuda" and dtype == torch.float32
        with tf32_disabled() if true_fp32 else contextlib.nullcontext():
            for protocol in protocols:
                requested = config.throughput_batch if protocol == "throughput" else 1
                samples, batch = _timed_samples(timed, protocol, images, sample_images, device, dtype,
                                                requested, timer, config, f"speed {protocol} {precision}")
                results.append({"protocol": protocol, **common, "precision": precision, "batch": batch,
                                "requested_batch": requested, "tf32": False if true_fp32 else None,
                                "fused": fused, **summarise(samples, batch),
                                "nms": nms if protocol == "e2e" else None})
    return {"protocol_definitions": PROTOCOL_DEFINITIONS, "results": results}


def _timed_samples(model: Detector, protocol: ProtocolName, images: list[Tensor], paths: Sequence[Path],
                   device: torch.device, dtype: torch.dtype, batch: int, timer: Timer, config: SpeedConfig,
                   label: str) -> tuple[np.ndarray, int]:
    """Per-iteration seconds and the batch timed: a throughput batch that runs out of memory is halved."""
    while True:
        try:
            step = _iteration(model, protocol, images, paths, device, dtype, batch)
            with torch.inference_mode():
                return time_iterations(step, timer, config, label), batch
        except torch.cuda.OutOfMemoryError:
            if protocol != "throughput" or batch == 1:
                raise
            if device.type == "cuda":
                torch.cuda.empty_cache()
            batch //= 2


def save(speed: dict[str, Any], model_dir: Path) -> Path:
    """Write ``model_dir/speed.json`` (the run-directory contract) and return its path."""
    return write_json(speed, Path(model_dir) / "speed.json")

