"""``train_log.csv``: one row per logging interval of every training stage of a model."""

from __future__ import annotations

import csv
from pathlib import Path
from typing import Any


class TrainLog:
    """``train_log.csv``: one row per logging interval; rows after a resumed checkpoint are dropped."""

    fixed = ("stage", "epoch", "iteration", "lr", "loss")

    def __init__(self, path: Path):
        self.path = path

    def truncate_after(self, stage: str, iteration: int) -> None:
        if not self.path.exists():
            return
        with self.path.open(newline="") as fh:
            rows = list(csv.DictReader(fh))
        keep = [r for r in rows if r["stage"] != stage or int(r["iteration"]) <= iteration]
        if keep:
            self._write(keep, "w")
        else:
            self.path.unlink()

    def append(self, row: dict[str, Any]) -> None:
        self._write([row], "a")

    def _write(self, rows: list[dict[str, Any]], mode: str) -> None:
        new = mode == "w" or not self.path.exists()
        if new:
            extra = sorted(k for k in rows[0] if k not in (*self.fixed, "seconds"))
            columns = [*self.fixed, *extra, "seconds"]
        else:
            with self.path.open(newline="") as fh:
                columns = next(csv.reader(fh))
        with self.path.open(mode, newline="") as fh:
            writer = csv.DictWriter(fh, columns, extrasaction="ignore")
            if new:
                writer.writeheader()
            writer.writerows(rows)
