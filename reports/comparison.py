"""A run's numbers against the paper registry, and several runs of one table side by side.

A run directory is one protocol (its suite's ``protocol``: "identical", the fair comparison, or "paper",
each model as its paper trains it). Given runs of both, every paper cell shows the paper's number, the
identical protocol's and the paper protocol's, so a reader can tell "the method is better" from "the recipe
is better". Each comparison holds the registry's rows, then each table's FPS-ratio rows (``reports.ratios``)
right after it.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

import pandas as pd

from reports.lead import data_free, with_architecture
from reports.papers import REFERENCE, Tolerance, compare, load_registry
from reports.ratios import compare_ratios, compare_relative, ratio_rows
from reports.rundir import Run, measured_numbers, run_facts
from reports.settings import load_plan

PROTOCOL_ORDER = {"identical": 0, "paper": 1}
PROTOCOL_LABELS = {"identical": "identical", "paper": "paper protocol"}


@dataclass
class RunComparison:
    run: Run
    label: str
    protocol: str
    plan: dict[str, Any] | None
    frame: pd.DataFrame


def protocol_of(run: Run) -> str:
    config = run.manifest.get("suite", {}).get("config", {}) or {}
    return str(config.get("protocol") or "custom")


def label_of(run: Run) -> str:
    protocol = protocol_of(run)
    suite = run.manifest.get("suite", {}).get("name") or run.root.name
    return PROTOCOL_LABELS.get(protocol, f"{suite} run")


def compare_run(run: Run, tolerance: Tolerance) -> RunComparison:
    plan = load_plan(run)
    measured = with_architecture(measured_numbers(run), run, plan)
    facts = run_facts(run)
    registry = load_registry()
    relative = registry[REFERENCE] != ""
    main = pd.concat([compare(registry[~relative], measured, facts, tolerance),
                      compare_relative(registry[relative], measured, facts, tolerance)]).loc[registry.index]
    ratios = compare_ratios(ratio_rows(registry[~relative]), measured, facts, tolerance)
    tables = list(dict.fromkeys(zip(main["seed"], main["table"], strict=True)))
    place = {key: i for i, key in enumerate(tables)}
    main = main.assign(_place=[place[k] for k in zip(main["seed"], main["table"], strict=True)], _ratio=0)
    sources = zip(ratios["seed"], ratios["source_table"], strict=True)
    ratios = ratios.assign(_place=[place.get(k, len(place)) for k in sources], _ratio=1)
    frame = pd.concat([main, ratios], ignore_index=True).sort_values(["_place", "_ratio"], kind="stable")
    frame = frame.drop(columns=["_place", "_ratio"]).reset_index(drop=True)
    return RunComparison(run, label_of(run), protocol_of(run), plan, frame)


def ordered(comparisons: list[RunComparison]) -> list[RunComparison]:
    """The report's own run first when alone; with others, identical before paper protocol."""
    if len(comparisons) == 1:
        return comparisons
    return sorted(comparisons, key=lambda c: PROTOCOL_ORDER.get(c.protocol, len(PROTOCOL_ORDER)))


def labelled(comparisons: list[RunComparison], data_free_only: bool = False
             ) -> list[tuple[str, pd.DataFrame]]:
    """``reports.tables.paper_tables``'s input: (label, frame) per run, optionally only the rows that need no
    data (the same rows for every run)."""
    out = []
    for c in comparisons:
        frame = data_free(c.frame).reset_index(drop=True) if data_free_only else c.frame
        out.append((c.label, frame))
    labels = [label for label, _ in out]
    if len(set(labels)) != len(labels):  # two runs of one protocol: name them by suite
        out = [(f"{label} ({c.run.manifest.get('suite', {}).get('name', c.run.root.name)})", frame)
               for (label, frame), c in zip(out, comparisons, strict=True)]
    return out
