"""Peak GPU memory of every model of every bundled suite at that suite's batch sizes, on one GPU.

Per (model, suite): a training step at the recipe's global batch (SGD with momentum, the recipe's precision),
evaluation (``predict`` in fp32, as ``bench.run`` scores) at the evaluation batch, and the throughput
protocol's forward at its batch (fp16 copy when the suite times fp16). Figures are
``torch.cuda.max_memory_allocated`` (what tensors hold, weights included) and ``max_memory_reserved`` (what
the caching allocator took from the driver), in GiB; ``OOM`` where the GPU could not hold it. Under DDP each
rank holds ``batch / world`` for training, so these are the single-GPU upper bounds. Models are built once
per input size; suites sharing a configuration share a row. The check stops at the time budget and lists
what it did not measure.
"""

from __future__ import annotations

import copy
import gc
from collections import defaultdict
from collections.abc import Callable
from typing import Any

import torch

from bench.gpu_check import Check, CheckContext
from bench.gpu_check.common import build, synthetic_batch, train_step

MARGIN_S = 15.0  # stop measuring when less than this remains of the budget


def _num_classes(suite: Any) -> int:
    return len(suite.data.classes) or (20 if suite.data.format == "voc" else 80)


def configurations(ctx: CheckContext) -> dict[tuple[Any, ...], list[str]]:
    """(model, input size, classes, train batch, amp, eval batch, throughput batch, fp16) -> suite names."""
    from bench.suite.spec import bundled_suites, load_suite
    from detectors import model_spec

    found: dict[tuple[Any, ...], list[str]] = defaultdict(list)
    for name in ["smoke"] if ctx.quick else bundled_suites():
        suite = load_suite(name)
        for model in suite.models:
            rec = suite.recipe_for(model)
            spec = model_spec(model)
            size = rec.input_size.get(spec.family) if "input_size" in spec.options else None
            key = (model, size or spec.input_size, _num_classes(suite), rec.batch_size,
                   rec.precision == "amp" and ctx.cuda, suite.evaluation.batch_size,
                   suite.speed.throughput_batch, suite.speed.fp16 and ctx.cuda)
            found[key].append(name)
    return dict(sorted(found.items(), key=lambda item: (item[0][0], item[0][1], item[0][2])))


def peak(fn: Callable[[], object], device: torch.device) -> dict[str, Any]:
    if device.type != "cuda":
        fn()
        return {"allocated_gib": None, "reserved_gib": None}
    torch.cuda.synchronize(device)
    torch.cuda.empty_cache()
    torch.cuda.reset_peak_memory_stats(device)
    try:
        fn()
        torch.cuda.synchronize(device)
    except torch.cuda.OutOfMemoryError:
        torch.cuda.empty_cache()
        return {"allocated_gib": "OOM", "reserved_gib": "OOM"}
    return {"allocated_gib": round(torch.cuda.max_memory_allocated(device) / 2**30, 2),
            "reserved_gib": round(torch.cuda.max_memory_reserved(device) / 2**30, 2)}


def measure(model: Any, key: tuple[Any, ...], device: torch.device) -> dict[str, Any]:
    _, size, classes, batch, amp, eval_batch, speed_batch, fp16 = key

    def training() -> None:
        images, targets = synthetic_batch(batch, size, device, classes)
        optimizer = torch.optim.SGD(model.parameters(), lr=1e-6, momentum=0.9)
        scaler = torch.amp.GradScaler(device.type, enabled=amp)
        model.train()
        for _ in range(2):  # the second step holds the momentum buffers too
            train_step(model, images, targets, optimizer, scaler, amp)

    def evaluation() -> None:
        from detectors import ImageMeta

        images, _ = synthetic_batch(eval_batch, size, device, classes)
        model.eval()
        with torch.inference_mode():
            model.predict(images, [ImageMeta(i, (size, size)) for i in range(eval_batch)])

    def throughput() -> None:
        timed = copy.deepcopy(model).eval()
        images, _ = synthetic_batch(speed_batch, size, device, classes)
        if fp16:
            timed, images = timed.half(), images.half()
        with torch.inference_mode():
            timed(images)

    train = peak(training, device)
    model.zero_grad(set_to_none=True)  # an OOM mid-step leaves gradients behind
    return {"train": train, "evaluate": peak(evaluation, device), "throughput": peak(throughput, device)}


def peak_memory(ctx: CheckContext) -> dict[str, Any]:
    rows, unmeasured = [], []
    current, model = None, None
    for key, suites in configurations(ctx).items():
        if ctx.remaining() < MARGIN_S:
            unmeasured.append({"model": key[0], "suites": suites})
            continue
        if current != key[:3]:  # (model, input size, classes): build once, free the previous one first
            current, model = key[:3], None
            gc.collect()
            if ctx.cuda:
                torch.cuda.empty_cache()
            model = build(key[0], ctx.device, key[1], key[2])
        rows.append({"model": key[0], "suites": suites, "input_size": model.input_size, "num_classes": key[2],
                     "train_batch": key[3], "amp": key[4], "eval_batch": key[5], "throughput_batch": key[6],
                     "throughput_fp16": key[7], **measure(model, key, ctx.device)})
    total = torch.cuda.get_device_properties(ctx.device).total_memory / 2**30 if ctx.cuda else None
    return {"rows": rows, "not_measured_time_budget": unmeasured,
            "device_memory_gib": None if total is None else round(total, 1)}


CHECKS = [Check("peak_memory", peak_memory,
                "peak memory per model at each suite's train, evaluation and throughput batch")]
