"""Columns of parsed JSON entries, validated with NumPy so that the first bad entry is named.

The COCO readers pull each field out of a list of objects with C-level ``map``/``itemgetter`` and check it
in bulk; a per-entry Python loop runs only to name a bad entry (the file, the entry and the field).
"""

from __future__ import annotations

from itertools import chain
from operator import itemgetter, methodcaller
from pathlib import Path
from typing import Any

import numpy as np

from bench.errors import BenchInputError


def column(entries: list[Any], key: str, path: Path, section: str, default: Any = None) -> list[Any]:
    """``entries[i][key]`` for every entry, naming the first entry that is not an object or lacks the key."""
    try:
        if default is None:
            return list(map(itemgetter(key), entries))
        return list(map(methodcaller("get", key, default), entries))
    except (KeyError, TypeError, AttributeError):
        bad = next(i for i, e in enumerate(entries)
                   if not isinstance(e, dict) or (default is None and key not in e))
        entry = entries[bad]
        named = isinstance(entry, dict) and "id" in entry
        label = f"{section}[{bad}]" + (f" id {entry['id']}" if named else "")
        raise BenchInputError(path, "missing" if isinstance(entry, dict) else "not an object",
                              entry=label, field=key) from None


NUMBER_TYPES = frozenset({int, float})
MISSING = object()  # the default of an optional key that is absent


def is_number(value: Any) -> bool:
    return isinstance(value, int | float) and not isinstance(value, bool)


def all_numbers(values: list[Any], width: int) -> bool:
    """The fast check: every value a number (``width`` 0) or a list of ``width`` numbers, in C-level loops."""
    try:
        if not width:
            return set(map(type, values)) <= NUMBER_TYPES
        return (set(map(type, values)) <= {list} and set(map(len, values)) <= {width}
                and set(map(type, chain.from_iterable(values))) <= NUMBER_TYPES)
    except TypeError:
        return False


def numeric(values: list[Any], path: Path, section: str, field: str, ids: list[Any],
             width: int = 0) -> np.ndarray:
    """``values`` as floats (``(N, width)`` rows when ``width``), naming the first malformed or NaN entry."""
    def fail(i: int, message: str) -> BenchInputError:
        return BenchInputError(path, message, entry=f"{section}[{i}] id {ids[i]}", field=field)

    def well_formed(v: Any) -> bool:
        if not width:
            return is_number(v)
        return isinstance(v, list) and len(v) == width and all(map(is_number, v))

    if not all_numbers(values, width):
        malformed = next(i for i, value in enumerate(values) if not well_formed(value))
        raise fail(malformed, f"expected {width or 1} number(s), got {values[malformed]!r}")
    array = np.asarray(values, dtype=np.float64).reshape((len(values), width) if width else (len(values),))
    non_finite = ~np.isfinite(array.reshape(len(values), -1)).all(axis=1)
    if non_finite.any():
        i = int(np.flatnonzero(non_finite)[0])
        raise fail(i, f"NaN or infinite value {values[i]!r}")
    return array


def unique_ids(entries: list[Any], path: Path, section: str) -> np.ndarray:
    """The integer ``id`` of every entry, naming the first one that is not an integer or is repeated."""
    raw = column(entries, "id", path, section)
    ids = numeric(raw, path, section, "id", raw)
    _, first, counts = np.unique(ids, return_index=True, return_counts=True)
    bad = np.concatenate([np.flatnonzero(ids != np.round(ids)), first[counts > 1]])
    if bad.size:
        i = int(bad.min())
        message = "id is not an integer" if ids[i] != np.round(ids[i]) else "duplicate id"
        raise BenchInputError(path, message, entry=f"{section}[{i}] id {raw[i]}", field="id")
    return ids.astype(np.int64)
