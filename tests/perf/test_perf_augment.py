"""Throughput of the SSD training augmentation, in images/s on one core, against torchvision.transforms.v2.

The reference is torchvision's own SSD recipe (``references/detection/presets.py``):
RandomPhotometricDistort, RandomZoomOut, RandomIoUCrop, SanitizeBoundingBoxes (RandomIoUCrop needs it),
RandomHorizontalFlip, Resize, and ToDtype for the same float [0, 1] output. Both get the same decoded uint8
images and boxes; rounds alternate between the two so that load from other processes hits both alike.
The figure is the ratio, never a threshold. Before timing, both pipelines with every random step turned off
(no distortion, zoom-out, crop or flip) must give the same images (within one grey level: torchvision
resizes in uint8) and the same boxes, so the two time the same geometry and resampling.
"""

from __future__ import annotations

import dataclasses
import statistics
import time
from collections.abc import Callable
from pathlib import Path

import pytest
import torch
from torchvision import tv_tensors
from torchvision.transforms import v2

from bench.data import read_coco, read_voc
from bench.data.loader import load_image
from bench.data.synth import generate
from bench.data.transforms import SSD_AUGMENT, ssd_augment

SIZE, IMAGES, ROUNDS = 300, 16, 7
MEAN = (0.48235, 0.45882, 0.40784)

pytestmark = pytest.mark.perf


def _samples(tmp_path: Path) -> list[tuple[torch.Tensor, torch.Tensor, torch.Tensor]]:
    """Real VOC photos when the shared fixtures are there, else synthetic images."""
    shared = Path(__file__).resolve().parents[3] / "shared" / "data"  # as in tests/conftest.py
    voc_dir = shared / "voc2012-100-padilla" / "gts" / "pascalvoc_format"
    if voc_dir.is_dir():
        ds = read_voc(voc_dir)
    else:
        ds = read_coco(generate(tmp_path, IMAGES, seed=0, splits={"train": 1.0})["coco_train"])
    return [(load_image(str(ds.image_path(r))), torch.from_numpy(r.boxes).float(), torch.from_numpy(r.labels))
            for r in ds.records[:IMAGES]]


def _torchvision_pipeline() -> v2.Compose:
    return v2.Compose([
        v2.RandomPhotometricDistort(p=0.5),
        v2.RandomZoomOut(fill={tv_tensors.Image: [round(m * 255) for m in MEAN], "others": 0},
                         side_range=(1.0, 4.0), p=0.5),
        v2.RandomIoUCrop(),
        v2.SanitizeBoundingBoxes(),
        v2.RandomHorizontalFlip(p=0.5),
        v2.Resize((SIZE, SIZE)),
        v2.ToDtype(torch.float32, scale=True),
    ])


def _assert_same_deterministic_output(samples, tv_inputs) -> None:
    """Every random step off on both sides: a plain stretch to ``SIZE``, image and boxes alike."""
    still = dataclasses.replace(SSD_AUGMENT, brightness=0.0, contrast=(1.0, 1.0), saturation=(1.0, 1.0),
                                hue=0.0, expand_p=0.0, crop_min_ious=(None,), flip_p=0.0)
    resize = v2.Compose([v2.Resize((SIZE, SIZE)), v2.ToDtype(torch.float32, scale=True)])
    for (image, boxes, labels), tv_input in zip(samples, tv_inputs, strict=True):
        ours, ours_boxes, ours_labels, _ = ssd_augment(image, boxes, labels, SIZE, torch.Generator(), MEAN,
                                                       cfg=still)
        theirs, target = resize(*tv_input)
        torch.testing.assert_close(ours, theirs.as_subclass(torch.Tensor), rtol=0, atol=1.01 / 255)
        torch.testing.assert_close(ours_boxes, target["boxes"].as_subclass(torch.Tensor), rtol=0, atol=1e-4)
        assert torch.equal(ours_labels, target["labels"])


def test_ssd_augment_throughput(benchmark, tmp_path: Path) -> None:
    samples = _samples(tmp_path)
    reference = _torchvision_pipeline()
    tv_inputs = [(tv_tensors.Image(image), {"boxes": tv_tensors.BoundingBoxes(boxes, format="XYXY",
                                                                             canvas_size=image.shape[-2:]),
                                            "labels": labels})
                 for image, boxes, labels in samples]
    _assert_same_deterministic_output(samples, tv_inputs)

    def ours() -> None:
        gen = torch.Generator().manual_seed(0)
        for image, boxes, labels in samples:
            ssd_augment(image, boxes, labels, SIZE, gen, MEAN)

    def theirs() -> None:
        torch.manual_seed(0)
        for image, target in tv_inputs:
            reference(image, target)

    def timed(fn: Callable[[], None]) -> float:
        start = time.perf_counter()
        fn()
        return time.perf_counter() - start

    ours(), theirs()  # warm-up
    ours_s, theirs_s = [], []
    for _ in range(ROUNDS):
        ours_s.append(timed(ours))
        theirs_s.append(timed(theirs))
    ours_rate = IMAGES / statistics.median(ours_s)
    theirs_rate = IMAGES / statistics.median(theirs_s)
    ratio = ours_rate / theirs_rate
    benchmark.extra_info.update(ours_images_per_s=ours_rate, torchvision_images_per_s=theirs_rate,
                                ratio=ratio)
    benchmark.pedantic(ours, rounds=3, iterations=1)
    print(f"\nSSD augmentation at {SIZE}px, 1 thread: bench.data.transforms {ours_rate:.1f} images/s, "
          f"torchvision.transforms.v2 {theirs_rate:.1f} images/s, ratio {ratio:.2f}x")
    assert ours_rate > 0 and theirs_rate > 0
