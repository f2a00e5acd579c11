"""The "mosaic" policy (``bench.data.mosaic``): ultralytics' transforms on our records, boxes on their
pixels, reproducible per (seed, epoch, index) without touching the global random streams, mosaic closing."""

from __future__ import annotations

import random
from dataclasses import replace
from pathlib import Path

import numpy as np
import pytest
import torch
from PIL import Image

from bench.data.mosaic import MosaicDataset
from bench.data.records import DetectionDataset, ImageRecord
from bench.suite.spec import MosaicAugment
from detectors.base import InputSpec

SIZE = 64
COLOURS = [(255, 0, 0), (0, 255, 0), (0, 0, 255)]  # class k is drawn in colour k
PROTOCOL = InputSpec(SIZE, "letterbox", (0.0, 0.0, 0.0), (1.0, 1.0, 1.0))
STILL = MosaicAugment(hsv_h=0.0, hsv_s=0.0, hsv_v=0.0, fliplr=0.0)  # geometry only: colours stay exact


@pytest.fixture(scope="module")
def dataset(tmp_path_factory: pytest.TempPathFactory) -> DetectionDataset:
    """Black images, each with two solid boxes of its classes' colours; sizes vary so letterboxing pads."""
    root = tmp_path_factory.mktemp("mosaic")
    rng = np.random.default_rng(0)
    records = []
    for i in range(6):
        w, h = (96, 64) if i % 2 else (64, 80)
        pixels = np.zeros((h, w, 3), np.uint8)
        boxes, labels = [], []
        for k in range(2):
            x1, y1 = int(rng.integers(0, w - 24)), int(rng.integers(0, h - 24))
            x2, y2 = x1 + int(rng.integers(12, 24)), y1 + int(rng.integers(12, 24))
            label = (i + k) % 3
            pixels[y1:y2, x1:x2] = COLOURS[label]
            boxes.append([x1, y1, x2, y2])
            labels.append(label)
        Image.fromarray(pixels).save(root / f"{i}.png")
        records.append(ImageRecord(i + 1, f"{i}.png", w, h, np.array(boxes, float), np.array(labels)))
    return DetectionDataset(["r", "g", "b"], records, root)


def test_items_repeat_per_seed_epoch_index_and_leave_global_rngs_alone(dataset: DetectionDataset) -> None:
    ds = MosaicDataset(dataset, PROTOCOL, MosaicAugment(), seed=3)
    random.seed(1)
    np.random.seed(1)
    before = (random.random(), np.random.random())
    random.seed(1)
    np.random.seed(1)
    first = ds[2]
    assert (random.random(), np.random.random()) == before  # the global streams did not move
    other = MosaicDataset(dataset, PROTOCOL, MosaicAugment(), seed=3)
    other[5]  # a different order and state beforehand
    again = other[2]
    assert torch.equal(first[0], again[0]) and torch.equal(first[1].boxes, again[1].boxes)
    assert first[0].shape == (3, SIZE, SIZE) and first[0].dtype == torch.float32
    other.set_epoch(1)
    assert not torch.equal(other[2][0], first[0])  # another epoch, another mosaic


def test_boxes_lie_on_their_objects_pixels(dataset: DetectionDataset) -> None:
    ds = MosaicDataset(dataset, PROTOCOL, STILL, seed=0)
    checked = 0
    for epoch in range(3):
        ds.set_epoch(epoch)
        for index in range(len(dataset)):
            image, target, _ = ds[index]
            assert ((target.boxes >= 0) & (target.boxes <= SIZE)).all()
            for box, label in zip(target.boxes.round().long().tolist(), target.labels.tolist(), strict=True):
                x1, y1, x2, y2 = box
                if (x2 - x1) < 4 or (y2 - y1) < 4:
                    continue
                inside = image[:, y1 + 1:y2 - 1, x1 + 1:x2 - 1].mean(dim=(1, 2))
                assert int(inside.argmax()) == label and inside[label] > 0.5, (epoch, index, box, inside)
                checked += 1
    assert checked > 20


def _letterboxed(record: ImageRecord) -> np.ndarray:
    """Where letterboxing alone puts a record's boxes: scaled to the long side, centred."""
    r = SIZE / max(record.width, record.height)
    pad = np.array([(SIZE - record.width * r) / 2, (SIZE - record.height * r) / 2] * 2)
    return record.boxes * r + pad


def test_closed_mosaic_letterboxes_one_image(dataset: DetectionDataset) -> None:
    params = replace(STILL, translate=0.0, scale=0.0, close_mosaic=2)
    ds = MosaicDataset(dataset, PROTOCOL, params, seed=0, epochs=5)

    def single(index: int) -> bool:
        target = ds[index][1]
        record = dataset.records[index]
        return (target.labels.tolist() == record.labels.tolist()
                and np.allclose(target.boxes.numpy(), _letterboxed(record), atol=1.0))

    ds.set_epoch(2)
    assert ds.mosaic_open(2) and not all(single(i) for i in range(len(dataset)))
    ds.set_epoch(3)  # the last 2 of 5 epochs
    assert not ds.mosaic_open(3) and all(single(i) for i in range(len(dataset)))


def test_crowd_regions_are_not_targets(dataset: DetectionDataset, tmp_path: Path) -> None:
    record = dataset.records[0]
    crowd = ImageRecord(record.image_id, record.file_name, record.width, record.height, record.boxes,
                        record.labels, iscrowd=np.array([True, False]))
    one = DetectionDataset(dataset.classes, [crowd], dataset.image_root)
    ds = MosaicDataset(one, PROTOCOL, replace(STILL, mosaic=0.0, translate=0.0, scale=0.0))
    assert ds[0][1].labels.tolist() == [record.labels[1]]
