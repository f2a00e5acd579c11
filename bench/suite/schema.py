"""Typed reading of TOML tables into the suite's frozen dataclasses, with errors that name file and key.

A typo must fail at load time with the file and the dotted key, not after an hour of training with a silently
ignored setting: unknown keys are rejected, types are checked against the dataclass hints (``int`` is not
``bool``; an integer is accepted where a float is expected) and ``Literal`` choices are enforced.
"""

from __future__ import annotations

import dataclasses
import types
import typing
from pathlib import Path
from typing import Any, Literal

from bench.errors import BenchInputError


def from_table(cls: type, value: Any, path: Path, key: str) -> Any:
    """Instantiate dataclass ``cls`` from a TOML table, converting nested tables and checking types."""
    table = as_table(value, path, key)
    hints = typing.get_type_hints(cls)
    reject_unknown(table, {f.name for f in dataclasses.fields(cls)}, path, f"{key}.")
    kwargs = {name: convert(v, hints[name], path, f"{key}.{name}") for name, v in table.items()}
    try:
        return cls(**kwargs)
    except ValueError as err:
        raise BenchInputError(path, str(err), field=key) from None


def convert(value: Any, hint: Any, path: Path, key: str) -> Any:
    origin, args = typing.get_origin(hint), typing.get_args(hint)
    if dataclasses.is_dataclass(hint):
        return from_table(hint, value, path, key)
    if origin in (typing.Union, types.UnionType):
        if value is None and type(None) in args:
            return None
        inner = [a for a in args if a is not type(None)]
        return convert(value, inner[0], path, key)
    if origin is Literal:
        if value not in args:
            choices = ", ".join(map(repr, args))
            raise BenchInputError(path, f"must be one of {choices}, got {value!r}", field=key)
        return value
    if origin is list:
        if not isinstance(value, list):
            raise BenchInputError(path, f"must be a list, got {type(value).__name__}", field=key)
        return [convert(v, args[0], path, f"{key}[{i}]") for i, v in enumerate(value)]
    if origin is dict:
        return {k: convert(v, args[1], path, f"{key}.{k}") for k, v in as_table(value, path, key).items()}
    if hint is float and isinstance(value, int) and not isinstance(value, bool):
        return float(value)
    if hint is Any:
        return value
    if not isinstance(value, hint) or (hint is int and isinstance(value, bool)):
        raise BenchInputError(path, f"must be {hint.__name__}, got {value!r}", field=key)
    return value


def as_table(value: Any, path: Path, key: str) -> dict[str, Any]:
    if not isinstance(value, dict):
        raise BenchInputError(path, f"must be a table, got {type(value).__name__}", field=key)
    return value


def reject_unknown(table: dict[str, Any], known: set[str], path: Path, prefix: str) -> None:
    unknown = sorted(set(table) - known)
    if unknown:
        raise BenchInputError(path, f"unknown key (known: {', '.join(sorted(known))})",
                              field=f"{prefix}{unknown[0]}")


def check_keys(cls: type, value: Any, path: Path, key: str) -> None:
    """Reject unknown keys of a (possibly partial) table against ``cls``, recursing into nested dataclasses.

    Used on each suite file on its own before inheritance merges them, so the error names the right file;
    types are checked later, on the merged document, where every value is known.
    """
    table = as_table(value, path, key)
    fields = {f.name: f for f in dataclasses.fields(cls)}
    reject_unknown(table, set(fields), path, f"{key}.")
    hints = typing.get_type_hints(cls)
    for name, inner in table.items():
        hint = hints[name]
        if dataclasses.is_dataclass(hint):
            check_keys(hint, inner, path, f"{key}.{name}")
        elif typing.get_origin(hint) is dict and isinstance(inner, dict):
            target = typing.get_args(hint)[1]
            if dataclasses.is_dataclass(target):
                for k, v in inner.items():
                    check_keys(target, v, path, f"{key}.{name}.{k}")
