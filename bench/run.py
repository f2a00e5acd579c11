"""``python -m bench.run``: train, evaluate and time every model of a suite under identical settings.

    python -m bench.run --suite coco_small                       # the whole zoo on the synthetic set, CPU
    python -m bench.run --suite voc07 --data ~/data/VOCdevkit --device cuda
    torchrun --nproc_per_node=8 -m bench.run --suite coco --data ~/data/coco --device cuda
    python -m bench.run --suite coco_small --out results/x --resume   # after a crash or kill -9
    python -m bench.run --suite coco_small --plan                # the resolved plan as JSON, nothing trained

Each model trains the iterations its suite's budget rule gives it (``bench.plan``: equal training compute or
the recipe's schedule), computed before training from the architecture alone and stored as ``plan.json``, so
the same command trains the same weights on an idle and on a loaded machine; ``max_train_seconds`` is only a
safety net, and a model it stops is reported as "budget not completed".

Each model's work is resumable (checkpoints every epoch, every ``checkpoint_every`` iterations and every
``checkpoint_minutes``); finished models are skipped on ``--resume``; a failing model is recorded with its
error and the others go on unless ``--fail-fast``. The exit status is 0 when every model finished, 1 when any
failed or the report could not be built, and 2 for bad input (one line on stderr, no traceback). The
run-directory layout is in the project README.
"""

from __future__ import annotations

import argparse
import sys
import traceback
from collections.abc import Callable
from pathlib import Path
from typing import Any

import torch

from bench.cluster import add_launcher_arguments
from bench.data.resolve import ResolvedData, resolve_data
from bench.distributed import DistContext, barrier, broadcast_from_main, init_from_env, shutdown
from bench.errors import BenchInputError
from bench.io import read_json
from bench.runner.model_job import run_model
from bench.runner.run_dir import (
    RESULTS,
    finish_manifest,
    prepare_run_directory,
    resolved_plan,
    run_directory,
    weights_policy,
)
from bench.suite.spec import Suite, load_suite
from bench.training.tblog import LoggingOptions, add_logging_arguments, configure
from detectors import model_names

__all__ = ["RESULTS", "main", "parse_args", "prepare_run_directory", "run", "run_directory"]


def parse_args(argv: list[str]) -> argparse.Namespace:
    parser = argparse.ArgumentParser(prog="python -m bench.run", description=__doc__.split("\n")[0])
    parser.add_argument("--suite", default="coco_small", help="bundled suite name or path to a TOML file")
    parser.add_argument("--data", help="data root (COCO, VOC devkit/year folder, YOLO, KITTI or TT100K)")
    parser.add_argument("--models", help="comma-separated registered names (default: the suite's list)")
    parser.add_argument("--device", default="cpu", help="cpu, cuda or cuda:N")
    parser.add_argument("--out", type=Path, help="run directory (default results/<suite>/<timestamp>)")
    parser.add_argument("--resume", action="store_true",
                        help="continue the run in --out (default: the latest run of the suite)")
    parser.add_argument("--fail-fast", action="store_true", help="stop at the first failing model")
    parser.add_argument("--cache-dir", type=Path, default=RESULTS / ".cache",
                        help="where the generated synthetic data set is cached")
    parser.add_argument("--plan", action="store_true",
                        help="print the resolved plan of every model (budget, schedule, cost) as JSON; "
                             "train nothing")
    parser.add_argument("--strict", action="store_true",
                        help="data-quality problems (degenerate or out-of-image boxes...) are errors")
    parser.add_argument("--keep-weights", action="store_true",
                        help="keep every finished model's fp32 final.pt (default: only for real data)")
    parser.add_argument("--weights", choices=("full", "fp16", "none"),
                        help="what a finished model's final.pt keeps (overrides --keep-weights)")
    parser.add_argument("--no-report", action="store_true",
                        help="do not build the report at the end (launched jobs: --collect builds it)")
    add_launcher_arguments(parser)
    add_logging_arguments(parser)
    return parser.parse_args(argv)


def main(argv: list[str] | None = None) -> int:
    argv = sys.argv[1:] if argv is None else argv
    try:
        return run(parse_args(argv), argv)
    except BenchInputError as err:
        print(f"error: {err}", file=sys.stderr)
        return 2
    finally:
        shutdown()


def run(args: argparse.Namespace, argv: list[str]) -> int:
    if args.collect:
        from bench.cluster.collect import collect

        return collect(Path(args.collect))
    suite = load_suite(args.suite)
    models = select_models(suite, args.models)
    configure(LoggingOptions.from_args(args), experiment=suite.name)
    if args.plan:
        return show_plan(suite, models, args)
    if args.launcher:
        from bench.cluster.launch import launch

        return launch(args, models, run_directory(suite, args))
    ctx = init_from_env(args.device)
    if ctx.device.type == "cuda":
        torch.backends.cudnn.benchmark = True
    out = decided_on_main(lambda: run_directory(suite, args), ctx)
    data = resolve_data_on_every_rank(suite, args, ctx)
    if ctx.is_main:
        for line in data.health.console_lines():
            print(line, file=sys.stderr)
    plan = decided_on_main(lambda: resolved_plan(out, suite, models, data, ctx.world_size), ctx)
    weights = weights_policy(args, data)
    manifest = decided_on_main(
        lambda: prepare_run_directory(out, suite, models, argv, args, ctx, data, weights), ctx, share=False)
    states: dict[str, str] = {}
    for name in models:  # the per-model work: bench.runner.model_job
        states[name] = run_model(name, suite, data, ctx, out / "models" / name, args.resume, plan, weights[0])
        if states[name] == "failed" and args.fail_fast:
            break
    if ctx.is_main:
        from bench.runner.comparisons import paired_comparisons

        finish_manifest(out, manifest, data)
        paired_comparisons(out, models)
        report_error = None if args.no_report else build_report(out)  # only the CLI builds the report
        print_summary(out, models, states)
        if report_error is not None:
            return 1
    return 1 if "failed" in states.values() else 0


def show_plan(suite: Suite, models: list[str], args: argparse.Namespace) -> int:
    """``--plan``: the resolved plan as JSON on stdout. With ``--data`` the data set is read first, so the
    plan has its training-set size and class count, exactly as the run will; without it, the suite's
    (the synthetic set's spec, or the documented split size)."""
    from bench.plan.resolve import print_plan

    sizes: dict[str, int] = {}
    if args.data is not None:
        data = resolve_data(suite.data, args.data, args.cache_dir, suite.path or Path(args.suite),
                            strict=args.strict)
        sizes = {"train_images": len(data.train), "num_classes": data.train.num_classes}
    print_plan(suite, models, **sizes)
    return 0


def decided_on_main(decide: Callable[[], Any], ctx: DistContext, share: bool = True) -> Any:
    """``decide()`` on rank 0; its bad-input error is raised on every rank (no rank waits for a dead one).

    ``share``: the result too goes to every rank (else the others get ``None``)."""
    result, error = None, None
    if ctx.is_main:
        try:
            result = decide()
        except BenchInputError as err:
            error = (err.path, err.detail, err.entry, err.field)
    error = broadcast_from_main(error, ctx)
    if error is not None:
        path, detail, entry, field = error
        raise BenchInputError(path, detail, entry=entry, field=field)
    return broadcast_from_main(result, ctx) if share else result


def resolve_data_on_every_rank(suite: Suite, args: argparse.Namespace, ctx: DistContext) -> ResolvedData:
    """Rank 0 first (it may generate the synthetic set), then the other ranks read it from the cache."""
    data = None
    for main_turn in (True, False):
        if ctx.is_main == main_turn:
            data = resolve_data(suite.data, args.data, args.cache_dir, suite.path or Path(args.suite),
                                strict=args.strict)
        barrier(ctx)
    assert data is not None
    return data


def select_models(suite: Suite, requested: str | None) -> list[str]:
    known = set(model_names())
    if requested:
        models, source, key = [m.strip() for m in requested.split(",") if m.strip()], "--models", None
    else:
        models, source, key = suite.models, suite.path, "models"
    unknown = [m for m in models if m not in known]
    if unknown:
        raise BenchInputError(source, f"unknown model {unknown[0]!r}; registered: {', '.join(sorted(known))}",
                              field=key)
    return models


# --------------------------------------------------------------------------------------------- the end


def build_report(out: Path) -> str | None:
    """Build the report: ``None`` when built, else the error (the run then exits 1), with the results
    already on disk left as they are."""
    from reports.build import build_report as build

    try:
        build(out)
    except Exception as err:  # a report bug must not hide the results on disk, nor pass as success
        traceback.print_exc()
        print(f"report failed; the results are in {out}", file=sys.stderr)
        return f"{type(err).__name__}: {err}"
    return None


def print_summary(out: Path, models: list[str], states: dict[str, str]) -> None:
    print(f"\nrun directory: {out}")
    for name in models:
        metrics_path = out / "models" / name / "metrics.json"
        coco = read_json(metrics_path).get("coco", {}) if metrics_path.exists() else {}
        ap50 = coco.get("AP50")
        shown = "-" if ap50 is None else f"{ap50:.3f}"
        status_path = out / "models" / name / "status.json"
        budget = (read_json(status_path).get("budget") if status_path.is_file() else None) or {}
        trained = "" if not budget else f"  {budget['trained_iterations']}/{budget['planned_iterations']} it"
        loud = "" if budget.get("completed", True) else "  BUDGET NOT COMPLETED (wall-clock safety net)"
        print(f"  {name:<18} {states.get(name, 'not run'):<8} AP50 {shown}{trained}{loud}")


if __name__ == "__main__":
    sys.exit(main())
