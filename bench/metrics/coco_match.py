"""One COCO matching pass shared by every protocol, threshold and maxDets that needs it.

pycocotools matches each (image, class) group once per area range and threshold, after truncating the group
to its largest maxDets. Truncation only drops the lowest-ranked detections and the greedy scan never lets a
later detection change an earlier one's match, so one pass with the largest maxDets of all protocols, over
the union of their area ranges, holds every protocol's matches exactly: a protocol with smaller maxDets
ignores the detections ranked past them, as ``accumulate`` does for maxDets 1 and 10. Area ranges change only
which ground truth is ignored, so they share the IoU matrices; ignore regions change only which unmatched
detections count. Accumulated cells (area range, effective maxDets, ignore regions) are cached, so a range
two protocols share (``all``) or maxDets above every group's size (AI-TOD's 300 and 1500 on a COCO-sized
problem) are accumulated once.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any

import numpy as np

from bench.metrics import native
from bench.metrics.accumulate import (
    FP,
    IGNORED,
    RECALL_THRESHOLDS,
    TP,
    accumulate_cell,
    accumulate_order,
    needed_true_positives,
)
from bench.metrics.groups import descending_rank, group_table, position_in, rank_within_group
from bench.metrics.matching import SparseMatches, coco_iou, greedy_match
from bench.metrics.nwd import NWD_CONSTANT, nwd_similarity

if TYPE_CHECKING:
    from bench.metrics.coco import CocoBoxes

SIMILARITIES = {"iou": coco_iou, "nwd": nwd_similarity}
Cell = tuple[np.ndarray, np.ndarray | None, np.ndarray]  # precision, scores (None: not wanted), recall


@dataclass(frozen=True)
class MatchRows:
    """Every match, row by row (row = area range * T + threshold): row r's matches are
    ``[bounds[r], bounds[r + 1])``, detections ascending, with the matched box and the status before ignore
    regions: TP when the box is credited and not ignored in the range; IGNORED when the box is ignored, or
    the match is uncredited and the detection lies outside the range; else FP."""

    bounds: np.ndarray  # (A * T + 1,) int64
    det: np.ndarray  # (S,) detection (accumulate's order)
    gt: np.ndarray  # (S,) ground truth
    status: np.ndarray  # (S,) int8

    @classmethod
    def of(cls, sparse: SparseMatches, n_rows: int, n_thr: int, gt_credited: np.ndarray,
           gt_ignored: np.ndarray, det_outside: np.ndarray) -> MatchRows:
        """The rows of the NumPy matcher's sorted quadruples (what ``native/match.c``'s take computes)."""
        bounds = np.searchsorted(sparse.area * n_thr + sparse.thr, np.arange(n_rows + 1))
        credited, on_ignored = gt_credited[sparse.gt], gt_ignored[sparse.area, sparse.gt]
        status = np.where(credited & ~on_ignored, TP, FP).astype(np.int8)
        status[on_ignored | (~credited & det_outside[sparse.area, sparse.det])] = IGNORED
        return cls(bounds, sparse.det, sparse.gt, status)

    def thresholds(self, area: int, n_thr: int) -> np.ndarray:
        """The threshold of each match of area range ``area``'s rows."""
        return np.repeat(np.arange(n_thr), np.diff(self.bounds[area * n_thr:(area + 1) * n_thr + 1]))


@dataclass
class CocoMatching:
    """Every match of one similarity on one threshold grid, for the area ranges ``ranges`` ``(A, 2)``.

    Detections are in accumulate's order (position i is input detection ``order[i]``); classes ``k`` and
    image positions follow pycocotools (sorted category ids, sorted image ids).
    """

    image_ids: np.ndarray
    k_of_class: np.ndarray  # data set class index -> pycocotools' class position
    order: np.ndarray
    rank: np.ndarray  # rank inside the (image, class) group, descending score
    det_k: np.ndarray
    det_image_pos: np.ndarray
    score: np.ndarray
    det_outside: np.ndarray  # (A, N): detection area outside the range
    in_region: np.ndarray | None  # (N,): inside an ignore region
    gt_image_pos: np.ndarray
    gt_k: np.ndarray
    gt_ignored: np.ndarray  # (A, G)
    ranges: np.ndarray
    thresholds: np.ndarray
    max_det: int
    similarity: str
    matches: MatchRows
    gt_credited: np.ndarray  # (G,) annotation id != 0 (pycocotools stores a match as the id: 0 is none)
    _cache: dict = field(default_factory=dict, repr=False)

    @property
    def n_classes(self) -> int:
        return len(self.k_of_class)

    def memo(self, key: tuple, compute: Callable[[], Any]) -> Any:
        """``compute()`` once per ``key`` for this matching (e.g. a protocol's run, asked for twice)."""
        if key not in self._cache:
            self._cache[key] = compute()
        return self._cache[key]

    def area_index(self, lo: float, hi: float) -> int:
        hits = np.flatnonzero((self.ranges[:, 0] == lo) & (self.ranges[:, 1] == hi))
        if not hits.size:
            raise ValueError(f"area range ({lo}, {hi}) was not matched")
        return int(hits[0])

    def base_ignored(self, area: int, regions: bool) -> np.ndarray:
        """(N,): an unmatched detection is ignored (outside the range, or in an ignore region)."""
        out = self.det_outside[area]
        return out | self.in_region if regions and self.in_region is not None else out

    def status(self, regions: bool) -> np.ndarray:
        """(S,) TP / FP / IGNORED of every match; with ignore regions, an uncredited match's detection inside
        one is ignored too (its status without them is :attr:`MatchRows.status`)."""
        m = self.matches
        if not (regions and self.in_region is not None):
            return m.status
        if "region_status" not in self._cache:
            in_region = ~self.gt_credited[m.gt] & self.in_region[m.det]
            self._cache["region_status"] = np.where(in_region, np.int8(IGNORED), m.status)
        return self._cache["region_status"]

    def class_bounds(self) -> np.ndarray:
        """Start of each class's detections in accumulate's order, ``(K + 1,)``."""
        return self.memo(("class_bounds",),
                         lambda: np.searchsorted(self.det_k, np.arange(self.n_classes + 1)))

    def n_regular(self, area: int) -> np.ndarray:
        """(K,) regular ground truth of the range per class."""
        return np.bincount(self.gt_k[~self.gt_ignored[area]], minlength=self.n_classes)

    @property
    def most_ranked(self) -> int:
        """The largest group size: maxDets at or above it keep every detection."""
        return self.memo(("most_ranked",), lambda: int(self.rank.max(initial=-1)) + 1)

    def cell(self, area: int, max_det: int, regions: bool) -> Cell:
        """One cell in arrays of its own (:meth:`accumulate_into`)."""
        n_thr, n_rec = len(self.thresholds), len(RECALL_THRESHOLDS)
        out = (np.empty((n_thr, n_rec, self.n_classes)), np.empty((n_thr, n_rec, self.n_classes)),
               np.empty((n_thr, self.n_classes)))
        self.accumulate_into(area, max_det, regions, out)
        return out

    def accumulate_into(self, area: int, max_det: int, regions: bool, out: Cell) -> None:
        """accumulate's precision, scores ``(T, R, K)`` and recall ``(T, K)`` of one cell, written into
        ``out`` in the data set's class order (scores None: not computed). A cell already written (by a
        protocol sharing the range, or at maxDets no group reaches) is copied from where it was written,
        unless it was written without the scores now wanted."""
        key = ("cell", area, min(int(max_det), self.most_ranked), regions and self.in_region is not None)
        done = self._cache.get(key)
        if done is not None and (out[1] is None or done[1] is not None):
            for values, target in zip(done, out, strict=True):
                if target is not None:
                    np.copyto(target, values)
            return
        n_thr = len(self.thresholds)
        m = self.matches
        lo, hi = m.bounds[area * n_thr], m.bounds[(area + 1) * n_thr]
        entries = (m.det[lo:hi], self.status(regions)[lo:hi])
        n_regular = self.n_regular(area)
        counted, within = ~self.base_ignored(area, regions), self.rank < key[2]
        if native.available():
            rows = m.bounds[area * n_thr:(area + 1) * n_thr + 1] - lo
            column = self.memo(("class_of_k",), lambda: np.argsort(self.k_of_class))
            native.accumulate_cell(self.class_bounds(), self.score, within, counted, rows, *entries,
                                   n_regular, RECALL_THRESHOLDS, column, out)
        else:
            needed = needed_true_positives(n_regular, RECALL_THRESHOLDS)
            cell = accumulate_cell((m.thresholds(area, n_thr), *entries), counted, self.det_k, self.score,
                                   within, self.class_bounds(), n_thr, needed, n_regular)
            for values, target in zip(cell, out, strict=True):
                if target is not None:  # (unbuffered: the indices are in range)
                    np.take(values, self.k_of_class, axis=-1, out=target, mode="wrap")
        self._cache[key] = out


def match_coco(gt: CocoBoxes, det: CocoBoxes, image_ids: np.ndarray, category_ids: list[int],
               ranges: np.ndarray, thresholds: np.ndarray, max_det: int, similarity: str = "iou",
               det_in_ignore_region: np.ndarray | None = None, like: CocoMatching | None = None, *,
               score_rank: np.ndarray | None = None) -> CocoMatching:
    """pycocotools' ``evaluateImg`` for every (area range, threshold) at once, detections of rank >=
    ``max_det`` left out. ``det_in_ignore_region`` (input order): see :mod:`bench.metrics.ignore`. ``like``:
    a matching of the same boxes whose detection order and ranks are reused (another similarity).
    ``score_rank``: :func:`~bench.metrics.groups.descending_rank` of the scores where the caller has it."""
    if like is not None:
        image_ids, k_of_class, order, rank = like.image_ids, like.k_of_class, like.order, like.rank
        det_k, det_image_pos, score = like.det_k, like.det_image_pos, like.score
    else:
        image_ids = np.unique(np.asarray(image_ids, dtype=np.int64))
        class_of_k = np.argsort(np.asarray(category_ids), kind="stable")  # pycocotools orders classes by id
        k_of_class = np.empty(len(category_ids), dtype=np.int64)
        k_of_class[class_of_k] = np.arange(len(category_ids))
        det_image_pos = position_in(image_ids, det.image_id)  # (sorted ids: as np.searchsorted)
        # detections renumbered into accumulate's order once: no (area, threshold, detection) gathers
        score_rank = descending_rank(det.weight) if score_rank is None else score_rank
        order = accumulate_order(k_of_class[det.label], score_rank, det_image_pos)
        score, det_k, det_image_pos = det.weight[order], k_of_class[det.label][order], det_image_pos[order]
        pair = det_image_pos * len(category_ids) + det_k
        # in accumulate's order each (image, class) group already comes by descending score, then input
        # order: its rank is its count so far (or, in NumPy, its place after a stable sort by group)
        n_pairs = len(image_ids) * len(category_ids)  # (a count per pair: a table while it stays small)
        if native.available() and n_pairs <= 4 * len(pair) + (1 << 20) and pair.max(initial=0) < n_pairs:
            rank = native.rank_in_order(pair, n_pairs)
        else:
            rank = rank_within_group(pair, np.argsort(pair, kind="stable"))
    n_cls = len(k_of_class)
    xywh = np.take(det.xywh, order, axis=0)  # (2-D rows: several times faster than indexing)
    gt_image_pos = position_in(image_ids, gt.image_id)
    gt_k = k_of_class[gt.label]
    pair_gt = gt_image_pos * n_cls + gt_k
    pair_det = det_image_pos * n_cls + det_k

    ranges = np.asarray(ranges, dtype=np.float64).reshape(-1, 2)
    bounds = ranges[:, :, None]
    gt_ignored = gt.iscrowd[None] | (gt.weight[None] < bounds[:, 0]) | (gt.weight[None] > bounds[:, 1])
    det_area = xywh[:, 2] * xywh[:, 3]
    det_outside = (det_area[None] < bounds[:, 0]) | (det_area[None] > bounds[:, 1])
    thresholds = np.asarray(thresholds, dtype=np.float64)
    gt_credited = gt.ann_id != 0
    if native.available():  # the C loop; detections are in accumulate's order, so groups in rank order
        order_gt, start, count = group_table(pair_gt, pair_det)
        limits = np.minimum(thresholds, 1 - 1e-10)  # pycocotools' min(t, 1-1e-10)
        matches = MatchRows(*native.greedy_match(
            xywh, rank < max_det, start, count, order_gt, gt.xywh, gt.iscrowd, gt_ignored, gt_credited,
            det_outside, limits, similarity, NWD_CONSTANT))
    else:
        sparse = greedy_match(xywh, pair_det, rank, max_det, gt.xywh, pair_gt, gt.iscrowd, gt_ignored,
                              thresholds, SIMILARITIES[similarity])
        matches = MatchRows.of(sparse, len(ranges) * len(thresholds), len(thresholds), gt_credited,
                               gt_ignored, det_outside)
    in_region = None if det_in_ignore_region is None else np.asarray(det_in_ignore_region, bool)[order]
    return CocoMatching(image_ids, k_of_class, order, rank, det_k, det_image_pos, score, det_outside,
                        in_region, gt_image_pos, gt_k, gt_ignored, ranges, thresholds, int(max_det),
                        similarity, matches, gt_credited)


@dataclass(frozen=True)
class CocoMatch:
    """One protocol's view of a :class:`CocoMatching`: its area ranges (``areas``, union indices), its
    largest maxDets and whether ignore regions apply. The per-detection outcome behind the arrays, for the
    bootstrap and the confusion matrix."""

    matching: CocoMatching
    areas: tuple[int, ...]
    max_det: int
    regions: bool

    @property
    def k_of_class(self) -> np.ndarray:
        return self.matching.k_of_class

    def counted(self, area: int) -> np.ndarray:
        """(N,) unmatched detections of protocol range ``area`` that count as false positives."""
        m = self.matching
        return ~m.base_ignored(self.areas[area], self.regions) & (m.rank < self.max_det)

    def entries(self, area: int, thr: int) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
        """(detection, ground truth, status) of the matches at one protocol range and threshold, detections of
        rank >= maxDets left out."""
        m = self.matching
        n_thr = len(m.thresholds)
        row = self.areas[area] * n_thr + thr
        lo, hi = m.matches.bounds[row], m.matches.bounds[row + 1]
        det, gt, status = m.matches.det[lo:hi], m.matches.gt[lo:hi], m.status(self.regions)[lo:hi]
        keep = m.rank[det] < self.max_det
        return det[keep], gt[keep], status[keep]

    def outcome(self, area: int, thr: int) -> tuple[np.ndarray, np.ndarray]:
        """(status ``(N,)`` int8, matched ground truth ``(N,)`` or -1) at one protocol range and threshold;
        detections past maxDets are IGNORED."""
        status = np.where(self.counted(area), FP, IGNORED).astype(np.int8)
        gt = np.full(len(status), -1, dtype=np.int64)
        det, matched, st = self.entries(area, thr)
        status[det] = st
        gt[det] = matched
        return status, gt
