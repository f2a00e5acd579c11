"""Box conversions on NumPy arrays, in one place (``torchvision.ops.box_convert`` is the torch twin).

Boxes are ``(N, 4)`` float arrays. ``xyxy`` is what the suite uses internally (COCO convention:
``x2 = x + w``); ``xywh`` is COCO's on-disk form and ``cxcywh`` YOLO's.
"""

from __future__ import annotations

import numpy as np


def xywh_to_xyxy(boxes: np.ndarray) -> np.ndarray:
    boxes = np.asarray(boxes).reshape(-1, 4)
    return np.concatenate([boxes[:, :2], boxes[:, :2] + boxes[:, 2:]], axis=1)


def xyxy_to_xywh(boxes: np.ndarray) -> np.ndarray:
    boxes = np.asarray(boxes).reshape(-1, 4)
    return np.concatenate([boxes[:, :2], boxes[:, 2:] - boxes[:, :2]], axis=1)


def cxcywh_to_xyxy(boxes: np.ndarray) -> np.ndarray:
    boxes = np.asarray(boxes).reshape(-1, 4)
    half = boxes[:, 2:] / 2
    return np.concatenate([boxes[:, :2] - half, boxes[:, :2] + half], axis=1)


def xyxy_to_cxcywh(boxes: np.ndarray) -> np.ndarray:
    boxes = np.asarray(boxes).reshape(-1, 4)
    wh = boxes[:, 2:] - boxes[:, :2]
    return np.concatenate([boxes[:, :2] + wh / 2, wh], axis=1)


def index_of(ids: np.ndarray | list[int]) -> dict[int, int]:
    """``{id: position}`` for a sequence of unique ids (image or category id -> row)."""
    return {int(i): k for k, i in enumerate(ids)}
