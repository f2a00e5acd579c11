"""Training and timing on the GPU: an AMP step per family through the real ``Trainer``, CUDA-event timing in
``bench.speed.harness``, ``channels_last`` and ``cudnn.benchmark``, and SSD300 training throughput against
torchvision's ``ssd300_vgg16`` on the same GPU and batch."""

from __future__ import annotations

import csv
import math
import statistics
import time
from typing import Any

import torch

from bench.gpu_check import Check, CheckContext, expect
from bench.gpu_check.common import (
    FAMILY_MODELS,
    NUM_CLASSES,
    SyntheticSet,
    build,
    collate,
    input_size,
    recipe,
    single_process,
    synthetic_batch,
    timed_seconds,
    train_step,
)


def amp_training_step(ctx: CheckContext) -> dict[str, Any]:
    """A few AMP iterations per family (``bench.training.loop.Trainer``): finite fp16 losses, updates."""
    from bench.training.loop import Stage, Trainer, TrainLog

    batch, iterations = ctx.size(8, 2), ctx.size(4, 2)
    results = {}
    for family, name in FAMILY_MODELS:
        model = build(name, ctx.device, input_size(name, ctx.quick))
        folder = ctx.workdir / "amp_step" / name
        folder.mkdir(parents=True, exist_ok=True)
        rec = recipe(precision="amp", batch_size=batch, iterations=iterations, log_every=1,
                     checkpoint_every=10_000, max_train_seconds=None, warmup_iterations=1, workers=0)
        trainer = Trainer(model, rec, single_process(ctx.device), folder / "checkpoint.pt",
                          TrainLog(folder / "train_log.csv"))
        before = {k: v.detach().clone() for k, v in model.state_dict().items() if v.is_floating_point()}
        dataset = SyntheticSet(batch * 2, model.input_size)
        outcome = trainer.train(dataset, collate, Stage("train", iterations))
        with (folder / "train_log.csv").open(newline="") as fh:
            losses = [float(row["loss"]) for row in csv.DictReader(fh)]
        after = model.state_dict()
        changed = sum(not torch.equal(before[k], after[k]) for k in before) / max(len(before), 1)
        scale = trainer.scaler.get_scale() if trainer.scaler.is_enabled() else None
        results[name] = {"family": family, "amp": trainer.amp, "autocast_dtype": str(trainer.amp_dtype),
                         "loss_scale": scale, "losses": losses, "changed_tensors": round(changed, 3),
                         "iterations": outcome.iterations,
                         "skipped_steps": getattr(outcome, "skipped_steps", None),
                         "ms_per_iteration": round(1000 * outcome.seconds / max(outcome.iterations, 1), 2)}
        expect(all(math.isfinite(v) for v in losses) and losses, f"{name}: non-finite loss", **results)
        expect(changed > 0.3, f"{name}: the optimizer left the weights unchanged", **results)
        if ctx.cuda:
            expect(trainer.amp, f"{name}: AMP was not active on CUDA", **results)
    return results


def _sample_images(ctx: CheckContext, n: int = 4) -> list[Any]:
    from torchvision.io import write_jpeg

    folder = ctx.workdir / "speed_images"
    folder.mkdir(parents=True, exist_ok=True)
    generator = torch.Generator().manual_seed(0)
    paths = []
    for i in range(n):
        path = folder / f"{i}.jpg"
        write_jpeg((torch.rand(3, 375, 500, generator=generator) * 255).to(torch.uint8), str(path))
        paths.append(path)
    return paths


def cuda_event_timing(ctx: CheckContext) -> dict[str, Any]:
    """The speed protocols on CUDA (events, fp32 + fp16), cross-checked against a synchronised wall clock."""
    from bench.speed.config import SpeedConfig
    from bench.speed.harness import measure_speed
    from bench.speed.timers import CudaEventTimer

    model = build("ssd300", ctx.device)
    config = SpeedConfig(warmup=ctx.size(10, 1), iterations=ctx.size(50, 2), max_seconds=ctx.size(10, 2),
                         throughput_batch=ctx.size(32, 2), fp16=True, progress=False)
    speed = measure_speed(model, ["model", "e2e", "throughput"], config, ctx.device, _sample_images(ctx))
    rows = [{k: r[k] for k in ("protocol", "precision", "batch", "timer", "mean_ms", "p90_ms", "fps")}
            for r in speed["results"]]
    result: dict[str, Any] = {"model": "ssd300", "rows": rows}
    expect(all(r["mean_ms"] > 0 and math.isfinite(r["mean_ms"]) for r in rows), "a non-positive latency",
           **result)
    if not ctx.cuda:
        return result
    expect(all(r["timer"] == "cuda_events" for r in rows), "speed on CUDA did not use CUDA events", **result)
    expect({r["precision"] for r in rows} == {"fp32", "fp16"}, "fp32 and fp16 rows expected", **result)
    # The event timer against perf_counter + synchronize around the same forward: they must agree.
    images, _ = synthetic_batch(8, 300, ctx.device)
    model.eval()
    def wall_clock() -> float:
        torch.cuda.synchronize(ctx.device)
        start = time.perf_counter()
        model(images)
        torch.cuda.synchronize(ctx.device)
        return time.perf_counter() - start

    with torch.inference_mode():
        events = CudaEventTimer(ctx.device)
        event_s = statistics.median(events(lambda: model(images)) for _ in range(20))
        wall_s = statistics.median(wall_clock() for _ in range(20))
    result["event_vs_synchronised_wall_clock"] = round(event_s / wall_s, 3)
    expect(0.8 <= event_s / wall_s <= 1.25, "CUDA-event and wall-clock latencies disagree", **result)
    return result


LAYOUTS = ((torch.contiguous_format, "contiguous"), (torch.channels_last, "channels_last"))


def _layout_timing(model: Any, images: torch.Tensor, targets: list[Any], fmt: torch.memory_format,
                   ctx: CheckContext, repeats: int) -> dict[str, float]:
    """Loss, AMP training-step and forward time of ``model`` with weights and input in ``fmt``."""
    model.to(memory_format=fmt).train()
    x = images.contiguous(memory_format=fmt)
    loss = train_step(model, x, targets, None, None, amp=ctx.cuda)  # also the warm-up / autotuning
    train_s = timed_seconds(lambda: train_step(model, x, targets, None, None, ctx.cuda), ctx.device, repeats)
    model.eval()
    with torch.inference_mode(), torch.autocast(ctx.device.type, torch.float16, enabled=ctx.cuda):
        model(x)
        forward_s = timed_seconds(lambda: model(x), ctx.device, repeats)
    return {"loss": loss, "train_step_ms": round(1000 * train_s / repeats, 2),
            "forward_ms": round(1000 * forward_s / repeats, 2)}


def channels_last_and_cudnn_benchmark(ctx: CheckContext) -> dict[str, Any]:
    """AMP training step and forward time in each memory format, with and without ``cudnn.benchmark``."""
    batch, repeats = ctx.size(16, 1), ctx.size(10, 1)
    previous = torch.backends.cudnn.benchmark
    results: dict[str, Any] = {}
    try:
        for name in ("ssd300", "yolov5nu"):
            model = build(name, ctx.device, input_size(name, ctx.quick))
            images, targets = synthetic_batch(batch, model.input_size, ctx.device)
            per_config: dict[str, Any] = {}
            for benchmark in (False, True):
                torch.backends.cudnn.benchmark = benchmark
                for fmt, label in LAYOUTS:
                    key = label + ("+benchmark" if benchmark else "")
                    per_config[key] = _layout_timing(model, images, targets, fmt, ctx, repeats)
                    reference, loss = per_config["contiguous"]["loss"], per_config[key]["loss"]
                    # fp16 and another convolution algorithm move the loss a little, a layout bug a lot
                    expect(abs(loss - reference) <= 5e-2 * abs(reference) + 1e-3,
                           f"{name}: {key} changes the loss", **per_config)
            base = per_config["contiguous+benchmark"]["train_step_ms"]
            per_config["channels_last_speedup_train"] = round(
                base / per_config["channels_last+benchmark"]["train_step_ms"], 3)
            per_config["benchmark_speedup_train"] = round(per_config["contiguous"]["train_step_ms"] / base, 3)
            results[name] = {"batch": batch, "input_size": model.input_size, **per_config}
    finally:
        torch.backends.cudnn.benchmark = previous
    return results


def ssd300_throughput_vs_torchvision(ctx: CheckContext) -> dict[str, Any]:
    """Training images/s of our SSD300 step and torchvision's ``ssd300_vgg16``: same GPU, batch, boxes."""
    from torchvision.models.detection import ssd300_vgg16

    batch, steps, rounds = ctx.size(32, 2), ctx.size(10, 1), ctx.size(3, 1)
    images, targets = synthetic_batch(batch, 300, ctx.device)
    tv_images = list(images)
    tv_targets = [{"boxes": t.boxes, "labels": t.labels + 1} for t in targets]  # torchvision: 0 = background
    ours = build("ssd300", ctx.device).train()
    torch.manual_seed(0)
    theirs = ssd300_vgg16(weights=None, weights_backbone=None, num_classes=NUM_CLASSES + 1).to(ctx.device)
    theirs.train()
    previous = torch.backends.cudnn.benchmark
    torch.backends.cudnn.benchmark = ctx.cuda
    results: dict[str, Any] = {"batch": batch, "input_size": 300, "steps_per_round": steps, "rounds": rounds}
    try:
        for precision in ("amp", "fp32") if ctx.cuda else ("fp32",):
            amp = precision == "amp"
            steppers = {}
            for label, model in (("ours", ours), ("torchvision", theirs)):
                optimizer = torch.optim.SGD(model.parameters(), lr=1e-5, momentum=0.9)
                scaler = torch.amp.GradScaler(ctx.device.type, enabled=amp)
                steppers[label] = _stepper(label, model, optimizer, scaler, amp, images, targets, tv_images,
                                           tv_targets)
            seconds: dict[str, list[float]] = {"ours": [], "torchvision": []}
            for step in steppers.values():
                for _ in range(ctx.size(3, 1)):
                    step()  # warm-up: allocator, cuDNN autotuning
            for r in range(rounds):  # alternate who goes first
                for label in (("ours", "torchvision") if r % 2 == 0 else ("torchvision", "ours")):
                    seconds[label].append(timed_seconds(steppers[label], ctx.device, steps))
            ips = {label: batch * steps / min(s) for label, s in seconds.items()}
            results[precision] = {"ours_images_per_s": round(ips["ours"], 1),
                                  "torchvision_images_per_s": round(ips["torchvision"], 1),
                                  "ratio_ours_over_torchvision": round(ips["ours"] / ips["torchvision"], 3)}
    finally:
        torch.backends.cudnn.benchmark = previous
    return results


def _stepper(label, model, optimizer, scaler, amp, images, targets, tv_images, tv_targets):
    def ours() -> None:
        train_step(model, images, targets, optimizer, scaler, amp)

    def torchvision() -> None:
        with torch.autocast(images.device.type, dtype=torch.float16, enabled=amp):
            loss = sum(model(tv_images, tv_targets).values())
        scaler.scale(loss).backward()
        scaler.step(optimizer)
        scaler.update()
        optimizer.zero_grad(set_to_none=True)

    return ours if label == "ours" else torchvision


CHECKS = [
    Check("amp_training_step", amp_training_step,
          "an AMP training step for every family (SSD, YOLOv5 anchor-based, YOLOv5u) through Trainer"),
    Check("cuda_event_timing", cuda_event_timing,
          "bench.speed.harness's protocols timed with CUDA events, fp32 and fp16"),
    Check("channels_last_cudnn_benchmark", channels_last_and_cudnn_benchmark,
          "channels_last and cudnn.benchmark: same losses, step and forward times"),
    Check("ssd300_throughput_vs_torchvision", ssd300_throughput_vs_torchvision,
          "SSD300 training images/s at batch 32, ours vs torchvision ssd300_vgg16"),
]
