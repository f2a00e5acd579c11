"""A torch ``Dataset`` over a ``DetectionDataset``: decode, augment or resize per the model's input spec.

Reproducibility does not depend on the number of workers or their order: every item draws from its own
generator seeded by ``(seed, epoch, index)``. Call ``set_epoch`` before each epoch's ``DataLoader`` iterator
is created (workers copy the dataset when they start).

Targets leave out crowd regions (they are ignore regions for the evaluator, not objects to learn) and keep
``difficult`` objects, as the original Caffe SSD trains on them. In training, every record is first repaired
as ``bench.data.health`` says (boxes clipped to the image, boxes under 1 px and duplicates dropped), so a
degenerate box can never reach a loss.

A missing image is a structural error (``BenchInputError``) in any mode. A corrupt or truncated image found
during training is skipped, never a crash mid-epoch: its slot goes to the next decodable image (so batch
shapes and the iteration count stay put, as mmdetection's retry does) and it is flagged in a shared-memory
mask that every worker writes to; ``skipped()`` reads it for the data-health report. In evaluation a corrupt
test image stays an error, since scoring without it would silently change the numbers.
"""

from __future__ import annotations

import os
import warnings
from typing import Literal

import numpy as np
import torch
from torch import Tensor
from torch.utils.data import Dataset
from torchvision.io import ImageReadMode, decode_image

from bench.data.health import repair_record
from bench.data.records import DetectionDataset
from bench.data.transforms import (
    SSD_AUGMENT,
    SSDAugmentConfig,
    letterbox,
    resize_stretch,
    ssd_augment,
    yolo_augment,
)
from bench.errors import BenchInputError, resolve_inside
from detectors.base import ImageMeta, InputSpec, Target

Augment = Literal["ssd", "yolo", "none"]
Item = tuple[Tensor, Target, ImageMeta]


class CorruptImageError(BenchInputError):
    """The image file exists but cannot be decoded (corrupt or truncated)."""


def load_image(path: str, expected_hw: tuple[int, int] | None = None) -> Tensor:
    """Decode an image file to uint8 RGB ``(3, H, W)``; a missing, corrupt or wrongly sized file is named."""
    if not os.path.isfile(path):
        raise BenchInputError(path, "image not found", field="file_name")
    try:
        with warnings.catch_warnings():  # torchvision 0.29 deprecates its decoders for TorchCodec
            warnings.simplefilter("ignore", DeprecationWarning)
            image = decode_image(path, mode=ImageReadMode.RGB)
    except (RuntimeError, OSError, ValueError) as err:
        raise CorruptImageError(path, f"cannot decode image: {err}", field="file_name") from None
    if expected_hw is not None and tuple(image.shape[-2:]) != tuple(expected_hw):
        raise BenchInputError(path, f"image is {image.shape[-1]}x{image.shape[-2]} but the annotation says "
                                    f"{expected_hw[1]}x{expected_hw[0]}", field="size")
    return image


def item_generator(seed: int, epoch: int, index: int) -> torch.Generator:
    """A generator that depends only on ``(seed, epoch, index)``."""
    state = np.random.SeedSequence([seed, epoch, index]).generate_state(2, np.uint32)
    return torch.Generator().manual_seed(int(state[0]) << 31 ^ int(state[1]))


class DetectionTorchDataset(Dataset[Item]):
    """``(image float32 (3, S, S) RGB in [0, 1], Target in network-input pixels, ImageMeta)`` per record.

    ``train=False`` only resizes (``input_spec.resize``); ``train=True`` does ``augment``: ``"ssd"`` (the SSD
    pipeline, zoom-out filled with ``input_spec.mean``), ``"yolo"`` (HSV + letterbox + flip) or ``"none"``.
    """

    def __init__(self, ds: DetectionDataset, input_spec: InputSpec, train: bool, augment: Augment = "ssd",
                 seed: int = 0, ssd_config: SSDAugmentConfig = SSD_AUGMENT) -> None:
        if augment not in ("ssd", "yolo", "none"):
            raise ValueError(f"unknown augmentation {augment!r} (expected 'ssd', 'yolo' or 'none')")
        if input_spec.resize not in ("stretch", "letterbox"):
            raise ValueError(f"unknown resize mode {input_spec.resize!r}")
        self.ds, self.input_spec, self.train, self.augment, self.seed = ds, input_spec, train, augment, seed
        self.ssd_config = ssd_config  # the suite's zoom-out settings (recipe.ssd_augment)
        self.epoch = 0
        # one flag per record, in shared memory so that DataLoader workers' skips reach the main process
        self._corrupt = torch.zeros(len(ds), dtype=torch.bool).share_memory_()

    def set_epoch(self, epoch: int) -> None:
        self.epoch = epoch

    def __len__(self) -> int:
        return len(self.ds)

    def skipped(self) -> list[int]:
        """Indices of the records skipped so far because their image could not be decoded."""
        return torch.nonzero(self._corrupt).flatten().tolist()

    def __getitem__(self, index: int) -> Item:
        if not self.train:
            return self._item(index, index)
        for step in range(len(self.ds)):
            candidate = (index + step) % len(self.ds)
            if self._corrupt[candidate]:
                continue
            try:
                return self._item(candidate, index)
            except CorruptImageError:
                self._corrupt[candidate] = True
        source = self.ds.source or self.ds.image_root
        raise BenchInputError(source, f"none of the {len(self.ds)} training images can be decoded")

    def _item(self, index: int, slot: int) -> Item:
        """Record ``index`` with the randomness of batch position ``slot`` (they differ after a skip)."""
        record = self.ds.records[index]
        if self.train:
            record = repair_record(record)
        source = self.ds.source or self.ds.image_root
        path = resolve_inside(self.ds.image_root, record.file_name, source=source, entry=record.image_id)
        image = load_image(str(path), (record.height, record.width))
        objects = ~record.iscrowd
        boxes = torch.from_numpy(record.boxes[objects])
        labels = torch.from_numpy(record.labels[objects])
        size, image_id = self.input_spec.size, record.image_id
        mode = self.augment if self.train else "none"
        if mode == "ssd":
            gen = item_generator(self.seed, self.epoch, slot)
            out, out_boxes, labels, meta = ssd_augment(image, boxes, labels, size, gen, self.input_spec.mean,
                                                       image_id, cfg=self.ssd_config)
        elif mode == "yolo":
            gen = item_generator(self.seed, self.epoch, slot)
            out, out_boxes, meta = yolo_augment(image, boxes, size, gen, self.input_spec.pad_value, image_id)
        elif self.input_spec.resize == "letterbox":
            out, out_boxes, meta = letterbox(image, boxes, size, self.input_spec.pad_value, image_id)
        else:
            out, out_boxes, meta = resize_stretch(image, boxes, size, image_id)
        return out, Target(out_boxes.float(), labels.long()), meta


def collate(batch: list[Item]) -> tuple[Tensor, list[Target], list[ImageMeta]]:
    """Stack images into ``(B, 3, S, S)``; targets and metas stay per image (their lengths differ)."""
    images, targets, metas = zip(*batch, strict=True)
    return torch.stack(images), list(targets), list(metas)
