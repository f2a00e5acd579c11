"""The report's tables as plain rows of formatted strings, shared by the HTML and Markdown templates."""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

import pandas as pd

from reports.papers import METRIC_DEFINITIONS
from reports.rundir import Run

MISSING = "—"
STATUS_SYMBOLS = {"reproduced": "✓", "not reproduced": "✗", "not comparable": "≠", "missing": "∅",
                  "reference": "·"}
SUMMARY_METRICS = ("AP", "AP50", "AP75", "APs", "APm", "APl")
PROTOCOL_ORDER = {"model": 0, "e2e": 1, "throughput": 2}


def fmt(value: Any, unit: str = "%") -> str:
    """Numbers as the papers print them: percent with one decimal, counts with separators."""
    if value is None or pd.isna(value):
        return MISSING
    if unit == "count":
        return f"{value:,.0f}"
    if unit in ("MB", "ratio"):
        return f"{value:.2f}"
    return f"{value:.1f}"


def fmt_delta(value: Any, unit: str) -> str:
    if value is None or pd.isna(value):
        return MISSING
    if unit == "count":
        return f"{value:+,.0f}"
    return f"{value:+.2f}" if unit in ("MB", "ratio") else f"{value:+.1f}"


@dataclass
class SummaryRow:
    model: str
    state: str
    cells: list[str]


def fps_p50(result: dict[str, Any]) -> float | None:
    """Frames per second at the median latency (batch images per p50 interval)."""
    p50 = result.get("p50_ms")
    return None if not p50 else 1000.0 * result.get("batch", 1) / p50


def summary(run: Run) -> tuple[list[str], list[SummaryRow]]:
    """Header and one row per model (failed and missing models included, their cells empty)."""
    found = {(r["protocol"], r["precision"], r["batch"]) for m in run.models.values()
             for r in (m.speed or {}).get("results", [])}
    settings = sorted(found, key=lambda s: (PROTOCOL_ORDER.get(s[0], len(PROTOCOL_ORDER)), *s))
    header = ["model", "state", "params", "GFLOPs", *SUMMARY_METRICS, "VOC07 mAP 11-pt", "VOC07 mAP all-pt",
              *[f"FPS p50 {p} {prec} b{b}" for p, prec, b in settings]]
    rows = []
    for name, m in run.models.items():
        coco = (m.metrics or {}).get("coco") or {}
        voc = (m.metrics or {}).get("voc") or {}
        percents = [coco.get(k) for k in SUMMARY_METRICS] + [voc.get("mAP_11pt"), voc.get("mAP_allpt")]
        results = (m.speed or {}).get("results", [])
        timings = {(r["protocol"], r["precision"], r["batch"]): fps_p50(r) for r in results}
        cells = [fmt(m.params, "count"), fmt((m.complexity or {}).get("gflops"), "GFLOPs"),
                 *[fmt(None if v is None or v < 0 else 100 * v) for v in percents],
                 *[fmt(timings.get(s), "FPS") for s in settings]]
        state = m.state if not m.error else f"{m.state}: {m.error}"
        rows.append(SummaryRow(name, state, cells))
    return header, rows


def class_statistics(classes: list[str], splits: dict[str, pd.DataFrame]) -> list[list[str]]:
    """Per class: boxes in each split and the share of small test boxes (COCO's < 32² px)."""
    names = list(dict.fromkeys([*classes, *(c for boxes in splits.values() for c in boxes["class"])]))
    counts = {split: boxes["class"].value_counts() for split, boxes in splits.items()}
    test = splits.get("test", pd.DataFrame(columns=["class", "side"]))
    small = (test["side"] < 32).groupby(test["class"]).mean() if len(test) else pd.Series(dtype=float)
    return [[name, *[fmt(counts[s].get(name, 0), "count") for s in splits],
             f"{small[name]:.0%}" if name in small.index else MISSING] for name in names]


@dataclass
class Measured:
    """One run's number for a paper cell: the run is labelled by its protocol (identical, paper...)."""

    label: str
    reproduced: str
    delta: str
    status: str
    symbol: str


@dataclass
class Cell:
    paper: str
    flagged: bool
    runs: list[Measured]

    @property
    def first(self) -> Measured:
        return self.runs[0]

    @property
    def reproduced(self) -> str:
        return self.first.reproduced

    @property
    def delta(self) -> str:
        return self.first.delta

    @property
    def status(self) -> str:
        return self.first.status

    @property
    def symbol(self) -> str:
        return self.first.symbol


@dataclass
class PaperRow:
    model: str
    paper_model: str
    backbone: str
    input_size: str
    priors: str
    cells: list[Cell | None]
    reasons: list[str]


@dataclass
class PaperTable:
    seed: str
    citation: str
    table: str
    columns: list[str]
    rows: list[PaperRow]
    definitions: list[str]
    notes: list[str] = field(default_factory=list)
    counts: dict[str, int] = field(default_factory=dict)


def _column(row: dict[str, Any]) -> str:
    return row["class"] or row["metric"]


def _row_key(row: dict[str, Any]) -> tuple:
    return row["model"], row["paper_model"], row["input_size"], row["priors"]


def paper_tables(comparisons: pd.DataFrame | list[tuple[str, pd.DataFrame]]) -> list[PaperTable]:
    """Each paper table in its own layout: one row per printed model row, one column per metric or class.

    ``comparisons``: one comparison, or several labelled ones (a run per protocol) of the same registry rows
    in the same order; every cell then carries each run's number beside the paper's.
    """
    labelled = [("run", comparisons)] if isinstance(comparisons, pd.DataFrame) else list(comparisons)
    primary = labelled[0][1]
    if any(len(frame) != len(primary) for _, frame in labelled):
        raise ValueError("comparisons of different registry rows cannot share a table")
    others = [(label, frame.reset_index(drop=True)) for label, frame in labelled]
    tables = []
    for (seed, table), frame in primary.reset_index(drop=True).groupby(["seed", "table"], sort=False):
        records = frame.to_dict("records")
        columns = list(dict.fromkeys(_column(r) for r in records))
        row_keys = list(dict.fromkeys(_row_key(r) for r in records))
        cells: dict[tuple, dict[str, Cell]] = {key: {} for key in row_keys}
        reasons: dict[tuple, list[str]] = {key: [] for key in row_keys}
        info: dict[tuple, dict[str, Any]] = {}
        notes: dict[str, list[str]] = {}  # note -> the cells it annotates
        for position, r in zip(frame.index, records, strict=True):
            key = _row_key(r)
            info.setdefault(key, r)
            runs = []
            for label, other in others:
                o = other.iloc[position]
                runs.append(Measured(label, fmt(o["reproduced"], r["unit"]), fmt_delta(o["delta"], r["unit"]),
                                     o["status"], STATUS_SYMBOLS[o["status"]]))
                why = o["reason"] if len(others) == 1 else f"{label}: {o['reason']}"
                if why not in reasons[key]:
                    reasons[key].append(why)
            cells[key][_column(r)] = Cell(fmt(r["value"], r["unit"]), bool(r["flagged"]), runs)
            if r["note"]:
                notes.setdefault(r["note"], []).append(f"{r['paper_model']} {_column(r)}")
        rows = [PaperRow(info[key]["model"], info[key]["paper_model"], info[key]["backbone"],
                         fmt(info[key]["input_size"], "count"), fmt(info[key]["priors"], "count"),
                         [cells[key].get(c) for c in columns], reasons[key])
                for key in row_keys]
        metrics = list(dict.fromkeys(frame["metric"]))
        tables.append(PaperTable(seed, records[0]["citation"], table, columns, rows,
                                 [f"{m}: {METRIC_DEFINITIONS[m]}" for m in metrics],
                                 [f"{', '.join(where)}: {note}" for note, where in notes.items()],
                                 frame["status"].value_counts().to_dict()))
    return tables
