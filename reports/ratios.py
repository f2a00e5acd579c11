"""Relative numbers: FPS ratios between a table's models (hardware-independent speed) and a paper's other
numbers measured against a reference model (``reference`` column: an ablation's mAP change, a speed ratio).

Absolute FPS depend on the GPU (the papers time on a GTX 1080Ti) and compare only on that GPU. The ratio of
two models' FPS timed on one device depends far less on which device, so every paper table with FPS rows
also yields ratio rows, compared on any device within ``Tolerance.ratio`` and labelled with both devices.
The pairs: each FPS row of a table over the table's first FPS row (its baseline: SSD in seed 001 Table IV,
so MDSSD / SSD = 38.5 / 72), and the pairs ``papers/ratios.csv`` names (MFSSD-Pruned / MFSSD, ...).
"""

from __future__ import annotations

from collections.abc import Mapping
from pathlib import Path
from typing import Any

import pandas as pd

from bench.errors import BenchInputError
from reports.papers import (
    PAPERS_DIR,
    RATIOS_FILE,
    REFERENCE,
    RunFacts,
    Tolerance,
    read_csv_checked,
    reasons_not_comparable,
    same_gpu,
    tolerance_text,
)

RATIO_METRIC = "fps_ratio"
REFERENCE_ONLY = "no counterpart in the zoo for both: shown for reference"
RATIO_COLUMNS = ("seed", "table", "numerator", "numerator_priors", "denominator", "denominator_priors",
                 "note")


def ratio_table_name(table: str) -> str:
    return f"{table}: FPS ratios"


def load_pairs(directory: Path = PAPERS_DIR) -> pd.DataFrame:
    path = directory / RATIOS_FILE
    if not path.is_file():
        return pd.DataFrame(columns=list(RATIO_COLUMNS))
    return read_csv_checked(path, RATIO_COLUMNS)


def _find(frame: pd.DataFrame, paper_model: str, priors: str, path: Path, entry: int) -> Mapping[str, Any]:
    want = frame[(frame["paper_model"] == paper_model)
                 & ((frame["priors"].astype("string") == priors) if priors else frame["priors"].isna())]
    if len(want) != 1:
        raise BenchInputError(path, f"names no single FPS row {paper_model!r} (priors {priors or 'none'})",
                              entry=entry)
    return want.iloc[0].to_dict()


def ratio_rows(registry: pd.DataFrame, pairs: pd.DataFrame | None = None) -> pd.DataFrame:
    """The ratio rows of every table with two FPS rows or more, in the registry's columns plus
    ``numerator``/``denominator`` (zoo names); ``model`` reads "numerator / denominator"."""
    pairs = load_pairs() if pairs is None else pairs
    fps = registry[registry["metric"] == "fps"]
    rows = []
    for (seed, table), frame in fps.groupby(["seed", "table"], sort=False):
        if len(frame) < 2:
            continue
        records = frame.to_dict("records")
        chosen = [(r, records[0], "over the table's first FPS row") for r in records[1:]]
        declared = pairs[(pairs["seed"] == seed) & (pairs["table"] == table)]
        for entry, pair in zip(declared.index, declared.to_dict("records"), strict=True):
            path = PAPERS_DIR / RATIOS_FILE
            chosen.append((_find(frame, pair["numerator"], pair["numerator_priors"], path, entry + 2),
                           _find(frame, pair["denominator"], pair["denominator_priors"], path, entry + 2),
                           pair["note"]))
        for num, den, note in chosen:
            rows.append({**num, "table": ratio_table_name(table), "source_table": table,
                         "metric": RATIO_METRIC, "unit": "ratio",
                         "model": f"{num['model']} / {den['model']}",
                         "paper_model": f"{_label(num)} / {_label(den)}",
                         "value": num["value"] / den["value"], "numerator": num["model"],
                         "denominator": den["model"], "numerator_priors": num["priors"],
                         "denominator_priors": den["priors"],
                         "flagged": bool(num["flagged"] or den["flagged"]),
                         "note": f"{num['value']:g} / {den['value']:g} FPS, {note}"})
    columns = [*registry.columns, "source_table", "numerator", "denominator", "numerator_priors",
               "denominator_priors"]
    return pd.DataFrame(rows, columns=columns)


def compare_ratios(rows: pd.DataFrame, measured: pd.DataFrame, run: RunFacts,
                   tolerance: Tolerance | None = None) -> pd.DataFrame:
    """``reports.papers.compare``'s columns for ratio rows: the run's FPS ratio of the same two models."""
    tolerance = tolerance or Tolerance()
    fps = measured[measured["metric"] == "fps"].set_index("model")["value"].to_dict()
    device = run.device_name or "an unknown device"
    reproduced, statuses, reasons = [], [], []
    for row in rows.to_dict("records"):
        value, status, why = None, "", ""
        facts = [run.models.get(row["numerator"]), run.models.get(row["denominator"])]
        if any(f is None for f in facts):
            in_zoo = all(m in run.zoo for m in (row["numerator"], row["denominator"]))
            absent = "not both in this run's suite"
            status, why = ("missing", absent) if in_zoo else ("reference", REFERENCE_ONLY)
        elif any(f.state != "done" for f in facts):
            status, why = "missing", "model " + ", ".join(f.state for f in facts if f.state != "done")
        elif blockers := _blockers(row, facts):
            status, why = "not comparable", "; ".join(blockers)
        elif row["numerator"] not in fps or row["denominator"] not in fps:
            status, why = "missing", "FPS (model protocol, batch 1) not measured for both"
        else:
            value = fps[row["numerator"]] / fps[row["denominator"]]
            ok = tolerance.accepts(row["value"], value, "ratio")
            status = "reproduced" if ok else "not reproduced"
            text = tolerance_text("ratio", tolerance)
            why = text if ok else f"outside {text}"
            same = same_gpu(row["hardware"], device)
            why += f"; measured on {device}" + ("" if same else f", the paper on {row['hardware']}")
        reproduced.append(value)
        statuses.append(status)
        reasons.append(why)
    out = rows.assign(reproduced=pd.array(reproduced, dtype="Float64"), status=statuses, reason=reasons)
    out["delta"] = out["reproduced"] - out["value"]
    return out


def _label(row: Mapping[str, Any]) -> str:
    """A paper row's name, with its prior count where the table lists a model at two counts (SSD)."""
    return row["paper_model"] if pd.isna(row["priors"]) else f"{row['paper_model']} ({int(row['priors']):,})"


def _blockers(row: Mapping[str, Any], facts: list[Any]) -> list[str]:
    reasons = []
    for side, f in zip(("numerator", "denominator"), facts, strict=True):
        priors = row[f"{side}_priors"]
        if not pd.isna(priors) and f.priors not in (None, int(priors)):
            reasons.append(f"priors: run {row[side]} {f.priors:,}, paper {int(priors):,}")
        size = row["input_size"]
        if not pd.isna(size) and f.input_size is not None and int(size) != f.input_size:
            reasons.append(f"input size: run {row[side]} {f.input_size}, paper {int(size)}")
    return reasons


def compare_relative(rows: pd.DataFrame, measured: pd.DataFrame, run: RunFacts,
                     tolerance: Tolerance | None = None) -> pd.DataFrame:
    """Registry rows with a ``reference`` model: FPS ratios as ``compare_ratios``; ``voc07_map_change`` as
    the run's mAP of the model minus its reference's, comparable where the accuracy rules allow it."""
    tolerance = tolerance or Tolerance()
    rows = rows.assign(numerator=rows["model"], denominator=rows[REFERENCE], numerator_priors=rows["priors"],
                       denominator_priors=pd.NA)
    ratios = compare_ratios(rows[rows["metric"] == RATIO_METRIC], measured, run, tolerance)
    maps = measured[measured["metric"] == "voc07_map_11pt"].set_index("model")["value"].to_dict()
    changes = rows[rows["metric"] != RATIO_METRIC]
    reproduced, statuses, reasons = [], [], []
    for row in changes.to_dict("records"):
        value = None
        facts = [run.models.get(row["model"]), run.models.get(row[REFERENCE])]
        if any(f is None for f in facts):
            in_zoo = all(m in run.zoo for m in (row["model"], row[REFERENCE]))
            absent = f"{row['model']} and {row[REFERENCE]} are not both in this run"
            status, why = ("missing", absent) if in_zoo else ("reference", REFERENCE_ONLY)
        elif any(f.state != "done" for f in facts):
            status, why = "missing", "model " + ", ".join(f.state for f in facts if f.state != "done")
        elif blockers := reasons_not_comparable(row, facts[0], run):  # the reference shares the run
            status, why = "not comparable", "; ".join(blockers)
        elif row["model"] not in maps or row[REFERENCE] not in maps:
            status, why = "missing", "VOC07 mAP not measured for both"
        else:
            value = maps[row["model"]] - maps[row[REFERENCE]]
            ok = tolerance.accepts(row["value"], value, row["unit"])
            status = "reproduced" if ok else "not reproduced"
            text = tolerance_text(row["unit"], tolerance)
            why = f"{row['model']} minus {row[REFERENCE]}; " + (text if ok else f"outside {text}")
        reproduced.append(value)
        statuses.append(status)
        reasons.append(why)
    out = changes.assign(reproduced=pd.array(reproduced, dtype="Float64"), status=statuses, reason=reasons)
    out["delta"] = out["reproduced"] - out["value"]
    return pd.concat([ratios, out]).loc[rows.index]

