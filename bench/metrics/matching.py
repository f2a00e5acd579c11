"""Greedy matching with pycocotools' ``evaluateImg`` rules, for many thresholds and area ranges at once.

Rules (per (image, class) group, detections in stable descending-score order, only those of rank < maxDet):
each detection takes, among the ground truth still free (crowd regions are never used up), the one of highest
similarity >= t, preferring regular over ignored ground truth, ties going to the later box.

Two paths give the same answer:

* a group in which no detection reaches two ground-truth boxes (the common case) has a closed form: a box goes
  to the first detection, in rank order, that reaches it; this is computed for every threshold at once;
* the other groups replay the greedy scan rank by rank, all such groups, thresholds and area ranges together.

The similarity is a function of broadcast ``x, y, w, h`` columns (IoU as ``maskApi.c``, or NWD), so the same
matcher serves COCO, AI-TOD, TinyPerson and the localisation-tolerance curves.

This is the reference form; evaluations take its loop form, ``native/match.c``, where it is built (the tests
check that both give the same matches).
"""

from __future__ import annotations

import itertools
from collections.abc import Callable
from dataclasses import dataclass

import numpy as np

from bench.metrics.groups import Columns, columns, group_sizes, group_slots, pow2_buckets

Similarity = Callable[[Columns, Columns, np.ndarray], np.ndarray]


@dataclass(frozen=True)
class SparseMatches:
    """The matched (area range, threshold, detection, ground truth) quadruples, sorted by area range, then
    threshold, then detection index; every other (area, threshold, detection) is unmatched."""

    area: np.ndarray  # (S,) int64
    thr: np.ndarray  # (S,) int64
    det: np.ndarray  # (S,) int64
    gt: np.ndarray  # (S,) int64

    def dense(self, n_area: int, n_thr: int, n_det: int) -> np.ndarray:
        """``(A, T, N)`` matched ground-truth index, -1 where unmatched."""
        out = np.full((n_area, n_thr, n_det), -1, dtype=np.int64)
        out[self.area, self.thr, self.det] = self.gt
        return out


def coco_iou(det: Columns, gt: Columns, gt_crowd: np.ndarray) -> np.ndarray:
    """``maskApi.c bbIou`` on broadcast ``x, y, w, h`` columns: same operations, same floats."""
    dx, dy, dw, dh = det
    gx, gy, gw, gh = gt
    w = np.minimum(dw + dx, gw + gx) - np.maximum(dx, gx)
    h = np.minimum(dh + dy, gh + gy) - np.maximum(dy, gy)
    inter = w * h
    det_area = dw * dh
    union = np.where(gt_crowd, det_area, det_area + gw * gh - inter)
    with np.errstate(divide="ignore", invalid="ignore"):
        return np.where((w > 0) & (h > 0), inter / union, 0.0)


@dataclass(frozen=True)
class _Block:
    """Detections whose groups have the same padded width, with their groups' boxes and similarities."""

    members: np.ndarray  # (n,) detection indices
    slots: np.ndarray  # (n, w) ground-truth indices
    sim: np.ndarray  # (n, w) similarity, -inf on padding


def _blocks(det_xywh: np.ndarray, det_group: np.ndarray, active: np.ndarray, gt_xywh: np.ndarray,
            gt_group: np.ndarray, gt_crowd: np.ndarray, similarity: Similarity) -> list[_Block]:
    sizes = group_sizes(gt_group, det_group)
    active = active & (sizes > 0)
    widths = pow2_buckets(sizes)
    blocks = []
    for width in np.unique(widths[active]):
        members = np.flatnonzero(active & (widths == width))
        group = group_slots(gt_group, det_group[members], int(width))
        sim = similarity(columns(det_xywh, members[:, None]), columns(gt_xywh, group.slots),
                         gt_crowd[group.slots])
        blocks.append(_Block(members, group.slots, np.where(group.valid, sim, -np.inf)))
    return blocks


def greedy_match(det_xywh: np.ndarray, det_group: np.ndarray, det_rank: np.ndarray, max_det: int,
                 gt_xywh: np.ndarray, gt_group: np.ndarray, gt_crowd: np.ndarray, gt_ignored: np.ndarray,
                 thresholds: np.ndarray, similarity: Similarity = coco_iou) -> SparseMatches:
    """Every match, for each area range's ignore flags ``gt_ignored`` ``(A, G)`` and each threshold.

    ``det_rank``: rank inside the detection's group in stable descending-score order; ranks >= ``max_det``
    are not matched (pycocotools truncates before matching).
    """
    n_area, n_det = gt_ignored.shape[0], len(det_group)
    limits = np.minimum(np.asarray(thresholds, dtype=np.float64), 1 - 1e-10)  # pycocotools' min(t, 1-1e-10)
    empty = np.zeros(0, dtype=np.int64)
    if n_det == 0 or len(gt_group) == 0:
        return SparseMatches(empty, empty, empty, empty)
    blocks = _blocks(det_xywh, det_group, det_rank < max_det, gt_xywh, gt_group, gt_crowd, similarity)
    lowest = limits.min()
    n_cand = np.zeros(n_det, dtype=np.int64)
    for b in blocks:
        n_cand[b.members] = (b.sim >= lowest).sum(axis=1)
    in_complex = np.isin(det_group, np.unique(det_group[n_cand >= 2]))
    t, d, g = _match_simple(blocks, in_complex, n_cand, det_rank, gt_crowd, limits)
    size = len(t)
    area = np.repeat(np.arange(n_area), size)
    thr, det, gt = np.tile(t, n_area), np.tile(d, n_area), np.tile(g, n_area)
    extra = [_match_by_rank(_Block(b.members[keep], b.slots[keep], b.sim[keep]), det_rank, gt_crowd,
                            gt_ignored, limits)
             for b in blocks if (keep := in_complex[b.members]).any()]
    if extra:
        ea, et, ed, eg = (np.concatenate(parts) for parts in zip(*extra, strict=True))
        scale_t, scale_a = n_det, n_det * len(limits)
        key = area * scale_a + thr * scale_t + det
        extra_key = ea * scale_a + et * scale_t + ed
        sort = np.argsort(extra_key, kind="stable")
        # merged order: extra entry i lands at its insertion point plus the i extra entries before it
        placed = np.searchsorted(key, extra_key[sort]) + np.arange(len(sort))
        from_simple = np.ones(len(key) + len(sort), dtype=bool)
        from_simple[placed] = False
        pairs = ((area, ea), (thr, et), (det, ed), (gt, eg))
        area, thr, det, gt = (_merged(x, y[sort], from_simple, placed) for x, y in pairs)
    return SparseMatches(area, thr, det, gt)


def _merged(simple: np.ndarray, extra: np.ndarray, from_simple: np.ndarray, placed: np.ndarray) -> np.ndarray:
    """``np.insert`` of sorted ``extra`` entries at precomputed places (one mask for all four columns)."""
    out = np.empty(len(from_simple), dtype=np.result_type(simple, extra))
    out[from_simple] = simple
    out[placed] = extra
    return out


def _match_simple(blocks: list[_Block], in_complex: np.ndarray, n_cand: np.ndarray, det_rank: np.ndarray,
                  gt_crowd: np.ndarray, limits: np.ndarray) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Groups where every detection reaches at most one box: the first claimant in rank order gets it.
    Returns (threshold, detection, ground truth) of the matches, sorted by threshold then detection."""
    det, gt, sim = [], [], []
    for b in blocks:
        one = (n_cand[b.members] == 1) & ~in_complex[b.members]
        if one.any():
            best = np.argmax(b.sim[one], axis=1)
            rows = np.flatnonzero(one)
            det.append(b.members[rows])
            gt.append(b.slots[rows, best])
            sim.append(b.sim[rows, best])
    if not det:
        empty = np.zeros(0, dtype=np.int64)
        return empty, empty, empty
    det_i, gt_i, sim_v = np.concatenate(det), np.concatenate(gt), np.concatenate(sim)
    by_det = np.argsort(det_i, kind="stable")
    det_i, gt_i, sim_v = det_i[by_det], gt_i[by_det], sim_v[by_det]
    # claimants of one box, in rank order (one group per box, so the (box, rank) keys are unique)
    by_gt = np.argsort(gt_i * (int(det_rank.max(initial=0)) + 1) + det_rank[det_i])
    gt_sorted = gt_i[by_gt]
    reach = sim_v[by_gt][None, :] >= limits[:, None]  # (T, P)
    count = np.cumsum(reach, axis=1, dtype=np.int32)
    starts = np.r_[True, gt_sorted[1:] != gt_sorted[:-1]]
    start_pos = np.maximum.accumulate(np.where(starts, np.arange(len(gt_sorted)), 0))
    before = np.where(start_pos > 0, count[:, np.maximum(start_pos - 1, 0)], 0)
    won_by_gt = reach & (((count - before) == 1) | gt_crowd[gt_sorted][None, :])
    won = np.empty_like(won_by_gt)
    won[:, by_gt] = won_by_gt
    t, p = np.nonzero(won)
    return t, det_i[p], gt_i[p]


def _match_by_rank(block: _Block, det_rank: np.ndarray, gt_crowd: np.ndarray, gt_ignored: np.ndarray,
                   limits: np.ndarray) -> tuple[np.ndarray, np.ndarray, np.ndarray, np.ndarray]:
    """The greedy scan, rank by rank, for every group of the block, area range and threshold at once.
    Returns (area, threshold, detection, ground truth) of the matches."""
    order = np.argsort(det_rank[block.members], kind="stable")
    members, slots, sim = block.members[order], block.slots[order], block.sim[order]
    width = slots.shape[1]
    thresholds = limits[None, :, None, None]
    taken = np.zeros((gt_ignored.shape[0], len(limits), len(gt_crowd)), dtype=bool)
    ranks = det_rank[members]
    bounds = np.searchsorted(ranks, np.arange(ranks.max() + 2))
    found: list[tuple[np.ndarray, ...]] = []
    for lo, hi in itertools.pairwise(bounds):
        if lo == hi:
            continue
        slot, overlap = slots[lo:hi], sim[lo:hi]
        ignored = gt_ignored[:, slot][:, None]  # (A, 1, n, w)
        free = ~taken[:, :, slot] | gt_crowd[slot]
        candidate = free & (overlap >= thresholds)  # (A, T, n, w); padding has -inf
        regular = candidate & ~ignored
        chosen = np.where(regular.any(-1, keepdims=True), regular, candidate)
        hit = chosen.any(-1)
        last_best = width - 1 - np.argmax(np.where(chosen, overlap, -np.inf)[..., ::-1], axis=-1)
        a, t, n = np.nonzero(hit)
        g = slot[n, last_best[a, t, n]]
        found.append((a, t, members[lo:hi][n], g))
        taken[a, t, g] = True
    return tuple(np.concatenate(parts).astype(np.int64) for parts in zip(*found, strict=True))  # type: ignore
