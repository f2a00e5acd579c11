"""Transforms: boxes stay valid and on their pixels, metas invert exactly, letterbox matches ultralytics."""

from __future__ import annotations

import numpy as np
import pytest
import torch
from torchvision.transforms.v2 import functional as TF

from bench.data.transforms import (
    SSDAugmentConfig,
    adjust_hue,
    letterbox,
    letterbox_rect,
    photometric_distort,
    resize_stretch,
    ssd_augment,
    yolo_augment,
)

NO_COLOUR = SSDAugmentConfig(brightness=0.0, contrast=(1.0, 1.0), saturation=(1.0, 1.0), hue=0.0)


def _gen(seed: int) -> torch.Generator:
    return torch.Generator().manual_seed(seed)


def _scene(h: int = 75, w: int = 100) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    """Grey image with three white rectangles whose boxes are exactly their pixels."""
    image = torch.full((3, h, w), 0.5)
    boxes = torch.tensor([[10.0, 8.0, 30.0, 40.0], [55.0, 20.0, 95.0, 35.0], [40.0, 50.0, 48.0, 70.0]])
    for x1, y1, x2, y2 in boxes.long().tolist():
        image[:, y1:y2, x1:x2] = 1.0
    return image, boxes, torch.arange(3)


def _unflip(boxes: torch.Tensor, width: int) -> torch.Tensor:
    return torch.stack([width - boxes[:, 2], boxes[:, 1], width - boxes[:, 0], boxes[:, 3]], 1)


def _assert_valid(boxes: torch.Tensor, size: int) -> None:
    assert boxes.dtype == torch.float32
    assert (boxes[:, 2:] > boxes[:, :2]).all()
    assert (boxes >= 0).all() and (boxes <= size).all()


def test_adjust_hue_matches_torchvision() -> None:
    image = torch.rand(3, 20, 30, generator=_gen(0))
    image[:, :3, :3] = 0.4  # grey pixels have no hue
    for delta in (-0.05, 0.02, 0.5):
        torch.testing.assert_close(adjust_hue(image, delta), TF.adjust_hue(image, delta), atol=1e-5, rtol=0)


@pytest.mark.parametrize(("h", "w"), [(75, 100), (100, 75), (31, 200), (64, 64)])
def test_resize_and_letterbox_metas_invert_exactly(h: int, w: int) -> None:
    boxes = torch.tensor([[0.0, 0.0, w, h], [3.5, 2.25, w / 2, h / 3]])
    for transform in (resize_stretch, letterbox):
        image, out_boxes, meta = transform(torch.rand(3, h, w), boxes, 96, image_id=4)
        assert image.shape == (3, 96, 96) and meta.image_id == 4 and meta.orig_size == (h, w)
        torch.testing.assert_close(meta.to_original(out_boxes.double()), boxes.double(), atol=1e-4, rtol=0)


def test_letterbox_geometry_matches_ultralytics() -> None:
    from ultralytics.data.augment import LetterBox

    for h, w in ((375, 500), (31, 500), (500, 333)):
        reference = LetterBox(new_shape=(96, 96), auto=False)(image=np.full((h, w, 3), 200, np.uint8))
        column, row = reference[:, 48, 0] == 200, reference[48, :, 0] == 200
        expected = (row.argmax(), column.argmax(), 96 - row[::-1].argmax(), 96 - column[::-1].argmax())
        assert letterbox_rect(h, w, 96) == expected
        image, _, meta = letterbox(torch.full((3, h, w), 200, dtype=torch.uint8), torch.zeros(0, 4), 96)
        x1, y1, x2, y2 = expected
        assert torch.allclose(image[:, y1:y2, x1:x2], torch.tensor(200 / 255))
        assert (image[:, :y1] == 114 / 255).all() and (image[:, :, :x1] == 114 / 255).all()
        assert meta.pad == (y1, x1)


def test_ssd_augment_keeps_boxes_on_their_pixels() -> None:
    """Without colour jitter, each output box must cover white pixels, and pixels 2 px outside must not."""
    image, boxes, labels = _scene()
    crops = flips = 0
    for seed in range(40):
        out, out_boxes, out_labels, meta = ssd_augment(image, boxes, labels, 64, _gen(seed), (0.0, 0.0, 0.0),
                                                       cfg=NO_COLOUR)
        assert out.shape == (3, 64, 64) and len(out_boxes) == len(out_labels) >= 1
        _assert_valid(out_boxes, 64)
        crops += len(out_labels) < 3
        flips += meta.flipped
        for x1, y1, x2, y2 in out_boxes.tolist():
            inner = out[0, round(y1) + 1:round(y2) - 1, round(x1) + 1:round(x2) - 1]
            if inner.numel():
                assert inner.min() > 0.95, seed  # antialiasing blurs edges by under one output pixel
            for y, x in ((round(y1) - 2, (x1 + x2) / 2), ((y1 + y2) / 2, round(x1) - 2)):
                if 0 <= y < 64 and 0 <= x < 64 and y2 - y1 > 4 and x2 - x1 > 4:
                    assert out[0, int(y), int(x)] < 0.9, seed
    assert 0 < crops < 40 and 8 < flips < 32


def test_ssd_augment_meta_maps_back_and_is_reproducible() -> None:
    image, boxes, labels = _scene()
    for seed in range(20):
        out, out_boxes, out_labels, meta = ssd_augment(image, boxes, labels, 64, _gen(seed), (0.5, 0.4, 0.3))
        if meta.flipped:
            out_boxes = _unflip(out_boxes, 64)
        back = meta.to_original(out_boxes.double())
        original = boxes[out_labels].double()
        assert (back[:, :2] >= original[:, :2] - 1e-3).all() and (back[:, 2:] <= original[:, 2:] + 1e-3).all()
        again = ssd_augment(image, boxes, labels, 64, _gen(seed), (0.5, 0.4, 0.3))
        assert torch.equal(again[0], out) and again[3] == meta
    different = ssd_augment(image, boxes, labels, 64, _gen(99), (0.5, 0.4, 0.3))[0]
    assert not torch.equal(different, ssd_augment(image, boxes, labels, 64, _gen(98), (0.5, 0.4, 0.3))[0])


def test_ssd_augment_zoom_out_fills_with_the_mean_and_keeps_empty_images() -> None:
    image = torch.full((3, 40, 40), 255, dtype=torch.uint8)
    fill = (0.25, 0.5, 0.75)
    seen_fill = False
    for seed in range(10):
        out, out_boxes, _, meta = ssd_augment(image, torch.zeros(0, 4), torch.zeros(0, dtype=torch.long), 32,
                                              _gen(seed), fill)
        assert out_boxes.shape == (0, 4) and out.dtype == torch.float32
        corner = out[:, 0, 0] if meta.pad[0] > 0.5 else out[:, -1, -1]
        if meta.scale[0] < 0.7:  # zoomed out: some canvas is visible
            seen_fill |= torch.allclose(corner, torch.tensor(fill))
    assert seen_fill


def test_photometric_distort_stays_in_range() -> None:
    image = torch.rand(3, 16, 16, generator=_gen(1))
    outputs = [photometric_distort(image, _gen(seed)) for seed in range(12)]
    assert all(o.min() >= 0 and o.max() <= 1 for o in outputs)
    assert sum(not torch.equal(o, image) for o in outputs) >= 10
    brightness_only = SSDAugmentConfig(contrast=(1.0, 1.0), saturation=(1.0, 1.0), hue=0.0)
    grey = torch.full((3, 4, 4), 0.5)
    shifts = {round(float(photometric_distort(grey, _gen(s), brightness_only).mean() - 0.5), 6)
              for s in range(30)}
    assert max(abs(v) for v in shifts) <= 32 / 255 + 1e-6 and len(shifts) > 5


def test_yolo_augment_letterboxes_and_flips() -> None:
    image, boxes, _ = _scene()
    flips = 0
    for seed in range(20):
        out, out_boxes, meta = yolo_augment(image, boxes, 64, _gen(seed))
        _assert_valid(out_boxes, 64)
        assert len(out_boxes) == 3 and meta.scale == (0.64, 0.64) and meta.pad == (8.0, 0.0)
        assert torch.allclose(out[:, :8], torch.tensor(114 / 255))
        flips += meta.flipped
        unflipped = _unflip(out_boxes, 64) if meta.flipped else out_boxes
        torch.testing.assert_close(meta.to_original(unflipped.double()), boxes.double(), atol=1e-4, rtol=0)
    assert 3 < flips < 17
