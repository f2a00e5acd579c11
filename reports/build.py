"""``python -m reports.build RUN_DIR [--tolerance 1.0]``: write report.md, report.html and figures/ for a run.

Everything comes from the run directory and the paper registry; nothing is recomputed from models. The
HTML embeds its figures (base64 PNG) so it works offline as one file; the Markdown links ``figures/``.
"""

from __future__ import annotations

import argparse
import base64
import sys
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import jinja2
import pandas as pd
from markupsafe import Markup

from bench.errors import BenchInputError
from reports import tables
from reports.papers import Tolerance, compare, load_registry, load_settings
from reports.plots import accuracy, confusion, curves, dataset, speed, training
from reports.plots.style import NotApplicable
from reports.rundir import Run, load_run, measured_numbers, run_facts, test_data_identity

TEMPLATES = Path(__file__).with_name("templates")
FIGURES = "figures"


@dataclass
class Figure:
    """One figure of the page: drawn (``file`` set) or not applicable (``reason`` says why)."""

    title: str
    caption: str
    file: str | None = None  # relative to the run directory
    reason: str | None = None
    data_uri: str | None = None


def _draw(run_dir: Path, name: str, title: str, caption: str, draw: Callable[[Path], Path]) -> Figure:
    path = run_dir / FIGURES / f"{name}.png"
    try:
        draw(path)
    except NotApplicable as why:
        path.unlink(missing_ok=True)  # never leave a stale figure from an earlier build
        return Figure(title, caption, reason=str(why))
    uri = "data:image/png;base64," + base64.b64encode(path.read_bytes()).decode("ascii")
    return Figure(title, caption, file=f"{FIGURES}/{name}.png", data_uri=uri)


def draw_figures(run: Run, comparison: pd.DataFrame,
                 splits: dict[str, pd.DataFrame]) -> dict[str, list[Figure]]:
    """Every figure section of the page, in page order; figures with nothing to show say why instead."""
    root = run.root
    classes = run.classes
    table2 = comparison[(comparison["seed"] == "004") & (comparison["table"] == "Table 2")
                        & (comparison["metric"] == "voc07_ap_11pt")]
    limit = curves.MAX_PR_PANELS
    sections = {
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
            _draw(root, f"confusion_{name}", f"Confusion matrix: {name}",
                  (m.confusion or {}).get("definition", "") or "Score-ordered one-to-one matching.",
                  lambda p, name=name, m=m: confusion.confusion_matrix(name, m.confusion, p))
            for name, m in run.models.items() if m.state == "done"
        ],
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
    return sections


def _roc_definition(run: Run) -> str:
    for m in run.models.values():
        if m.metrics and m.metrics.get("roc_definition"):
            return str(m.metrics["roc_definition"])
    return "Miss rate against false positives per image (no model stated a definition)."


def banners(run: Run) -> list[str]:
    data = run.manifest.get("data", {})
    budget = run.manifest.get("budget", {})
    out = []
    if data.get("synthetic"):
        name = data.get("name", "?")
        out.append(f"Synthetic data: this run uses the generated embedded data set ({name}), "
                   "not a paper's data set, so no paper number is comparable; the paper numbers are shown "
                   "for reference only.")
    if not budget.get("paper_budget"):
        out.append("Not the papers' training budget: " + (budget.get("description") or "schedule not stated")
                   + ". Accuracies are not expected to reach the papers'.")
    return out


def settings_rows(run: Run) -> list[dict[str, str]]:
    """The papers' stated settings beside the run's recipe value for the same model and key, if any."""
    rows = []
    for s in load_settings().to_dict("records"):
        model = run.models.get(s["model"])
        recipe = (model.info.get("recipe") or {}) if model else {}
        rows.append({**s, "run": str(recipe[s["setting"]]) if s["setting"] in recipe else tables.MISSING})
    return rows


def context(run: Run, tolerance: Tolerance) -> dict[str, Any]:
    """Everything both templates show: tables as formatted strings, figures drawn and embedded."""
    comparison = compare(load_registry(), measured_numbers(run), run_facts(run), tolerance)
    header, summary_rows = tables.summary(run)
    splits = {"train": dataset.boxes_table(run.train_gt), "test": dataset.boxes_table(run.test_gt)}
    return {
        "manifest": run.manifest,
        "run_name": run.root.name,
        "test_data": test_data_identity(run.manifest),
        "banners": banners(run),
        "summary_header": header,
        "summary_rows": summary_rows,
        "paper_tables": tables.paper_tables(comparison),
        "status_symbols": tables.STATUS_SYMBOLS,
        "status_counts": comparison["status"].value_counts().to_dict(),
        "tolerance": tolerance,
        "figures": draw_figures(run, comparison, splits),
        "class_header": ["class", *[f"{split} boxes" for split in splits], "test boxes < 32² px"],
        "class_rows": tables.class_statistics(run.classes, splits),
        "models": run.models,
        "settings": settings_rows(run),
    }


_MD_ESCAPES = str.maketrans({"&": "&amp;", "<": "&lt;", ">": "&gt;", "|": "\\|", "\n": " ", "\\": "\\\\",
                             "`": "\\`", "*": "\\*", "_": "\\_", "[": "\\[", "]": "\\]"})


def _md_escape(value: Any) -> str:
    """Make data text inert in Markdown: no raw HTML, no table breaks, no emphasis, code or links."""
    return str(value).translate(_MD_ESCAPES)


def environments() -> tuple[jinja2.Environment, jinja2.Environment]:
    loader = jinja2.FileSystemLoader(TEMPLATES)
    html = jinja2.Environment(loader=loader, autoescape=True, undefined=jinja2.StrictUndefined,
                              trim_blocks=True, lstrip_blocks=True)
    markdown = jinja2.Environment(loader=loader, autoescape=False, undefined=jinja2.StrictUndefined,
                                  trim_blocks=True, lstrip_blocks=True,
                                  finalize=lambda v: v if isinstance(v, Markup) else _md_escape(v))
    return html, markdown


def build_report(run_dir: Path, tolerance: Tolerance | None = None) -> tuple[Path, Path]:
    """Write ``report.md`` and ``report.html`` (and ``figures/``) into ``run_dir``; returns both paths."""
    run = load_run(Path(run_dir))
    ctx = context(run, tolerance or Tolerance())
    html_env, md_env = environments()
    md_path, html_path = run.root / "report.md", run.root / "report.html"
    md_path.write_text(md_env.get_template("report.md.j2").render(ctx), encoding="utf-8")
    html_path.write_text(html_env.get_template("report.html.j2").render(ctx), encoding="utf-8")
    return md_path, html_path


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m reports.build", description=__doc__.splitlines()[0])
    parser.add_argument("run_dir", type=Path, help="a run directory written by python -m bench.run")
    parser.add_argument("--tolerance", type=float, default=1.0,
                        help="points within which a reproduced percentage counts as reproduced (default 1.0)")
    parser.add_argument("--relative-tolerance", type=float, default=0.01,
                        help="relative tolerance for counts, sizes and FPS (default 0.01)")
    args = parser.parse_args(argv)
    try:
        paths = build_report(args.run_dir, Tolerance(args.tolerance, args.relative_tolerance))
    except BenchInputError as err:
        print(f"error: {err}", file=sys.stderr)
        return 2
    for path in paths:
        print(path)
    return 0


if __name__ == "__main__":
    sys.exit(main())
