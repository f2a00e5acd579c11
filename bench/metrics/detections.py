"""Detections as flat arrays, read from and written to the COCO results format with every bad entry named.

A results file is a JSON list of ``{"image_id", "category_id", "bbox": [x, y, w, h], "score"}``; users'
files often name the image by ``file_name`` and the class by ``category_name`` instead, so both are accepted
(as is a COCO-style dict whose ``annotations`` hold the list). The boxes are kept twice: ``boxes`` (``xyxy``,
what the rest of the suite uses) and ``xywh`` (the numbers as written), because ``x + w - x`` is not always
``w`` in floating point and COCO scoring must see exactly what pycocotools would read from the same file.
"""

from __future__ import annotations

import json
import os
import sys
import threading
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np

from bench.data.json_columns import is_number
from bench.data.records import DetectionDataset
from bench.errors import BenchInputError, resolve_inside
from bench.io import read_json
from bench.metrics import native
from bench.metrics.groups import index_of


@dataclass(frozen=True)
class DetectionResults:
    """Aligned arrays, one row per detection: the GT's image id, 0-based class index, ``xyxy`` box, score."""

    image_id: np.ndarray  # (N,) int64
    label: np.ndarray  # (N,) int64
    boxes: np.ndarray  # (N, 4) float64 xyxy, continuous pixels
    score: np.ndarray  # (N,) float64
    xywh: np.ndarray | None = None  # (N, 4) COCO boxes as read; derived from ``boxes`` when not given

    def __post_init__(self) -> None:
        boxes = np.asarray(self.boxes, dtype=np.float64).reshape(-1, 4)
        n = len(boxes)
        object.__setattr__(self, "boxes", boxes)
        object.__setattr__(self, "image_id", np.asarray(self.image_id, dtype=np.int64).reshape(n))
        object.__setattr__(self, "label", np.asarray(self.label, dtype=np.int64).reshape(n))
        object.__setattr__(self, "score", np.asarray(self.score, dtype=np.float64).reshape(n))
        xywh = (np.concatenate([boxes[:, :2], boxes[:, 2:] - boxes[:, :2]], axis=1) if self.xywh is None
                else np.asarray(self.xywh, dtype=np.float64).reshape(n, 4))
        object.__setattr__(self, "xywh", xywh)

    def __len__(self) -> int:
        return len(self.score)

    @classmethod
    def from_coco_json(cls, path: str | Path, gt: DetectionDataset,
                       parsed: Callable[[], ResultColumns | None] | None = None) -> DetectionResults:
        """Read a COCO results file against ``gt``; ``BenchInputError`` names the file, entry and field.
        ``parsed``: the compiled reader already started on ``path`` (:func:`read_columns_beside`)."""
        path = Path(path)
        fast = _fast_rows(path, gt, parsed)
        if fast is not None:
            image_id, label, xywh, score = fast
        else:
            entries = _load_entries(path)
            reader = _EntryReader(path, entries)
            image_id = _image_ids(reader, gt)
            label = _labels(reader, gt)
            xywh = reader.numbers("bbox", width=4)
            score = reader.numbers("score")
        # a box of zero or negative width/height is kept: pycocotools scores it (IoU 0, a false positive)
        boxes = np.concatenate([xywh[:, :2], xywh[:, :2] + xywh[:, 2:]], axis=1)
        return cls(image_id, label, boxes, score, xywh)

    def to_coco_json(self, path: str | Path, gt: DetectionDataset) -> Path:
        """Write the COCO results list (category ids from ``gt``), floats with round-trip precision."""
        path = Path(path)
        path.parent.mkdir(parents=True, exist_ok=True)
        cat_ids = np.asarray(gt.category_ids, dtype=np.int64)[self.label].tolist()
        rows = zip(self.image_id.tolist(), cat_ids, self.xywh.tolist(), self.score.tolist(), strict=True)
        entries = [{"image_id": i, "category_id": c, "bbox": b, "score": s} for i, c, b, s in rows]
        path.write_text(json.dumps(entries, separators=(",", ":")), encoding="utf-8")
        return path


ResultColumns = tuple[np.ndarray, np.ndarray, np.ndarray, np.ndarray]  # image id, category id, xywh, score


def read_columns_beside(path: str | Path) -> Callable[[], ResultColumns | None]:
    """Start the compiled reader on ``path`` in a thread, where it runs without the GIL, so the caller can
    read the ground truth meanwhile; the returned function waits for its columns (None: not the common
    layout, or no kernels, and ``from_coco_json`` then reads the file its other ways)."""
    if not native.available():
        return lambda: None
    done: list[ResultColumns | None] = []
    thread = threading.Thread(target=lambda: done.append(_compiled_columns(Path(path))), daemon=True)
    thread.start()

    def columns() -> ResultColumns | None:
        thread.join()
        return done[0] if done else None  # (nothing: the reader raised, e.g. out of memory)

    return columns


def _fast_rows(path: Path, gt: DetectionDataset, parsed: Callable[[], ResultColumns | None] | None = None
               ) -> ResultColumns | None:
    """The common file (a list of objects with integer ``image_id`` / ``category_id``, four-number ``bbox``,
    ``score``) parsed straight into arrays, 10x faster than building Python objects: by the compiled reader
    (``native/results.c``), else by ultrafast-pycocotools' Rust reader. None, and the checked path below
    names the problem, for anything else: other layouts, names instead of ids, a missing field, an unknown
    id, non-finite numbers, or neither reader there."""
    columns = parsed() if parsed is not None else _compiled_columns(path)  # (not parsed a second time)
    if columns is None:
        columns = _ultrafast_columns(path)
    if columns is None:
        return None
    image_id, category_id, xywh, score = columns
    if not (np.isfinite(xywh).all() and np.isfinite(score).all()):
        return None
    label = index_of(np.asarray(gt.category_ids if gt.category_ids is not None else [], dtype=np.int64),
                     category_id)
    known = index_of(np.array([r.image_id for r in gt.records], dtype=np.int64), image_id)
    if label is None or known is None:
        return None
    return image_id, label, xywh, score


def _compiled_columns(path: Path) -> ResultColumns | None:
    return native.read_results(path) if native.available() else None


def _ultrafast_columns(path: Path) -> ResultColumns | None:
    try:
        reader = _ultrafast_reader()  # a private module: any failure falls back
        _, compact = reader.load_compact_bbox(str(path), results=True)
        rows = np.asarray(compact.array_rows(), dtype=np.float64).reshape(-1, 7)
        # the reader's one silent default: a missing or null score reads as 0. Without a zero score there
        # is nothing to check; with one, every entry must name a score and no value may be null (else the
        # checked path names the entry)
        if (rows[:, 5] == 0).any():
            n_keys, has_null = _score_keys(path)
            if n_keys != len(rows) or has_null:
                return None
    except Exception:
        return None
    ids = rows[:, [0, 6]]
    if not np.isfinite(ids).all() or (np.abs(ids) >= 2.0**53).any():
        return None
    return (rows[:, 0].astype(np.int64), rows[:, 6].astype(np.int64), np.ascontiguousarray(rows[:, 1:5]),
            np.ascontiguousarray(rows[:, 5]))


def _score_keys(path: Path, chunk: int = 1 << 20) -> tuple[int, bool]:
    """How often ``"score"`` occurs in the file, and whether ``null`` does: one pass of reads into one
    buffer that stays in cache (reading a 40 MB file whole costs as much again in fresh memory as the
    search). Each read starts with the previous one's last 6 bytes, so a word cut by a read's end is found
    whole in the next, and none is counted twice (``"score"`` has 7)."""
    buffer = bytearray(chunk)
    view = memoryview(buffer)
    n_keys, has_null, carry = 0, False, 0
    with path.open("rb", buffering=0) as f:
        while n := f.readinto(view[carry:]):
            end = carry + n
            n_keys += buffer.count(b'"score"', 0, end)
            has_null = has_null or buffer.find(b"null", 0, end) >= 0
            carry = min(end, 6)
            buffer[:carry] = buffer[end - carry:end]
    return n_keys, has_null


def _ultrafast_reader() -> Any:
    """ultrafast-pycocotools' compiled module ``_ufcoco`` (ImportError without it), loaded alone: the
    package's ``__init__`` imports its COCO API and ``importlib.metadata``, 23 ms of a 0.3 s evaluation."""
    import importlib.machinery
    import importlib.util

    module = sys.modules.get("ultrafast_pycocotools._ufcoco")
    if module is not None:
        return module
    package = importlib.util.find_spec("ultrafast_pycocotools")  # a top-level spec: nothing is executed
    for folder in (package.submodule_search_locations or []) if package else []:
        for suffix in importlib.machinery.EXTENSION_SUFFIXES:
            path = Path(folder) / f"_ufcoco{suffix}"
            if path.is_file():
                spec = importlib.util.spec_from_file_location("ultrafast_pycocotools._ufcoco", path)
                assert spec is not None and spec.loader is not None
                module = importlib.util.module_from_spec(spec)
                spec.loader.exec_module(module)
                sys.modules[spec.name] = module  # the package, if imported later, finds it
                return module
    raise ImportError("ultrafast_pycocotools._ufcoco not found")


def _load_entries(path: Path) -> list[Any]:
    data = read_json(path)
    if isinstance(data, dict) and isinstance(data.get("annotations"), list):
        data = data["annotations"]
    if not isinstance(data, list):
        raise BenchInputError(path, "expected a JSON list of detections (COCO results format), got "
                              + type(data).__name__)
    bad = next((i for i, e in enumerate(data) if not isinstance(e, dict)), None)
    if bad is not None:
        raise BenchInputError(path, f"expected an object, got {data[bad]!r}", entry=bad)
    return data


class _EntryReader:
    """Columns of a list of JSON objects, converted with numpy and checked so the first bad entry is named."""

    def __init__(self, path: Path, entries: list[dict[str, Any]]) -> None:
        self.path = path
        self.entries = entries

    def fail(self, index: int, field: str, message: str) -> BenchInputError:
        return BenchInputError(self.path, message, entry=index, field=field)

    def fail_where(self, mask: np.ndarray, field: str, message: str, rows: np.ndarray | None = None) -> None:
        if mask.any():
            i = int(np.flatnonzero(mask)[0] if rows is None else rows[np.flatnonzero(mask)[0]])
            raise self.fail(i, field, message.format(value=self.entries[i].get(field)))

    def column(self, field: str) -> list[Any]:
        return [e.get(field) for e in self.entries]

    def numbers(self, field: str, width: int = 0, rows: np.ndarray | None = None) -> np.ndarray:
        """Finite float64 values of ``field`` (rows of ``width`` numbers when ``width``)."""
        index = np.arange(len(self.entries)) if rows is None else rows
        values = [self.entries[i].get(field) for i in index]
        shape = (len(values), width) if width else (len(values),)
        try:
            array = np.array(values) if values else np.zeros(shape)
            ok = array.dtype.kind in "iuf" and array.shape == shape
            ok = ok and (width > 0 or not any(type(v) is bool for v in values))  # numpy would take True as 1
        except ValueError:  # ragged lists
            ok = False
        if not ok:
            for i, value in zip(index, values, strict=True):
                if not _is_numbers(value, width):
                    expected = f"a list of {width} numbers" if width else "a number"
                    message = "missing" if value is None else f"expected {expected}, got {value!r}"
                    raise self.fail(int(i), field, message)
        array = array.astype(np.float64)
        self.fail_where(~np.isfinite(array.reshape(len(values), max(width, 1))).all(axis=1), field,
                        "NaN or infinite value {value}", rows=index)
        return array


def _is_numbers(value: Any, width: int) -> bool:
    if width:
        return isinstance(value, list) and len(value) == width and all(map(is_number, value))
    return is_number(value)


def _image_ids(reader: _EntryReader, gt: DetectionDataset) -> np.ndarray:
    """Image id of every entry, from ``image_id`` or else ``file_name`` (which must stay inside the image
    root)."""
    known = np.array([r.image_id for r in gt.records], dtype=np.int64)
    by_id = reader.column("image_id")
    named = np.array([v is None for v in by_id], dtype=bool)
    image_id = np.zeros(len(by_id), dtype=np.int64)
    with_id = np.flatnonzero(~named)
    ids = reader.numbers("image_id", rows=with_id)
    reader.fail_where(ids != np.round(ids), "image_id", "image id {value} is not an integer", rows=with_id)
    image_id[with_id] = ids.astype(np.int64)
    reader.fail_where(~np.isin(image_id[with_id], known), "image_id", "image id {value} is not in the ground "
                      "truth", rows=with_id)
    by_name = np.flatnonzero(named)
    if by_name.size:
        id_of_file = {os.path.normpath(r.file_name): r.image_id for r in gt.records}
        resolved: dict[str, int | None] = {}
        for i in by_name.tolist():
            name = reader.entries[i].get("file_name")
            if name not in resolved:
                if name is None:
                    raise reader.fail(i, "image_id", "needs 'image_id' or 'file_name'")
                if not isinstance(name, str):
                    raise reader.fail(i, "file_name", f"expected a string, got {name!r}")
                resolve_inside(gt.image_root, name, source=reader.path, entry=i, field="file_name")
                resolved[name] = id_of_file.get(os.path.normpath(name))
            if resolved[name] is None:
                raise reader.fail(i, "file_name", f"image {name!r} is not in the ground truth")
            image_id[i] = resolved[name]
    return image_id


def _labels(reader: _EntryReader, gt: DetectionDataset) -> np.ndarray:
    """Class index of every entry, from ``category_id`` or else ``category_name``."""
    cat_ids = np.asarray(gt.category_ids, dtype=np.int64)
    raw = reader.column("category_id")
    named = np.array([v is None for v in raw], dtype=bool)
    label = np.zeros(len(raw), dtype=np.int64)
    with_id = np.flatnonzero(~named)
    ids = reader.numbers("category_id", rows=with_id)
    by_id = np.argsort(cat_ids)
    pos = np.minimum(np.searchsorted(cat_ids[by_id], ids), max(len(cat_ids) - 1, 0))
    found = (cat_ids[by_id][pos] == ids) if len(cat_ids) else np.zeros(len(ids), bool)
    reader.fail_where(~found, "category_id", "category id {value} is not a ground-truth class", rows=with_id)
    label[with_id] = by_id[pos]
    of_name = {name: i for i, name in enumerate(gt.classes)}
    by_name = np.flatnonzero(named)
    names = [reader.entries[i].get("category_name") for i in by_name.tolist()]
    found_name = np.array([of_name.get(n, -1) if isinstance(n, str) else -1 for n in names], dtype=np.int64)
    if (found_name < 0).any():
        first = int(np.flatnonzero(found_name < 0)[0])
        name = names[first]
        raise reader.fail(int(by_name[first]), "category_id", "needs 'category_id' or 'category_name'"
                          if name is None else f"class {name!r} is not a ground-truth class")
    label[by_name] = found_name
    return label
