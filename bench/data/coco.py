"""COCO instances JSON: read into records, and write any data set as the COCO ground truth that is scored.

Read with the standard library and validated with numpy rather than through ``pycocotools.COCO``: the
latter builds the same index but reports bad input as bare ``KeyError``s, while every bad entry must be
named here. Category ids are mapped to contiguous indices in ascending id order and kept in
``category_ids`` for the way back.

VOC ``difficult`` objects have no COCO equivalent. They are written as ordinary annotations (COCO metrics
count them, as every VOC-to-COCO converter does) with an extra, non-standard ``"difficult": 1`` key that
the VOC metric reads and pycocotools ignores; ``read_coco`` restores the flag from it.
"""

from __future__ import annotations

import json
from pathlib import Path, PurePosixPath
from typing import Any

import numpy as np

from bench.data.records import DetectionDataset, ImageRecord
from bench.errors import BenchInputError, read_json


def _load_json(path: Path) -> dict[str, Any]:
    data = read_json(path)
    if not isinstance(data, dict):
        raise BenchInputError(path, "expected a COCO instances object, got " + type(data).__name__)
    for key in ("images", "annotations", "categories"):
        if not isinstance(data.get(key), list):
            raise BenchInputError(path, "missing or not a list", field=key)
    return data


def _column(entries: list[Any], key: str, path: Path, section: str, default: Any = None) -> list[Any]:
    """``entries[i][key]`` for every entry, naming the first entry that is not an object or lacks the key."""
    try:
        if default is None:
            return [entry[key] for entry in entries]
        return [entry.get(key, default) for entry in entries]
    except (KeyError, TypeError, AttributeError):
        bad = next(i for i, e in enumerate(entries)
                   if not isinstance(e, dict) or (default is None and key not in e))
        entry = entries[bad]
        named = isinstance(entry, dict) and "id" in entry
        label = f"{section}[{bad}]" + (f" id {entry['id']}" if named else "")
        raise BenchInputError(path, "missing" if isinstance(entry, dict) else "not an object",
                              entry=label, field=key) from None


def _is_number(value: Any) -> bool:
    return isinstance(value, int | float) and not isinstance(value, bool)


def _numeric(values: list[Any], path: Path, section: str, field: str, ids: list[Any],
             width: int = 0) -> np.ndarray:
    """``values`` as floats (``(N, width)`` rows when ``width``), naming the first malformed or NaN entry."""
    def fail(i: int, message: str) -> BenchInputError:
        return BenchInputError(path, message, entry=f"{section}[{i}] id {ids[i]}", field=field)

    def well_formed(v: Any) -> bool:
        if not width:
            return _is_number(v)
        return isinstance(v, list) and len(v) == width and all(map(_is_number, v))

    malformed = next((i for i, value in enumerate(values) if not well_formed(value)), None)
    if malformed is not None:
        raise fail(malformed, f"expected {width or 1} number(s), got {values[malformed]!r}")
    array = np.asarray(values, dtype=np.float64).reshape((len(values), width) if width else (len(values),))
    non_finite = ~np.isfinite(array.reshape(len(values), -1)).all(axis=1)
    if non_finite.any():
        i = int(np.flatnonzero(non_finite)[0])
        raise fail(i, f"NaN or infinite value {values[i]!r}")
    return array


def _unique_ids(entries: list[Any], path: Path, section: str) -> np.ndarray:
    """The integer ``id`` of every entry, naming the first one that is not an integer or is repeated."""
    raw = _column(entries, "id", path, section)
    ids = _numeric(raw, path, section, "id", raw)
    _, first, counts = np.unique(ids, return_index=True, return_counts=True)
    bad = np.concatenate([np.flatnonzero(ids != np.round(ids)), first[counts > 1]])
    if bad.size:
        i = int(bad.min())
        message = "id is not an integer" if ids[i] != np.round(ids[i]) else "duplicate id"
        raise BenchInputError(path, message, entry=f"{section}[{i}] id {raw[i]}", field="id")
    return ids.astype(np.int64)


def _categories(data: dict[str, Any], path: Path) -> tuple[np.ndarray, list[str]]:
    cats = data["categories"]
    cat_ids = _unique_ids(cats, path, "categories")
    names = [str(n) for n in _column(cats, "name", path, "categories")]
    order = np.argsort(cat_ids, kind="stable")
    return cat_ids[order], [names[i] for i in order]


def _file_names(images: list[Any], path: Path) -> list[str]:
    """Image paths relative to the image root; absolute ones and ``..`` would escape it."""
    names = [str(f) for f in _column(images, "file_name", path, "images")]
    for i, name in enumerate(names):
        parts = PurePosixPath(name)
        if parts.is_absolute() or ".." in parts.parts:
            raise BenchInputError(path, f"path {name!r} escapes the image root",
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


def read_coco(json_path: Path, image_root: Path | None = None) -> DetectionDataset:
    """Read a COCO instances file; image ids are kept, ``iscrowd`` and ``area`` kept, boxes become ``xyxy``.

    ``image_root`` defaults to ``<json dir>/../images/<split>`` (then ``<json dir>/../<split>``, then the
    JSON's folder), where ``<split>`` is the file stem without ``instances_``.
    """
    json_path = Path(json_path)
    data = _load_json(json_path)
    cat_ids, class_names = _categories(data, json_path)

    images = data["images"]
    img_ids = _unique_ids(images, json_path, "images")
    image_ids = img_ids.tolist()
    sizes = {key: _numeric(_column(images, key, json_path, "images"), json_path, "images", key, image_ids)
             for key in ("width", "height")}
    for key, values in sizes.items():
        if (values <= 0).any() or (values != np.round(values)).any():
            i = int(np.flatnonzero((values <= 0) | (values != np.round(values)))[0])
            raise BenchInputError(json_path, f"image {key} must be a positive integer, got {values[i]:g}",
                                  entry=f"images[{i}] id {image_ids[i]}", field=key)
    file_names = _file_names(images, json_path)

    anns = data["annotations"]
    ann_ids = _column(anns, "id", json_path, "annotations", default="?")
    bbox = _numeric(_column(anns, "bbox", json_path, "annotations"), json_path, "annotations", "bbox",
                    ann_ids, 4)
    defaults = {"image_id": None, "category_id": None, "iscrowd": 0, "difficult": 0}
    columns = {key: _numeric(_column(anns, key, json_path, "annotations", default=default), json_path,
                             "annotations", key, ann_ids)
               for key, default in defaults.items()}
    area = _numeric([a.get("area", w * h) for a, (_, _, w, h) in zip(anns, bbox.tolist(), strict=True)],
                    json_path, "annotations", "area", ann_ids)

    def first_bad(mask: np.ndarray, field: str, message: str) -> None:
        if mask.any():
            i = int(np.flatnonzero(mask)[0])
            raise BenchInputError(json_path, message.format(value=anns[i].get(field)),
                                  entry=f"annotations[{i}] id {ann_ids[i]}", field=field)

    first_bad((bbox[:, 2] <= 0) | (bbox[:, 3] <= 0), "bbox", "box {value} has zero or negative width/height")
    first_bad(~np.isin(columns["image_id"], img_ids), "image_id", "image id {value} is not in 'images'")
    first_bad(~np.isin(columns["category_id"], cat_ids), "category_id",
              "category id {value} is not in 'categories'")

    # group annotations by image, in file order within each image
    by_id = np.argsort(img_ids)
    image_index = by_id[np.searchsorted(img_ids[by_id], columns["image_id"])]
    ann_order = np.argsort(image_index, kind="stable")
    starts = np.searchsorted(image_index[ann_order], np.arange(len(images) + 1))
    xyxy = np.concatenate([bbox[:, :2], bbox[:, :2] + bbox[:, 2:]], axis=1)
    labels = np.searchsorted(cat_ids, columns["category_id"].astype(np.int64))
    records = []
    for i in range(len(images)):
        sel = ann_order[starts[i]:starts[i + 1]]
        records.append(ImageRecord(
            image_id=int(img_ids[i]), file_name=file_names[i], width=int(sizes["width"][i]),
            height=int(sizes["height"][i]), boxes=xyxy[sel], labels=labels[sel],
            difficult=columns["difficult"][sel] != 0, iscrowd=columns["iscrowd"][sel] != 0, area=area[sel]))
    root = Path(image_root) if image_root is not None else _default_image_root(json_path)
    return DetectionDataset(class_names, records, root, name=json_path.stem, source=json_path,
                            category_ids=cat_ids.tolist())


def to_coco_dict(ds: DetectionDataset) -> dict[str, Any]:
    """COCO instances ground truth of ``ds``: annotation ids 1..N in record order, ``bbox`` as x, y, w, h."""
    images, annotations = [], []
    cat_ids = list(ds.category_ids or [])
    for record in ds.records:
        images.append({"id": int(record.image_id), "file_name": record.file_name, "width": int(record.width),
                       "height": int(record.height)})
        xywh = np.concatenate([record.boxes[:, :2], record.boxes[:, 2:] - record.boxes[:, :2]], axis=1)
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
    """Write ``to_coco_dict(ds)`` (compact, deterministic bytes for identical input)."""
    json_path = Path(json_path)
    json_path.parent.mkdir(parents=True, exist_ok=True)
    json_path.write_text(json.dumps(to_coco_dict(ds), separators=(",", ":")), encoding="utf-8")
    return json_path
