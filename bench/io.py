"""The one home for reading and writing JSON files: named errors on read, atomic (fsynced) writes.

Every run-directory file goes through ``write_json``: a ``kill -9`` at any moment leaves the previous file or
the new one, never half a file, and NaN/Inf become ``null`` so the output is strict JSON any tool can parse.
"""

from __future__ import annotations

import contextlib
import json
import math
import os
import tempfile
from collections.abc import Callable
from pathlib import Path
from typing import IO, Any

import numpy as np

from bench.errors import BenchInputError

try:  # 2.5x faster on a large instances or results file, with json's values (tests/test_io.py), but for
    # integers past 64 bits, which come back as floats (every reader takes numbers as float64 anyway)
    import orjson as _orjson
except ImportError:
    _orjson = None


def read_json(path: str | Path) -> Any:
    """Parse a JSON file; unreadable files and syntax errors become a ``BenchInputError`` with line/column."""
    path = Path(path)
    try:
        raw = path.read_bytes()
        if _orjson is not None:
            with contextlib.suppress(_orjson.JSONDecodeError):  # json below says where, or reads NaN/Infinity
                return _orjson.loads(raw)
        text = raw.decode("utf-8")
    except (OSError, UnicodeDecodeError) as err:
        raise BenchInputError(path, f"cannot read: {getattr(err, 'strerror', None) or err}") from None
    try:
        return json.loads(text)
    except json.JSONDecodeError as err:
        raise BenchInputError(path, f"malformed JSON at line {err.lineno} column {err.colno}: {err.msg}"
                              ) from None


def json_safe(value: Any) -> Any:
    """Plain Python values for ``json.dumps``: NumPy scalars unwrapped, non-finite floats as ``None``."""
    if isinstance(value, dict):
        return {k: json_safe(v) for k, v in value.items()}
    if isinstance(value, list | tuple):
        return [json_safe(v) for v in value]
    if isinstance(value, np.ndarray):
        return json_safe(value.tolist())
    if isinstance(value, np.generic):
        value = value.item()
    if isinstance(value, float) and not math.isfinite(value):
        return None
    return value


def write_atomic(path: str | Path, write: Callable[[IO[bytes]], None]) -> Path:
    """Call ``write(fh)`` on a temporary file beside ``path``, fsync it, then rename it over ``path``."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(prefix=f".{path.name}.", suffix=".tmp", dir=path.parent)
    try:
        with os.fdopen(fd, "wb") as fh:
            write(fh)
            fh.flush()
            os.fsync(fh.fileno())
        os.chmod(tmp, 0o644)  # mkstemp creates 0600; results are meant to be shared
        os.replace(tmp, path)
    except BaseException:
        Path(tmp).unlink(missing_ok=True)
        raise
    return path


def write_json(obj: Any, path: str | Path, *, indent: int | None = 1) -> Path:
    """Atomically write ``obj`` as strict JSON (see ``json_safe``); ``default=str`` for paths and the like."""
    text = json.dumps(json_safe(obj), indent=indent, allow_nan=False, default=str) + "\n"
    return write_atomic(path, lambda fh: fh.write(text.encode("utf-8")))
