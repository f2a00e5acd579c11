"""Our SSD300 against torchvision's ``ssd300_vgg16`` on the same batch: a training step and inference.

Reference: ``torchvision.models.detection.ssd300_vgg16(weights=None, weights_backbone=None, num_classes=21)``,
the same VGG16 SSD300 with 8,732 priors, whose matching, box encoding and decoding loop over images in Python.
Both see the same 4 images at 300x300 (CPU, one thread) and the same ground truth; inference includes
post-processing with the same settings (score 0.01, NMS 0.45, 400 candidates per class, 200 detections).
Every round runs both models, alternating which goes first, so load from other processes and the wake of
the other model's allocations hit both alike; the ratio is ours / reference of the per-model medians.
Target at most 1.0 for both; reported, not asserted.

Convolutions dominate both end-to-end figures, so two more comparisons isolate the parts this package writes
itself, on the same head outputs: matching + loss, and post-processing (torchvision's private-by-convention
``proposal_matcher``, ``compute_loss`` and ``postprocess_detections``, called as ``SSD.forward`` calls them).
"""

from __future__ import annotations

import statistics
import time
from collections.abc import Callable

import pytest
import torch
from pytest_benchmark.fixture import BenchmarkFixture
from torchvision.models.detection import ssd300_vgg16
from torchvision.ops import box_iou

from detectors import ImageMeta, PostprocessConfig, Target, build_model

TARGET_RATIO = 1.0
BATCH, SIZE, CLASSES = 4, 300, 20
Batch = tuple[torch.Tensor, list[Target]]


@pytest.fixture(scope="module")
def batch() -> Batch:
    generator = torch.Generator().manual_seed(0)
    images = torch.rand(BATCH, 3, SIZE, SIZE, generator=generator)
    targets = []
    for n in (1, 3, 5, 8):
        xy = torch.rand(n, 2, generator=generator) * 200
        wh = 20 + torch.rand(n, 2, generator=generator) * 80
        labels = torch.randint(0, CLASSES, (n,), generator=generator)
        targets.append(Target(torch.cat([xy, xy + wh], 1), labels))
    return images, targets


def models() -> tuple[torch.nn.Module, torch.nn.Module]:
    torch.manual_seed(0)
    ours = build_model("ssd300", CLASSES)
    reference = ssd300_vgg16(weights=None, weights_backbone=None, num_classes=CLASSES + 1)
    return ours, reference


def timed(fn: Callable[[], object], into: list[float]) -> Callable[[], None]:
    def run() -> None:
        start = time.perf_counter()
        fn()
        into.append(time.perf_counter() - start)

    return run


def compare(benchmark: BenchmarkFixture, what: str, ours: Callable[[], object],
            reference: Callable[[], object], rounds: int) -> None:
    ours(), reference()  # warm-up: allocator, oneDNN primitive caches
    ours_s: list[float] = []
    reference_s: list[float] = []
    pair = (timed(ours, ours_s), timed(reference, reference_s))
    played = [0]

    def one_round() -> None:
        """Both models once, the order alternating so neither always runs in the other's wake."""
        for run in pair if played[0] % 2 == 0 else pair[::-1]:
            run()
        played[0] += 1

    benchmark.pedantic(one_round, rounds=rounds, iterations=1)
    ours_med, reference_med = statistics.median(ours_s), statistics.median(reference_s)
    ratio = ours_med / reference_med
    benchmark.extra_info.update({"reference": "torchvision ssd300_vgg16", "ours_median_s": ours_med,
                                 "reference_median_s": reference_med, "ratio": ratio,
                                 "target_ratio": TARGET_RATIO})
    verdict = "met" if ratio <= TARGET_RATIO else "MISSED"
    print(f"\nssd300 {what}, batch {BATCH} at {SIZE}: ours {ours_med:.3f} s | torchvision ssd300_vgg16 "
          f"{reference_med:.3f} s | ratio {ratio:.3f} (target <= {TARGET_RATIO}: {verdict})")


@pytest.mark.perf
def test_training_step_vs_torchvision(benchmark: BenchmarkFixture, batch: Batch) -> None:
    images, targets = batch
    ours, reference = models()
    ours.train(), reference.train()
    tv_images = list(images)
    tv_targets = [{"boxes": t.boxes, "labels": t.labels + 1} for t in targets]  # torchvision: 0 = background
    ours_opt = torch.optim.SGD(ours.parameters(), lr=1e-6, momentum=0.9)
    reference_opt = torch.optim.SGD(reference.parameters(), lr=1e-6, momentum=0.9)

    def ours_step() -> None:
        ours_opt.zero_grad()
        ours.loss(images, targets)["loss"].backward()
        ours_opt.step()

    def reference_step() -> None:
        reference_opt.zero_grad()
        sum(reference(tv_images, tv_targets).values()).backward()
        reference_opt.step()

    compare(benchmark, "training step", ours_step, reference_step, rounds=4)


@pytest.mark.perf
def test_inference_vs_torchvision(benchmark: BenchmarkFixture, batch: Batch) -> None:
    images, _ = batch
    ours, reference = models()
    ours.eval(), reference.eval()
    tv_images = list(images)
    metas = [ImageMeta(i, (SIZE, SIZE)) for i in range(BATCH)]

    @torch.no_grad()
    def ours_predict() -> None:
        ours.predict(images, metas)

    @torch.no_grad()
    def reference_predict() -> None:
        reference(tv_images)

    compare(benchmark, "inference (forward + post-processing)", ours_predict, reference_predict, rounds=5)


@pytest.fixture(scope="module")
def head_outputs(batch: Batch) -> dict[str, object]:
    """Both models' raw outputs on the batch, computed once, for the loss and post-processing comparisons."""
    images, _ = batch
    ours, reference = models()
    with torch.no_grad():
        loc, conf = ours(images)
        tv_images, _ = reference.transform(list(images))
        features = list(reference.backbone(tv_images.tensors).values())
        tv_head = reference.head(features)
        anchors = reference.anchor_generator(tv_images, features)
    return {"ours": ours, "reference": reference, "loc": loc, "conf": conf, "tv_images": tv_images,
            "tv_head": tv_head, "anchors": anchors}


@pytest.mark.perf
def test_matching_and_loss_vs_torchvision(benchmark: BenchmarkFixture, batch: Batch,
                                          head_outputs: dict[str, object]) -> None:
    _, targets = batch
    h = head_outputs
    ours, reference = h["ours"], h["reference"]
    normalised = [Target(t.boxes / SIZE, t.labels) for t in targets]
    tv_targets = [{"boxes": t.boxes, "labels": t.labels + 1} for t in targets]

    def ours_loss() -> None:
        ours.criterion(h["loc"], h["conf"], ours.priors, normalised)

    def reference_loss() -> None:  # SSD.forward's per-image matching loop, then its loss
        pairs = zip(tv_targets, h["anchors"], strict=True)
        matched = [reference.proposal_matcher(box_iou(t["boxes"], a)) for t, a in pairs]
        reference.compute_loss(tv_targets, h["tv_head"], h["anchors"], matched)

    compare(benchmark, "matching + loss on fixed head outputs", ours_loss, reference_loss, rounds=30)


@pytest.mark.perf
def test_postprocessing_vs_torchvision(benchmark: BenchmarkFixture, head_outputs: dict[str, object]) -> None:
    h = head_outputs
    ours, reference = h["ours"], h["reference"]
    config = PostprocessConfig()  # score 0.01, NMS 0.45, 200 detections, 400 per class: as torchvision

    def ours_post() -> None:
        ours.postprocess(h["loc"], h["conf"], ours.priors, config)

    def reference_post() -> None:
        reference.postprocess_detections(h["tv_head"], h["anchors"], h["tv_images"].image_sizes)

    compare(benchmark, "post-processing on fixed head outputs", ours_post, reference_post, rounds=15)
