"""The resampled AP of one protocol range (:mod:`bench.metrics.bootstrap` says what is computed and why).

Layout: every per-position array is ``(resamples, positions)`` in int32 (cumulative sums and running maxima
walk contiguous rows; NumPy accumulates along the last axis only at full speed), with explicit int32
accumulators and float conversions (mixed-type arithmetic is several times slower). The counted detections
enter once per range: a running sum of their weights over blocks, read at each query position (a true
positive of some threshold), without a sparse matrix library. The loop form, ``native/resample.c``, runs
where it is built (:func:`resampled_ap` chooses); the two differ by summation order only (~1e-16, tested).
"""

from __future__ import annotations

import numpy as np

from bench.metrics import native
from bench.metrics.accumulate import IGNORED, RECALL_THRESHOLDS, TP, needed_true_positives
from bench.metrics.coco_match import CocoMatch

_BLOCK = 1 << 22  # resamples x positions per gathered block: bounds memory


def run_starts(key: np.ndarray) -> np.ndarray:
    """First position of every run of equal ``key``."""
    return np.flatnonzero(np.r_[True, key[1:] != key[:-1]]) if len(key) else np.zeros(0, np.int64)


def segmented_cumsum(values: np.ndarray, starts: np.ndarray) -> np.ndarray:
    """Cumulative sum along axis 1 restarting at each run start (the first run starts at 0), in place: each
    run's first element is lowered by the previous run's total, so one plain cumsum does it."""
    if len(starts) > 1:
        totals = np.add.reduceat(values, starts, axis=1)
        values[:, starts[1:]] -= totals[:, :-1]
    return np.cumsum(values, axis=1, dtype=values.dtype, out=values)


def suffix_max(values: np.ndarray, starts: np.ndarray) -> np.ndarray:
    """Running maximum from the end of each run (runs begin at ``starts``) along axis 1, for values in [0, 1),
    in place. One reversed ``maximum.accumulate`` serves all runs: run ``j`` of ``R`` is lifted by ``R - j``,
    so a later run (lower lift, values < 1) never exceeds an earlier one; the lift costs rounding of at most
    ulp(R) / 2 (about 1e-14 for 80 classes)."""
    lift = np.repeat(np.arange(len(starts), 0, -1, dtype=np.float64), np.diff(np.r_[starts, values.shape[1]]))
    values += lift
    flipped = values[:, ::-1]
    np.maximum.accumulate(flipped, axis=1, out=flipped)
    values -= lift
    return values


def recall_table(npig: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """Cumulative recall-threshold counts per weighted TP count, ``(b, L)`` int32, and each class's offset
    ``(K,)``, from the weighted regular boxes ``npig`` ``(b, K)``.

    Within class ``k``'s block, ``table[o_k + x] - table[o_k + y]`` is the number of recall thresholds whose
    first reaching TP count (pycocotools' ``searchsorted(tp / npig, r, "left")``, computed as
    :func:`needed_true_positives`) lies in ``(y, x]``. Each block holds all 101 thresholds, so blocks never
    leak into each other's differences.
    """
    b, n_cls = npig.shape
    top = npig.max(axis=0).astype(np.int64) + 1
    offset = np.r_[0, np.cumsum(top)[:-1]]
    counts, which = np.unique(npig.ravel(), return_inverse=True)  # few distinct counts: compute each once
    needed = needed_true_positives(counts, RECALL_THRESHOLDS)[which.ravel()].reshape(b, n_cls, -1)
    needed = np.minimum(needed, (top - 1)[None, :, None])  # a class without boxes in a resample: masked later
    length = int(top.sum())
    flat = (np.arange(b)[:, None, None] * length + offset[None, :, None] + needed).ravel()
    table = np.bincount(flat, minlength=b * length).reshape(b, length).astype(np.int32)
    return np.cumsum(table, axis=1, dtype=np.int32, out=table), offset


def cumulative_at(columns: np.ndarray, group: np.ndarray, n_groups: int, w: np.ndarray) -> np.ndarray:
    """``out[:, g] = sum of w[:, columns[i]] over i with group[i] <= g`` (``group`` non-decreasing),
    ``(b, G)``: a running sum over blocks of gathered columns, read at each group's last member."""
    out = np.zeros((w.shape[0], n_groups), dtype=w.dtype)
    ends = np.searchsorted(group, np.arange(n_groups), side="right")  # members [0, ends[g]) have group <= g
    carry = np.zeros((w.shape[0], 1), dtype=w.dtype)
    step = max(1, _BLOCK // max(w.shape[0], 1))
    for lo in range(0, len(columns), step):
        block = np.cumsum(np.take(w, columns[lo:lo + step], axis=1), axis=1, dtype=w.dtype)
        block += carry
        hi = lo + block.shape[1]
        here = np.flatnonzero((ends > lo) & (ends <= hi))
        out[:, here] = block[:, ends[here] - lo - 1]
        out[:, ends > hi] = block[:, -1:]  # groups ending later hold at least this much
        carry = block[:, -1:]
    return out


class ResampledArea:
    """The resampled AP of one protocol range at every threshold, for int32 weights ``(b, I)``."""

    def __init__(self, match: CocoMatch, area: int, thresholds: list[int]) -> None:
        m = match.matching
        self.match, self.area = match, area
        counted = match.counted(area)
        self.tp = {t: self._true_positives(t, counted) for t in thresholds}
        queries = np.unique(np.concatenate([v[0] for v in self.tp.values()] + [np.zeros(0, np.int64)]))
        self.queries = queries  # positions whose cumulative counted weight is needed
        # each counted detection before its class's last query joins the first query at or after it
        pos = np.flatnonzero(counted)
        gap = np.searchsorted(queries, pos)
        ok = gap < len(queries)
        ok[ok] &= m.det_k[queries[gap[ok]]] == m.det_k[pos[ok]]
        self.member_query, self.member_image = gap[ok], m.det_image_pos[pos[ok]]
        self.query_starts = run_starts(m.det_k[queries])
        regular = np.flatnonzero(~m.gt_ignored[match.areas[area]])
        regular = regular[np.argsort(m.gt_k[regular], kind="stable")]
        self.gt_image = m.gt_image_pos[regular]  # regular boxes by class: npig is a run sum of weights
        self.gt_class_starts = run_starts(m.gt_k[regular])
        self.gt_classes = m.gt_k[regular][self.gt_class_starts]
        self.n_classes = m.n_classes
        self.size = len(queries) + sum(len(v[0]) for v in self.tp.values()) + len(regular)

    def _true_positives(self, thr: int, counted: np.ndarray) -> tuple[np.ndarray, ...]:
        """(TP positions, positions whose counted flag the match changes, the change +-1) at a threshold."""
        det, _, status = self.match.entries(self.area, thr)
        change = (status != IGNORED).astype(np.int32) - counted[det]
        moved = change != 0
        return det[status == TP], det[moved], change[moved]

    def values(self, w: np.ndarray) -> dict[int, np.ndarray]:
        """{threshold: (b, K) AP of every class}, NaN where a resample has no regular box of the class."""
        npig = np.zeros((w.shape[0], self.n_classes))  # (b, K) weighted regular boxes, exact integers
        if len(self.gt_image):  # (not a matrix product: BLAS threads cost more than the sums)
            boxes = np.take(w, self.gt_image, axis=1)
            npig[:, self.gt_classes] = np.add.reduceat(boxes, self.gt_class_starts, axis=1)
        total = cumulative_at(self.member_image, self.member_query, len(self.queries), w)
        # restart at each class: subtract the running total just before the class's first query
        first = self.query_starts
        before = np.zeros((w.shape[0], len(first)), dtype=w.dtype)
        before[:, 1:] = total[:, first[1:] - 1]
        base = total - np.repeat(before, np.diff(np.r_[first, total.shape[1]]), axis=1)
        count, offset = recall_table(npig)
        rows = (np.arange(w.shape[0]) * count.shape[1])[:, None]
        return {t: self._ap(t, w, base, npig, count.ravel(), offset, rows) for t in self.tp}

    def _ap(self, thr: int, w: np.ndarray, base: np.ndarray, npig: np.ndarray, count: np.ndarray,
            offset: np.ndarray, rows: np.ndarray) -> np.ndarray:
        m = self.match.matching
        tp, moved, change = self.tp[thr]
        out = np.zeros(npig.shape)
        if len(tp):
            cls = m.det_k[tp]
            starts = run_starts(cls)
            weight = np.take(w, m.det_image_pos[tp], axis=1)
            true = segmented_cumsum(weight.copy(), starts)
            counted = np.take(base, np.searchsorted(self.queries, tp), axis=1)
            if len(moved):
                counted += self._correction(tp, moved, change, w)
            # pycocotools' tp / (tp + fp + eps); 0 before a TP
            precision = true.astype(np.float64)
            precision /= counted.astype(np.float64) + np.spacing(1)
            envelope = suffix_max(precision, starts)
            at = rows + (offset[cls] + true)  # flat index into the (resample, x) table
            served = count.take(at)
            served -= count.take(at - weight)
            first = envelope[:, starts]  # recall 0 samples the first envelope
            envelope *= served
            out[:, cls[starts]] = (np.add.reduceat(envelope, starts, axis=1) + first) / len(RECALL_THRESHOLDS)
        return np.where(npig > 0, out, np.nan)

    def _correction(self, tp: np.ndarray, moved: np.ndarray, change: np.ndarray, w: np.ndarray) -> np.ndarray:
        """(b, len(tp)) weighted sum of the counted-flag changes of the class up to each true positive."""
        m = self.match.matching
        cum = np.zeros((w.shape[0], len(moved) + 1), dtype=w.dtype)  # column 0: no change yet
        cum[:, 1:] = np.take(w, m.det_image_pos[moved], axis=1) * change.astype(w.dtype)
        segmented_cumsum(cum[:, 1:], run_starts(m.det_k[moved]))
        upto = np.searchsorted(moved, tp, side="right")  # changes at or before each TP
        before = np.searchsorted(moved, np.searchsorted(m.det_k, m.det_k[tp]))  # before the class starts
        return np.take(cum, np.where(upto > before, upto, 0), axis=1)


def resampled_ap(match: CocoMatch, area: int, thresholds: list[int], weights: np.ndarray
                 ) -> dict[int, np.ndarray]:
    """{threshold: (B, K) per-class AP} of protocol range ``area`` for weights ``(B, I)``: the compiled
    kernel where built (``native/resample.c``, the same sums in a loop), else :class:`ResampledArea`."""
    if not native.available():
        return resample_area(ResampledArea(match, area, thresholds), weights)
    m = match.matching
    rows = [match.entries(area, t) for t in thresholds]
    regular = np.flatnonzero(~m.gt_ignored[match.areas[area]])
    empty = np.zeros(0, np.int64)
    ap = native.resample_area(m.class_bounds(), m.det_image_pos,
                              match.counted(area), np.r_[0, np.cumsum([len(det) for det, _, _ in rows])],
                              np.concatenate([det for det, _, _ in rows] + [empty]),
                              np.concatenate([status for _, _, status in rows] + [empty.astype(np.int8)]),
                              m.gt_image_pos[regular], m.gt_k[regular], RECALL_THRESHOLDS, weights)
    return dict(zip(thresholds, ap, strict=True))


def resample_area(area: ResampledArea, weights: np.ndarray) -> dict[int, np.ndarray]:
    """{threshold: (B, K)} for weights ``(B, I)``, in blocks of resamples that bound memory."""
    step = max(1, _BLOCK // max(area.size, 1))
    parts = [area.values(np.ascontiguousarray(weights[lo:lo + step], dtype=np.int32))
             for lo in range(0, len(weights), step)]
    return {t: np.concatenate([p[t] for p in parts], axis=0) for t in area.tp}
