"""COCO instances JSON: read into records, and write any data set as the COCO ground truth that is scored.

Read with the standard library and validated with numpy rather than through ``pycocotools.COCO``: the
latter builds the same index but reports bad input as bare ``KeyError``s, while every bad entry must be
named here. Category ids are mapped to contiguous indices in ascending id order and kept in
``category_ids`` for the way back.

VOC ``difficult`` objects have no COCO equivalent. They are written as ordinary annotations (COCO metrics
count them, as every VOC-to-COCO converter does) with an extra, non-standard ``"difficult": 1`` key that
the VOC metric reads and pycocotools ignores; ``read_coco`` restores the flag from it. Ignore regions (KITTI
``DontCare``) travel the same way, as a non-standard ``"ignore_regions"`` list of ``[x, y, w, h]`` in the
image entry.

Boxes are kept exactly as written, zero-size and out-of-image ones included (pycocotools scores them as they
are); ``bench.data.health`` counts them and repairs them for training. Columns are pulled out of the parsed
JSON with C-level ``map``/``itemgetter`` and validated with NumPy (a per-entry Python loop runs only to name
a bad entry), so on a train2017-sized file (860k annotations) everything after ``json``'s parse costs less
than the parse itself.
"""

from __future__ import annotations

import json
from dataclasses import dataclass
from pathlib import Path, PurePosixPath
from typing import Any

import numpy as np

from bench.boxes import xywh_to_xyxy, xyxy_to_xywh
from bench.data.json_columns import MISSING, column, numeric, unique_ids
from bench.data.records import DetectionDataset, ImageRecord
from bench.errors import BenchInputError
from bench.io import read_json, write_atomic


def _load_json(path: Path) -> dict[str, Any]:
    return _checked(read_json(path), path)


def _checked(data: Any, path: Path) -> dict[str, Any]:
    if not isinstance(data, dict):
        raise BenchInputError(path, "expected a COCO instances object, got " + type(data).__name__)
    for key in ("images", "annotations", "categories"):
        if not isinstance(data.get(key), list):
            raise BenchInputError(path, "missing or not a list", field=key)
    return data


def _categories(data: dict[str, Any], path: Path) -> tuple[np.ndarray, list[str]]:
    cats = data["categories"]
    cat_ids = unique_ids(cats, path, "categories")
    names = [str(n) for n in column(cats, "name", path, "categories")]
    order = np.argsort(cat_ids, kind="stable")
    return cat_ids[order], [names[i] for i in order]


def _file_names(images: list[Any], path: Path) -> list[str]:
    """Image paths relative to the image root; absolute ones and ``..`` would escape it."""
    names = list(map(str, column(images, "file_name", path, "images")))
    suspects = [i for i, name in enumerate(names) if name.startswith("/") or ".." in name]
    for i in suspects:  # the cheap string test first: PurePosixPath on 118k names costs a second
        parts = PurePosixPath(names[i])
        if parts.is_absolute() or ".." in parts.parts:
            raise BenchInputError(path, f"path {names[i]!r} escapes the image root",
                                  entry=f"images[{i}] id {images[i].get('id')}", field="file_name")
    return names


def _default_image_root(json_path: Path) -> Path:
    """``<json dir>/../images/<split>``, then COCO's own ``<json dir>/../<split>``, else the JSON's folder.

    ``<split>`` is the file stem without its ``instances_`` prefix (``instances_val2017`` -> ``val2017``).
    """
    split = json_path.stem.removeprefix("instances_")
    base = json_path.parent.parent
    for folder in (base / "images" / split, base / split, base / "images" / json_path.stem):
        if folder.is_dir():
            return folder
    return json_path.parent


@dataclass(frozen=True)
class CocoAnnotations:
    """A COCO file's annotations in file order with their numbers as written: what pycocotools scores (the
    records' ``xyxy`` boxes give back ``w`` as ``x2 - x1``, which can differ from it in the last bit)."""

    image_id: np.ndarray  # (N,) int64
    category_id: np.ndarray  # (N,) int64
    bbox: np.ndarray  # (N, 4) float64 x, y, w, h
    area: np.ndarray  # (N,) the ``area`` field, w * h where absent
    iscrowd: np.ndarray  # (N,) bool
    ann_id: np.ndarray  # (N,) int64: the id; 0 for an id equal to 0, -1 for a missing or non-integer one


def read_coco(json_path: Path, image_root: Path | None = None, data: dict[str, Any] | None = None
              ) -> DetectionDataset:
    """Read a COCO instances file (:func:`read_coco_annotations` without the annotations' columns)."""
    return read_coco_annotations(json_path, image_root, data)[0]


def read_coco_annotations(json_path: Path, image_root: Path | None = None, data: dict[str, Any] | None = None
                          ) -> tuple[DetectionDataset, CocoAnnotations]:
    """Read a COCO instances file; image ids are kept, ``iscrowd`` and ``area`` kept, boxes become ``xyxy``.

    ``image_root`` defaults to ``<json dir>/../images/<split>`` (then ``<json dir>/../<split>``, then the
    JSON's folder), where ``<split>`` is the file stem without ``instances_``. ``data``: the file's parsed
    content, when the caller has it already. Also returns the annotations as columns in file order (what
    the COCO metrics read, parsed once here).
    """
    json_path = Path(json_path)
    data = _load_json(json_path) if data is None else _checked(data, json_path)
    cat_ids, class_names = _categories(data, json_path)

    images = data["images"]
    img_ids = unique_ids(images, json_path, "images")
    image_ids = img_ids.tolist()
    sizes = {key: numeric(column(images, key, json_path, "images"), json_path, "images", key, image_ids)
             for key in ("width", "height")}
    for key, values in sizes.items():
        if (values <= 0).any() or (values != np.round(values)).any():
            i = int(np.flatnonzero((values <= 0) | (values != np.round(values)))[0])
            raise BenchInputError(json_path, f"image {key} must be a positive integer, got {values[i]:g}",
                                  entry=f"images[{i}] id {image_ids[i]}", field=key)
    file_names = _file_names(images, json_path)

    anns = data["annotations"]
    ann_ids = column(anns, "id", json_path, "annotations", default="?")
    bbox = numeric(column(anns, "bbox", json_path, "annotations"), json_path, "annotations", "bbox",
                    ann_ids, 4)
    defaults = {"image_id": None, "category_id": None, "iscrowd": 0, "difficult": 0}
    columns = {key: numeric(column(anns, key, json_path, "annotations", default=default), json_path,
                             "annotations", key, ann_ids)
               for key, default in defaults.items()}
    raw_area = column(anns, "area", json_path, "annotations", default=MISSING)
    if MISSING not in raw_area:  # the usual case: every annotation has one
        area = numeric(raw_area, json_path, "annotations", "area", ann_ids)
    else:
        area = bbox[:, 2] * bbox[:, 3]
        picked = [i for i, a in enumerate(raw_area) if a is not MISSING]
        area[picked] = numeric([raw_area[i] for i in picked], json_path, "annotations", "area",
                                [ann_ids[i] for i in picked])

    def first_bad(mask: np.ndarray, field: str, message: str) -> None:
        if mask.any():
            i = int(np.flatnonzero(mask)[0])
            raise BenchInputError(json_path, message.format(value=anns[i].get(field)),
                                  entry=f"annotations[{i}] id {ann_ids[i]}", field=field)

    first_bad(~np.isin(columns["image_id"], img_ids), "image_id", "image id {value} is not in 'images'")
    first_bad(~np.isin(columns["category_id"], cat_ids), "category_id",
              "category id {value} is not in 'categories'")

    # group annotations by image, in file order within each image
    by_id = np.argsort(img_ids)
    image_index = by_id[np.searchsorted(img_ids[by_id], columns["image_id"])]
    ann_order = np.argsort(image_index, kind="stable")
    starts = np.searchsorted(image_index[ann_order], np.arange(len(images) + 1))
    # every column in image order once, so that each record takes views (slices), not copies
    xyxy = xywh_to_xyxy(bbox)[ann_order]
    labels = np.searchsorted(cat_ids, columns["category_id"].astype(np.int64))[ann_order]
    entry_ids = _entry_ids(ann_ids)
    annotations = CocoAnnotations(columns["image_id"].astype(np.int64),
                                  columns["category_id"].astype(np.int64), bbox, area,
                                  columns["iscrowd"] != 0, _with_zero_ids(entry_ids, ann_ids))
    entry_ids = entry_ids[ann_order]
    difficult, crowd = (columns["difficult"] != 0)[ann_order], (columns["iscrowd"] != 0)[ann_order]
    area = area[ann_order]
    ignore = _ignore_regions(images, json_path, image_ids)
    widths, heights = sizes["width"].astype(np.int64).tolist(), sizes["height"].astype(np.int64).tolist()
    no_regions = np.zeros((0, 4))
    records = []
    for i, (lo, hi) in enumerate(zip(starts[:-1].tolist(), starts[1:].tolist(), strict=True)):
        records.append(ImageRecord.trusted(
            image_id=image_ids[i], file_name=file_names[i], width=widths[i], height=heights[i],
            boxes=xyxy[lo:hi], labels=labels[lo:hi], difficult=difficult[lo:hi], iscrowd=crowd[lo:hi],
            area=area[lo:hi], entry_ids=entry_ids[lo:hi], ignore_regions=ignore.get(i, no_regions)))
    root = Path(image_root) if image_root is not None else _default_image_root(json_path)
    return DetectionDataset(class_names, records, root, name=json_path.stem, source=json_path,
                            category_ids=cat_ids.tolist(), entry_kind="annotation"), annotations


def _with_zero_ids(entry_ids: np.ndarray, ann_ids: list[Any]) -> np.ndarray:
    """``entry_ids`` with 0 wherever the id equals 0 in any form (``0.0``, ``False``): pycocotools stores a
    match as the id, so such a box is never credited."""
    if (entry_ids >= 0).all():
        return entry_ids
    zero = np.fromiter((isinstance(a, int | float) and a == 0 for a in ann_ids), bool, len(ann_ids))
    return np.where(zero, 0, entry_ids)


def _entry_ids(ann_ids: list[Any]) -> np.ndarray:
    """Annotation ids for problem reports; -1 where an id is missing or not an integer."""
    if set(map(type, ann_ids)) <= {int}:
        return np.array(ann_ids, dtype=np.int64)
    ids = np.full(len(ann_ids), -1, dtype=np.int64)
    whole = np.fromiter((type(a) is int for a in ann_ids), bool, len(ann_ids))
    ids[whole] = np.array([a for a, ok in zip(ann_ids, whole.tolist(), strict=True) if ok], dtype=np.int64)
    return ids


def _ignore_regions(images: list[Any], path: Path, image_ids: list[int]) -> dict[int, np.ndarray]:
    """The non-standard ``ignore_regions`` of the image entries that have one, as xyxy arrays."""
    out = {}
    for i, entry in enumerate(images):
        regions = entry.get("ignore_regions")
        if regions is None:
            continue
        if not isinstance(regions, list):
            raise BenchInputError(path, "must be a list of [x, y, w, h]",
                                  entry=f"images[{i}] id {image_ids[i]}", field="ignore_regions")
        xywh = numeric(regions, path, f"images[{i}].ignore_regions", "ignore_regions",
                        list(range(len(regions))), 4).reshape(-1, 4)
        out[i] = xywh_to_xyxy(xywh)
    return out


def to_coco_dict(ds: DetectionDataset) -> dict[str, Any]:
    """COCO instances ground truth of ``ds``: annotation ids 1..N in record order, ``bbox`` as x, y, w, h."""
    images, annotations = [], []
    cat_ids = list(ds.category_ids or [])
    for record in ds.records:
        image = {"id": int(record.image_id), "file_name": record.file_name, "width": int(record.width),
                 "height": int(record.height)}
        if len(record.ignore_regions):
            regions = record.ignore_regions
            image["ignore_regions"] = xyxy_to_xywh(regions).tolist()
        images.append(image)
        xywh = xyxy_to_xywh(record.boxes)
        for box, label, area, crowd, difficult in zip(xywh.tolist(), record.labels.tolist(),
                                                      record.box_area.tolist(), record.iscrowd.tolist(),
                                                      record.difficult.tolist(), strict=True):
            ann = {"id": len(annotations) + 1, "image_id": int(record.image_id),
                   "category_id": cat_ids[label], "bbox": box, "area": area, "iscrowd": int(crowd)}
            if difficult:
                ann["difficult"] = 1
            annotations.append(ann)
    categories = [{"id": cid, "name": name, "supercategory": ""}
                  for cid, name in zip(cat_ids, ds.classes, strict=True)]
    return {"images": images, "annotations": annotations, "categories": categories}


def write_coco(ds: DetectionDataset, json_path: Path) -> Path:
    """Write ``to_coco_dict(ds)`` (compact, deterministic bytes for identical input), atomically: a kill at
    any moment leaves the previous file or the new one, never half a file (``bench.io.write_atomic``)."""
    data = json.dumps(to_coco_dict(ds), separators=(",", ":")).encode("utf-8")
    return write_atomic(json_path, lambda fh: fh.write(data))
