"""Bootstrap confidence intervals over images, and the paired comparison of two models.

A resample draws the test images with replacement; image ``i`` drawn ``w_i`` times counts ``w_i`` times.
Matching never crosses images, so a resample's outcome is the original per-detection outcome weighted by its
image: the matcher is not run again. Per (area, threshold) and class the detections stay in score order; at
each true positive the weighted cumulative TP and counted (TP + FP) numbers give pycocotools' precision
``tp / (tp + fp + eps)``, its right-to-left maximum (the interpolated envelope) and, from the weighted number
of regular boxes ``npig``, how many of the 101 recall thresholds it serves. A true positive whose weighted
count goes from ``a`` to ``b`` serves the thresholds ``r > 0`` whose first reaching count lies in ``(a, b]``;
pycocotools' ``searchsorted(tp / npig, r, "left")`` makes that ``#{r: r <= b / npig} - #{r: r <= a / npig}``
in float64, so AP is a weighted sum over true positives (recall 0 takes the first one's envelope). A weight-2
image is two adjacent copies, which changes no envelope value, so this equals scoring the resampled data
set; unit weights give pycocotools' AP up to rounding (the summation order, the envelope's run lift: about
1e-14).

Cost: the counted detections enter once per area range (their cumulative weight is shared by all thresholds,
each threshold only corrects it at its matched detections); the rest is per true positive. Everything is
batched over resamples with NumPy. The resample weights depend only on the number of images and the seed,
so two models scored on the same images get the same draws: their per-resample difference is the paired
bootstrap.
"""

from __future__ import annotations

import random
import warnings
from typing import Any

import numpy as np

from bench.metrics.coco import CocoEvaluation, CocoParams
from bench.metrics.coco_match import CocoMatch
from bench.metrics.resample import resampled_ap

BOOTSTRAP_METRICS = ("AP", "AP50", "AP_<bucket> for every small-object bucket (upper bound <= 32 px)")


GENERATOR = ("each resample draws its images uniformly with replacement from random.Random(seed) (Python's "
             "Mersenne Twister): 64-bit words, each as a uniform in [0, 1) scaled to an image index")


def resample_weights(n_images: int, resamples: int, seed: int) -> np.ndarray:
    """(B, I) int32 counts: resample ``b`` draws image ``i`` ``w[b, i]`` times (:data:`GENERATOR`).

    Not ``numpy.random``: its import and ``multinomial`` are 25 ms of an evaluation's critical path, these
    draws 5 ms, and they are the same on every platform and Python version (the generator and its
    ``getrandbits`` are). An image's probability differs from ``1 / I`` by a few ``2**-53`` at most."""
    n = resamples * n_images
    if n == 0:
        return np.zeros((resamples, n_images), np.int32)
    words = np.frombuffer(random.Random(seed).getrandbits(64 * n).to_bytes(8 * n, "little"), dtype="<u8")
    index = words.astype(np.float64)  # (rounded to 53 bits)
    index *= n_images * 2.0**-64
    dtype = np.int32 if n < 2**31 else np.int64
    image = index.astype(dtype)
    np.minimum(image, n_images - 1, out=image)  # a word rounded up to 2**64
    image.reshape(resamples, n_images)[:] += (np.arange(resamples, dtype=dtype) * n_images)[:, None]
    return np.bincount(image, minlength=n).astype(np.int32).reshape(resamples, n_images)


SMALL_OBJECT_AREA = 32.0**2  # a bucket whose upper bound is at most COCO's "small" is a small-object bucket


def resampled_values(run: CocoEvaluation, rows: np.ndarray, weights: np.ndarray,
                     cache: dict | None = None, buckets: list[str] | None = None) -> dict[str, np.ndarray]:
    """Per-resample AP, AP50 and AP of the small-object buckets ``(B,)`` over the protocol's threshold
    ``rows``, for weights ``(B, I)``. ``buckets``: other buckets instead (labels of the protocol's area
    ranges). ``cache``: shared by protocols scored with the same weights (a range they share, such as
    ``all``, is resampled once)."""
    if run.match is None:
        raise ValueError("the evaluation keeps no per-detection outcome")
    return resampled_match_values(run.match, run.params, rows, weights, cache, buckets)


def resampled_match_values(match: CocoMatch, params: CocoParams, rows: np.ndarray, weights: np.ndarray,
                           cache: dict | None = None, buckets: list[str] | None = None
                           ) -> dict[str, np.ndarray]:
    """:func:`resampled_values` from a protocol's view of a matching and its parameters alone (no
    accumulated arrays needed, so another process can compute it beside them)."""
    rows = [int(t) for t in rows]
    at50 = [t for t in rows if np.isclose(params.iou_thresholds[t], 0.5)]
    weights = np.asarray(weights)
    cache = {} if cache is None else cache
    labels = list(params.area_ranges)
    wanted = [label for label, (_, hi) in params.area_ranges.items() if hi <= SMALL_OBJECT_AREA] \
        if buckets is None else list(buckets)
    values: dict[str, np.ndarray] = {}
    m = match.matching
    for a in [0] + [labels.index(b) for b in wanted if b in labels[1:]]:
        key = (id(m), match.areas[a], min(match.max_det, int(m.rank.max(initial=-1)) + 1),
               match.regions and m.in_region is not None, tuple(rows))
        if key not in cache:
            cache[key] = resampled_ap(match, a, rows, weights)
        per_t = cache[key]
        with warnings.catch_warnings():  # a resample without positives in a bucket gives NaN
            warnings.simplefilter("ignore", RuntimeWarning)
            values["AP" if a == 0 else f"AP_{labels[a]}"] = np.nanmean(
                np.stack([np.nanmean(per_t[t], axis=1) for t in rows]), axis=0)
            if a == 0 and at50:
                values["AP50"] = np.nanmean(per_t[at50[0]], axis=1)
    return values


def point_values(run: CocoEvaluation, rows: np.ndarray) -> dict[str, float]:
    """The estimates :func:`resampled_values` resamples: AP (over ``rows``), AP50 and every bucket's AP, at
    the largest maxDets, means over the classes with regular ground truth (pycocotools' ``summarize``)."""
    rows = np.asarray(rows, dtype=np.int64)
    out: dict[str, float] = {}
    for a, label in enumerate(run.params.area_ranges):
        p = run.precision[:, :, :, a, -1][rows]  # the slice first: no copy of the other cells
        out["AP" if a == 0 else f"AP_{label}"] = float(p[p > -1].mean()) if (p > -1).any() else float("nan")
    at50 = [t for t in rows.tolist() if np.isclose(run.params.iou_thresholds[t], 0.5)]
    if at50:
        p = run.precision[at50[0], :, :, 0, -1]
        out["AP50"] = float(p[p > -1].mean()) if (p > -1).any() else float("nan")
    return out


def interval(samples: np.ndarray, confidence: float, estimate: float | None = None) -> dict[str, float]:
    """Bootstrap interval of a statistic from its per-resample values.

    With the ``estimate`` (the statistic on the data itself): ``lo``/``hi`` is the basic bootstrap interval
    ``[2 t - q_hi, 2 t - q_lo]``, which corrects for the statistic's bias as the resamples show it;
    ``percentile_lo``/``percentile_hi`` the plain percentile interval; ``bias`` = mean of the resamples - t.
    Why basic: interpolated AP is biased upward on a finite test set (the precision envelope is a running
    maximum), and resamples inherit that bias again, so the percentile interval sits above the estimate.
    On the 2,000-image perf problem AP is 0.1582, its resamples average 0.163 and the same generator's AP
    on 16,000 images is 0.1511: the basic interval [0.1506, 0.1560] covers it, the percentile interval
    [0.1604, 0.1658] does not. Without an estimate ``lo``/``hi`` are the percentile interval.
    """
    finite = samples[np.isfinite(samples)]
    nan = float("nan")
    if not finite.size:
        return {"lo": nan, "hi": nan, "std": nan}
    alpha = (1 - confidence) / 2
    lo, hi = (float(q) for q in np.quantile(finite, [alpha, 1 - alpha]))
    out = {"lo": lo, "hi": hi, "std": float(np.std(finite))}
    if estimate is not None and np.isfinite(estimate):
        out.update({"estimate": float(estimate), "lo": 2 * estimate - hi, "hi": 2 * estimate - lo,
                    "percentile_lo": lo, "percentile_hi": hi, "bias": float(np.mean(finite)) - estimate})
    return out


def bootstrap_protocol(run: CocoEvaluation, rows: np.ndarray, weights: np.ndarray, confidence: float,
                       cache: dict | None = None, values: dict[str, np.ndarray] | None = None
                       ) -> dict[str, Any]:
    """Intervals (:func:`interval`) of the protocol's AP, AP50 and small-object bucket APs, with the
    per-resample values (kept for the paired comparison of two models). ``values``: those per-resample
    values already computed (:func:`resampled_match_values`), e.g. in parts by several processes."""
    values = resampled_values(run, rows, weights, cache) if values is None else values
    point = point_values(run, rows)
    return {name: {**interval(v, confidence, point.get(name)), "samples": v.tolist()}
            for name, v in values.items()}


def paired_comparison(samples_a: list[float], samples_b: list[float], confidence: float = 0.95, *,
                      estimate_a: float | None = None, estimate_b: float | None = None) -> dict[str, float]:
    """Model B minus model A over the same resamples: the interval of the difference (basic when both
    estimates are given, as :func:`interval`) and ``p_not_better``, the share of resamples in which B is not
    better (a one-sided bootstrap p-value for "B > A"; with the estimates, of the bias-corrected
    differences ``2 d - d*``)."""
    a, b = np.asarray(samples_a, dtype=np.float64), np.asarray(samples_b, dtype=np.float64)
    if a.shape != b.shape:
        raise ValueError("paired comparison needs the same resamples for both models")
    diff = b - a
    finite = diff[np.isfinite(diff)]
    estimate = None if estimate_a is None or estimate_b is None else estimate_b - estimate_a
    corrected = finite if estimate is None else 2 * estimate - finite
    return {"difference": estimate,
            "mean_difference": float(np.mean(finite)) if finite.size else float("nan"),
            **interval(diff, confidence, estimate),
            "p_not_better": float(np.mean(corrected <= 0)) if finite.size else float("nan")}
