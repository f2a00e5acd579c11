"""pycocotools ``accumulate`` for every class, area range, threshold and maxDets at once, bit for bit.

pycocotools walks, per (class, area, maxDets), the detections in descending score order, with cumulative TP
and FP counts, precision ``tp / (fp + tp + eps)``, its right-to-left running maximum (the envelope) and the
first position reaching each recall threshold. Three facts make that a handful of array operations:

* recall only grows at a true positive, so every sampled position is a true positive (recall threshold 0
  samples position 0, whose enveloped precision is the maximum, i.e. the maximum over true positives);
* between two true positives precision only falls, so the envelope at a true positive is the running maximum
  over the later true positives alone;
* ignored detections and those past maxDets add nothing to either count, so they can stay in place as zeros.

So only true positives are visited: the ``c``-th one of a class is where recall first reaches ``c / npig``.
The loop form, ``native/accumulate.c``, runs where it is built; both give the same bits (tested).
"""

from __future__ import annotations

import numpy as np

from bench.metrics.groups import ordered_by, pow2_buckets


def accumulate_order(det_class: np.ndarray, score_rank: np.ndarray, det_image_pos: np.ndarray) -> np.ndarray:
    """accumulate's order: class, then descending score (``score_rank``: ``groups.descending_rank``), ties by
    image (sorted ids), then input order."""
    return ordered_by([det_class], score_rank, (det_image_pos,))


def needed_true_positives(n_regular: np.ndarray, recall_thresholds: np.ndarray) -> np.ndarray:
    """Fewest TPs ``c`` with ``c / npig >= r`` in float64, as pycocotools' ``searchsorted(rc, r, 'left')``
    sees it; ``(K, R)``."""
    npig = np.maximum(n_regular, 1).astype(np.float64)[:, None]
    c = np.ceil(recall_thresholds[None, :] * npig)
    c = np.where((c > 0) & ((c - 1) / npig >= recall_thresholds[None, :]), c - 1, c)
    c = np.where(c / npig < recall_thresholds[None, :], c + 1, c)
    return c.astype(np.int64)


TP, FP, IGNORED = 1, 0, 2
RECALL_THRESHOLDS = np.linspace(0.0, 1.00, int(np.round((1.00 - 0.0) / 0.01)) + 1, endpoint=True)


def accumulate_cell(entries: tuple[np.ndarray, np.ndarray, np.ndarray], base_counted: np.ndarray,
                    cls: np.ndarray, score: np.ndarray, within: np.ndarray, bounds: np.ndarray, n_iou: int,
                    needed: np.ndarray, n_regular: np.ndarray) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Precision and scores ``(T, R, K)`` and recall ``(T, K)`` of one (area range, maxDets) cell.

    Detections are in :func:`accumulate_order` (``cls`` sorted, ``bounds`` its class starts). An unmatched
    detection is a false positive where ``base_counted``, else ignored; ``entries`` = (threshold, detection,
    status) of the matched ones, sorted by threshold then detection, carry their own status (:data:`TP`,
    :data:`FP`, :data:`IGNORED`). ``within``: rank below maxDets. ``needed``: :func:`needed_true_positives`.

    The number of counted (TP or FP) detections up to position j at threshold t is the unmatched baseline's
    cumulative count plus the cumulative correction of the matched entries of row t up to j.
    """
    n_det, n_cls, n_rec = len(cls), len(bounds) - 1, needed.shape[1]
    thr, det, status = (x[within[entries[1]]] for x in entries)
    base = np.cumsum(base_counted & within, dtype=np.int64)
    correction = (status != IGNORED).astype(np.int64) - base_counted[det]
    corr_cum = np.cumsum(correction)
    row_start = np.searchsorted(thr, np.arange(n_iou + 1))
    before_row = np.where(row_start[:-1] > 0, corr_cum[np.maximum(row_start[:-1] - 1, 0)], 0) \
        if len(corr_cum) else np.zeros(n_iou, np.int64)

    is_tp = np.flatnonzero(status == TP)  # ordered by (t, class, score order)
    t_idx, j_idx = thr[is_tp], det[is_tp]
    key = t_idx * n_cls + cls[j_idx]
    n_tp = np.bincount(key, minlength=n_iou * n_cls)
    seg_start = np.concatenate(([0], np.cumsum(n_tp)[:-1]))
    ordinal = np.arange(len(key)) - seg_start[key] + 1
    counted_here = base[j_idx] + corr_cum[is_tp] - before_row[t_idx]
    # counted detections of row t before class k starts, for every (t, k) once, then per TP by its key
    t_all = np.repeat(np.arange(n_iou), n_cls)
    start = np.tile(bounds[:-1], n_iou)
    pos = np.searchsorted(thr * n_det + det, t_all * n_det + start)  # first entry of row t at/after start
    corr_before = np.where(pos > row_start[t_all], corr_cum[np.maximum(pos - 1, 0)] - before_row[t_all], 0) \
        if len(corr_cum) else np.zeros(len(pos), np.int64)
    counted_before = (np.where(start > 0, base[np.maximum(start - 1, 0)], 0) + corr_before)[key] \
        if n_det else np.zeros(len(key), np.int64)
    tp_f = ordinal.astype(np.float64)
    fp_f = (counted_here - counted_before - ordinal).astype(np.float64)
    pr = tp_f / (fp_f + tp_f + np.spacing(1))
    envelope = segmented_suffix_max(pr, key)

    first_within = np.full(n_cls, -1, dtype=np.int64)  # first detection of each class with rank < maxDet
    positions = np.flatnonzero(within)
    if len(positions):
        first_of_cls = np.searchsorted(positions, bounds[:-1])
        ok = (first_of_cls < len(positions)) & (positions[np.minimum(first_of_cls, len(positions) - 1)]
                                               < bounds[1:])
        first_within[ok] = positions[first_of_cls[ok]]
    has_dets = first_within >= 0

    n_tp = n_tp.reshape(n_iou, n_cls)
    c = np.broadcast_to(needed[None], (n_iou, n_cls, n_rec))
    index = np.maximum(c, 1) - 1  # the c-th TP; c == 0 (recall 0) samples the first one's envelope
    inside = index < n_tp[:, :, None]
    flat = np.minimum(seg_start.reshape(n_iou, n_cls)[:, :, None] + index, max(len(pr) - 1, 0))
    prec = np.where(inside, envelope[flat] if len(pr) else 0.0, 0.0)
    sc = np.where(inside, score[j_idx[flat]] if len(pr) else 0.0, 0.0)
    at_zero = (c == 0) & has_dets[None, :, None]  # pycocotools samples position 0 of the full list there
    if len(score):  # no detection at all: every score stays 0, as pycocotools leaves it
        sc = np.where(at_zero, score[np.maximum(first_within, 0)][None, :, None], sc)
    rec = np.where(has_dets[None, :], n_tp / np.maximum(n_regular, 1)[None, :], 0.0)
    return np.moveaxis(prec, 2, 1), np.moveaxis(sc, 2, 1), rec


def segmented_suffix_max(values: np.ndarray, key: np.ndarray) -> np.ndarray:
    """Right-to-left running maximum inside runs of equal ``key`` (non-negative values): runs of similar
    length are padded with zeros into one matrix each, so the maximum never leaks between runs and no value
    is rounded on the way."""
    out = np.empty_like(values)
    if len(values) == 0:
        return out
    starts = np.flatnonzero(np.r_[True, key[1:] != key[:-1]])
    lengths = np.diff(np.r_[starts, len(values)])
    widths = pow2_buckets(lengths)
    for width in np.unique(widths):
        rows = np.flatnonzero(widths == width)
        index = starts[rows, None] + np.arange(width)[None, :]
        valid = np.arange(width)[None, :] < lengths[rows, None]
        index = np.where(valid, index, 0)
        block = np.where(valid, values[index], 0.0)
        block = np.maximum.accumulate(block[:, ::-1], axis=1)[:, ::-1]
        out[index[valid]] = block[valid]
    return out
