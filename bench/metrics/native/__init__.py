"""The evaluator's compiled kernels (C, built by ``pip install``), called through ctypes.

Five loops dominate an evaluation and cost NumPy hundreds of array passes each: the greedy matching
(:mod:`bench.metrics.matching`), pycocotools' accumulate (:mod:`bench.metrics.accumulate`), the bootstrap's
resampled AP (:mod:`bench.metrics.resample`), TIDE's per-image matching (:mod:`bench.metrics.tide`) and the
VOC devkit's overlaps (:mod:`bench.metrics.voc`). Each has a C form here (``*.c`` beside this file) that
follows the NumPy form, and for the COCO arrays pycocotools, operation for operation, so the numbers do not
depend on which one ran (the tests compare them on random problems: identical, but for the bootstrap's
summation order, ~1e-16). Two more replace sorts and parsing: orderings by group and score
(:func:`bench.metrics.groups.ordered_by`) take counting passes, and the common results file is parsed
straight into arrays (:func:`read_results`, the same doubles as Python's ``json``).

The NumPy forms stay the reference and the fallback: without the built library (a source tree not
installed, no C compiler) or with ``BENCH_NATIVE=0`` every caller takes them, and ``metrics.json`` records
which ran. ctypes releases the GIL during a call, so kernels can run on several threads at once.
"""

from __future__ import annotations

import ctypes
import importlib.util
import os
from functools import cache

import numpy as np

ENV = "BENCH_NATIVE"
# each kernel's parameters: a NumPy dtype (an array), "n" (int64), "f" (double), "i" (int32), "h" (handle),
# "s" (a file path as bytes)
_SIGNATURES: dict[str, tuple] = {
    "bench_match_greedy": ("n", np.float64, np.uint8, np.int64, np.int64, np.int64, "n", np.float64, np.uint8,
                           np.uint8, "n", "n", np.float64, "i", "f", "h"),
    "bench_match_take": ("h", "n", np.uint8, np.uint8, "n", np.uint8, "n", np.int64, np.int32, np.int32,
                         np.int8),
    "bench_rank_in_order": ("n", np.int64, "n", np.int64),
    "bench_order_by_key": ("n", np.int64, "n", np.int64, np.int64),
    "bench_descending_rank": ("n", np.float64, np.int64),
    "bench_read_results": ("s", "n", np.int64, np.int64, np.float64, np.float64, np.int64),
    "bench_accumulate_cell": ("n", "n", "n", "n", np.int64, np.float64, np.uint8, np.uint8, np.int64,
                              np.int32, np.int8, np.int64, np.float64, np.int64, np.float64, np.float64,
                              np.float64),
    "bench_resample_area": ("n", "n", np.int64, np.int64, np.uint8, "n", np.int64, np.int32, np.int8, "n",
                            np.int64, np.int64, "n", np.float64, "n", np.int32, np.float64),
    "bench_devkit_best_overlap": ("n", np.float64, np.int64, np.int64, np.int64, np.float64, np.float64,
                                  np.int64),
    "bench_tide_fix_ap": ("n", np.int64, np.int64, np.uint8, np.uint8, np.int64, np.float64, np.int64),
    "bench_tide_match": ("n", np.float64, np.int64, np.int64, np.int64, np.int64, "n", np.float64, np.int64,
                         "f", np.int64, np.uint8, np.float64, np.int64, np.float64),
}
_CTYPES = {"n": ctypes.c_int64, "f": ctypes.c_double, "i": ctypes.c_int32, "h": ctypes.c_void_p,
           "s": ctypes.c_char_p}
_NOT_THIS_LAYOUT, _UNREADABLE = 1, 2  # bench_read_results' statuses (kernels.h)


@cache
def _library() -> ctypes.CDLL | None:
    spec = importlib.util.find_spec("bench.metrics.native._kernels")
    if spec is None or not spec.origin:
        return None
    lib = ctypes.CDLL(spec.origin)
    for name, signature in _SIGNATURES.items():
        function = getattr(lib, name)
        function.argtypes = [_CTYPES.get(kind, ctypes.c_void_p) if isinstance(kind, str) else ctypes.c_void_p
                             for kind in signature]
        function.restype = {"bench_match_greedy": ctypes.c_int64, "bench_devkit_best_overlap": None}.get(
            name, ctypes.c_int32)
    return lib


def available() -> bool:
    """The library is built and not turned off by ``BENCH_NATIVE=0``."""
    return os.environ.get(ENV, "").strip() != "0" and _library() is not None


def engine() -> str:
    """What ``metrics.json`` says about the loops that ran."""
    if available():
        return "compiled C kernels (bench/metrics/native)"
    return "NumPy (compiled kernels " + ("turned off by BENCH_NATIVE=0)" if _library() else "not built)")


def _call(name: str, *args: object) -> int | None:
    """Call kernel ``name``: arrays are made contiguous in the signature's dtype and kept alive for the call
    (an output array must already have that dtype and be contiguous: it is written in place)."""
    lib = _library()
    assert lib is not None, "bench.metrics.native: the kernels are not built"
    keep, values = [], []
    for kind, value in zip(_SIGNATURES[name], args, strict=True):
        if isinstance(kind, str) or value is None:  # (None: a NULL array, where the kernel allows one)
            values.append(value)
            continue
        if isinstance(value, np.ndarray) and value.dtype == np.bool_ and kind is np.uint8:
            value = value.view(np.uint8)  # the same bytes: no converted copy
        array = np.ascontiguousarray(value, dtype=kind)
        if array.size == 0:
            array = np.zeros(1, kind)  # never read: a valid pointer for an empty input
        keep.append(array)
        values.append(array.ctypes.data)
    status = getattr(lib, name)(*values)
    if status is not None and status < 0:
        raise MemoryError(f"{name}: out of memory")
    return status


def greedy_match(det_xywh: np.ndarray, det_active: np.ndarray, det_gt_start: np.ndarray,
                 det_gt_count: np.ndarray, gt_order: np.ndarray, gt_xywh: np.ndarray, gt_crowd: np.ndarray,
                 gt_ignored: np.ndarray, gt_credited: np.ndarray, det_outside: np.ndarray, limits: np.ndarray,
                 similarity: str, nwd_constant: float
                 ) -> tuple[np.ndarray, np.ndarray, np.ndarray, np.ndarray]:
    """Every match (``match.c``; ``similarity``: ``iou`` and ``nwd`` of ``x, y, w, h`` boxes, ``plain_iou``
    of ``x1, y1, x2, y2`` ones) as rows (area range, threshold): row bounds ``(A * T + 1,)`` and, per
    match, detection and ground truth (int32) and status before ignore regions (int8). Each group's
    detections must come in rank order (accumulate's order has them so)."""
    if max(len(det_xywh), len(gt_xywh)) >= 2**31:
        raise ValueError("greedy_match: the kernel numbers boxes in 32 bits")
    handle = ctypes.c_void_p()
    n_area, n_gt = gt_ignored.shape
    size = _call("bench_match_greedy", len(det_xywh), det_xywh, det_active, det_gt_start, det_gt_count,
                 gt_order, n_gt, gt_xywh, gt_crowd, gt_ignored, n_area, len(limits), limits,
                 {"iou": 0, "nwd": 1, "plain_iou": 2}[similarity], nwd_constant, ctypes.byref(handle))
    bounds = np.empty(n_area * len(limits) + 1, dtype=np.int64)
    det, gt = np.empty(size, dtype=np.int32), np.empty(size, dtype=np.int32)
    status = np.empty(size, dtype=np.int8)
    _call("bench_match_take", handle, len(limits), gt_credited, gt_ignored, n_gt, det_outside, len(det_xywh),
          bounds, det, gt, status)
    return bounds, det, gt, status


def overlaps_any(det_boxes: np.ndarray, det_start: np.ndarray, det_count: np.ndarray, box_order: np.ndarray,
                 boxes: np.ndarray, at_least: float, similarity: str) -> np.ndarray:
    """Whether each detection's similarity to some box of its group (``det_start``/``det_count`` into
    ``box_order``, as ``groups.group_table`` gives them) is at least ``at_least``: the matcher with every
    box a crowd region, which is never taken, so each detection is matched on its own (for ``iou`` a crowd
    box overlaps as intersection over the detection's area)."""
    every_box, every_det = np.ones(len(boxes), bool), np.ones(len(det_boxes), bool)
    _, det, _, _ = greedy_match(det_boxes, every_det, det_start, det_count, box_order, boxes, every_box,
                                ~every_box[None], every_box, ~every_det[None], np.array([float(at_least)]),
                                similarity, 0.0)
    out = np.zeros(len(det_boxes), dtype=bool)
    out[det] = True
    return out


def rank_in_order(group: np.ndarray, n_groups: int) -> np.ndarray:
    """Rank of each element inside its group (ids in ``[0, n_groups)``) in array order (``order.c``)."""
    rank = np.empty(len(group), dtype=np.int64)
    _call("bench_rank_in_order", len(group), group, n_groups, rank)
    return rank


def read_results(path: str | os.PathLike[str]
                 ) -> tuple[np.ndarray, np.ndarray, np.ndarray, np.ndarray] | None:
    """The common COCO results file (``results.c``) as image ids, category ids (int64), ``x, y, w, h`` boxes
    and scores; None when the file has another layout or cannot be read (the checked reader then says why)."""
    # an entry takes at least 56 bytes ({"image_id":1,"category_id":1,"bbox":[0,0,0,0],"score":0}); pages
    # of the arrays past the entries read are never touched
    if not os.path.isfile(path):  # (the checked reader says what it is)
        return None
    capacity = os.path.getsize(path) // 56 + 1
    image_id, category_id = np.empty(capacity, np.int64), np.empty(capacity, np.int64)
    bbox, score, count = np.empty((capacity, 4)), np.empty(capacity), np.zeros(1, np.int64)
    status = _call("bench_read_results", os.fsencode(path), capacity, image_id, category_id, bbox, score,
                   count)
    if status in (_NOT_THIS_LAYOUT, _UNREADABLE):
        return None
    n = int(count[0])
    return image_id[:n], category_id[:n], bbox[:n], score[:n]


def descending_rank(score: np.ndarray) -> np.ndarray:
    """Dense rank of each score, the highest 0, ties (0.0 and -0.0, every NaN) sharing one, NaN last: a
    radix sort (``order.c``)."""
    rank = np.empty(len(score), dtype=np.int64)
    _call("bench_descending_rank", len(score), score, rank)
    return rank


def order_by_keys(keys: list[np.ndarray], sizes: list[int]) -> np.ndarray:
    """``np.lexsort(keys)`` (the last key most significant) of non-negative integer keys below ``sizes``:
    one stable counting pass per key (``order.c``), from the input order."""
    order = np.arange(len(keys[0]) if keys else 0, dtype=np.int64)
    for key, size in zip(keys, sizes, strict=True):
        out = np.empty_like(order)
        _call("bench_order_by_key", len(order), key, size, order, out)
        order = out
    return order


def accumulate_cell(class_bounds: np.ndarray, score: np.ndarray, within: np.ndarray, counted: np.ndarray,
                    row_bounds: np.ndarray, entry_det: np.ndarray, entry_status: np.ndarray,
                    n_regular: np.ndarray, recall_thresholds: np.ndarray, column: np.ndarray,
                    out: tuple[np.ndarray, np.ndarray | None, np.ndarray]) -> None:
    """Precision and scores ``(T, R, K)`` and recall ``(T, K)`` of one cell (``accumulate.c``), written into
    ``out`` (contiguous float64; scores None: not computed), class ``k`` into column ``column[k]``."""
    n_cls, n_thr, n_rec = len(class_bounds) - 1, len(row_bounds) - 1, len(recall_thresholds)
    precision, scores, recall = out
    arrays = [x for x in out if x is not None]
    if precision.shape != (n_thr, n_rec, n_cls) or (scores is not None and scores.shape != precision.shape) \
            or recall.shape != (n_thr, n_cls) or not all(x.flags.c_contiguous and x.dtype == np.float64
                                                         for x in arrays):
        raise ValueError("accumulate_cell: out must be contiguous float64 (T, R, K), (T, R, K), (T, K)")
    _call("bench_accumulate_cell", len(score), n_cls, n_thr, n_rec, class_bounds, score, within, counted,
          row_bounds, entry_det, entry_status, n_regular, recall_thresholds, column, precision, scores,
          recall)


def resample_area(class_bounds: np.ndarray, det_image: np.ndarray, counted: np.ndarray,
                  row_bounds: np.ndarray, entry_det: np.ndarray, entry_status: np.ndarray,
                  gt_image: np.ndarray, gt_class: np.ndarray,
                  recall_thresholds: np.ndarray, weights: np.ndarray) -> np.ndarray:
    """Per-class AP ``(rows, B, K)`` under the int weights ``(B, I)`` (``resample.c``)."""
    if len(recall_thresholds) > 256:
        raise ValueError("resample_area: the kernel counts recall thresholds in 8 bits (at most 256)")
    n_rows, n_resamples, n_cls = len(row_bounds) - 1, len(weights), len(class_bounds) - 1
    ap = np.empty((n_rows, n_resamples, n_cls))
    by_image = np.asarray(weights, dtype=np.int32).T  # resamples innermost
    _call("bench_resample_area", len(det_image), n_cls, class_bounds, det_image, counted, n_rows, row_bounds,
          entry_det, entry_status, len(gt_image), gt_image, gt_class, len(recall_thresholds),
          recall_thresholds, n_resamples, by_image, ap)
    return ap


def tide_match(det_xywh: np.ndarray, det_label: np.ndarray, det_gt_start: np.ndarray,
               det_gt_count: np.ndarray, gt_order: np.ndarray, gt_xywh: np.ndarray, gt_label: np.ndarray,
               positive: float) -> tuple[np.ndarray, np.ndarray, np.ndarray, np.ndarray, np.ndarray]:
    """tidecv's matching (``tide.c``), detections visited in array order: matched box per detection (-1),
    used boxes, the highest IoU and its box ``(3, N)`` (same class, other classes, all), the highest IoU with
    a used same-class box."""
    n_det, n_gt = len(det_label), len(gt_label)
    matched, used = np.empty(n_det, dtype=np.int64), np.empty(n_gt, dtype=np.uint8)
    best_iou, best_gt, used_cls = np.empty((3, n_det)), np.empty((3, n_det), dtype=np.int64), np.empty(n_det)
    _call("bench_tide_match", n_det, det_xywh, det_label, det_gt_start, det_gt_count, gt_order, n_gt,
          gt_xywh, gt_label, positive, matched, used, best_iou, best_gt, used_cls)
    return matched, used.astype(bool), best_iou, best_gt, used_cls


def tide_fix_ap(class_bounds: np.ndarray, order: np.ndarray, correct: np.ndarray, chosen: np.ndarray,
                positives: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """tidecv's recall samples ``(K, 101)`` and kept points per class of one fix (``tide.c``)."""
    n_cls = len(class_bounds) - 1
    y, n_points = np.empty((n_cls, 101)), np.empty(n_cls, dtype=np.int64)
    _call("bench_tide_fix_ap", n_cls, class_bounds, order, correct, chosen, positives, y, n_points)
    return y, n_points


def devkit_best_overlap(det_boxes: np.ndarray, det_gt_start: np.ndarray, det_gt_count: np.ndarray,
                        gt_order: np.ndarray, gt_boxes: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """Each detection's highest devkit IoU in its group and that box (the first on ties; ``voc.c``)."""
    best_iou, best_gt = np.empty(len(det_boxes)), np.empty(len(det_boxes), dtype=np.int64)
    _call("bench_devkit_best_overlap", len(det_boxes), det_boxes, det_gt_start, det_gt_count, gt_order,
          gt_boxes, best_iou, best_gt)
    return best_iou, best_gt
