"""YOLOv5 v6.x's AutoAnchor (``utils/autoanchor.py``): check the anchors' fit to the training boxes, refit.

``check_anchors`` is v5's rule: the best possible recall (BPR, the share of boxes that some anchor matches
within the loss's wh-ratio threshold ``thr`` = ``anchor_t`` = 4) is measured on the training boxes at the
model's input size, each image's boxes jittered by a random scale in [0.9, 1.1]. At BPR > 0.98 the anchors
stay. Else ``kmean_anchors`` runs k-means on the whitened wh (scipy), evolves the result for 1,000 generations
(mutation probability 0.9, sigma 0.1, factors clipped to [0.3, 3], anchors at least 2 px) on v5's fitness
(mean best ratio over boxes that pass the threshold), and the new anchors replace the old only if their BPR is
higher.

v5 runs this by default before training (``--noautoanchor`` turns it off), so running it with this rule is
the faithful paper protocol: on COCO-like data the yaml anchors pass and nothing changes. Randomness comes
from one ``numpy.random.Generator`` (v5 mixes NumPy's and Python's global generators), so a seed fixes the
result.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass

import numpy as np
import torch
from scipy.cluster.vq import kmeans
from torch import Tensor

BPR_THRESHOLD = 0.98  # v5 refits below this best possible recall


def letterboxed_box_wh(boxes: Sequence[np.ndarray], image_sizes: Sequence[tuple[int, int]],
                       input_size: int) -> list[np.ndarray]:
    """Per image, the ``(n, 2)`` box widths and heights after letterboxing to ``input_size``.

    ``boxes`` are xyxy in original pixels, ``image_sizes`` the ``(height, width)`` of each image: as v5's
    ``imgsz * shapes / shapes.max()``, every image is scaled so that its long side is ``input_size``.
    """
    out = []
    for xyxy, (height, width) in zip(boxes, image_sizes, strict=True):
        xyxy = np.asarray(xyxy, dtype=np.float64).reshape(-1, 4)
        out.append((xyxy[:, 2:] - xyxy[:, :2]).clip(min=0) * (input_size / max(height, width)))
    return out


def _ratio_metric(wh: Tensor, anchors: Tensor) -> tuple[Tensor, Tensor]:
    """Per box and anchor the worse of the w and h ratios (<= 1), and per box its best anchor's."""
    r = wh[:, None] / anchors[None]
    x = torch.min(r, 1 / r).min(2).values
    return x, x.max(1).values


def best_possible_recall(wh: np.ndarray | Tensor, anchors: np.ndarray | Tensor,
                         thr: float = 4.0) -> tuple[float, float]:
    """(BPR, anchors above threshold per box) of ``(N, 2)`` box wh against ``(K, 2)`` anchors, both in px."""
    x, best = _ratio_metric(torch.as_tensor(wh, dtype=torch.float32),
                            torch.as_tensor(anchors, dtype=torch.float32).view(-1, 2))
    return float((best > 1 / thr).float().mean()), float((x > 1 / thr).float().sum(1).mean())


def kmean_anchors(wh: np.ndarray, n: int = 9, img_size: int = 640, thr: float = 4.0, gen: int = 1000,
                  rng: np.random.Generator | None = None) -> np.ndarray:
    """v5's k-means + genetic evolution of ``n`` anchors for ``(N, 2)`` box wh in px, small to large."""
    rng = rng if rng is not None else np.random.default_rng(0)
    wh0 = np.asarray(wh, dtype=np.float64).reshape(-1, 2)
    wh_fit = wh0[(wh0 >= 2.0).any(1)]  # v5 drops boxes under 2 px on both sides
    try:
        if n > len(wh_fit):
            raise ValueError("fewer boxes than anchors")
        sigma = wh_fit.std(0)
        if not (sigma > 0).all():
            raise ValueError("all boxes share a width or height: nothing to whiten")
        k = kmeans(wh_fit / sigma, n, iter=30, rng=rng)[0] * sigma
        if len(k) != n:  # k-means may merge identical points
            raise ValueError("k-means returned fewer anchors")
    except ValueError:  # v5: "switching strategies from kmeans to random init"
        k = np.sort(rng.random(n * 2)).reshape(n, 2) * img_size
    boxes = torch.tensor(wh_fit, dtype=torch.float32)
    k = k[np.argsort(k.prod(1))]

    def fitness(anchors: np.ndarray) -> float:
        _, best = _ratio_metric(boxes, torch.tensor(anchors, dtype=torch.float32))
        return float((best * (best > 1 / thr).float()).mean())

    f, shape, mutation_prob, sigma_mut = fitness(k), k.shape, 0.9, 0.1
    for _ in range(gen):
        v = np.ones(shape)
        while (v == 1).all():  # mutate until something changes
            v = ((rng.random(shape) < mutation_prob) * rng.random() * rng.standard_normal(shape) * sigma_mut
                 + 1).clip(0.3, 3.0)
        candidate = (k * v).clip(min=2.0)
        fg = fitness(candidate)
        if fg > f:
            f, k = fg, candidate
    return k[np.argsort(k.prod(1))]


@dataclass(frozen=True)
class AnchorCheck:
    """What ``check_anchors`` found and did; ``anchors`` (px, ``(nl, na, 2)``) are the ones to use."""

    bpr: float  # of the current anchors
    anchors_per_target: float
    refit: bool  # BPR was at or under the threshold, so k-means + evolution ran
    new_bpr: float | None
    replaced: bool
    anchors: np.ndarray

    def as_dict(self) -> dict[str, object]:
        return {"bpr": self.bpr, "anchors_per_target": self.anchors_per_target, "refit": self.refit,
                "new_bpr": self.new_bpr, "replaced": self.replaced, "bpr_threshold": BPR_THRESHOLD,
                "anchors": np.round(self.anchors, 2).tolist()}


def check_anchors(box_wh: Sequence[np.ndarray], anchors: np.ndarray, thr: float = 4.0, img_size: int = 640,
                  gen: int = 1000, seed: int = 0) -> AnchorCheck:
    """v5's ``check_anchors`` on per-image ``(n_i, 2)`` box wh (px at the input size, ``letterboxed_box_wh``).

    ``anchors`` are the current ``(nl, na, 2)`` anchors in px; the result's are ordered small to large, which
    with levels ordered by stride is v5's ``check_anchor_order``.
    """
    rng = np.random.default_rng(seed)
    anchors = np.asarray(anchors, dtype=np.float64)
    per_image = [np.asarray(w, dtype=np.float64).reshape(-1, 2) for w in box_wh]
    jitter = rng.uniform(0.9, 1.1, size=len(per_image))  # v5's augment scale, one per image
    jittered = np.concatenate([w * s for w, s in zip(per_image, jitter, strict=True)] + [np.zeros((0, 2))])
    if not len(jittered):
        raise ValueError("AutoAnchor needs at least one training box")
    bpr, aat = best_possible_recall(jittered, anchors.reshape(-1, 2), thr)
    if bpr > BPR_THRESHOLD:
        return AnchorCheck(bpr, aat, False, None, False, anchors)
    fitted = kmean_anchors(np.concatenate(per_image), n=anchors.size // 2, img_size=img_size, thr=thr,
                           gen=gen, rng=rng)
    new_bpr, _ = best_possible_recall(jittered, fitted, thr)
    if new_bpr > bpr:
        return AnchorCheck(bpr, aat, True, new_bpr, True, fitted.reshape(anchors.shape))
    return AnchorCheck(bpr, aat, True, new_bpr, False, anchors)
