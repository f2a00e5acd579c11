"""Data quality: find every degenerate, out-of-image or duplicate box, count it, and repair it for training.

The policy (README, "Data problems"): structural problems are ``BenchInputError`` s raised by the readers;
the quality problems found here never stop a run. Evaluation keeps the ground truth exactly as read, which is
what pycocotools and the VOC devkit score; training clips boxes to the image and drops what is under 1 px
after clipping, plus exact duplicates. Every action is counted per kind with the first few entry ids, for
``manifest.json`` (``DataHealth.to_dict``), the report and the console (``DataHealth.console_lines``).

All checks are NumPy over the concatenated boxes of a split, never a Python loop per box, so COCO
train2017's 860k boxes take well under a second.
"""

from __future__ import annotations

import dataclasses
from dataclasses import dataclass, field
from typing import Any, Literal

import numpy as np

from bench.data.records import DetectionDataset, ImageRecord
from bench.errors import BenchInputError

MAX_EXAMPLES = 5
MIN_TRAIN_SIZE = 1.0  # px: a box narrower or lower than this after clipping is dropped from training
_EPS = 1e-6  # px of float noise tolerated before a box counts as outside (x + w may round past the edge)

Role = Literal["train", "test", "check"]

# kind -> (what it is, what training does with it). Kinds are exclusive: each box gets the first that applies.
KINDS: dict[str, tuple[str, str]] = {
    "negative_size": ("boxes with negative width or height", "dropped from training"),
    "zero_width": ("boxes with zero width", "dropped from training"),
    "zero_height": ("boxes with zero height", "dropped from training"),
    "wholly_outside": ("boxes wholly outside the image", "dropped from training"),
    "under_1px": ("boxes under 1 px wide or high after clipping to the image", "dropped from training"),
    "partly_outside": ("boxes partly outside the image", "clipped to the image for training"),
    "duplicate": ("duplicate boxes (same class and coordinates in one image)",
                  "dropped from training (one copy kept)"),
    "area_mismatch": ("annotations whose 'area' disagrees with the box",
                      "kept (training does not use 'area')"),
}
QUALITY_KINDS = tuple(KINDS)
DROPPED_IN_TRAINING = frozenset({"negative_size", "zero_width", "zero_height", "wholly_outside", "under_1px",
                                 "duplicate"})
# Found while training, not by the scan: the image's slot in the batch goes to the next decodable image.
SKIPPED_IMAGE = ("corrupt_image", "corrupt or truncated images", "skipped in training")


@dataclass
class Finding:
    """One kind of problem in one split: how many, and the first few entries by name."""

    kind: str
    description: str
    action: str
    count: int
    examples: list[str] = field(default_factory=list)

    def to_dict(self) -> dict[str, Any]:
        return dataclasses.asdict(self)

    def console_line(self, split: str) -> str:
        shown = _examples_text(self.examples, self.count)
        description = self.description
        if self.count == 1:
            for plural, singular in (("boxes", "box"), ("annotations", "annotation"), ("images", "image")):
                description = description.replace(plural, singular, 1)
        return f"{split}: {self.count} {description} {self.action}" + (f" ({shown})" if shown else "")


def _examples_text(examples: list[str], count: int) -> str:
    """``annotations 918, 2206, …`` when every example is a COCO annotation, else the names joined."""
    if not examples:
        return ""
    more = ", …" if count > len(examples) else ""
    if all(e.startswith("annotation ") for e in examples):
        return "annotations " + ", ".join(e.removeprefix("annotation ") for e in examples) + more
    return ", ".join(examples) + more


@dataclass
class SplitHealth:
    """What the scan found in one split and what was done with it (``role`` decides the action)."""

    split: str
    role: Role
    reference: str  # the tool whose view of the ground truth evaluation keeps ("pycocotools", ...)
    images: int
    boxes: int
    findings: dict[str, Finding] = field(default_factory=dict)
    notes: list[str] = field(default_factory=list)  # informational lines (dropped classes, ignore regions)

    @property
    def quality_problems(self) -> int:
        return sum(f.count for k, f in self.findings.items() if k in KINDS)

    def to_dict(self) -> dict[str, Any]:
        return {"split": self.split, "role": self.role, "reference": self.reference, "images": self.images,
                "boxes": self.boxes, "findings": [f.to_dict() for f in self.findings.values()],
                "notes": list(self.notes)}


@dataclass
class DataHealth:
    """The data-health report of a run: one ``SplitHealth`` per split read."""

    splits: list[SplitHealth] = field(default_factory=list)
    strict: bool = False

    @property
    def quality_problems(self) -> int:
        return sum(s.quality_problems for s in self.splits)

    def split(self, name: str) -> SplitHealth | None:
        return next((s for s in self.splits if s.split == name), None)

    def to_dict(self) -> dict[str, Any]:
        """The ``data_health`` object of ``manifest.json``."""
        return {"strict": self.strict, "quality_problems": self.quality_problems,
                "splits": [s.to_dict() for s in self.splits]}

    @classmethod
    def from_dict(cls, data: dict[str, Any]) -> DataHealth:
        splits = [SplitHealth(s["split"], s["role"], s["reference"], s["images"], s["boxes"],
                              {f["kind"]: Finding(**f) for f in s.get("findings", [])},
                              list(s.get("notes", [])))
                  for s in data.get("splits", [])]
        return cls(splits, bool(data.get("strict", False)))

    def console_lines(self) -> list[str]:
        """One line per split and kind, e.g. ``train2017: 2 boxes with zero height dropped from training
        (annotations 918, …)``; notes follow their split's findings."""
        lines = []
        for s in self.splits:
            lines += [f.console_line(s.split) for f in s.findings.values()]
            lines += [f"{s.split}: {note}" for note in s.notes]
        return lines

    def raise_if_strict(self) -> None:
        """With ``strict``, the first quality problem becomes a ``BenchInputError`` (exit 2)."""
        if not self.strict or not self.quality_problems:
            return
        for s in self.splits:
            for kind, f in s.findings.items():
                if kind in KINDS and f.count:
                    raise BenchInputError(s.split, f"--strict: {f.count} {f.description}"
                                                   f" (and {self.quality_problems - f.count} other problems)",
                                          entry=f.examples[0] if f.examples else None, field="bbox")

    def add_skipped_images(self, split: str, ds: DetectionDataset, record_indices: list[int]) -> None:
        """Record the images the loader could not decode during training (``DetectionTorchDataset.skipped``,
        which holds every skip so far: each call replaces the previous count)."""
        target = self.split(split)
        if target is None or not record_indices:
            return
        kind, description, action = SKIPPED_IMAGE
        unique = sorted(set(record_indices))
        examples = [ds.records[i].file_name for i in unique[:MAX_EXAMPLES]]
        target.findings[kind] = Finding(kind, description, action, len(unique), examples)


# ----------------------------------------------------------------------------------------- the scan


@dataclass(frozen=True)
class _Flat:
    """Every box of a split in one array, with the record it belongs to and that record's image size."""

    boxes: np.ndarray  # (N, 4) xyxy
    labels: np.ndarray
    iscrowd: np.ndarray
    area: np.ndarray  # NaN where the source gave none
    record: np.ndarray  # (N,) record index
    position: np.ndarray  # (N,) row within the record
    size: np.ndarray  # (N, 2) width, height of the box's image
    counts: np.ndarray  # (R,) boxes per record

    @classmethod
    def of(cls, records: list[ImageRecord]) -> _Flat:
        counts = np.fromiter((len(r.boxes) for r in records), np.int64, len(records))
        record = np.repeat(np.arange(len(records)), counts)
        starts = np.concatenate([[0], np.cumsum(counts)[:-1]]) if len(records) else np.zeros(0, np.int64)
        position = np.arange(int(counts.sum())) - np.repeat(starts, counts)
        sizes = np.array([(r.width, r.height) for r in records], dtype=np.float64).reshape(-1, 2)

        def cat(values: list[np.ndarray], empty: np.ndarray) -> np.ndarray:
            return np.concatenate(values) if values else empty

        areas = [r.area if r.area is not None else np.full(len(r.boxes), np.nan) for r in records]
        return cls(cat([r.boxes for r in records], np.zeros((0, 4))), cat([r.labels for r in records],
                   np.zeros(0, np.int64)), cat([r.iscrowd for r in records], np.zeros(0, bool)),
                   cat(areas, np.zeros(0)), record, position, sizes[record], counts)


def classify(flat: _Flat) -> np.ndarray:
    """The quality kind of every box as an index into ``QUALITY_KINDS`` (-1 when the box is fine)."""
    x1, y1, x2, y2 = flat.boxes.T
    width, height = x2 - x1, y2 - y1
    img_w, img_h = flat.size.T
    clipped_w = np.minimum(x2, img_w) - np.maximum(x1, 0)
    clipped_h = np.minimum(y2, img_h) - np.maximum(y1, 0)
    outside = (x1 < -_EPS) | (y1 < -_EPS) | (x2 > img_w + _EPS) | (y2 > img_h + _EPS)
    conditions = {
        "negative_size": (width < 0) | (height < 0),
        "zero_width": width == 0,
        "zero_height": height == 0,
        "wholly_outside": (clipped_w <= 0) | (clipped_h <= 0),
        "under_1px": (clipped_w < MIN_TRAIN_SIZE) | (clipped_h < MIN_TRAIN_SIZE),
        "partly_outside": outside,
        "duplicate": _duplicates(flat),
        "area_mismatch": _area_mismatch(flat.area, width * height),
    }
    kind = np.full(len(flat.boxes), -1, dtype=np.int64)
    for index in reversed(range(len(QUALITY_KINDS))):  # the first kind that applies wins
        kind[conditions[QUALITY_KINDS[index]]] = index
    return kind


def _duplicates(flat: _Flat) -> np.ndarray:
    """Later copies of a (record, class, x1, y1, x2, y2) already seen; crowd regions are never duplicates."""
    rows = np.column_stack([flat.record, flat.labels, flat.boxes]).astype(np.float64)
    candidates = np.flatnonzero(~flat.iscrowd)
    duplicate = np.zeros(len(rows), dtype=bool)
    if len(candidates) < 2:
        return duplicate
    keyed = np.ascontiguousarray(rows[candidates]).view(np.dtype((np.void, rows.dtype.itemsize * 6))).ravel()
    _, first = np.unique(keyed, return_index=True)
    repeated = np.ones(len(candidates), dtype=bool)
    repeated[first] = False
    duplicate[candidates[repeated]] = True
    return duplicate


def _area_mismatch(area: np.ndarray, box_area: np.ndarray) -> np.ndarray:
    """COCO's ``area`` is the mask area, so it may be below the box area but never above it (one pixel of
    slack per side for the boxes' rounding); an ``area`` of zero or less on a box with area is wrong too."""
    given = ~np.isnan(area)
    with np.errstate(invalid="ignore"):
        slack = np.sqrt(np.maximum(box_area, 0)) * 4 + 4  # (w + 1)(h + 1) - wh <= w + h + 1 <= this
        too_big = area > box_area + slack
        empty = (area <= 0) & (box_area > 0)
    return given & (too_big | empty)


def scan(ds: DetectionDataset, split: str, role: Role, reference: str) -> tuple[SplitHealth, np.ndarray]:
    """The split's findings and each box's kind index (see ``classify``), in record order."""
    flat = _Flat.of(ds.records)
    kind = classify(flat)
    health = SplitHealth(split, role, reference, len(ds.records), len(flat.boxes), notes=list(ds.notes))
    for index, name in enumerate(QUALITY_KINDS):
        hits = np.flatnonzero(kind == index)
        if not len(hits):
            continue
        description, train_action = KINDS[name]
        action = {"train": train_action, "test": f"kept for evaluation, as {reference} reads them",
                  "check": "found"}[role]
        examples = [ds.records[int(flat.record[i])].describe_entry(int(flat.position[i]), ds.entry_kind)
                    for i in hits[:MAX_EXAMPLES]]
        health.findings[name] = Finding(name, description, action, len(hits), examples)
    return health, kind


# ------------------------------------------------------------------------------------- training view


def repair_record(record: ImageRecord, kinds: np.ndarray | None = None) -> ImageRecord:
    """``record`` as training sees it: boxes clipped to the image, dropped kinds removed.

    ``kinds`` (from ``classify``) may be passed to avoid classifying again; the result is idempotent.
    """
    if kinds is None:
        kinds = classify(_Flat.of([record]))
    drop = np.isin(kinds, [QUALITY_KINDS.index(k) for k in DROPPED_IN_TRAINING])
    limits = np.array([record.width, record.height, record.width, record.height], dtype=np.float64)
    clipped = np.clip(record.boxes, 0, limits)
    if not drop.any() and np.array_equal(clipped, record.boxes):
        return record
    keep = ~drop
    return dataclasses.replace(
        record, boxes=clipped[keep], labels=record.labels[keep], difficult=record.difficult[keep],
        iscrowd=record.iscrowd[keep], area=None if record.area is None else record.area[keep],
        entry_ids=record.entry_ids[keep], attributes={k: v[keep] for k, v in record.attributes.items()})


def training_view(ds: DetectionDataset, kinds: np.ndarray) -> DetectionDataset:
    """``ds`` with every record repaired for training (``kinds`` from ``scan`` on the same ``ds``)."""
    counts = np.fromiter((len(r.boxes) for r in ds.records), np.int64, len(ds.records))
    bounds = np.concatenate([[0], np.cumsum(counts)])
    affected = np.unique(np.searchsorted(bounds, np.flatnonzero(kinds >= 0), side="right") - 1)
    records = list(ds.records)
    for i in affected.tolist():
        records[i] = repair_record(records[i], kinds[bounds[i]:bounds[i + 1]])
    return dataclasses.replace(ds, records=records)
