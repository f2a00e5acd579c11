"""The speed harness: stopping rule, statistics, timers (CUDA through fakes), the speed.json records."""

from __future__ import annotations

import json
import re
from dataclasses import replace
from pathlib import Path
from typing import ClassVar

import numpy as np
import pytest
import torch
from torch import Tensor, nn
from torchvision.io import write_png

from bench.environment import device_name
from bench.speed.config import SpeedConfig
from bench.speed.harness import measure_speed, prepare_image, save, summarise
from bench.speed.timers import CudaEventTimer, PerfCounterTimer, time_iterations, timer_for
from detectors import Detections, Detector, ImageMeta, InputSpec, PostprocessConfig, Target, build_model

RESULT_KEYS = {"protocol", "device", "device_name", "precision", "batch", "fused", "warmup", "iterations",
               "timed_seconds", "mean_ms", "p50_ms", "p90_ms", "fps", "nms", "timer", "threads",
               "requested_batch", "tf32"}
FAST = SpeedConfig(warmup=1, iterations=3, max_seconds=60.0, throughput_batch=2, progress=False)
HEIGHT, WIDTH = 48, 80


class TinyDetector(Detector):
    """A conv+BN network with a stretch protocol; ``predict`` records what the e2e path hands it."""

    family = "test"
    predicted: ClassVar[list[tuple[tuple[int, ...], ImageMeta]]] = []  # class-level: survives deep copies

    def __init__(self, batch_norm: bool = True) -> None:
        super().__init__(num_classes=2, input_size=32, postprocess=PostprocessConfig(0.05, 0.5, 17))
        norm = nn.BatchNorm2d(8) if batch_norm else nn.ReLU()
        self.body = nn.Sequential(nn.Conv2d(3, 8, 3, padding=1), norm, nn.Conv2d(8, 6, 1))

    @property
    def input_spec(self) -> InputSpec:
        return InputSpec(self.input_size, "stretch", (0.5, 0.5, 0.5), (0.25, 0.25, 0.25))

    def forward(self, images: Tensor) -> Tensor:
        return self.body(images)

    def loss(self, images: Tensor, targets: list[Target]) -> dict[str, Tensor]:
        return {"loss": self(images).mean()}

    def predict(self, images: Tensor, metas: list[ImageMeta]) -> list[Detections]:
        self(images)
        TinyDetector.predicted.extend((tuple(images.shape), meta) for meta in metas)
        empty = Detections(torch.zeros(0, 4), torch.zeros(0), torch.zeros(0, dtype=torch.int64))
        return [empty for _ in metas]


class FixedTimer:
    """Runs the step and claims it took ``seconds``: a stand-in for any device's timer."""

    def __init__(self, seconds: float, name: str = "cuda_events") -> None:
        self.seconds, self.name, self.calls = seconds, name, 0

    def __call__(self, step) -> float:
        step()
        self.calls += 1
        return self.seconds


@pytest.fixture
def images(tmp_path: Path) -> list[Path]:
    """Two non-square PNGs (48 x 80)."""
    paths = []
    for i in range(2):
        path = tmp_path / f"image{i}.png"
        write_png(torch.randint(0, 256, (3, HEIGHT, WIDTH), dtype=torch.uint8), str(path))
        paths.append(path)
    return paths


def test_timing_stops_at_the_iteration_count_or_the_time_budget_whichever_first() -> None:
    timer = FixedTimer(1.0)
    by_time = time_iterations(lambda: None, timer, SpeedConfig(2, 10, max_seconds=3.5, progress=False), "t")
    assert len(by_time) == 4 and timer.calls == 2 + 4  # 3 s < 3.5 s, so a fourth iteration runs
    by_count = time_iterations(lambda: None, FixedTimer(1.0), SpeedConfig(0, 3, 100, progress=False), "t")
    assert len(by_count) == 3


def test_summary_statistics() -> None:
    stats = summarise(np.array([0.001, 0.002, 0.003, 0.004]), batch=4)
    assert stats["iterations"] == 4 and stats["timed_seconds"] == pytest.approx(0.010)
    assert (stats["mean_ms"], stats["p50_ms"], stats["p90_ms"]) == pytest.approx((2.5, 2.5, 3.7))
    assert stats["fps"] == pytest.approx(1600.0)


def test_cuda_timer_synchronises_and_brackets_the_step_with_events(monkeypatch: pytest.MonkeyPatch) -> None:
    log: list[str] = []

    class FakeEvent:
        def __init__(self, enable_timing: bool) -> None:
            assert enable_timing
            self.tag = "start" if not any(e.startswith("new") for e in log) else "end"
            log.append(f"new {self.tag}")

        def record(self, stream: str) -> None:
            log.append(f"record {self.tag} on {stream}")

        def synchronize(self) -> None:
            log.append(f"wait {self.tag}")

        def elapsed_time(self, end: FakeEvent) -> float:
            log.append(f"elapsed {self.tag}->{end.tag}")
            return 7.5

    monkeypatch.setattr(torch.cuda, "Event", FakeEvent)
    monkeypatch.setattr(torch.cuda, "synchronize", lambda device: log.append(f"synchronize {device}"))
    monkeypatch.setattr(torch.cuda, "current_stream", lambda device: f"stream of {device}")
    timer = timer_for(torch.device("cuda:1"))
    assert isinstance(timer, CudaEventTimer) and timer.name == "cuda_events"
    log.clear()
    assert timer(lambda: log.append("step")) == pytest.approx(0.0075)
    assert log == ["synchronize cuda:1", "record start on stream of cuda:1", "step",
                   "record end on stream of cuda:1", "wait end", "elapsed start->end"]


def test_cpu_measurement_records_every_field_of_the_contract(images: list[Path]) -> None:
    model = TinyDetector().train()
    TinyDetector.predicted.clear()
    speed = measure_speed(model, ["model", "e2e", "throughput"], replace(FAST, fp16=True), "cpu", images)
    assert set(speed["protocol_definitions"]) >= {"model", "e2e", "throughput"}
    rows = speed["results"]
    assert [r["protocol"] for r in rows] == ["model", "e2e", "throughput"]  # fp16 is CUDA-only
    for row in rows:
        assert set(row) == RESULT_KEYS
        assert (row["device"], row["precision"], row["timer"]) == ("cpu", "fp32", "perf_counter")
        assert row["fused"] is True
        assert row["device_name"] == device_name("cpu") and row["iterations"] == 3 and row["warmup"] == 1
        assert 0 < row["p50_ms"] <= row["p90_ms"] and row["timed_seconds"] > 0
        assert row["fps"] == pytest.approx(row["batch"] * 1000 / row["mean_ms"])
    assert [r["batch"] for r in rows] == [1, 1, 2]
    assert [r["nms"] for r in rows] == [None, {"score_thresh": 0.05, "iou": 0.5, "max_detections": 17}, None]
    # e2e decoded the files and applied the model's geometry, metas pointing back to the originals
    assert len(TinyDetector.predicted) == 1 + 3
    assert {shape for shape, _ in TinyDetector.predicted} == {(1, 3, 32, 32)}
    assert {meta.orig_size for _, meta in TinyDetector.predicted} == {(HEIGHT, WIDTH)}
    # the caller's model is untouched: still training, BatchNorm still there
    assert model.training and isinstance(model.body[1], nn.BatchNorm2d)


def test_injected_timer_drives_the_figures(images: list[Path]) -> None:
    timer = FixedTimer(0.002)
    speed = measure_speed(TinyDetector(), ["model", "throughput"], FAST, "cpu", images, timer=timer)
    model_row, throughput_row = speed["results"]
    assert (model_row["mean_ms"], model_row["p90_ms"], model_row["fps"]) == pytest.approx((2.0, 2.0, 500.0))
    assert throughput_row["fps"] == pytest.approx(1000.0)  # batch 2
    assert model_row["timer"] == "cuda_events" and timer.calls == 2 * (1 + 3)


def test_fused_flag(images: list[Path]) -> None:
    unfused = measure_speed(TinyDetector(), ["model"], replace(FAST, fuse=False), "cpu", images)
    without_bn = measure_speed(TinyDetector(batch_norm=False), ["model"], FAST, "cpu", images)
    assert unfused["results"][0]["fused"] is False and without_bn["results"][0]["fused"] is True


def test_yolov5_end_to_end_letterbox_fuse_and_nms(images: list[Path]) -> None:
    post = PostprocessConfig(score_thresh=0.001, nms_iou=0.6, max_detections=300)
    model = build_model("yolov5n", num_classes=3, input_size=64, postprocess=post)
    speed = measure_speed(model, ["e2e"], FAST, "cpu", images)
    (row,) = speed["results"]
    assert row["fused"] is True and row["nms"] == {"score_thresh": 0.001, "iou": 0.6, "max_detections": 300}
    assert any(isinstance(m, nn.BatchNorm2d) for m in model.modules())  # fused a copy, not the caller's model


def test_letterbox_preparation_matches_the_protocol(images: list[Path]) -> None:
    image, meta = prepare_image(images[0], InputSpec(64, "letterbox", (0, 0, 0), (1, 1, 1)), image_id=3)
    assert image.shape == (3, 64, 64) and image.dtype == torch.float32
    assert meta.image_id == 3 and meta.orig_size == (HEIGHT, WIDTH)
    # ratio 64 / 80 = 0.8: content 38 x 64 (48 x 0.8 = 38.4 rounds to 38 rows), centred: 13 padded rows on top
    assert meta.scale == pytest.approx((38 / 48, 0.8)) and meta.pad == pytest.approx((13.0, 0.0))
    pad = torch.tensor(114 / 255)
    assert torch.allclose(image[:, :13], pad) and torch.allclose(image[:, 51:], pad)
    assert not torch.allclose(image[:, 13:51], pad)


def test_save_writes_speed_json(tmp_path: Path, images: list[Path]) -> None:
    speed = measure_speed(TinyDetector(), ["model"], FAST, "cpu", images[:1])
    path = save(speed, tmp_path / "models" / "tiny")
    assert path == tmp_path / "models" / "tiny" / "speed.json"
    assert json.loads(path.read_text()) == speed


def test_bad_requests_are_refused(images: list[Path]) -> None:
    with pytest.raises(ValueError, match="unknown speed protocols"):
        measure_speed(TinyDetector(), ["latency"], FAST, "cpu", images)
    with pytest.raises(ValueError, match="sample image"):
        measure_speed(TinyDetector(), ["model"], FAST, "cpu", [])
    with pytest.raises(ValueError, match="invalid speed counts"):
        SpeedConfig(iterations=0)


def test_default_counts_per_device() -> None:
    full = SpeedConfig.for_device("cuda:0")
    assert (full.warmup, full.iterations, full.max_seconds, full.throughput_batch) == (50, 500, 30.0, 32)
    assert full.fp16 and full.fuse
    small = SpeedConfig.for_device("cpu")
    assert small.iterations < full.iterations and small.throughput_batch < full.throughput_batch
    assert isinstance(timer_for(torch.device("cpu")), PerfCounterTimer)


def test_cpu_name_comes_from_cpuinfo() -> None:
    cpuinfo = Path("/proc/cpuinfo")
    if not cpuinfo.exists():
        pytest.skip("no /proc/cpuinfo")
    expected = re.search(r"^model name\s*:\s*(.+)$", cpuinfo.read_text(), re.M)
    assert device_name("cpu") == (expected.group(1).strip() if expected else device_name("cpu"))
    assert device_name("cpu")
