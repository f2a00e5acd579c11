"""The run directory before and after the models: where it is, its ground truth, manifest, resolved plan
(``plan.json``), what ``final.pt`` keeps, and the budget summary once the models have run.

``plan.json`` is written before any model trains and is what the models train: each model's iterations
come from its ``budget`` entry (``plan.resolve.budgeted_recipe``), the same function ``--plan`` prints. A
resumed run, and every job of a launched run, keeps the plan stored for the models it already has and adds
the others.
"""

from __future__ import annotations

import argparse
from datetime import datetime
from pathlib import Path
from typing import Any

from bench.data.resolve import ResolvedData
from bench.distributed import DistContext
from bench.errors import BenchInputError
from bench.io import read_json, write_json
from bench.runner.manifest import build_manifest, now
from bench.runner.plan_runner import WeightsPolicy
from bench.suite.spec import Suite

RESULTS = Path("results")
PLAN_FILE = "plan.json"


def run_directory(suite: Suite, args: argparse.Namespace) -> Path:
    if args.out is not None:
        out = args.out
    elif args.resume:
        runs = sorted((RESULTS / suite.name).glob("*/manifest.json"))
        if not runs:
            raise BenchInputError(RESULTS / suite.name, "--resume found no earlier run of this suite")
        out = runs[-1].parent
    else:
        out = RESULTS / suite.name / datetime.now().strftime("%Y%m%d-%H%M%S")
    if (out / "manifest.json").exists() and not args.resume:
        raise BenchInputError(out, "already holds a run; pass --resume to continue it or another --out")
    return out


def resolved_plan(out: Path, suite: Suite, models: list[str], data: ResolvedData,
                  world_size: int) -> dict[str, Any]:
    """``plan.json`` for ``models`` on the run's data (its training-set size and classes), kept from an
    earlier start of the same run for the models it has; written before anything trains."""
    from bench.plan.resolve import plan_for

    check_batches(suite, models, len(data.train), world_size)
    path = out / PLAN_FILE
    stored = read_json(path) if path.is_file() else None
    if stored is not None and stored["suite"]["sha256"] != suite.sha256:
        raise BenchInputError(path, "the suite changed since this run started (its sha256 differs from the "
                                    "one in plan.json); start a new run with another --out")
    missing = [m for m in models if stored is None or m not in stored["models"]]
    if missing:
        fresh = plan_for(suite, missing, train_images=len(data.train), num_classes=data.train.num_classes,
                         world_size=world_size)
        if stored is None:
            stored = fresh
        else:
            stored["models"].update(fresh["models"])
        write_json(stored, path)
    return stored


def check_batches(suite: Suite, models: list[str], train_images: int, world_size: int) -> None:
    """Before anything trains: every model's global batch splits evenly over the processes, and the
    training split holds at least one batch (else training would stop at its first step)."""
    for name in models:
        batch = suite.recipe_for(name).batch_size
        if batch % world_size:
            raise BenchInputError(suite.path, f"{name}: batch_size {batch} is not divisible by the world "
                                              f"size {world_size}", field="recipe.batch_size")
        if train_images // world_size < batch // world_size:
            raise BenchInputError(suite.path, f"{name}: {train_images} training images are fewer than one "
                                              f"batch of {batch}", field="recipe.batch_size")


def weights_policy(args: argparse.Namespace, data: ResolvedData) -> tuple[WeightsPolicy, str]:
    """What a finished model's ``final.pt`` keeps, and why (the manifest says both).

    Full weights for real data or when asked (``--keep-weights``, ``--weights full``); none for the
    synthetic default, whose weights only check that the models learn (the whole zoo's fp32 weights are
    about 2.2 GB, fp16 still 1.1 GB). A model still in progress always keeps its resumable checkpoint."""
    if getattr(args, "weights", None):
        return args.weights, f"--weights {args.weights}"
    if getattr(args, "keep_weights", False):
        return "full", "--keep-weights"
    if data.synthetic:
        return "none", ("synthetic data: a finished model keeps no final.pt (pass --keep-weights for fp32 "
                        "or --weights fp16)")
    return "full", "real data: every finished model keeps its fp32 final.pt"


def prepare_run_directory(out: Path, suite: Suite, models: list[str], argv: list[str],
                          args: argparse.Namespace, ctx: DistContext, data: ResolvedData,
                          weights: tuple[WeightsPolicy, str]) -> dict[str, Any]:
    """Ground truth, manifest and a ``pending`` status per model, so an interrupted run shows what is left."""
    from bench.data.coco import write_coco

    (out / "data").mkdir(parents=True, exist_ok=True)
    gt_files = [out / "data" / "train_gt.json", out / "data" / "test_gt.json"]
    for ds, path in zip((data.train, data.test), gt_files, strict=True):
        write_coco(ds, path)
    manifest = build_manifest(suite, argv, args.device, ctx, data, gt_files)
    manifest["budget"].update(rule=suite.budget.rule, train_flops=suite.budget.train_flops,
                              min_iterations=suite.budget.min_iterations, plan=PLAN_FILE)
    manifest["weights"] = {"final_pt": weights[0], "why": weights[1]}
    manifest["data_health"] = data.health.to_dict()
    previous = out / "manifest.json"
    if previous.exists():
        old = read_json(previous)
        if old["data"]["annotation_sha256"] != manifest["data"]["annotation_sha256"]:
            raise BenchInputError(previous, "--resume with different data than the run was started with",
                                  field="data.annotation_sha256")
        manifest["started"] = old["started"]
        manifest["resumed"] = [*old.get("resumed", []), {"command": manifest["command"], "at": now()}]
        manifest["command"] = old["command"]
    write_json(manifest, previous)
    for name in models:
        status = out / "models" / name / "status.json"
        if not status.exists():
            status.parent.mkdir(parents=True, exist_ok=True)
            write_json({"state": "pending", "stage": None, "error": None, "started": None, "finished": None},
                       status)
    return manifest


def budget_summary(out: Path) -> dict[str, Any]:
    """Per model of the run directory: planned and trained iterations and whether the budget was completed
    (from each ``status.json``; a launched run's jobs each add theirs)."""
    summary = {}
    for status_path in sorted((out / "models").glob("*/status.json")):
        budget = read_json(status_path).get("budget")
        if budget is not None:
            summary[status_path.parent.name] = budget
    return summary


def finish_manifest(out: Path, manifest: dict[str, Any], data: ResolvedData) -> dict[str, Any]:
    """The manifest at the end of this process's models: finish time, the budget each model got (and loud
    ``budget_not_completed`` names), the data health with the images training had to skip."""
    path = out / "manifest.json"
    current = read_json(path) if path.is_file() else manifest  # other jobs of a launched run may have added
    current["finished"] = now()
    models = budget_summary(out)
    current["budget"]["models"] = models
    current["budget"]["not_completed"] = sorted(n for n, b in models.items() if not b.get("completed", True))
    current["data_health"] = data.health.to_dict()
    write_json(current, path)
    return current
