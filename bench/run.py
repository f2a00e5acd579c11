"""``python -m bench.run``: train, evaluate and time every model of a suite under identical settings.

    python -m bench.run --suite coco_small                       # the whole zoo on the synthetic set, CPU
    python -m bench.run --suite voc07 --data ~/data/VOCdevkit --device cuda
    torchrun --nproc_per_node=8 -m bench.run --suite coco --data ~/data/coco --device cuda
    python -m bench.run --suite coco_small --out results/x --resume   # after a crash or kill -9

Each model's work is resumable (checkpoints every epoch, every ``checkpoint_every`` iterations and every
``checkpoint_minutes``); finished models are skipped on ``--resume``; a failing model is recorded with its
error and the others go on unless ``--fail-fast``. The exit status is 0 when every model finished, 1 when any
failed and 2 for bad input (one line on stderr, no traceback). The run-directory layout is in the
project README.
"""

from __future__ import annotations

import argparse
import dataclasses
import json
import random
import sys
import traceback
from collections.abc import Callable
from datetime import datetime
from pathlib import Path
from typing import Any

import numpy as np
import torch
from torch.utils.data import DataLoader, Subset
from tqdm import tqdm

from bench import checkpoint
from bench.datasets import ResolvedData, resolve_data
from bench.distributed import (
    DistContext,
    barrier,
    broadcast_from_main,
    gather_to_main,
    init_from_env,
    shard,
    shutdown,
)
from bench.errors import BenchInputError
from bench.manifest import build_manifest, now, write_json
from bench.suite import Recipe, Suite, load_suite
from bench.train import Stage, Trainer, TrainLog, stage_iterations, total_iterations
from detectors import Detector, PostprocessConfig, build_model, model_names, model_spec

Mark = Callable[..., None]  # updates and writes a model's status.json
StageRunner = Callable[[Detector, Stage], Trainer]

PRUNED_MODEL = "mfssd300_pruned"
PRUNED_BASE = "mfssd300_bn"
RESULTS = Path("results")


def parse_args(argv: list[str]) -> argparse.Namespace:
    parser = argparse.ArgumentParser(prog="python -m bench.run", description=__doc__.split("\n")[0])
    parser.add_argument("--suite", default="coco_small", help="bundled suite name or path to a TOML file")
    parser.add_argument("--data", help="data root (COCO, VOC devkit/year folder or YOLO layout)")
    parser.add_argument("--models", help="comma-separated registered names (default: the suite's list)")
    parser.add_argument("--device", default="cpu", help="cpu, cuda or cuda:N")
    parser.add_argument("--out", type=Path, help="run directory (default results/<suite>/<timestamp>)")
    parser.add_argument("--resume", action="store_true",
                        help="continue the run in --out (default: the latest run of the suite)")
    parser.add_argument("--fail-fast", action="store_true", help="stop at the first failing model")
    parser.add_argument("--cache-dir", type=Path, default=RESULTS / ".cache",
                        help="where the generated synthetic data set is cached")
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
    suite = load_suite(args.suite)
    models = select_models(suite, args.models)
    ctx = init_from_env(args.device)
    if ctx.device.type == "cuda":
        torch.backends.cudnn.benchmark = True
    out = broadcast_from_main(run_directory(suite, args) if ctx.is_main else None, ctx)
    data = resolve_data_on_every_rank(suite, args, ctx)
    manifest = prepare_run_directory(out, suite, models, argv, args, ctx, data) if ctx.is_main else None
    states: dict[str, str] = {}
    for name in models:
        states[name] = run_model(name, suite, data, ctx, out / "models" / name, args.resume)
        if states[name] == "failed" and args.fail_fast:
            break
    if ctx.is_main:
        manifest["finished"] = now()
        write_json(manifest, out / "manifest.json")
        build_report(out)
        print_summary(out, models, states)
    return 1 if "failed" in states.values() else 0


def resolve_data_on_every_rank(suite: Suite, args: argparse.Namespace, ctx: DistContext) -> ResolvedData:
    """Rank 0 first (it may generate the synthetic set), then the other ranks read it from the cache."""
    data = None
    for main_turn in (True, False):
        if ctx.is_main == main_turn:
            data = resolve_data(suite.data, args.data, args.cache_dir, suite.path or Path(args.suite))
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


def prepare_run_directory(out: Path, suite: Suite, models: list[str], argv: list[str],
                          args: argparse.Namespace, ctx: DistContext, data: ResolvedData) -> dict[str, Any]:
    """Ground truth, manifest and a ``pending`` status per model, so an interrupted run shows what is left."""
    from bench.data.coco import write_coco

    (out / "data").mkdir(parents=True, exist_ok=True)
    gt_files = [out / "data" / "train_gt.json", out / "data" / "test_gt.json"]
    for ds, path in zip((data.train, data.test), gt_files, strict=True):
        write_coco(ds, path)
    manifest = build_manifest(suite, argv, args.device, ctx, data, gt_files)
    previous = out / "manifest.json"
    if previous.exists():
        old = json.loads(previous.read_text())
        if old["data"]["annotation_sha256"] != manifest["data"]["annotation_sha256"]:
            raise BenchInputError(out, "--resume with different data than the run was started with")
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


# --------------------------------------------------------------------------------------------- one model


def run_model(name: str, suite: Suite, data: ResolvedData, ctx: DistContext, model_dir: Path,
              resume: bool) -> str:
    """Train, evaluate, time and measure one model; returns its final state ("done" or "failed")."""
    status_path = model_dir / "status.json"
    status = json.loads(status_path.read_text()) if status_path.exists() else {}
    if broadcast_from_main(status.get("state") == "done" and resume, ctx):
        print(f"{name}: done in an earlier run, skipped", file=sys.stderr)
        return "done"
    model_dir.mkdir(parents=True, exist_ok=True)
    (model_dir / "error.txt").unlink(missing_ok=True)
    status = {"state": "running", "stage": "build", "error": None, "started": status.get("started") or now(),
              "finished": None}

    def mark(**changes: Any) -> None:
        status.update(changes)
        if ctx.is_main:
            write_json(status, status_path)

    mark()
    try:
        recipe = suite.recipe_for(name)
        model = build(name, suite, recipe, data.train.num_classes)
        if ctx.is_main:
            write_json(model_info(model, suite, recipe), model_dir / "info.json")
        model = train_model(model, recipe, data, ctx, model_dir, resume, mark)
        if ctx.is_main:  # again: pruning changes the parameter count
            write_json(model_info(model, suite, recipe), model_dir / "info.json")
        mark(stage="evaluate")
        evaluate(model, suite, data, ctx, model_dir)
        if ctx.is_main:
            mark(stage="speed")
            measure(model, suite, data, ctx, model_dir)
        mark(state="done", stage="done", finished=now())
        if ctx.is_main:
            discard_resume_state(model_dir)
    except Exception as err:  # any failure of one model is recorded and the suite goes on
        if ctx.is_main:
            (model_dir / "error.txt").write_text(traceback.format_exc())
        mark(state="failed", error=f"{type(err).__name__}: {err}", finished=now())
        print(f"{name}: FAILED ({type(err).__name__}: {err}); see {model_dir / 'error.txt'}", file=sys.stderr)
    return status["state"]


def discard_resume_state(model_dir: Path) -> None:
    """A finished model needs only ``final.pt``; its resumable state (optimizer included) is 2-3x larger."""
    for stale in ("checkpoint.pt", "pruned.pt"):
        (model_dir / stale).unlink(missing_ok=True)


def seed_everything(seed: int) -> None:
    random.seed(seed)
    np.random.seed(seed)
    torch.manual_seed(seed)


def build(name: str, suite: Suite, recipe: Recipe, num_classes: int) -> Detector:
    """The SSD variants' input size is fixed by their architecture; YOLOv5's comes from the recipe."""
    seed_everything(recipe.seed)  # identical initial weights on every rank and in every resumed run
    ev = suite.evaluation
    kwargs: dict[str, Any] = {"postprocess": PostprocessConfig(ev.score_thresh, ev.nms_iou, ev.max_detections,
                                                                ev.pre_nms_topk)}
    family = model_spec(name).family
    if family == "ssd":
        kwargs.update(pretrained_backbone=recipe.pretrained_backbone, prior_set=recipe.prior_set)
    elif family in recipe.input_size:
        kwargs["input_size"] = recipe.input_size[family]
    # The registry's mfssd300_pruned is a structure-only stand-in; the real one is slimmed from MFSSD-BN here.
    model = build_model(PRUNED_BASE if name == PRUNED_MODEL else name, num_classes, **kwargs)
    model.name = name
    return model


def model_info(model: Detector, suite: Suite, recipe: Recipe) -> dict[str, Any]:
    override = suite.overrides.get(model.name)
    return {**dataclasses.asdict(model.info()),
            "overrides": None if override is None else {"reason": override.reason, "values": override.values},
            "recipe": dataclasses.asdict(recipe)}


def train_model(model: Detector, recipe: Recipe, data: ResolvedData, ctx: DistContext, model_dir: Path,
                resume: bool, mark: Mark) -> Detector:
    """Run the model's stages, skipping finished ones; returns the model to evaluate (EMA when enabled)."""
    from bench.data.loader import DetectionTorchDataset, collate

    ckpt_path = model_dir / "checkpoint.pt"
    state = checkpoint.load(ckpt_path, ctx.device) if resume and ckpt_path.exists() else None
    if state is None and ctx.is_main:
        (model_dir / "train_log.csv").unlink(missing_ok=True)
    family = model_spec(model.name).family
    dataset = DetectionTorchDataset(data.train, model.protocol, train=True, augment=recipe.augment[family],
                                    seed=recipe.seed)
    total = total_iterations(len(dataset), recipe, ctx)
    log = TrainLog(model_dir / "train_log.csv")

    def run_stage(model: Detector, stage: Stage) -> Trainer:
        trainer = Trainer(model, recipe, ctx, ckpt_path, log)
        mark(stage=f"train:{stage.name}")
        if state is not None and state["stage"] == stage.name and state["stage_done"]:
            trainer.load_state_dict(state)
        else:
            own = state if state is not None and state["stage"] == stage.name else None
            trainer.train(dataset, collate, stage, resume=own)
        return trainer

    if model.name != PRUNED_MODEL:
        trainer = run_stage(model, Stage("train", total, recipe.max_train_seconds))
    else:
        trainer = train_pruned(model, recipe, total, state, model_dir, run_stage, mark, ctx.device,
                               ctx.is_main)
    final = trainer.eval_model
    if ctx.is_main:
        save_final(final, model_dir / "final.pt")
    return final


def train_pruned(model: Detector, recipe: Recipe, total: int, state: dict[str, Any] | None, model_dir: Path,
                 run_stage: StageRunner, mark: Mark, device: torch.device, is_main: bool) -> Trainer:
    """Network slimming as three checkpointed stages: sparse training, pruning to Table I size, fine-tuning.

    The compute budget (iterations and time cap) is the same as every other model's, split between the two
    training stages; pruning itself is deterministic given the sparse weights, so a resume simply repeats it.
    """
    from detectors.ssd import pruning

    pr = recipe.pruning
    sparse_its, finetune_its = stage_iterations(total, [1 - pr.finetune_fraction, pr.finetune_fraction])
    cap = recipe.max_train_seconds
    pruned_path = model_dir / "pruned.pt"
    if state is not None and state["stage"] == "finetune":
        model = pruning.load_pruned(pruned_path, device)
    else:
        example = torch.zeros(1, 3, model.input_size, model.input_size, device=device)
        pruner = pruning.make_slimming_pruner(model, example, reg=pr.sparsity)
        sparse = Stage("sparse", sparse_its, cap and cap * (1 - pr.finetune_fraction),
                       after_backward=lambda: pruning.sparsity_step(pruner, model))
        run_stage(model, sparse)
        mark(stage="prune")
        pruning.prune_to_params(model.eval(), pr.target_params, example)
        if is_main:
            tmp = pruned_path.with_name(".pruned.pt.tmp")
            pruning.save_pruned(model, tmp, base=PRUNED_BASE)
            tmp.replace(pruned_path)
    return run_stage(model, Stage("finetune", finetune_its, cap and cap * pr.finetune_fraction))


def save_final(model: Detector, path: Path) -> None:
    if model.name == PRUNED_MODEL:
        from detectors.ssd.pruning import save_pruned

        tmp = path.with_name(".final.pt.tmp")
        save_pruned(model, tmp, base=PRUNED_BASE)
        tmp.replace(path)
    else:
        checkpoint.save_atomic({"name": model.name, "num_classes": model.num_classes,
                                "input_size": model.input_size, "model": model.state_dict()}, path)


# ------------------------------------------------------------------------------- evaluation and timing


@torch.inference_mode()
def predict_split(model: Detector, data: ResolvedData, batch_size: int, workers: int,
                  ctx: DistContext) -> dict[str, np.ndarray] | None:
    """Detections on the test split, each image on exactly one rank, gathered on rank 0 as flat arrays."""
    from bench.data.loader import DetectionTorchDataset, collate

    dataset = DetectionTorchDataset(data.test, model.protocol, train=False, augment="none", seed=0)
    loader = DataLoader(Subset(dataset, shard(len(dataset), ctx).tolist()), batch_size=batch_size,
                        collate_fn=collate, num_workers=workers)
    model.eval()
    parts: list[tuple[torch.Tensor, ...]] = []
    for images, _targets, metas in tqdm(loader, desc=f"{model.name} [evaluate]", unit="batch",
                                        disable=not ctx.is_main, dynamic_ncols=True):
        dets = model.predict(images.to(ctx.device), metas)
        ids = torch.cat([torch.full((len(d.scores),), m.image_id, dtype=torch.int64)
                         for d, m in zip(dets, metas, strict=True)])
        parts.append((ids, *(torch.cat([getattr(d, k) for d in dets]).cpu() for k in ("labels", "boxes",
                                                                                       "scores"))))
    local = {key: torch.cat([p[i] for p in parts]).numpy() if parts else empty
             for i, (key, empty) in enumerate((("image_id", np.zeros(0, np.int64)),
                                               ("label", np.zeros(0, np.int64)),
                                               ("boxes", np.zeros((0, 4), np.float32)),
                                               ("score", np.zeros(0, np.float32))))}
    gathered = gather_to_main(local, ctx)
    if gathered is None:
        return None
    return {key: np.concatenate([g[key] for g in gathered]) for key in local}


def evaluate(model: Detector, suite: Suite, data: ResolvedData, ctx: DistContext, model_dir: Path) -> None:
    from bench.metrics import DetectionResults
    from bench.metrics import evaluate as score

    arrays = predict_split(model, data, suite.evaluation.batch_size, suite.recipe.workers, ctx)
    if arrays is None:
        return
    dets = DetectionResults(**arrays)
    dets.to_coco_json(model_dir / "detections.json", data.test)
    score(data.test, dets).save(model_dir)


def measure(model: Detector, suite: Suite, data: ResolvedData, ctx: DistContext, model_dir: Path) -> None:
    from bench.speed import SpeedConfig, measure_speed, save
    from detectors.complexity import count_flops, count_params

    sp = suite.speed
    config = SpeedConfig(warmup=sp.warmup, iterations=sp.iterations, max_seconds=sp.max_seconds,
                         throughput_batch=sp.throughput_batch, fp16=sp.fp16, fuse=sp.fuse)
    samples = [data.test.image_path(r) for r in data.test.records[:sp.sample_images]]
    save(measure_speed(model, sp.protocols, config, ctx.device, samples), model_dir)
    write_json({"params": count_params(model), "gflops": count_flops(model, model.input_size),
                "flops_definition": "2 x multiply-accumulates of one (1, 3, S, S) forward, conv+BN fused, "
                                    "counted by thop", "input_size": model.input_size},
               model_dir / "complexity.json")


# --------------------------------------------------------------------------------------------- the end


def build_report(out: Path) -> None:
    from reports.build import build_report as build

    try:
        build(out)
    except Exception:  # a report bug must not hide the results already on disk
        traceback.print_exc()
        print(f"report failed; the results are in {out}", file=sys.stderr)


def print_summary(out: Path, models: list[str], states: dict[str, str]) -> None:
    print(f"\nrun directory: {out}")
    for name in models:
        metrics_path = out / "models" / name / "metrics.json"
        coco = json.loads(metrics_path.read_text()).get("coco", {}) if metrics_path.exists() else {}
        ap50 = coco.get("AP50")
        shown = "-" if ap50 is None else f"{ap50:.3f}"
        print(f"  {name:<18} {states.get(name, 'not run'):<8} AP50 {shown}")


if __name__ == "__main__":
    sys.exit(main())
