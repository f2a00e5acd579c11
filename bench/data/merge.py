"""Combining data sets: splits concatenated under one root (VOC07+12) and classes merged by a class map."""

from __future__ import annotations

import dataclasses
import os
from pathlib import Path

import numpy as np

from bench.data.records import DetectionDataset
from bench.errors import BenchInputError


def merge(parts: list[DetectionDataset], root: Path, name: str) -> DetectionDataset:
    """Concatenate splits (VOC07+12) under one image root; image ids are renumbered 1..N to stay unique."""
    classes = parts[0].classes
    if any(p.classes != classes for p in parts):
        raise BenchInputError(root, "the merged splits disagree on the class list", field="data.splits")
    records = []
    for part in parts:
        source = Path(part.source or part.image_root)
        for rec in part.records:
            rel = os.path.relpath(part.image_root / rec.file_name, root)
            label_file = os.path.relpath(source / rec.label_file, root) if rec.label_file else ""
            records.append(dataclasses.replace(rec, image_id=len(records) + 1, file_name=rel,
                                               label_file=label_file))
    return DetectionDataset(classes, records, root, name, root, list(parts[0].category_ids or []),
                            parts[0].entry_kind)


def merge_classes(ds: DetectionDataset, class_map: dict[str, list[str]] | None) -> DetectionDataset:
    """Relabel ``ds`` to the targets of ``class_map`` (target -> source classes, in target order); objects of
    classes no target takes are left out and counted in the data set's notes."""
    if not class_map:
        return ds
    known = set(ds.classes)
    target_of = np.full(len(ds.classes), -1, dtype=np.int64)
    for t, (target, sources) in enumerate(class_map.items()):
        for source in sources:
            if source not in known:
                names = ", ".join(ds.classes)
                raise BenchInputError(ds.source, f"class {source!r} is not in the data set ({names})",
                                      field=f"data.class_map.{target}")
            target_of[ds.classes.index(source)] = t
    records, left_out = [], 0
    for record in ds.records:
        mapped = target_of[record.labels]
        keep = mapped >= 0
        left_out += int((~keep).sum())
        records.append(dataclasses.replace(
            record, boxes=record.boxes[keep], labels=mapped[keep], difficult=record.difficult[keep],
            iscrowd=record.iscrowd[keep], area=None if record.area is None else record.area[keep],
            entry_ids=record.entry_ids[keep], attributes={k: v[keep] for k, v in record.attributes.items()}))
    notes = list(ds.notes) + ([f"{left_out} objects of classes outside data.class_map left out"] if left_out
                              else [])
    return dataclasses.replace(ds, classes=list(class_map), records=records, category_ids=None, notes=notes)
