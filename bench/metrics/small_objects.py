"""The small-object metrics of one evaluation: size-bucket protocols, tolerance curves, TIDE and intervals.

For each selected protocol (:mod:`bench.metrics.protocols`) one IoU run on the tolerance grid 0.10:0.95
gives, at once, the protocol's summary (its own thresholds' rows), the AP of every bucket at every IoU (the
localisation-tolerance curve) and the per-image outcomes the bootstrap resamples; one NWD run on the same
grid gives the NWD tolerance curve. TIDE (tidecv's definitions) is computed overall and per bucket of the
first protocol. Everything lands in ``metrics.json`` under ``small_objects``.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass, replace
from typing import Any

import numpy as np

from bench.metrics.bootstrap import (
    BOOTSTRAP_METRICS,
    GENERATOR,
    bootstrap_protocol,
    resample_weights,
    resampled_match_values,
)
from bench.metrics.coco import CocoBoxes, CocoEvaluation, CocoParams, score_coco
from bench.metrics.coco_match import CocoMatch, CocoMatching, match_coco
from bench.metrics.groups import position_in
from bench.metrics.nwd import NWD_CONSTANT
from bench.metrics.protocols import DEFAULT_PROTOCOLS, TOLERANCE_THRESHOLDS, SizeProtocol, get_protocol
from bench.metrics.tide import ERROR_TYPES, SPECIAL_TYPES, tide


@dataclass(frozen=True)
class SmallObjectSettings:
    """What to compute. ``max_dets``: per-protocol override, e.g. ``{"coco": (1, 10, 500)}``."""

    protocols: tuple[str, ...] = DEFAULT_PROTOCOLS  # the first one's buckets also split TIDE
    max_dets: dict[str, tuple[int, ...]] | None = None
    nwd: bool = True
    tide: bool = True
    bootstrap: int = 100  # resamples of the images; 0 turns intervals off. CPU cost, 2,000 images and 177k
    # detections, COCO + AI-TOD: about 0.1 s per 100 resamples, compiled (1,000 add 0.95 s to bench.evaluate's
    # 0.6 s; measured on 2 shared cores)
    confidence: float = 0.95
    seed: int = 0


DEFAULT_SETTINGS = SmallObjectSettings()


def _mean_valid(p: np.ndarray) -> float:
    valid = p[p > -1]
    return float(np.mean(valid)) if valid.size else float("nan")


def _curve(ev: CocoEvaluation) -> dict[str, list[float]]:
    """AP (area, largest maxDets) at every threshold of the run, per area range."""
    return {label: [_mean_valid(ev.precision[t, :, :, a, -1]) for t in range(len(ev.params.iou_thresholds))]
            for a, label in enumerate(ev.params.area_ranges)}


def protocol_rows(protocol: SizeProtocol) -> np.ndarray:
    """Rows of the tolerance grid that are the protocol's own thresholds."""
    return np.array([int(np.flatnonzero(np.isclose(TOLERANCE_THRESHOLDS, t, rtol=0, atol=1e-9))[0])
                     for t in protocol.iou_thresholds])


def shared_matching(truth: CocoBoxes, dets: CocoBoxes, image_ids: np.ndarray, category_ids: list[int],
                    protocols: list[SizeProtocol], in_region: np.ndarray | None, similarity: str = "iou",
                    like: CocoMatching | None = None, *, score_rank: np.ndarray | None = None
                    ) -> CocoMatching:
    """One matching on the tolerance grid for all ``protocols``: the union of their area ranges, their
    largest maxDets (:mod:`bench.metrics.coco_match` says why that is exact for each of them).
    ``score_rank``: as :func:`~bench.metrics.coco_match.match_coco` takes it."""
    ranges: list[tuple[float, float]] = []
    for protocol in protocols:
        ranges += [r for r in protocol.params().area_ranges.values() if r not in ranges]
    regions = in_region if any(p.ignore_regions for p in protocols) else None
    return match_coco(truth, dets, image_ids, category_ids, np.array(ranges), TOLERANCE_THRESHOLDS,
                      max(max(p.max_dets) for p in protocols), similarity, regions, like,
                      score_rank=score_rank)


def protocol_run(matching: CocoMatching, protocol: SizeProtocol, largest_only: bool = False,
                 keep_scores: bool = True) -> CocoEvaluation:
    """The protocol's arrays on the tolerance grid from a shared matching (``largest_only``: its largest
    maxDets alone and no ``scores`` array, enough for the tolerance curves; ``keep_scores``: see
    :func:`~bench.metrics.coco.score_coco`)."""
    def run() -> CocoEvaluation:
        params = protocol.params(TOLERANCE_THRESHOLDS, matching.similarity)
        if largest_only:
            params = replace(params, max_dets=(max(protocol.max_dets),))
        areas = [matching.area_index(lo, hi) for lo, hi in params.area_ranges.values()]
        return score_coco(matching, areas, params, protocol.ignore_regions, keep_scores and not largest_only)

    if largest_only:  # asked for once (a tolerance curve); not kept, so its arrays go with the curve
        return run()
    # the same run is asked for by the COCO metrics and by the protocol's entry
    return matching.memo(("run", protocol.name, tuple(protocol.buckets.items()), protocol.max_dets,
                          protocol.ignore_regions, keep_scores), run)


def evaluate_protocol(truth: CocoBoxes, dets: CocoBoxes, image_ids: np.ndarray, category_ids: list[int],
                      protocol: SizeProtocol, in_region: np.ndarray | None, similarity: str = "iou"
                      ) -> CocoEvaluation:
    """One protocol on its own matching (tests and single-protocol callers)."""
    matching = shared_matching(truth, dets, image_ids, category_ids, [protocol], in_region, similarity)
    return protocol_run(matching, protocol)


def selected_protocols(settings: SmallObjectSettings) -> list[SizeProtocol]:
    return [get_protocol(name, (settings.max_dets or {}).get(name)) for name in settings.protocols]


def nwd_curves(truth: CocoBoxes, dets: CocoBoxes, image_ids: np.ndarray, category_ids: list[int],
               settings: SmallObjectSettings, in_region: np.ndarray | None = None,
               like: CocoMatching | None = None) -> dict[str, dict[str, list[float]]]:
    """Each selected protocol's NWD tolerance curve (empty when NWD is off); ``like``: the IoU matching,
    whose detection order is reused (the same order is computed without it)."""
    protocols = selected_protocols(settings)
    if not (settings.nwd and protocols):
        return {}
    nwd = shared_matching(truth, dets, np.unique(np.asarray(image_ids, dtype=np.int64)), category_ids,
                          protocols, in_region, "nwd", like)
    return {p.name: _curve(protocol_run(nwd, p, largest_only=True)) for p in protocols}


def tide_section(truth: CocoBoxes, dets: CocoBoxes, image_ids: np.ndarray, n_classes: int,
                 settings: SmallObjectSettings, score_rank: np.ndarray | None = None
                 ) -> dict[str, Any] | None:
    """TIDE overall and per bucket of the first protocol (None when off); images visited in ``image_ids``'
    order (the data set's). ``score_rank``: as :func:`~bench.metrics.tide.tide` takes it."""
    protocols = selected_protocols(settings)
    if not (settings.tide and protocols):
        return None
    file_order = np.asarray(image_ids, dtype=np.int64)
    first = protocols[0]
    gt_pos, det_pos = position_in(file_order, truth.image_id), position_in(file_order, dets.image_id)
    return {"protocol": first.name, "error_types": list(ERROR_TYPES), "special_types": list(SPECIAL_TYPES),
            **tide(truth.xywh, truth.label, gt_pos, truth.iscrowd, dets.xywh, dets.label, det_pos,
                   dets.weight, n_classes, {k: (lo**2, hi**2) for k, (lo, hi) in first.buckets.items()},
                   score_rank=score_rank)}


def protocol_match(matching: CocoMatching, protocol: SizeProtocol) -> tuple[CocoMatch, CocoParams]:
    """The protocol's view of a shared matching and its parameters on the tolerance grid, without
    accumulating (what the bootstrap needs)."""
    params = protocol.params(TOLERANCE_THRESHOLDS, matching.similarity)
    areas = tuple(matching.area_index(lo, hi) for lo, hi in params.area_ranges.values())
    return CocoMatch(matching, areas, max(params.max_dets), protocol.ignore_regions), params


def _resample_protocols(views: list[tuple[CocoMatch, CocoParams, np.ndarray]], weights: np.ndarray
                        ) -> list[dict[str, np.ndarray]]:
    cache: dict = {}  # bootstrap values of ranges that protocols share, under the same weights
    return [resampled_match_values(match, params, rows, weights, cache) for match, params, rows in views]


def small_object_metrics(truth: CocoBoxes, dets: CocoBoxes, image_ids: np.ndarray, category_ids: list[int],
                         settings: SmallObjectSettings, in_region: np.ndarray | None = None,
                         iou_matching: CocoMatching | None = None,
                         done: Callable[[], dict[str, Any]] | None = None) -> dict[str, Any]:
    """The ``small_objects`` section of ``metrics.json``. ``iou_matching``: an IoU matching from
    :func:`shared_matching` that covers every selected protocol, if the caller already has one. ``done``:
    returns ``{"tide": ...}`` already computed by :func:`tide_section` (e.g. in another process); called
    once it is needed.

    The bootstrap runs here: compiled, it costs less than forking a process for half of it."""
    file_order = np.asarray(image_ids, dtype=np.int64)  # TIDE visits images in the data set's order
    image_ids = np.unique(file_order)
    out: dict[str, Any] = {"tolerance_thresholds": TOLERANCE_THRESHOLDS.tolist(),
                           "nwd_constant": NWD_CONSTANT, "protocols": {}}
    protocols = selected_protocols(settings)
    weights = resample_weights(len(image_ids), settings.bootstrap, settings.seed) \
        if settings.bootstrap and len(image_ids) else None
    iou = iou_matching or shared_matching(truth, dets, image_ids, category_ids, protocols, in_region)
    samples: list[dict[str, np.ndarray]] = []
    if weights is not None:
        views = [(*protocol_match(iou, p), protocol_rows(p)) for p in protocols]
        samples = _resample_protocols(views, weights)
    nwd = nwd_curves(truth, dets, image_ids, category_ids, settings, in_region, iou)  # reuses its order
    for i, protocol in enumerate(protocols):
        # the COCO run is also the one evaluate() takes pycocotools' arrays from, scores included (its PR
        # curves); the other protocols' scores would go unread
        run = protocol_run(iou, protocol, keep_scores=protocol.name == "coco")
        rows = protocol_rows(protocol)
        stats = run.summary(rows, protocol.params())
        entry: dict[str, Any] = {
            "source": protocol.source, "max_dets": list(protocol.max_dets),
            "iou_thresholds": list(protocol.iou_thresholds), "ignore_regions": protocol.ignore_regions,
            "buckets": {k: list(v) for k, v in protocol.buckets.items()},
            "stats": {k: (None if v == -1 else v) for k, v in stats.items()},
            "iou_curve": _curve(run)}
        if protocol.name in nwd:
            entry["nwd_curve"] = nwd[protocol.name]
        if weights is not None:
            entry["intervals"] = bootstrap_protocol(run, rows, weights, settings.confidence,
                                                    values=samples[i])
        out["protocols"][protocol.name] = entry
    parts = done() if done is not None else {}  # asked for last: computed elsewhere meanwhile
    tide_out = parts["tide"] if "tide" in parts else tide_section(truth, dets, file_order, len(category_ids),
                                                                  settings)
    if tide_out is not None:
        out["tide"] = tide_out
    if weights is not None:
        out["bootstrap"] = {"resamples": int(settings.bootstrap), "confidence": settings.confidence,
                            "seed": settings.seed, "generator": GENERATOR, "metrics": list(BOOTSTRAP_METRICS),
                            # which images were resampled: two models pair up only on the same ones
                            "images": len(image_ids), "image_ids_sha256": _digest(image_ids),
                            "definition": "resamples of the images with replacement (per-image match "
                                          "outcomes reused, not re-matched); lo/hi: basic bootstrap interval "
                                          "2*estimate - quantiles, which corrects the upward bias of "
                                          "interpolated AP on a finite test set; percentile_lo/hi and bias "
                                          "beside it"}
    return out


def _digest(image_ids: np.ndarray) -> str:
    import hashlib  # here: its OpenSSL binding costs 3 ms of every evaluation's start

    return hashlib.sha256(np.ascontiguousarray(image_ids, dtype="<i8").tobytes()).hexdigest()[:16]
