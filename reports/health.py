"""The "Data health" section: what ``bench`` found wrong in the data and did about it (issue 8's policy).

``manifest.json``'s ``data_health`` (``bench.data.health.DataHealth.to_dict``) holds one entry per split read:
its role (train: repaired or dropped for training; test: kept as the reference tool reads it), the reference
tool, and per kind of problem a count with the first few entries. The console lines are the runner's own
(``DataHealth.console_lines``), so the page and the console say the same thing. No torch here.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from bench.data.health import DataHealth
from bench.errors import BenchInputError

SPLIT_KEYS = {"split": str, "role": str, "reference": str, "images": int, "boxes": int}
FINDING_KEYS = {"kind": str, "description": str, "action": str, "count": int, "examples": list}


@dataclass
class SplitView:
    split: str
    role: str
    reference: str
    images: int
    boxes: int
    findings: list[dict[str, Any]] = field(default_factory=list)  # kind, description, action, count, examples
    notes: list[str] = field(default_factory=list)


@dataclass
class HealthView:
    """``available`` False when the run predates the record; ``lines`` as the runner printed them."""

    available: bool
    strict: bool = False
    quality_problems: int = 0
    splits: list[SplitView] = field(default_factory=list)
    lines: list[str] = field(default_factory=list)


def _check(obj: Any, keys: dict[str, type], path: Path, where: str) -> None:
    if not isinstance(obj, dict):
        raise BenchInputError(path, f"expected an object, got {type(obj).__name__}", field=where)
    for key, kind in keys.items():
        if key not in obj:
            raise BenchInputError(path, "missing", field=f"{where}.{key}")
        value = obj[key]
        if not isinstance(value, kind) or (kind is int and isinstance(value, bool)):
            raise BenchInputError(path, f"must be {kind.__name__}, got {type(value).__name__}",
                                  field=f"{where}.{key}")


def data_health(manifest: dict[str, Any], path: Path) -> HealthView:
    """The section's content from ``manifest["data_health"]``; ``path`` (the manifest) names errors."""
    record = manifest.get("data_health")
    if record is None:
        return HealthView(False)
    if not isinstance(record, dict) or not isinstance(record.get("splits"), list):
        raise BenchInputError(path, "expected an object with a list 'splits'", field="data_health")
    splits = []
    for i, split in enumerate(record["splits"]):
        where = f"data_health.splits[{i}]"
        _check(split, SPLIT_KEYS, path, where)
        findings = split.get("findings") or []
        notes = split.get("notes") or []
        if not isinstance(findings, list) or not isinstance(notes, list):
            raise BenchInputError(path, "findings and notes must be lists", field=where)
        for j, finding in enumerate(findings):
            _check(finding, FINDING_KEYS, path, f"{where}.findings[{j}]")
        splits.append(SplitView(split["split"], split["role"], split["reference"], split["images"],
                                split["boxes"], [dict(f) for f in findings], [str(n) for n in notes]))
    clean = {"splits": [{**{k: getattr(s, k) for k in SPLIT_KEYS}, "notes": s.notes,
                         "findings": [{k: f[k] for k in FINDING_KEYS} for f in s.findings]} for s in splits]}
    lines = DataHealth.from_dict(clean).console_lines()
    problems = record.get("quality_problems")
    if not isinstance(problems, int):
        problems = sum(f["count"] for s in splits for f in s.findings)
    return HealthView(True, bool(record.get("strict")), problems, splits, lines)
