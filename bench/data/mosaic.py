"""YOLOv5's training augmentation (the suites' ``"mosaic"`` policy), built from ultralytics' own transforms.

The pipeline of ultralytics/yolov5 ``train.py`` (``LoadImagesAndLabels(augment=True)``, v6.2), assembled from
``ultralytics.data.augment`` as ultralytics 8 assembles it (``v8_transforms``) and fed with this project's
records:

1. each image is resized so that its long side is the input size (``load_image``, bilinear);
2. with probability ``mosaic``: ``Mosaic`` joins it with three images drawn from the whole training set on a
   2S x 2S canvas (grey 114) around a random centre; ``RandomPerspective`` (degrees, translate, scale, shear,
   perspective) then maps the canvas, or the single image when no mosaic is drawn, onto S x S and drops boxes
   that lost most of their area (``box_candidates``);
3. ``RandomHSV`` (hue, saturation, value gains), then ``RandomFlip`` up-down and left-right.

The last ``close_mosaic`` epochs train without mosaic (ultralytics 8; yolov5's own ``train.py`` never closes
it). yolov5 also applies albumentations' Blur/MedianBlur/ToGray/CLAHE at p = 0.01 when that package is
installed; it is not a dependency here, so they are left out. ultralytics >= 8.3.79 shifts hue additively
(yolov5 multiplied it); the transforms are used as the installed ultralytics has them.

Determinism: ultralytics draws from Python's ``random`` and NumPy's global generator. Every item seeds both
from ``(seed, epoch, index)`` and restores their previous states afterwards, so an item depends on these three
numbers only, whatever the DataLoader worker or order (the contract of ``bench.data.loader``), and no other
code's random stream moves. Mosaic partners are drawn from the whole set (``cache = "ram"`` tells
ultralytics' ``Mosaic`` so), never from a worker-local buffer of recent images.
"""

from __future__ import annotations

import math
import random
from collections.abc import Iterator
from contextlib import contextmanager
from typing import Any

import cv2
import numpy as np
import torch
from torch.utils.data import Dataset

from bench.data.health import repair_record
from bench.data.loader import Item, load_image
from bench.data.records import DetectionDataset
from bench.errors import resolve_inside
from bench.suite.spec import MosaicAugment
from detectors.base import ImageMeta, InputSpec, Target

PAD = 114  # ultralytics' grey


@contextmanager
def seeded_global_rngs(seed: int, epoch: int, index: int) -> Iterator[None]:
    """Seed ``random`` and ``numpy.random`` from ``(seed, epoch, index)``; restore both on exit."""
    py_state, np_state = random.getstate(), np.random.get_state()
    a, b = np.random.SeedSequence([seed, epoch, index]).generate_state(2, np.uint32)
    random.seed(int(a))
    np.random.seed(int(b))
    try:
        yield
    finally:
        random.setstate(py_state)
        np.random.set_state(np_state)


class MosaicDataset(Dataset[Item]):
    """``(image float32 (3, S, S) RGB in [0, 1], Target in network-input pixels, ImageMeta)`` training items.

    The item contract of ``bench.data.loader.DetectionTorchDataset`` (training only): crowd regions are left
    out, every record is repaired as ``bench.data.health`` says. ``epochs`` (the stage's length) is needed
    only to close mosaic for the last ``params.close_mosaic`` epochs. ``ImageMeta`` of a mosaic does not map
    back to one original image; training never uses it.
    """

    cache = "ram"  # read by ultralytics' Mosaic: partners come from the whole set, not a recent-image buffer

    def __init__(self, ds: DetectionDataset, input_spec: InputSpec, params: MosaicAugment, seed: int = 0,
                 epochs: int | None = None) -> None:
        from ultralytics.data.augment import Compose, Mosaic, RandomFlip, RandomHSV, RandomPerspective

        self.ds, self.size, self.params, self.seed, self.epochs = ds, input_spec.size, params, seed, epochs
        self.epoch = 0
        self.mosaic = Mosaic(self, imgsz=self.size, p=params.mosaic)
        self.transforms = Compose([
            self.mosaic,
            RandomPerspective(degrees=params.degrees, translate=params.translate, scale=params.scale,
                              shear=params.shear, perspective=params.perspective,
                              size=(self.size, self.size)),
            RandomHSV(hgain=params.hsv_h, sgain=params.hsv_s, vgain=params.hsv_v),
            RandomFlip(direction="vertical", p=params.flipud),
            RandomFlip(direction="horizontal", p=params.fliplr),
        ])

    def __len__(self) -> int:
        return len(self.ds)

    def set_epoch(self, epoch: int) -> None:
        self.epoch = epoch
        self.mosaic.p = self.params.mosaic if self.mosaic_open(epoch) else 0.0

    def mosaic_open(self, epoch: int) -> bool:
        """False in the last ``close_mosaic`` epochs of a stage of ``epochs`` epochs."""
        close = self.params.close_mosaic
        return not (close and self.epochs is not None and epoch >= self.epochs - close)

    def get_image_and_label(self, index: int) -> dict[str, Any]:
        """One record as ultralytics' label dict: BGR, long side at S, boxes xyxy in its pixels."""
        from ultralytics.utils.instance import Instances

        record = repair_record(self.ds.records[index])
        source = self.ds.source or self.ds.image_root
        path = resolve_inside(self.ds.image_root, record.file_name, source=source, entry=record.image_id)
        image = load_image(str(path), (record.height, record.width)).permute(1, 2, 0).numpy()
        bgr = np.ascontiguousarray(image[:, :, ::-1])
        h0, w0 = bgr.shape[:2]
        r = self.size / max(h0, w0)
        if r != 1:
            w, h = min(math.ceil(w0 * r), self.size), min(math.ceil(h0 * r), self.size)
            bgr = cv2.resize(bgr, (w, h), interpolation=cv2.INTER_LINEAR)
        h, w = bgr.shape[:2]
        keep = ~record.iscrowd
        boxes = (record.boxes[keep] * np.array([w / w0, h / h0, w / w0, h / h0])).astype(np.float32)
        return {"im_file": str(path), "ori_shape": (h0, w0), "resized_shape": (h, w), "img": bgr,
                "ratio_pad": (h / h0, w / w0), "image_id": record.image_id,
                "cls": record.labels[keep].astype(np.float32).reshape(-1, 1),
                "instances": Instances(boxes.reshape(-1, 4), bbox_format="xyxy", normalized=False)}

    def __getitem__(self, index: int) -> Item:
        with seeded_global_rngs(self.seed, self.epoch, index):
            labels = self.transforms(self.get_image_and_label(index))
        instances = labels["instances"]
        instances.convert_bbox(format="xyxy")
        image = torch.from_numpy(np.ascontiguousarray(labels["img"][:, :, ::-1])).permute(2, 0, 1)
        boxes = torch.from_numpy(np.asarray(instances.bboxes, dtype=np.float32).reshape(-1, 4))
        classes = torch.from_numpy(np.asarray(labels["cls"]).reshape(-1)).long()
        meta = ImageMeta(int(labels["image_id"]), tuple(labels["ori_shape"]))
        return image.float() / 255, Target(boxes, classes), meta
