"""Seed 000's result figures that are not curves: fig. 4 (precision, recall, mAP50 and mAP of the YOLOv5
family at ultralytics' operating point) and fig. 8 (percentages and confusion of the animal classes).

Both read the run's files only: ``roc_curves.csv`` and ``metrics.json`` for fig. 4
(``reports.operating_point`` says how P and R are found), ``confusion.json`` for fig. 8.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import matplotlib.pyplot as plt
import numpy as np
import pandas as pd
import seaborn as sns

from reports.operating_point import model_operating_point
from reports.plots.palette import model_colours
from reports.plots.style import NotApplicable, save
from reports.rundir import Run

YOLO_FAMILY = "yolov5"
FIG4_METRICS = ("P", "R", "mAP50", "mAP50-95")
# The animal classes of VOC (fig. 8 is drawn on VOC2007 test) and COCO, by the data sets' own names.
ANIMAL_CLASSES = frozenset({"bird", "cat", "cow", "dog", "horse", "sheep", "elephant", "bear", "zebra",
                            "giraffe"})
FALLBACK_CLASSES = 8  # without animal classes: this many classes with the most test objects


def yolo_family_table(run: Run) -> pd.DataFrame:
    """Per finished YOLOv5-family model: confidence, P, R (ultralytics' operating point), mAP50, mAP50-95
    (pycocotools), all but the confidence in percent; suite order."""
    rows = []
    for name, m in run.models.items():
        if m.info.get("family") != YOLO_FAMILY or m.state != "done":
            continue
        point = model_operating_point(m.metrics, m.roc_curves)
        coco = (m.metrics or {}).get("coco") or {}
        if point is None:
            continue
        rows.append({"model": name, "confidence": point.confidence, "P": 100 * point.precision,
                     "R": 100 * point.recall, "mAP50": _pct(coco.get("AP50")),
                     "mAP50-95": _pct(coco.get("AP"))})
    return pd.DataFrame(rows, columns=["model", "confidence", *FIG4_METRICS])


def _pct(value: Any) -> float:
    return np.nan if value is None or value < 0 else 100.0 * float(value)


def yolo_family_chart(table: pd.DataFrame, run: Run, path: Path) -> Path:
    if table.empty:
        raise NotApplicable("needs a finished YOLOv5-family model with roc_curves.csv and per-class counts "
                            "in metrics.json")
    colours = model_colours(table["model"], run.zoo)
    fig, ax = plt.subplots(figsize=(max(5.0, 1.1 * len(FIG4_METRICS) * max(1, len(table) / 3)), 3.4))
    width = 0.8 / len(table)
    x = np.arange(len(FIG4_METRICS))
    for i, (name, values) in enumerate(zip(table["model"], table[list(FIG4_METRICS)].to_numpy(dtype=float),
                                           strict=True)):
        bars = ax.bar(x + i * width - 0.4 + width / 2, np.nan_to_num(values), width, label=name,
                      color=colours[name])
        ax.bar_label(bars, labels=[f"{v:.1f}" if np.isfinite(v) else "n/a" for v in values], fontsize=6)
    ax.set_xticks(x, ["precision", "recall", "mAP50", "mAP50-95"])
    ax.set_ylabel("%")
    ax.set_ylim(0, 105)
    ax.set_title("YOLOv5 family on the test split (as seed 000 fig. 4; measured in this run)")
    ax.legend(ncols=min(5, len(table)), loc="upper left", bbox_to_anchor=(0, -0.1))
    return save(fig, path)


def class_subset(run: Run) -> tuple[list[str], str]:
    """The classes fig. 8 shows and why: the run's animal classes by name, else those with most objects."""
    animals = [c for c in run.classes if c in ANIMAL_CLASSES]
    if animals:
        return animals, f"the run's animal classes ({', '.join(animals)})"
    n_gt: dict[str, int] = {}
    for m in run.models.values():
        for c in (m.metrics or {}).get("per_class", []):
            n_gt[c["class"]] = max(n_gt.get(c["class"], 0), int(c.get("n_gt") or 0))
    ranked = sorted((c for c in run.classes if n_gt.get(c, 0) > 0), key=lambda c: -n_gt[c])
    chosen = [c for c in run.classes if c in ranked[:FALLBACK_CLASSES]]
    return chosen, (f"no animal class in this run: the {len(chosen)} classes with the most test objects "
                    f"({', '.join(chosen)})")


def class_shares(confusion: dict[str, Any], subset: list[str]) -> pd.DataFrame:
    """Per class of ``subset``: its ground-truth boxes detected as itself, as another class, or missed, in
    percent of its boxes (rows of the confusion matrix: ground truth; last column: background = missed)."""
    labels = [str(c) for c in confusion["classes"]]
    matrix = np.asarray(confusion["matrix"], dtype=float)
    rows = {}
    for cls in subset:
        if cls not in labels:
            continue
        i = labels.index(cls)
        total = matrix[i].sum()
        if total == 0:
            continue
        correct, missed = matrix[i, i], matrix[i, -1]
        rows[cls] = {"correct": 100 * correct / total,
                     "as another class": 100 * (total - correct - missed) / total,
                     "missed": 100 * missed / total, "boxes": total}
    return pd.DataFrame.from_dict(rows, orient="index")


def subset_confusion(confusion: dict[str, Any], subset: list[str]) -> pd.DataFrame:
    """The confusion rows of ``subset`` in percent of each row: the subset's columns, then the rest."""
    labels = [str(c) for c in confusion["classes"]]
    matrix = np.asarray(confusion["matrix"], dtype=float)
    keep = [labels.index(c) for c in subset if c in labels]
    totals = matrix[keep].sum(axis=1, keepdims=True)
    share = np.divide(100 * matrix[keep], totals, out=np.zeros_like(matrix[keep]), where=totals > 0)
    rest = [j for j in range(len(labels) - 1) if j not in keep]
    frame = pd.DataFrame(share[:, keep], index=[labels[i] for i in keep], columns=[labels[i] for i in keep])
    frame["other classes"] = share[:, rest].sum(axis=1)
    frame["missed"] = share[:, -1]
    return frame


def class_percentages(run: Run, subset: list[str], path: Path) -> Path:
    """Left: % of each subset class's boxes detected correctly, per model. Right: the best model's (AP50)
    confusion among the subset in percent of each class's boxes."""
    confusions = {name: m.confusion for name, m in run.models.items()
                  if m.state == "done" and m.confusion and m.confusion.get("matrix")}
    shares = {name: class_shares(c, subset) for name, c in confusions.items()}
    shares = {name: s for name, s in shares.items() if not s.empty}
    if not subset or not shares:
        raise NotApplicable("no finished model wrote a confusion matrix with boxes of the chosen classes")
    correct = pd.DataFrame({name: s["correct"] for name, s in shares.items()}).reindex(
        [c for c in subset if any(c in s.index for s in shares.values())])
    best = max(shares, key=lambda n: ((run.models[n].metrics or {}).get("coco") or {}).get("AP50") or 0.0)
    matrix = subset_confusion(confusions[best], list(correct.index))
    widths = [max(2, correct.shape[1]), max(3, matrix.shape[1])]
    fig, (left, right) = plt.subplots(1, 2, figsize=(3 + 0.75 * sum(widths), 2.2 + 0.45 * len(correct)),
                                      layout="constrained", gridspec_kw={"width_ratios": widths})
    sns.heatmap(correct, vmin=0, vmax=100, cmap="viridis", annot=True, fmt=".0f", ax=left,
                annot_kws={"fontsize": 7}, cbar=False)
    left.set_title("detected as its class (% of boxes)")
    left.set_xlabel("model")
    left.set_ylabel("class")
    sns.heatmap(matrix, vmin=0, vmax=100, cmap="Blues", annot=True, fmt=".0f", ax=right,
                annot_kws={"fontsize": 7}, cbar_kws={"label": "% of the class's boxes"})
    right.set_title(f"{best} (best AP50): % of each row")
    right.set_xlabel("predicted")
    right.set_ylabel("")
    for ax in (left, right):
        ax.tick_params(axis="x", labelrotation=60)
        ax.grid(False)
    threshold = confusions[best].get("score_thresh")
    fig.suptitle(f"Class percentages and confusion (as seed 000 fig. 8; score >= {threshold}, "
                 f"IoU >= {confusions[best].get('iou_thresh')})")
    return save(fig, path)
