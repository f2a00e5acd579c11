"""Every figure of the page, drawn into ``<run>/figures/`` and embedded for the HTML (base64 PNG).

A figure with nothing honest to show raises ``NotApplicable`` and the page says why instead. Figures that
carry numbers a reader may want to copy (seed 000's fig. 4) bring a table as well.
"""

from __future__ import annotations

import base64
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pandas as pd

from reports.operating_point import DEFINITION as OPERATING_POINT
from reports.plots import accuracy, confusion, curves, dataset, qualitative, seed000, speed, training
from reports.plots import small_objects as small
from reports.plots.style import NotApplicable
from reports.rundir import Run
from reports.tables import fmt

FIGURES = "figures"


@dataclass
class Figure:
    """One figure of the page: drawn (``file`` set) or not applicable (``reason`` says why)."""

    title: str
    caption: str
    file: str | None = None  # relative to the run directory
    reason: str | None = None
    data_uri: str | None = None
    table: tuple[list[str], list[list[str]]] | None = None  # header, rows: the figure's numbers


def data_uri(path: Path) -> str:
    return "data:image/png;base64," + base64.b64encode(path.read_bytes()).decode("ascii")


def _draw(run_dir: Path, name: str, title: str, caption: str, draw: Callable[[Path], Path]) -> Figure:
    path = run_dir / FIGURES / f"{name}.png"
    try:
        draw(path)
    except NotApplicable as why:
        path.unlink(missing_ok=True)  # never leave a stale figure from an earlier build
        return Figure(title, caption, reason=str(why))
    return Figure(title, caption, file=f"{FIGURES}/{name}.png", data_uri=data_uri(path))


def _roc_definition(run: Run) -> str:
    for m in run.models.values():
        if m.metrics and m.metrics.get("roc_definition"):
            return str(m.metrics["roc_definition"])
    return "Miss rate against false positives per image (no model stated a definition)."


def yolo_family_figure(run: Run) -> Figure:
    """Seed 000 fig. 4, with its numbers as a table."""
    table = seed000.yolo_family_table(run)
    figure = _draw(run.root, "yolo_family", "YOLOv5 family: precision, recall, mAP50, mAP (seed 000, fig. 4)",
                   OPERATING_POINT, lambda p: seed000.yolo_family_chart(table, run, p))
    if not table.empty:
        figure.table = (["model", "confidence", "P", "R", "mAP50", "mAP50-95"],
                        [[row["model"], f"{row['confidence']:.3f}",
                          *[fmt(row[m]) for m in seed000.FIG4_METRICS]] for _, row in table.iterrows()])
    return figure


def untrained_note(run: Run, what: str) -> list[Figure]:
    """One entry saying which models a per-model figure leaves out: not trained (a smoke budget); removes
    their confusion figures of an earlier build."""
    names = [name for name, m in run.models.items() if m.state == "done" and m.untrained]
    if not names:
        return []
    for stale in (run.root / FIGURES).glob("confusion_*.png"):  # never leave an earlier build's figure
        if stale.stem.removeprefix("confusion_") in names:
            stale.unlink()
    return [Figure(f"{what}: models not trained", "",
                   reason=f"not drawn for {', '.join(names)}: 0 training iterations (a smoke budget), so "
                          f"their detections are an initialised network's; their numbers are in "
                          f"models/<name>/confusion.json and metrics.json")]


def qualitative_figures(run: Run) -> list[Figure]:
    """Seed 000 figs. 1/6 and seed 001 fig. 4: one figure per chosen test image."""
    title = "Detections on test images with small objects"
    caption = (f"The {qualitative.IMAGES} test images with the most small ground-truth boxes (area < 32² "
               f"px); ground truth in green, then each finished model's detections scoring at least "
               f"{qualitative.SCORE_THRESHOLD} (its class and score on each box).")
    try:
        chosen = qualitative.choose_images(run)
        detections = qualitative.model_detections(run, {c.image_id for c in chosen})
    except NotApplicable as why:
        for stale in (run.root / FIGURES).glob("qualitative_*.png"):
            stale.unlink()
        return [Figure(title, caption, reason=str(why))]
    return [_draw(run.root, f"qualitative_{k}", f"{title}: {c.file_name}", caption,
                  lambda p, c=c: qualitative.detections_figure(run, c, detections, p))
            for k, c in enumerate(chosen, start=1)]


def draw_figures(run: Run, comparison: pd.DataFrame,
                 splits: dict[str, pd.DataFrame]) -> dict[str, list[Figure]]:
    """Every figure section of the page, in page order; figures with nothing to show say why instead."""
    root = run.root
    classes = run.classes
    table2 = comparison[(comparison["seed"] == "004") & (comparison["table"] == "Table 2")
                        & (comparison["metric"] == "voc07_ap_11pt")]
    limit = curves.MAX_PR_PANELS
    subset, why_subset = seed000.class_subset(run)
    return {
        "accuracy": [
            _draw(root, "per_class_ap", "Per-class AP", "VOC 11-point AP at IoU 0.5 per class and model; "
                  "blank cells are classes without test objects.",
                  lambda p: accuracy.per_class_heatmap(run, p)),
            _draw(root, "ap_by_size", "AP by object size", "COCO AP@[.5:.95] on small (< 32² px), medium and "
                  "large (> 96² px) objects; n/a where the test split has no object of that size.",
                  lambda p: accuracy.ap_by_size(run, p)),
            _draw(root, "dfssd_small_classes", "Small-class view (DF-SSD Table 2)",
                  "AP of boat, bottle, chair, pottedplant, tvmonitor and bird: the paper's rows in grey "
                  "(labelled paper), the run's models in their colours where the run has these classes.",
                  lambda p: accuracy.small_class_view(run, table2, p)),
            yolo_family_figure(run),
        ],
        "curves": [
            _draw(root, "pr_per_class", "Precision-recall per class",
                  f"At IoU 0.5; at most {limit} classes (those with the most test objects) to keep the page "
                  "readable; the CSV files in models/*/pr_curves.csv hold every class.",
                  lambda p: curves.pr_per_class(run, p)),
            _draw(root, "pr_yolo_vs_ssd", "YOLOv5 vs SSD (seed 000, fig. 7)",
                  "Best YOLOv5 model against the best SSD-family model by AP50: precision interpolated "
                  "(VOC envelope) on 101 recall points and averaged over classes.",
                  lambda p: curves.yolo_vs_ssd(run, p)),
            _draw(root, "roc", "Detection ROC-style curves", _roc_definition(run),
                  lambda p: curves.roc_curves(run, p)),
        ],
        "confusion": [
            _draw(root, "class_percentages", "Class percentages and confusion (seed 000, fig. 8)",
                  f"Classes shown: {why_subset}. Left: the share of each class's ground-truth boxes that "
                  "each model detects as that class; right: the best model's (by AP50) confusion among these "
                  "classes, other classes and missed (background), in percent of each class's boxes "
                  "(confusion.json's matching).", lambda p: seed000.class_percentages(run, subset, p)),
            *[_draw(root, f"confusion_{name}", f"Confusion matrix: {name}",
                    (m.confusion or {}).get("definition", "") or "Score-ordered one-to-one matching.",
                    lambda p, name=name, m=m: confusion.confusion_matrix(name, m.confusion, p))
              for name, m in run.models.items() if m.state == "done" and not m.untrained],
            *untrained_note(run, "Confusion matrices"),
        ],
        "qualitative": qualitative_figures(run),
        "speed": [
            _draw(root, "fps", "Inference speed (as seed 000, fig. 3)",
                  "FPS per model and speed protocol (mean latency), measured on the run's device.",
                  lambda p: speed.fps_chart(run, p)),
            _draw(root, "speed_accuracy", "Speed-accuracy Pareto plot",
                  "COCO AP50 against FPS of the `model` protocol (fp32, batch 1); the dashed line joins the "
                  "models no other model beats on both.", lambda p: speed.speed_accuracy(run, p)),
        ],
        "training": [
            _draw(root, "training", "Training curves", "Total loss and learning rate per logging interval.",
                  lambda p: training.training_curves(run, p)),
        ],
        "data": [
            _draw(root, "class_counts", "Class counts", "Non-crowd boxes per class in each split.",
                  lambda p: dataset.class_counts(splits, classes, p)),
            _draw(root, "box_shapes", "Box sizes and aspect ratios", "Histograms on log axes; the dotted "
                  "lines are COCO's small/medium/large limits.", lambda p: dataset.box_shapes(splits, p)),
            _draw(root, "labels_correlogram", "Labels correlogram (seed 000, figs. 2 and 5)",
                  "Pairwise histograms of normalised box centre (x, y) and size (w, h), training split.",
                  lambda p: dataset.labels_correlogram(splits["train"], p)),
        ],
    }


def small_objects_context(run: Run) -> dict[str, Any]:
    """Issue 12's section for both templates, read once (``reports.plots.small_objects``): HTML tables with
    embedded figures for the HTML partial, plain rows and figure paths for the Markdown template."""
    dirs = {name: run.root / "models" / name for name, m in run.models.items() if m.state == "done"}
    trained = {name: d for name, d in dirs.items() if not run.models[name].untrained}  # the figures' panels
    out_dir = run.root / FIGURES
    frames = small.small_objects_frames(dirs, out_dir, run_root=run.root, panels=trained)
    drawn = {f"small_objects_{k}.png" for k, v in frames.get("figures", {}).items() if v}
    for stale in out_dir.glob("small_objects_*.png"):  # never leave a figure of an earlier build
        if stale.name not in drawn:
            stale.unlink()
    if not frames.get("available"):
        return {"available": False, "html": frames}
    files = {k: (f"{FIGURES}/{v}" if v else None) for k, v in frames["figures"].items()}
    html = {**small.as_html(frames), "figures": {k: (data_uri(out_dir / v) if v else None)
                                                 for k, v in frames["figures"].items()}}
    rows = {k: None if frames[k] is None else _rows(frames[k]) for k in ("sliced", "paired")}
    return {"available": True, "html": html, "protocol": frames["protocol"], "files": files,
            "tables": {p: _rows(f) for p, f in frames["tables"].items()}, **rows,
            "unpaired": frames["unpaired"]}


def _rows(frame: pd.DataFrame) -> tuple[list[str], list[list[str]]]:
    cells = [["—" if v is None or (isinstance(v, float) and pd.isna(v)) else str(v) for v in row]
             for row in frame.itertuples(index=False)]
    return [str(c) for c in frame.columns], cells
