"""Group-wise pairing of detections with ground truth, without per-image Python loops.

Every metric here compares a detection only with the ground truth of its own group (an image, or an
(image, class) pair). Sorting the ground truth by group and padding each detection's group to a common width
turns "all boxes of my group" into one integer matrix, so IoUs and greedy matching become array operations.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from bench.metrics import native

Columns = tuple[np.ndarray, np.ndarray, np.ndarray, np.ndarray]


def columns(boxes: np.ndarray, index: np.ndarray) -> Columns:
    """The four coordinates of ``boxes[index]`` as separate contiguous arrays (fast elementwise IoU maths)."""
    return tuple(np.ascontiguousarray(boxes[:, k])[index] for k in range(4))  # type: ignore[return-value]


@dataclass(frozen=True)
class GroupSlots:
    """For detection ``i``, ``slots[i, j]`` is the index (into the ground truth arrays) of the ``j``-th
    ground-truth box of its group, in input order; ``valid[i, j]`` is False for padding."""

    slots: np.ndarray  # (n_det, width) int64
    valid: np.ndarray  # (n_det, width) bool


def index_of(keys: np.ndarray, values: np.ndarray) -> np.ndarray | None:
    """Index of each of ``values`` in ``keys`` (distinct integers); None if one is not there. Ids spanning a
    range not much wider than the arrays are looked up in a table (a gather instead of a binary search)."""
    if not len(keys):
        return None if len(values) else np.zeros(0, np.int64)
    lo, hi = int(keys.min()), int(keys.max())
    if hi - lo <= 4 * (len(keys) + len(values)) + (1 << 16):
        table = np.full(hi - lo + 2, -1, dtype=np.int64)  # the last slot: every value out of range
        table[keys - lo] = np.arange(len(keys))
        at = values - lo
        at[(at < 0) | (at > hi - lo)] = hi - lo + 1
        found = table[at]
        return None if (found < 0).any() else found
    by_key = np.argsort(keys)
    pos = np.minimum(np.searchsorted(keys[by_key], values), len(keys) - 1)
    return by_key[pos] if (keys[by_key][pos] == values).all() else None


def dense_ids(keys: np.ndarray) -> np.ndarray:
    """``np.unique(keys, return_inverse=True)[1]``: each key's place among the distinct keys, sorted. Integer
    keys spanning a range not much wider than the array are numbered through a table of the range (no
    sort)."""
    keys = np.asarray(keys)
    if len(keys) and keys.dtype.kind in "iu":
        lo, hi = int(keys.min()), int(keys.max())
        if hi - lo <= 4 * len(keys) + (1 << 16):
            present = np.zeros(hi - lo + 1, dtype=bool)
            present[keys - lo] = True
            return (np.cumsum(present) - 1)[keys - lo]
    return np.unique(keys, return_inverse=True)[1].reshape(-1)


def position_in(keys: np.ndarray, values: np.ndarray) -> np.ndarray:
    """Index of each of ``values`` in ``keys`` (distinct integers), all of them among the keys: the table of
    :func:`index_of` where it applies, else a binary search (``np.searchsorted`` over the sorted keys)."""
    found = index_of(keys, values)
    if found is not None:
        return found
    by_key = np.argsort(keys, kind="stable")
    return by_key[np.searchsorted(keys[by_key], values)]


def group_table(gt_group: np.ndarray, det_group: np.ndarray) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """(ground truth sorted by group, start and count of each detection's group in that order). Small
    non-negative group ids are counted with ``bincount`` (lookups instead of binary searches)."""
    order = np.argsort(gt_group, kind="stable")
    top = max(int(gt_group.max(initial=0)), int(det_group.max(initial=0))) + 1
    integers = gt_group.dtype.kind in "iu" and det_group.dtype.kind in "iu"
    if integers and len(gt_group) and gt_group.min() >= 0 and det_group.min(initial=0) >= 0 \
            and top <= 4 * (len(gt_group) + len(det_group)) + (1 << 20):
        counts = np.bincount(gt_group, minlength=top)
        starts = np.cumsum(counts) - counts
        return order, starts[det_group], counts[det_group]
    sorted_groups = gt_group[order]
    start = np.searchsorted(sorted_groups, det_group, side="left")
    return order, start, np.searchsorted(sorted_groups, det_group, side="right") - start


def group_slots(gt_group: np.ndarray, det_group: np.ndarray, width: int | None = None) -> GroupSlots:
    """Pad each detection's ground-truth group to ``width`` (default: the largest group a detection meets)."""
    order, start, count = group_table(gt_group, det_group)
    if width is None:
        width = int(count.max(initial=0))
    offsets = np.arange(width)
    valid = offsets[None, :] < count[:, None]
    position = np.where(valid, start[:, None] + offsets[None, :], 0)
    slots = order[position] if len(order) else np.zeros_like(position)
    return GroupSlots(slots, valid)


def group_sizes(gt_group: np.ndarray, det_group: np.ndarray) -> np.ndarray:
    """Number of ground-truth boxes in each detection's group."""
    return group_table(gt_group, det_group)[2]


def rank_within_group(group: np.ndarray, order: np.ndarray) -> np.ndarray:
    """Rank of each element inside its group when the elements are visited in ``order`` (0 = first)."""
    ranks = np.empty(len(order), dtype=np.int64)
    visited = group[order]
    boundaries = np.r_[True, visited[1:] != visited[:-1]] if len(order) else np.zeros(0, bool)
    starts = np.where(boundaries, np.arange(len(order)), 0)
    group_start = np.maximum.accumulate(starts) if len(order) else starts
    ranks[order] = np.arange(len(order)) - group_start
    return ranks


def descending_rank(score: np.ndarray) -> np.ndarray:
    """Dense rank of each score, the highest 0 (equal scores share a rank, NaN last): all an ordering needs
    from the scores. Ranking is the one comparison sort of an evaluation's orderings, so it is done once per
    set of detections and handed to every :func:`ordered_by` of them (or of points taken from them)."""
    if native.available():  # a radix sort of the scores' bits
        return native.descending_rank(np.asarray(score, dtype=np.float64).reshape(-1))
    distinct, inverse = np.unique(np.asarray(score, dtype=np.float64), return_inverse=True)
    rank = len(distinct) - 1 - inverse.ravel()
    if len(distinct) and np.isnan(distinct[-1]):  # np.unique sorts NaN (one value) last: rank it last
        rank = np.where(rank == 0, len(distinct) - 1, rank - 1)
    return rank


def ordered_by(before: list[np.ndarray], score_rank: np.ndarray, after: tuple[np.ndarray, ...] = ()
               ) -> np.ndarray:
    """``np.lexsort`` order of the keys ``before`` (ascending), then ``score_rank`` (:func:`descending_rank`:
    descending score), then ``after``, then input order. Non-negative integer keys take one stable counting
    pass each (``native/order.c``) where their ranges are not much wider than the arrays, or are packed into
    one unique int64 key for one unstable argsort (several times faster than ``lexsort``'s passes); other
    keys fall back to ``lexsort``."""
    n = len(score_rank)
    keys = [np.asarray(k) for k in (*before, score_rank, *after)]
    if n and all(k.dtype.kind in "iu" and k.min() >= 0 for k in keys):
        sizes = [int(k.max()) + 1 for k in keys]
        if native.available() and max(sizes) <= 4 * n + (1 << 20):
            return native.order_by_keys(keys[::-1], sizes[::-1])
        if float(np.prod(np.array([*sizes, n], dtype=np.float64))) < 2.0**62:
            packed = np.zeros(n, dtype=np.int64)
            for key, size in zip([*keys, np.arange(n)], [*sizes, n], strict=True):
                packed *= size
                packed += key
            return np.argsort(packed)
    return np.lexsort((np.arange(n), *keys[::-1]))


def pow2_buckets(sizes: np.ndarray) -> np.ndarray:
    """Bucket width for each size (the next power of two), so padding costs at most 2x the real work."""
    return np.where(sizes <= 1, sizes, 2 ** np.ceil(np.log2(np.maximum(sizes, 1))).astype(np.int64))
