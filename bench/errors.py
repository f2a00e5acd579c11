"""One exception type for bad user input, so every CLI can turn it into a single clear line."""

from __future__ import annotations

from pathlib import Path


class BenchInputError(ValueError):
    """Bad input data: names the file and, where known, the entry and the field.

    CLIs catch it, print ``str(err)`` on one line and exit with status 2, never a traceback.
    """

    def __init__(
        self,
        path: str | Path | None,
        message: str,
        *,
        entry: str | int | None = None,
        field: str | None = None,
    ) -> None:
        self.path = None if path is None else str(path)
        self.entry = entry
        self.field = field
        self.detail = message
        where = self.path or "<input>"
        if entry is not None:
            where += f" [{entry}]"
        if field is not None:
            where += f" field '{field}'"
        super().__init__(f"{where}: {message}")


def resolve_inside(
    root: Path, relative: str, *, source: str | Path, entry: str | int | None = None, field: str = "file_name"
) -> Path:
    """Join ``relative`` to ``root``; refuse paths that escape it (``..``, absolute paths, symlinks)."""
    root = root.resolve()
    candidate = (root / relative).resolve()
    if candidate != root and root not in candidate.parents:
        raise BenchInputError(
            source, f"path {relative!r} escapes the data root {root}", entry=entry, field=field
        )
    return candidate
