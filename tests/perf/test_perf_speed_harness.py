"""Harness overhead: ``measure_speed``'s ``model`` protocol against a bare timed loop of the same small CNN.

Reference: ``bare`` = one ``time.perf_counter`` around ``warmup + iterations`` plain forwards of the same
fused eval-mode model on the same input. Two ratios are printed (target: at most 1.02 each):
- wall: the whole ``measure_speed`` call (copy, fuse, image decode, per-iteration timer, tqdm, statistics)
  over the bare loop;
- latency: the mean latency the harness reports over the bare loop's time per forward.
Before timing, the bare loop's network is checked to compute what the harness's timed copy computes.
"""

from __future__ import annotations

import copy
import time
from pathlib import Path

import pytest
import torch
from torch import Tensor, nn
from torchvision.io import write_png

from bench.speed.config import SpeedConfig
from bench.speed.harness import _timed_copy, measure_speed
from detectors import Detections, Detector, ImageMeta, InputSpec, Target
from detectors.complexity import fuse_conv_bn

WARMUP, ITERATIONS, ROUNDS = 50, 500, 5  # the full protocol's counts
SIZE = 64


class SmallCNN(Detector):
    """About a millisecond per forward on one core, so a slow model does not hide the harness's costs."""

    family = "test"

    def __init__(self) -> None:
        super().__init__(num_classes=1, input_size=SIZE)
        self.body = nn.Sequential(nn.Conv2d(3, 32, 3, padding=1), nn.BatchNorm2d(32), nn.ReLU(),
                                  nn.Conv2d(32, 32, 3, padding=1), nn.BatchNorm2d(32), nn.ReLU(),
                                  nn.Conv2d(32, 5, 1))

    @property
    def input_spec(self) -> InputSpec:
        return InputSpec(SIZE, "stretch", (0.0, 0.0, 0.0), (1.0, 1.0, 1.0))

    def forward(self, images: Tensor) -> Tensor:
        return self.body(images)

    def loss(self, images: Tensor, targets: list[Target]) -> dict[str, Tensor]:
        return {"loss": self(images).mean()}

    def predict(self, images: Tensor, metas: list[ImageMeta]) -> list[Detections]:
        raise NotImplementedError("only the forward pass is timed here")


def _bare_loop(model: nn.Module, images: Tensor, n: int) -> float:
    with torch.inference_mode():
        start = time.perf_counter()
        for _ in range(n):
            model(images)
        return time.perf_counter() - start


@pytest.mark.perf
def test_harness_overhead_against_bare_loop(benchmark, tmp_path: Path) -> None:
    torch.manual_seed(0)
    image_file = tmp_path / "sample.png"
    write_png(torch.randint(0, 256, (3, SIZE, SIZE), dtype=torch.uint8), str(image_file))
    model = SmallCNN()
    reference = fuse_conv_bn(copy.deepcopy(model).eval())
    images = torch.rand(1, 3, SIZE, SIZE)
    config = SpeedConfig(warmup=WARMUP, iterations=ITERATIONS, max_seconds=1e9, fp16=False)
    timed, fused = _timed_copy(model, torch.device("cpu"), half=False, fuse=True)  # what the harness times
    with torch.inference_mode():
        assert fused and torch.equal(timed(images), reference(images))  # the same network, the same output

    bare: list[float] = []
    reported_ms: list[float] = []

    def bare_round() -> None:
        # pytest-benchmark runs this untimed before each harness round: the two alternate under the same load.
        bare.append(_bare_loop(reference, images, WARMUP + ITERATIONS))

    def harness_round() -> None:
        speed = measure_speed(model, ["model"], config, "cpu", [image_file])
        reported_ms.append(speed["results"][0]["mean_ms"])

    benchmark.pedantic(harness_round, setup=bare_round, rounds=ROUNDS, iterations=1, warmup_rounds=1)

    bare_wall = min(bare)
    wall_ratio = benchmark.stats.stats.min / bare_wall
    latency_ratio = min(reported_ms) / (1000 * bare_wall / (WARMUP + ITERATIONS))
    benchmark.extra_info.update({"reference": "bare perf_counter loop", "wall_ratio": wall_ratio,
                                 "latency_ratio": latency_ratio})
    print(f"\nspeed harness vs bare loop ({WARMUP}+{ITERATIONS} forwards, best of {ROUNDS} alternating rounds"
          f", target <= 1.02): wall {wall_ratio:.3f}x, reported latency {latency_ratio:.3f}x")
