"""Suites that build on others: ``base = "voc07.toml"`` (or a list of files) is read first and deep-merged.

The rules, so that nothing a suite inherits is implicit (``--plan`` and the report show the result):

- a base path is relative to the file that names it; several bases load left to right, then the file itself;
- tables merge key by key; every other value (numbers, strings, lists such as ``models`` or ``milestones``)
  replaces the base's; ``name`` is never inherited (it defaults to the file's stem);
- ``recipe.iterations`` and ``recipe.epochs`` exclude each other: a file that sets one drops the other;
- ``[overrides.*]`` tables are not merged into each other: every file's override keeps its own ``reason`` and
  values, and all of them apply in file order (``bench.suite.spec.Overrides``);
- each file's keys are checked on their own (``check``), so an unknown key names the file that holds it; a
  missing base and an inheritance cycle are named errors.
"""

from __future__ import annotations

import copy
import hashlib
import sys
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from bench.errors import BenchInputError

if sys.version_info >= (3, 11):
    import tomllib
else:
    import tomli as tomllib

NOT_INHERITED = ("name", "base")
OVERRIDES = "overrides"
SCHEDULE_LENGTH = ("iterations", "epochs")  # exactly one of them describes a recipe's length


@dataclass
class ComposedSuite:
    """A suite document after inheritance, with where every value came from."""

    raw: dict[str, Any]  # the merged document, without ``base`` and ``overrides``
    overrides: list[tuple[Path, dict[str, Any]]]  # every file's overrides table, in application order
    files: list[Path]  # every file read, bases first, the suite itself last
    sha256: str  # over every file's path name and bytes, in order: editing a base changes the suite's hash
    provenance: dict[str, Path] = field(default_factory=dict)  # dotted key -> the file that set it

    def source_of(self, dotted: str | None, default: Path) -> Path:
        """The file that set ``dotted`` or, failing that, its closest parent table."""
        key = (dotted or "").split("[")[0]
        while key:
            if key in self.provenance:
                return self.provenance[key]
            key = key.rpartition(".")[0]
        return default


def read_toml(path: Path) -> tuple[dict[str, Any], bytes]:
    try:
        data = path.read_bytes()
    except OSError as err:
        raise BenchInputError(path, f"cannot read suite: {err.strerror or err}") from None
    try:
        return tomllib.loads(data.decode("utf-8")), data
    except (tomllib.TOMLDecodeError, UnicodeDecodeError) as err:
        raise BenchInputError(path, f"not valid TOML: {err}") from None


def _base_paths(raw: dict[str, Any], path: Path) -> list[Path]:
    base = raw.get("base")
    if base is None:
        return []
    names = [base] if isinstance(base, str) else base
    if not isinstance(names, list) or not names or not all(isinstance(n, str) and n for n in names):
        raise BenchInputError(path, f"must be a file name or a list of file names, got {base!r}",
                              field="base")
    out = []
    for name in names:
        candidate = (path.parent / name).resolve()
        if candidate.suffix != ".toml":
            candidate = candidate.with_name(candidate.name + ".toml")
        if not candidate.is_file():
            raise BenchInputError(path, f"base suite {name!r} not found (looked for {candidate})",
                                  field="base")
        out.append(candidate)
    return out


def compose(path: Path, check: Callable[[dict[str, Any], Path], None]) -> ComposedSuite:
    """Read ``path`` and its bases recursively; ``check(raw, file)`` validates one file's keys on its own."""
    files: list[tuple[Path, dict[str, Any], bytes]] = []
    _collect(path.resolve(), check, (), files, set())
    merged: dict[str, Any] = {}
    provenance: dict[str, Path] = {}
    overrides = []
    for file, raw, _ in files:
        own = {k: v for k, v in raw.items() if k not in (*NOT_INHERITED, OVERRIDES)}
        if file == files[-1][0] and "name" in raw:
            own["name"] = raw["name"]
        merge_into(merged, own, provenance, file)
        if OVERRIDES in raw:
            overrides.append((file, raw[OVERRIDES]))
    digest = hashlib.sha256()
    for file, _, data in files:
        digest.update(file.name.encode() + b"\0" + data + b"\0")
    return ComposedSuite(merged, overrides, [f for f, _, _ in files], digest.hexdigest(), provenance)


def _collect(path: Path, check: Callable[[dict[str, Any], Path], None], chain: tuple[Path, ...],
             out: list[tuple[Path, dict[str, Any], bytes]], seen: set[Path]) -> None:
    """Depth-first, bases before the file; a file reached twice (a diamond) is read once, at its first use."""
    if path in chain:
        cycle = " -> ".join(p.name for p in (*chain[chain.index(path):], path))
        raise BenchInputError(chain[-1], f"suite inheritance cycle: {cycle}", field="base")
    raw, data = read_toml(path)
    check(raw, path)
    for base in _base_paths(raw, path):
        _collect(base, check, (*chain, path), out, seen)
    if path not in seen:
        seen.add(path)
        out.append((path, raw, data))


def merge_into(target: dict[str, Any], update: Mapping[str, Any], provenance: dict[str, Path] | None = None,
               source: Path | None = None, prefix: str = "") -> dict[str, Any]:
    """Deep-merge ``update`` into ``target`` in place (tables by key, anything else replaced) and return it.

    In the top-level ``recipe`` table, setting ``iterations`` drops an inherited ``epochs`` and vice versa.
    """
    for key, value in update.items():
        dotted = f"{prefix}{key}"
        if isinstance(value, Mapping) and isinstance(target.get(key), dict):
            merge_into(target[key], value, provenance, source, f"{dotted}.")
            if dotted == "recipe":
                exclusive_schedule_length(target[key], value)
        else:
            target[key] = copy.deepcopy(dict(value) if isinstance(value, Mapping) else value)
            if provenance is not None and source is not None:
                for leaf in _leaves(value, dotted):
                    provenance[leaf] = source
    return target


def exclusive_schedule_length(recipe: dict[str, Any], update: Mapping[str, Any]) -> None:
    """A recipe layer that states one schedule length replaces the other (a file cannot unset a TOML key)."""
    given = [k for k in SCHEDULE_LENGTH if k in update]
    if len(given) == 1:
        other = SCHEDULE_LENGTH[1 - SCHEDULE_LENGTH.index(given[0])]
        recipe[other] = None


def _leaves(value: Any, dotted: str) -> list[str]:
    if not isinstance(value, Mapping):
        return [dotted]
    out = [dotted]
    for key, inner in value.items():
        out += _leaves(inner, f"{dotted}.{key}")
    return out
