"""Image + box transforms on CHW tensors: SSD training augmentation, stretch resize, YOLO letterbox.

Every geometric step here (zoom-out, crop, resize, letterbox) is an axis-aligned affine map, so each
pipeline first computes the final source and destination rectangles and then resamples the pixels *once*
into the output canvas: the zoom-out canvas (up to 16x the image area) is never materialised. Boxes are
mapped with the very rectangles the pixels were resampled with, so boxes and pixels agree exactly, and the
returned ``ImageMeta`` inverts the map exactly (``orig = (net - pad) / scale``).

Randomness comes only from the ``torch.Generator`` passed in, so a fixed seed reproduces an item exactly.
Images come in as uint8 or float and leave as float32 RGB in [0, 1]; mean/std normalisation is the
model's job.
"""

from __future__ import annotations

import math
from dataclasses import dataclass

import torch
import torch.nn.functional as F
from torch import Tensor
from torchvision.ops import box_iou
from torchvision.transforms.v2 import functional as TF

from detectors.base import ImageMeta

Rect = tuple[int, int, int, int]  # x1, y1, x2, y2 in integer pixels, x2/y2 exclusive


@dataclass(frozen=True)
class SSDAugmentConfig:
    """SSD's training augmentation (Liu et al. 2016; architectures.md §1), in the spec's order."""

    brightness: float = 32 / 255  # additive delta, ±
    contrast: tuple[float, float] = (0.5, 1.5)
    saturation: tuple[float, float] = (0.5, 1.5)
    hue: float = 18 / 360  # fraction of the hue circle, ±
    expand_p: float = 0.5
    expand_max_ratio: float = 4.0
    # None keeps the whole image; -inf is the unconstrained ("free") crop; the rest are minimum IoUs
    crop_min_ious: tuple[float | None, ...] = (None, 0.1, 0.3, 0.5, 0.7, 0.9, -math.inf)
    crop_scale: tuple[float, float] = (0.3, 1.0)  # crop side as a fraction of the (expanded) image side
    crop_aspect: tuple[float, float] = (0.5, 2.0)  # crop height / width
    crop_trials: int = 50  # candidate crops per chosen IoU option
    crop_option_draws: int = 20  # options tried before falling back to the whole image
    flip_p: float = 0.5


@dataclass(frozen=True)
class YoloAugmentConfig:
    """Ultralytics' light defaults (``hsv_h=0.015, hsv_s=0.7, hsv_v=0.4, fliplr=0.5``), without mosaic."""

    hue: float = 0.015  # fraction of the hue circle, ±
    saturation: float = 0.7  # gain 1 ± this
    value: float = 0.4  # gain 1 ± this
    flip_p: float = 0.5


SSD_AUGMENT = SSDAugmentConfig()
YOLO_AUGMENT = YoloAugmentConfig()


def to_float(image: Tensor) -> Tensor:
    """uint8 [0, 255] or float [0, 1] CHW -> float32 [0, 1]."""
    if image.dtype == torch.uint8:
        return image.float().div_(255)
    return image.float()


def _rand(gen: torch.Generator, *shape: int) -> Tensor:
    return torch.rand(shape, generator=gen)


def _span(u: Tensor | float, lo: float, hi: float) -> Tensor | float:
    return lo + u * (hi - lo)


def _resample(image: Tensor, src: Rect, dst: Rect, size: int, fill: Tensor | float) -> Tensor:
    """Resize ``image[src]`` into ``dst`` of a ``size x size`` canvas of ``fill`` (bilinear, antialiased)."""
    sx1, sy1, sx2, sy2 = src
    dx1, dy1, dx2, dy2 = dst
    fill = torch.as_tensor(fill, dtype=image.dtype).reshape(-1, 1, 1)
    canvas = fill.expand(image.shape[0], size, size).clone()
    patch = image[:, sy1:sy2, sx1:sx2]
    if patch.shape[-2:] != (dy2 - dy1, dx2 - dx1):
        patch = F.interpolate(patch[None], size=(dy2 - dy1, dx2 - dx1), mode="bilinear",
                              align_corners=False, antialias=True)[0]
    canvas[:, dy1:dy2, dx1:dx2] = patch
    return canvas


def _affine(src: Rect, dst: Rect) -> tuple[float, float, float, float]:
    """``(sx, sy, ox, oy)`` of the map ``dst = src * s + o`` in continuous pixel coordinates."""
    sx = (dst[2] - dst[0]) / (src[2] - src[0])
    sy = (dst[3] - dst[1]) / (src[3] - src[1])
    return sx, sy, dst[0] - src[0] * sx, dst[1] - src[1] * sy


def _map_boxes(boxes: Tensor, src: Rect, dst: Rect) -> Tensor:
    """Clip xyxy ``boxes`` to ``src`` and carry them through the src -> dst map (in float64, then float32)."""
    sx, sy, ox, oy = _affine(src, dst)
    lo = torch.tensor(src[:2] * 2, dtype=torch.float64)
    hi = torch.tensor(src[2:] * 2, dtype=torch.float64)
    clipped = torch.minimum(torch.maximum(boxes.double(), lo), hi)
    return (clipped * clipped.new_tensor([sx, sy, sx, sy]) + clipped.new_tensor([ox, oy, ox, oy])).float()


def _meta(image_id: int, orig_hw: tuple[int, int], src: Rect, dst: Rect, flipped: bool = False) -> ImageMeta:
    sx, sy, ox, oy = _affine(src, dst)
    return ImageMeta(image_id=image_id, orig_size=orig_hw, scale=(sy, sx), pad=(oy, ox), flipped=flipped)


def _flip(image: Tensor, boxes: Tensor) -> tuple[Tensor, Tensor]:
    width = image.shape[-1]
    flipped = torch.stack([width - boxes[:, 2], boxes[:, 1], width - boxes[:, 0], boxes[:, 3]], 1)
    return image.flip(-1), flipped


def resize_stretch(image: Tensor, boxes: Tensor, size: int,
                   image_id: int = 0) -> tuple[Tensor, Tensor, ImageMeta]:
    """SSD's evaluation geometry: stretch to ``size x size`` whatever the aspect ratio."""
    image = to_float(image)
    h, w = image.shape[-2:]
    src, dst = (0, 0, w, h), (0, 0, size, size)
    return (_resample(image, src, dst, size, 0.0), _map_boxes(boxes, src, dst),
            _meta(image_id, (h, w), src, dst))


def letterbox_rect(height: int, width: int, size: int) -> Rect:
    """Where ultralytics' letterbox puts an image: aspect kept, long side ``size``, centred."""
    ratio = min(size / height, size / width)
    new_w, new_h = max(1, round(width * ratio)), max(1, round(height * ratio))
    left, top = (size - new_w) // 2, (size - new_h) // 2
    return left, top, left + new_w, top + new_h


def letterbox(image: Tensor, boxes: Tensor, size: int, pad_value: float = 114 / 255,
              image_id: int = 0) -> tuple[Tensor, Tensor, ImageMeta]:
    """YOLO's geometry: keep the aspect ratio, pad the short side with ``pad_value`` on both sides."""
    image = to_float(image)
    h, w = image.shape[-2:]
    src, dst = (0, 0, w, h), letterbox_rect(h, w, size)
    return (_resample(image, src, dst, size, pad_value), _map_boxes(boxes, src, dst),
            _meta(image_id, (h, w), src, dst))


def adjust_hue(image: Tensor, delta: float) -> Tensor:
    """Rotate the HSV hue of float RGB ``image`` by ``delta`` turns: torchvision's result, about 2x faster.

    Closed form ``channel_n = V - C * clamp(min(k, 4 - k), 0, 1)`` with ``k = (n + H / 60) mod 6`` for
    ``n = 5, 3, 1``: value V and chroma C are kept and no HSV image is built.
    """
    r, g, b = image
    value = torch.maximum(torch.maximum(r, g), b)
    chroma = value - torch.minimum(torch.minimum(r, g), b)
    inv = 1 / chroma.clamp(min=1e-12)
    hue6 = torch.where(value == r, (g - b) * inv,
                       torch.where(value == g, (b - r) * inv + 2, (r - g) * inv + 4))
    n = torch.tensor([5.0, 3.0, 1.0], dtype=image.dtype).view(3, 1, 1)
    k = (n + (hue6 + 6 * delta)).remainder_(6)
    return value - chroma * torch.minimum(k, 4 - k).clamp_(0, 1)


def photometric_distort(image: Tensor, gen: torch.Generator, cfg: SSDAugmentConfig = SSD_AUGMENT) -> Tensor:
    """SSD's colour jitter: brightness, then contrast before or after saturation and hue; each p = 0.5.

    Brightness is additive (``±32`` on the 0..255 scale, as in the Caffe and PyTorch ports); contrast and
    saturation use torchvision's definitions (blend with the grey mean / grey image); hue rotates HSV hue.
    """
    image = to_float(image)
    coins, u = _rand(gen, 5) < 0.5, _rand(gen, 4).tolist()
    if coins[0]:
        image = (image + _span(u[0], -cfg.brightness, cfg.brightness)).clamp_(0, 1)
    contrast_first = bool(coins[1])
    if contrast_first and coins[2]:
        image = TF.adjust_contrast(image, _span(u[1], *cfg.contrast))
    if coins[3]:
        image = TF.adjust_saturation(image, _span(u[2], *cfg.saturation))
    if coins[4]:
        image = adjust_hue(image, _span(u[3], -cfg.hue, cfg.hue))
    if not contrast_first and coins[2]:
        image = TF.adjust_contrast(image, _span(u[1], *cfg.contrast))
    return image


def _sample_expand(h: int, w: int, gen: torch.Generator, cfg: SSDAugmentConfig) -> tuple[int, int, int, int]:
    """``(canvas_w, canvas_h, left, top)`` of the zoom-out canvas; the identity with p = ``1 - expand_p``."""
    coin, ratio_u, left_u, top_u = _rand(gen, 4).tolist()
    if coin >= cfg.expand_p:
        return w, h, 0, 0
    ratio = _span(ratio_u, 1.0, cfg.expand_max_ratio)
    canvas_w, canvas_h = int(w * ratio), int(h * ratio)
    return canvas_w, canvas_h, int(left_u * (canvas_w - w)), int(top_u * (canvas_h - h))


def _sample_crop(boxes: Tensor, canvas_w: int, canvas_h: int, gen: torch.Generator,
                 cfg: SSDAugmentConfig) -> tuple[Rect, Tensor]:
    """SSD's min-IoU crop: ``(crop, keep)``, ``keep`` marking the boxes whose centre lies inside the crop.

    All ``crop_trials`` candidates of an option are drawn and tested at once and the first valid one is
    taken: what the ports' sequential loop returns. A candidate is valid when its aspect is in range, at
    least one box reaches the option's IoU (Caffe and torchvision; not amdegroot's variant) and at least
    one box centre is inside.
    """
    whole = (0, 0, canvas_w, canvas_h)
    keep_all = torch.ones(len(boxes), dtype=torch.bool)
    if len(boxes) == 0:
        return whole, keep_all
    centres = (boxes[:, :2] + boxes[:, 2:]) / 2
    size = torch.tensor([canvas_w, canvas_h], dtype=torch.float64)
    choices = torch.randint(len(cfg.crop_min_ious), (cfg.crop_option_draws,), generator=gen).tolist()
    for choice in choices:
        min_iou = cfg.crop_min_ious[choice]
        if min_iou is None:
            return whole, keep_all
        u = _rand(gen, cfg.crop_trials, 4).double()
        wh = (_span(u[:, :2], *cfg.crop_scale) * size).round().clamp(min=1)
        aspect = wh[:, 1] / wh[:, 0]
        xy = (u[:, 2:] * (size - wh)).floor()
        rects = torch.cat([xy, xy + wh], dim=1)
        inside = ((centres[None] > rects[:, None, :2]) & (centres[None] < rects[:, None, 2:])).all(-1)
        valid = ((aspect >= cfg.crop_aspect[0]) & (aspect <= cfg.crop_aspect[1]) & inside.any(1)
                 & (box_iou(rects, boxes.double()).amax(1) >= min_iou))
        if valid.any():
            k = int(valid.nonzero()[0])
            x1, y1, x2, y2 = (int(v) for v in rects[k].tolist())
            return (x1, y1, x2, y2), inside[k]
    return whole, keep_all


def ssd_augment(image: Tensor, boxes: Tensor, labels: Tensor, size: int, gen: torch.Generator,
                fill: tuple[float, float, float], image_id: int = 0,
                cfg: SSDAugmentConfig = SSD_AUGMENT) -> tuple[Tensor, Tensor, Tensor, ImageMeta]:
    """Photometric distortion, zoom-out on a ``fill`` canvas, min-IoU crop, flip, stretch to ``size``.

    ``fill`` should be the model's mean (RGB, [0, 1]) so that the canvas normalises to zero. Returns the
    image, the kept boxes (xyxy in output pixels) with their labels, and the meta of the original -> output
    map before the flip (``meta.flipped`` records it). Images without boxes are never cropped.
    """
    image = photometric_distort(image, gen, cfg)
    h, w = image.shape[-2:]
    canvas_w, canvas_h, left, top = _sample_expand(h, w, gen, cfg)
    offset = torch.tensor([left, top, left, top], dtype=torch.float64)
    crop, keep = _sample_crop(boxes.double() + offset, canvas_w, canvas_h, gen, cfg)
    # the part of the crop covered by the image, in image pixels (src) and in output pixels (dst)
    src = (max(crop[0] - left, 0), max(crop[1] - top, 0), min(crop[2] - left, w), min(crop[3] - top, h))
    sx, sy = size / (crop[2] - crop[0]), size / (crop[3] - crop[1])
    dx1, dy1 = round((src[0] + left - crop[0]) * sx), round((src[1] + top - crop[1]) * sy)
    dx2 = max(dx1 + 1, round((src[2] + left - crop[0]) * sx))
    dy2 = max(dy1 + 1, round((src[3] + top - crop[1]) * sy))
    dst = (dx1, dy1, dx2, dy2)
    out = _resample(image, src, dst, size, torch.tensor(fill))
    out_boxes = _map_boxes(boxes[keep], src, dst)
    flipped = bool(_rand(gen, 1) < cfg.flip_p)
    if flipped:
        out, out_boxes = _flip(out, out_boxes)
    return out, out_boxes, labels[keep], _meta(image_id, (h, w), src, dst, flipped)


def yolo_augment(image: Tensor, boxes: Tensor, size: int, gen: torch.Generator,
                 pad_value: float = 114 / 255, image_id: int = 0,
                 cfg: YoloAugmentConfig = YOLO_AUGMENT) -> tuple[Tensor, Tensor, ImageMeta]:
    """Light YOLO training augmentation: HSV jitter, letterbox, horizontal flip (no box is ever dropped)."""
    u = (_rand(gen, 3) * 2 - 1).tolist()
    image = adjust_hue(to_float(image), u[0] * cfg.hue)
    image = TF.adjust_saturation(image, 1 + u[1] * cfg.saturation)
    image = TF.adjust_brightness(image, 1 + u[2] * cfg.value)
    out, out_boxes, meta = letterbox(image, boxes, size, pad_value, image_id)
    if bool(_rand(gen, 1) < cfg.flip_p):
        out, out_boxes = _flip(out, out_boxes)
        meta = ImageMeta(meta.image_id, meta.orig_size, meta.scale, meta.pad, flipped=True)
    return out, out_boxes, meta
