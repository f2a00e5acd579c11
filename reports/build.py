"""``python -m reports.build RUN_DIR [--compare OTHER_RUN_DIR ...]``: write report.md, report.html, figures/.

Everything comes from the run directories and the paper registry; nothing is recomputed from models. With
``--compare`` (a run of the other protocol: identical / paper), every paper table shows the paper's number
beside each run's. The page leads with the paper numbers that need no data (``reports.lead``). The HTML
embeds its figures (base64 PNG) so it works offline as one file; the Markdown links ``figures/``.
"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path
from typing import Any

import jinja2
from markupsafe import Markup

from bench.errors import BenchInputError
from reports import lead, tables
from reports.comparison import compare_run, labelled, ordered
from reports.figures import draw_figures, small_objects_context
from reports.health import data_health
from reports.papers import Tolerance
from reports.plots import dataset
from reports.rundir import Run, identify_test_set, load_run
from reports.settings import settings_rows

TEMPLATES = Path(__file__).with_name("templates")


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
    capped = [f"{name} ({', '.join(s['stage'] for s in stages)})"
              for name, stages in lead.capped_stages(run).items()]
    if capped:
        out.append("Budget not completed: the wall-clock safety cap stopped " + "; ".join(capped)
                   + " before the planned iterations, so these models trained less than the suite's rule "
                     "gives them (see Learnability and budget).")
    return out


def overrides_of(run: Run, plan: dict[str, Any] | None) -> dict[str, list[dict[str, Any]]]:
    """Every override applying to each model (family, group, model), with its reason and source file."""
    out = {}
    for name, m in run.models.items():
        layers = lead.plan_model(plan, name).get("overrides")
        if layers is None:  # a run without plan.json: the model's own override, as info.json recorded it
            own = m.info.get("overrides")
            layers = [{"kind": "model", "target": name, **own}] if own else []
        out[name] = [{**o, "label": o["target"] if o["kind"] == "model" else f"{o['kind']} {o['target']}"}
                     for o in layers]
    return out


def context(run: Run, tolerance: Tolerance, others: list[Run] | None = None) -> dict[str, Any]:
    """Everything both templates show: tables as formatted strings, figures drawn and embedded."""
    own = compare_run(run, tolerance)
    runs = ordered([own, *(compare_run(other, tolerance) for other in others or [])])
    comparison = own.frame
    header, summary_rows = tables.summary(run)
    splits = {"train": dataset.boxes_table(run.train_gt), "test": dataset.boxes_table(run.test_gt)}
    complexity_header, complexity_rows = lead.complexity_table(run, own.plan)
    small = small_objects_context(run)
    return {
        "manifest": run.manifest,
        "run_name": run.root.name,
        "test_data": identify_test_set(run.manifest),
        "banners": banners(run),
        "protocols": [{"label": c.label, "suite": c.run.manifest.get("suite", {}).get("name", "?"),
                       "run": c.run.root.name, "protocol": c.protocol} for c in runs],
        "lead_tables": tables.paper_tables(labelled(runs, data_free_only=True)),
        "complexity_header": complexity_header,
        "complexity_rows": complexity_rows,
        "learnability": lead.learnability(run, own.plan),
        "data_health": data_health(run.manifest, run.root / "manifest.json"),
        "small_objects": small["html"],  # the partial small_objects.html.j2 reads this name
        "small_md": small,
        "learned_ap50": lead.LEARNED_AP50,
        "device_name": str(run.manifest.get("device", {}).get("name") or "this device"),
        "summary_header": header,
        "summary_rows": summary_rows,
        "paper_tables": tables.paper_tables(labelled(runs)),
        "status_symbols": tables.STATUS_SYMBOLS,
        "status_counts": comparison["status"].value_counts().to_dict(),
        "tolerance": tolerance,
        "figures": draw_figures(run, comparison, splits),
        "class_header": ["class", *[f"{split} boxes" for split in splits], "test boxes < 32² px"],
        "class_rows": tables.class_statistics(run.classes, splits),
        "models": run.models,
        "overrides": overrides_of(run, own.plan),
        "settings": settings_rows(run, own.plan),
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


def build_report(run_dir: Path, tolerance: Tolerance | None = None,
                 compare_with: list[Path] | None = None) -> tuple[Path, Path]:
    """Write ``report.md`` and ``report.html`` (and ``figures/``) into ``run_dir``; returns both paths.

    ``compare_with``: run directories of the same tables under another protocol, shown beside this run's."""
    run = load_run(Path(run_dir))
    others = [load_run(Path(d)) for d in compare_with or []]
    ctx = context(run, tolerance or Tolerance(), others)
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
    parser.add_argument("--ratio-tolerance", type=float, default=0.10,
                        help="relative tolerance for FPS ratios between models, on any device (default 0.10)")
    parser.add_argument("--compare", type=Path, action="append", default=[], metavar="RUN_DIR",
                        help="a run of the same tables under the other protocol (repeatable)")
    args = parser.parse_args(argv)
    try:
        tolerance = Tolerance(args.tolerance, args.relative_tolerance, args.ratio_tolerance)
        paths = build_report(args.run_dir, tolerance, args.compare)
    except BenchInputError as err:
        print(f"error: {err}", file=sys.stderr)
        return 2
    for path in paths:
        print(path)
    return 0


if __name__ == "__main__":
    sys.exit(main())
