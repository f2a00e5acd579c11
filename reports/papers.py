"""The paper registry (numbers transcribed from the seed papers) and its comparison with a run.

Every number lives in ``reports/papers/*.csv``, one row per printed number, in the unit the paper prints
(percent for accuracies), so a reader can check each row against the source table by eye. A comparison
row says whether the run reproduces the paper's number within a tolerance, or why the two cannot be
compared at all (different data, input size, priors, hardware or training budget).
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping
from dataclasses import dataclass, field
from pathlib import Path

import pandas as pd

# Light modules (no torch): the one definition of the VOC class list and of pycocotools' summary keys.
from bench.data.voc import VOC_CLASSES
from bench.errors import BenchInputError
from bench.metrics.coco import SUMMARY_KEYS as COCO_METRICS

PAPERS_DIR = Path(__file__).with_name("papers")
# Definition files, not number rows: settings, declared FPS-ratio pairs (reports.ratios), "kept %" shares
SETTINGS_FILE, RATIOS_FILE, SHARES_FILE = "settings.csv", "ratios.csv", "shares.csv"

NUMBER_COLUMNS = ("seed", "citation", "table", "model", "paper_model", "backbone", "metric", "class", "value",
                  "unit", "train_data", "test_data", "input_size", "priors", "hardware", "note", "flagged")
SETTINGS_COLUMNS = ("seed", "citation", "model", "setting", "value", "note", "flagged")
# Optional number column: the zoo model a relative number (RELATIVE_METRICS) is measured against.
REFERENCE = "reference"

DFSSD_SMALL_CLASSES = ("boat", "bottle", "chair", "pottedplant", "tvmonitor", "bird")  # DF-SSD Table 2 order

METRIC_DEFINITIONS: dict[str, str] = {
    "voc07_map_11pt": "VOC2007 test mAP at IoU 0.5, 11-point interpolated AP (the VOC2007 devkit rule these "
                      "papers report)",
    "voc07_ap_11pt": "per-class AP at IoU 0.5 on VOC2007 test, 11-point interpolation",
    "voc07_small6_mean_ap": "mean of the 11-point APs of DF-SSD's six small classes (boat, bottle, chair, "
                            "pottedplant, tvmonitor, bird)",
    **{f"coco_{m}": f"COCO {m} (pycocotools definition, maxDets 100 unless named)" for m in COCO_METRICS},
    "tt100k_map": "mAP on the TT100K traffic-sign test set: VOC devkit 11-point AP at IoU 0.5 averaged over "
                  "Zhu et al.'s 45 classes (MDSSD's own definition is in an Appendix the seed lacks)",
    "kitti_map": "mAP on KITTI 2D object with the 8 classes merged into 3 (pedestrian, motor_vehicle, "
                 "other): VOC devkit 11-point AP at IoU 0.5, DontCare boxes as ignore regions",
    "params": "all parameters (BatchNorm gamma/beta counted; running statistics are buffers, not counted)",
    "size_mb": "fp32 weight size: params x 4 bytes / 2^20",
    "params_kept": "parameters of MFSSD-Pruned as a percentage of FSSD's, Table I's 'After pruning' column "
                   "(22,785,625 / 34,132,960 = 66.76 %)",
    "fps": "images per second of the network, batch 1, fp32 (the run's `model` speed protocol)",
    "priors": "number of prior (default) boxes",
    "voc07_map_change": "VOC2007 test mAP (IoU 0.5, 11-point) of the model minus its reference model's, in "
                        "points (a paper's ablation: what one change of the model costs or gains)",
    "fps_ratio": "FPS of one model over another's, each timed by the `model` protocol (fp32, batch 1) on one "
                 "device: comparable across hardware, unlike absolute FPS",
}
ACCURACY_METRICS = frozenset(m for m in METRIC_DEFINITIONS
                             if m.startswith(("voc07_", "coco_", "tt100k_", "kitti_")))
UNITS = frozenset({"%", "count", "MB", "FPS", "ratio", "points"})
RELATIVE_METRICS = frozenset({"fps_ratio", "voc07_map_change"})  # measured against a reference model
PAPER_CLASSES = {"VOC": 20, "COCO": 80}  # object classes of the papers' data sets (tables add background)

# What the run's test split must be for a paper's number on ``test_data`` to be comparable, with a caveat
# shown next to the status. COCO test-dev has no public ground truth, so val2017 (= minival) stands in.
KITTI_VAL = "KITTI 2D object val (3,712/3,769 split, 3 merged classes)"
TT100K_TEST = "TT100K test"
COMPARABLE_TEST_SETS: dict[str, dict[str, str]] = {
    "VOC2007 test": {"VOC2007 test": ""},
    "COCO test-dev": {"COCO test-dev": "", "COCO val2017": "run on COCO val2017 (test-dev has no public GT)"},
    "KITTI 2D object (3 merged classes)": {
        KITTI_VAL: "the common 3,712/3,769 split (the paper's split is not stated; KITTI's test labels are "
                   "private)"},
    "TT100K test": {TT100K_TEST: ""},
}
STATUSES = ("reproduced", "not reproduced", "not comparable", "missing", "reference")


@dataclass(frozen=True)
class Tolerance:
    """How close a reproduced number must be: absolute points for percentages, relative for the rest."""

    points: float = 1.0
    relative: float = 0.01
    ratio: float = 0.10  # relative, for FPS ratios measured on another device than the paper's

    def accepts(self, paper: float, reproduced: float, unit: str) -> bool:
        if unit in ("%", "points"):
            return abs(reproduced - paper) <= self.points + 1e-9
        share = self.ratio if unit == "ratio" else self.relative
        return abs(reproduced - paper) <= share * abs(paper) + 1e-9


@dataclass(frozen=True)
class ModelFacts:
    """What the comparison needs to know about one model of the run."""

    state: str  # "done", "failed", "pending", "running" or "missing"
    input_size: int | None = None
    priors: int | None = None
    num_classes: int | None = None
    error: str | None = None


@dataclass(frozen=True)
class RunFacts:
    """The run's identity as far as comparability goes; built from the manifest by ``reports.rundir``."""

    test_data: str  # e.g. "VOC2007 test", "COCO val2017", "synthetic (coco_small)"
    synthetic: bool
    paper_budget: bool
    budget_description: str
    device_name: str
    models: Mapping[str, ModelFacts] = field(default_factory=dict)
    zoo: frozenset[str] = frozenset()  # model names the zoo knows; the papers' other models are references


def read_csv_checked(path: Path, columns: Iterable[str]) -> pd.DataFrame:
    try:
        frame = pd.read_csv(path, dtype=str, keep_default_na=False, encoding="utf-8")
    except (OSError, UnicodeDecodeError, pd.errors.ParserError) as err:
        raise BenchInputError(path, f"unreadable CSV: {err}") from err
    missing = [c for c in columns if c not in frame.columns]
    if missing:
        raise BenchInputError(path, f"missing columns {missing}")
    return frame


def _optional_int(values: pd.Series, path: Path, column: str) -> pd.Series:
    numbers = pd.to_numeric(values.replace("", None), errors="coerce")
    bad = numbers.isna() & (values != "")
    if bad.any():
        row = int(bad.idxmax())
        raise BenchInputError(path, f"not an integer: {values[row]!r}", entry=row + 2, field=column)
    return numbers.astype("Int64")


def _validate_numbers(frame: pd.DataFrame, path: Path) -> pd.DataFrame:
    if REFERENCE not in frame:
        frame = frame.assign(**{REFERENCE: ""})
    values = pd.to_numeric(frame["value"], errors="coerce")
    relative = frame["metric"].isin(RELATIVE_METRICS)
    checks = [
        (REFERENCE, relative != (frame[REFERENCE] != ""),
         "a relative metric needs a reference model, and only a relative metric takes one"),
        ("value", values.isna(), "not a number"),
        ("unit", ~frame["unit"].isin(UNITS), f"unit must be one of {sorted(UNITS)}"),
        ("metric", ~frame["metric"].isin(METRIC_DEFINITIONS), "unknown metric (see METRIC_DEFINITIONS)"),
        ("flagged", ~frame["flagged"].isin(("true", "false")), "must be true or false"),
        ("class", (frame["metric"] == "voc07_ap_11pt") & ~frame["class"].isin(VOC_CLASSES),
         "per-class VOC rows need a VOC class name"),
        ("value", (frame["unit"] == "%") & ~values.between(0, 100), "a percentage must lie in [0, 100]"),
    ]
    for column, bad, message in checks:
        if bad.any():
            row = int(bad.idxmax())
            raise BenchInputError(path, f"{message}: {frame.at[row, column]!r}", entry=row + 2, field=column)
    out = frame.assign(value=values, flagged=frame["flagged"] == "true",
                       input_size=_optional_int(frame["input_size"], path, "input_size"),
                       priors=_optional_int(frame["priors"], path, "priors"))
    key = ["seed", "table", "model", "paper_model", "metric", "class", "priors"]
    dup = out.duplicated(key, keep=False)
    if dup.any():
        row = int(dup.idxmax())
        raise BenchInputError(path, "duplicate number for the same paper/table/model/metric/class",
                              entry=row + 2)
    return out


def load_registry(directory: Path = PAPERS_DIR) -> pd.DataFrame:
    """Every transcribed number of every ``*.csv`` in ``directory`` (not the definition files), validated."""
    frames = [_validate_numbers(read_csv_checked(path, NUMBER_COLUMNS), path) for path in
              sorted(directory.glob("*.csv")) if path.name not in (SETTINGS_FILE, RATIOS_FILE, SHARES_FILE)]
    if not frames:
        raise BenchInputError(directory, "no paper registry CSV files found")
    return pd.concat(frames, ignore_index=True)


def load_settings(directory: Path = PAPERS_DIR) -> pd.DataFrame:
    """The training settings the papers state (seed 000's batch sizes, the recipes of 001/003/004)."""
    path = directory / SETTINGS_FILE
    frame = read_csv_checked(path, SETTINGS_COLUMNS)
    bad = ~frame["flagged"].isin(("true", "false"))
    if bad.any():
        row = int(bad.idxmax())
        raise BenchInputError(path, f"must be true or false: {frame.at[row, 'flagged']!r}", entry=row + 2,
                              field="flagged")
    return frame.assign(flagged=frame["flagged"] == "true")


PAPER_GPUS = ("1080ti", "titanv")  # the GPUs the papers time on, squashed as ``_squash`` writes them


def _squash(text: str) -> str:
    return "".join(ch for ch in text.lower() if ch.isalnum())


def same_gpu(paper_hardware: str, device_name: str) -> bool:
    paper, device = _squash(paper_hardware), _squash(device_name)
    return any(gpu in paper and gpu in device for gpu in PAPER_GPUS)


SIZE_METRICS = frozenset({"params", "size_mb", "params_kept"})
ARCHITECTURE_METRICS = SIZE_METRICS | {"priors"}  # facts of the network alone: no data, no training


def paper_class_count(number: Mapping) -> int:
    """The object classes of the paper's data set (its tables count the background too: VOC's 21)."""
    return PAPER_CLASSES["VOC"] if str(number["test_data"]).startswith("VOC") else PAPER_CLASSES["COCO"]


def reasons_not_comparable(number: Mapping, facts: ModelFacts, run: RunFacts,
                            at_paper_classes: bool = False) -> list[str]:
    """Why this paper number cannot be set against the run's, or an empty list when it can."""
    reasons: list[str] = []
    metric = number["metric"]
    if metric in ACCURACY_METRICS:
        accepted = COMPARABLE_TEST_SETS.get(number["test_data"], {})
        if run.test_data not in accepted:
            reasons.append(f"data: run evaluated on {run.test_data}, paper on {number['test_data']}")
        if not run.paper_budget:
            reasons.append(f"budget: {run.budget_description or 'not the paper training schedule'}")
    if metric in SIZE_METRICS and not at_paper_classes:
        paper_classes = paper_class_count(number)
        if facts.num_classes is not None and facts.num_classes != paper_classes:
            reasons.append(f"classes: run model has {facts.num_classes}, paper {paper_classes}")
    size = number["input_size"]
    if not pd.isna(size) and facts.input_size is not None and int(size) != facts.input_size:
        reasons.append(f"input size: run {facts.input_size}, paper {int(size)}")
    priors = number["priors"]
    if metric != "priors" and not pd.isna(priors) and facts.priors not in (None, int(priors)):
        reasons.append(f"priors: run {facts.priors:,}, paper {int(priors):,}")
    if metric == "fps" and not same_gpu(number["hardware"], run.device_name):
        device = run.device_name or "an unknown device"
        reasons.append(f"hardware: run on {device}, paper on {number['hardware']}")
    return reasons


def compare(registry: pd.DataFrame, measured: pd.DataFrame, run: RunFacts,
            tolerance: Tolerance = Tolerance()) -> pd.DataFrame:
    """One row per paper number with ``reproduced``, ``delta``, ``status`` and ``reason`` added.

    ``measured`` holds the run's numbers in the registry's vocabulary: columns model, metric, class, value
    (percent for accuracies) and optionally ``num_classes``: a size counted on the architecture at that many
    classes (``reports.lead.architecture_numbers``), which compares with a paper's table at its own class
    count whatever the run's data, and whether or not the model finished training. Status is
    "reproduced"/"not reproduced" within ``tolerance``; "not comparable"
    when data, budget, input size, priors, classes or hardware differ (the reproduced value is still shown);
    "missing" when the model did not run or finish or the metric was not measured; "reference" for paper
    models with no counterpart in the zoo.
    """
    classes = measured["num_classes"] if "num_classes" in measured else pd.Series(pd.NA, index=measured.index)
    lookup: dict[tuple, float] = {}
    at_classes: dict[tuple, float] = {}
    for (model, metric, cls, value), n in zip(measured[["model", "metric", "class", "value"]].itertuples(
            index=False), classes, strict=True):
        if pd.isna(n):
            lookup[(model, metric, cls)] = value
        else:
            at_classes[(model, metric, cls, int(n))] = value
    reproduced, statuses, reasons = [], [], []
    for row in registry.to_dict("records"):
        key = (row["model"], row["metric"], row["class"])
        architecture = (at_classes.get((*key, paper_class_count(row))) if row["metric"] in SIZE_METRICS
                        else None)
        value = lookup.get(key) if architecture is None else architecture
        facts = run.models.get(row["model"])
        if facts is not None and architecture is not None:
            facts = ModelFacts("done", facts.input_size, facts.priors, facts.num_classes)
        if facts is None:
            in_zoo = row["model"] in run.zoo
            status, why = ("missing", "not in this run's suite") if in_zoo else (
                "reference", "no counterpart in the zoo: shown for reference")
        elif facts.state != "done":
            status = "missing"
            why = f"model {facts.state}" + (f": {facts.error}" if facts.error else "")
        elif blockers := reasons_not_comparable(row, facts, run, architecture is not None):
            status, why = "not comparable", "; ".join(blockers)
        elif value is None:
            status, why = "missing", f"{row['metric']} not measured in this run"
        elif tolerance.accepts(row["value"], value, row["unit"]):
            status, why = "reproduced", tolerance_text(row["unit"], tolerance)
            if architecture is not None:
                why += f" (counted on the architecture at the paper's {paper_class_count(row)} classes)"
        else:
            status, why = "not reproduced", f"outside {tolerance_text(row['unit'], tolerance)}"
        caveat = COMPARABLE_TEST_SETS.get(row["test_data"], {}).get(run.test_data, "")
        if caveat and status in ("reproduced", "not reproduced"):
            why += f" ({caveat})"
        reproduced.append(value)
        statuses.append(status)
        reasons.append(why)
    out = registry.assign(reproduced=pd.array(reproduced, dtype="Float64"), status=statuses, reason=reasons)
    out["delta"] = out["reproduced"] - out["value"]
    return out


def tolerance_text(unit: str, tolerance: Tolerance) -> str:
    if unit in ("%", "points"):
        return f"|delta| <= {tolerance.points:g} points"
    share = tolerance.ratio if unit == "ratio" else tolerance.relative
    return f"|delta| <= {share:.0%} of the paper value"
