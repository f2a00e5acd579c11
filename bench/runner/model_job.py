"""One model's work in a run: build, train (its registry plan), evaluate, time; status and failures.

Every stage ends with the ranks agreeing whether it succeeded (``bench.distributed.agree``): a failure on
every rank, or on the rank that alone does a stage's work, fails the model on all ranks and the run goes on
with the next model; a failure the other ranks cannot reach (they are blocked in a collective) is recorded by
the failing rank, which then aborts the job.
"""

from __future__ import annotations

import dataclasses
import random
import sys
import time
import traceback
from collections.abc import Callable
from pathlib import Path
from typing import Any

import numpy as np
import torch

from bench.data.resolve import ResolvedData, first_images
from bench.distributed import (
    AgreementTimeout,
    DistContext,
    abort_job,
    agree,
    broadcast_buffers,
    broadcast_from_main,
    gather_to_main,
)
from bench.errors import BenchInputError
from bench.io import read_json, write_json
from bench.runner.manifest import now
from bench.runner.model_prep import fit_priors, record_skipped_images, training_dataset
from bench.runner.plan_runner import PlanResult, WeightsPolicy, resume_files, run_plan, shared_file
from bench.runner.scoring import measure, postprocess_config, score_test_split, sliced_test_split
from bench.suite.spec import Recipe, Suite
from detectors import Detector, build_model, model_spec
from detectors.registry import ModelSpec

STAGES = ("build", "train", "evaluate", "speed")


class StageFailed(Exception):
    """A stage failed on at least one rank (every rank raises it at the same boundary)."""


def build_options(spec: ModelSpec, recipe: Recipe, suite: Suite, data: ResolvedData | None = None
                  ) -> dict[str, Any]:
    """The recipe's build settings the model declares (``ModelSpec.options``), and errors for the ones it
    would have to ignore: an ImageNet backbone it does not have, an input size its architecture fixes.
    A suite variant's ``build`` table is bound in its registry entry; its learned priors come from ``data``'s
    training boxes (``bench.suite.variants``)."""
    from bench.suite.variants import learned_prior_options

    if recipe.pretrained_backbone and "pretrained_backbone" not in spec.options:
        raise BenchInputError(suite.path, f"model {spec.name!r} has no pretrained backbone; override "
                                          f"pretrained_backbone = false for it",
                              field="recipe.pretrained_backbone")
    if spec.family in recipe.input_size and "input_size" not in spec.options:
        raise BenchInputError(suite.path, f"model {spec.name!r} has a fixed input size",
                              field=f"recipe.input_size.{spec.family}")
    offered = {"postprocess": postprocess_config(suite),
               "pretrained_backbone": recipe.pretrained_backbone, "prior_set": recipe.prior_set,
               "input_size": recipe.input_size.get(spec.family)}
    offered.update(learned_prior_options(suite, spec.name, data))
    return {k: v for k, v in offered.items() if k in spec.options and v is not None}


def seed_everything(seed: int) -> None:
    random.seed(seed)
    np.random.seed(seed)
    torch.manual_seed(seed)


def model_info(model: Detector, suite: Suite, recipe: Recipe, spec: ModelSpec,
               params_at_start: int | None, budget: dict[str, Any] | None = None) -> dict[str, Any]:
    """``info.json``: the model's metadata, its registry entry, its effective recipe, plan and budget."""
    override = suite.overrides.get(model.name)
    info = dataclasses.asdict(model.info())
    plan = spec.plan(dataclasses.asdict(recipe.pruning))
    return {**info, "registered": spec.info,
            "overrides": None if override is None else {"reason": override.reason, "values": override.values},
            "recipe": dataclasses.asdict(recipe), "budget": budget,
            "plan": {"steps": [s.name for s in plan.steps], "notes": list(plan.notes),
                     "params_at_start": info["params"] if params_at_start is None else params_at_start}}


def budget_outcome(training: list[dict[str, Any]], recipe: Recipe) -> dict[str, Any]:
    """Planned against trained iterations over the model's stages; ``completed`` is false only when the
    wall-clock safety net (``max_train_seconds``) stopped a stage early."""
    planned = sum(int(t.get("planned_iterations") or 0) for t in training)
    trained = sum(int(t["iterations"]) for t in training)
    completed = trained >= planned and not any(t.get("stopped_by_time") for t in training)
    out: dict[str, Any] = {"planned_iterations": planned, "trained_iterations": trained,
                           "completed": completed}
    if not completed:
        out["note"] = (f"budget not completed: the wall-clock safety net (max_train_seconds = "
                       f"{recipe.max_train_seconds}) stopped training after {trained} of {planned} planned "
                       f"iterations, so this model's numbers depend on the machine's speed and load")
    return out


class ModelJob:
    """The stages of one model, sharing its state (model, recipe, plan result)."""

    def __init__(self, name: str, suite: Suite, data: ResolvedData, ctx: DistContext, model_dir: Path,
                 resume: bool, status: dict[str, Any], mark: Callable[..., None],
                 plan: dict[str, Any] | None = None, weights: WeightsPolicy = "full") -> None:
        from bench.plan.resolve import budgeted_recipe

        self.name, self.suite, self.data, self.ctx, self.model_dir = name, suite, data, ctx, model_dir
        self.resume, self.status, self.mark, self.weights = resume, status, mark, weights
        self.spec = model_spec(name)
        planned = (plan or {}).get("models", {}).get(name)
        # The iterations the run's resolved plan (plan.json) gives the model: one function, bench.plan's.
        self.recipe = budgeted_recipe(suite, name, plan) if planned is not None else suite.recipe_for(name)
        self.planned_budget = None if planned is None else planned["budget"]
        self.plan = self.spec.plan(dataclasses.asdict(self.recipe.pruning))
        # the test images this model is scored on: all, or the first ``eval_images`` (a smoke budget)
        self.eval_data = dataclasses.replace(data, test=first_images(data.test, self.recipe.eval_images))
        self.model: Detector | None = None
        self.params_at_start: int | None = None

    def build(self) -> None:
        seed_everything(self.recipe.seed)  # identical initial weights on every rank and in every resumed run
        self.model = build_model(self.name, self.data.train.num_classes,
                                 **build_options(self.spec, self.recipe, self.suite, self.data))
        self.params_at_start = self.model.info().params
        if self.ctx.is_main:
            write_json(model_info(self.model, self.suite, self.recipe, self.spec, None, self.planned_budget),
                       self.model_dir / "info.json")

    def train(self) -> None:
        from bench.data.loader import collate

        assert self.model is not None
        resuming = self.resume and shared_file(self.model_dir / "checkpoint.pt", self.ctx)
        if not resuming:  # on resume the fitted priors (anchors) come back with the checkpoint's state dict
            fit_priors(self.model, self.recipe, self.data, self.model_dir, self.ctx)
        dataset = training_dataset(self.data, self.model, self.recipe, self.spec.family, self.ctx)
        result: PlanResult = run_plan(self.plan, self.model, self.recipe, dataset, collate, self.ctx,
                                      self.model_dir, self.resume, self.status.get("training") or [],
                                      self.mark, self.weights)
        self.model = result.model
        record_skipped_images(dataset, self.data, self.ctx, self.model_dir.parents[1] / "manifest.json")
        budget = budget_outcome(result.training, self.recipe)
        self.mark(budget=budget)
        if self.ctx.is_main and not budget["completed"]:
            print(f"{self.name}: BUDGET NOT COMPLETED - {budget['note']}", file=sys.stderr)
        if self.ctx.is_main:  # again: a plan may change the parameter count
            write_json(model_info(self.model, self.suite, self.recipe, self.spec, self.params_at_start,
                                  self.planned_budget), self.model_dir / "info.json")

    def evaluate(self) -> None:
        from bench.training.tblog import log_evaluation

        assert self.model is not None
        broadcast_buffers(self.model, self.ctx)  # every shard scored with rank 0's BatchNorm statistics
        score_test_split(self.model, self.suite, self.eval_data, self.ctx, self.model_dir)
        sliced_test_split(self.model, self.suite, self.eval_data, self.ctx, self.model_dir)
        training = self.status.get("training")
        if self.ctx.is_main and training:  # the metrics into the last stage's TensorBoard run
            log_evaluation(self.model_dir, training[-1]["stage"], training[-1]["iterations"],
                           read_json(self.model_dir / "metrics.json"))

    def speed(self) -> None:
        if self.ctx.is_main:  # the other ranks wait at the stage's agreement, on the gloo control group
            assert self.model is not None
            measure(self.model, self.suite, self.data, self.ctx, self.model_dir)


def discard_resume_state(model_dir: Path, job: ModelJob) -> None:
    """A finished model needs only ``final.pt``; its resumable state (optimizer included) is 2-3x larger."""
    for stale in resume_files(job.plan):
        (model_dir / stale).unlink(missing_ok=True)


def _failure_record(error: BaseException | None, rank: int) -> str | None:
    return None if error is None else f"{type(error).__name__}: {error}" + (f" (rank {rank})" if rank else "")


def run_model(name: str, suite: Suite, data: ResolvedData, ctx: DistContext, model_dir: Path,
              resume: bool, plan: dict[str, Any] | None = None, weights: WeightsPolicy = "full") -> str:
    """Train, evaluate, time and measure one model; returns its final state ("done" or "failed").

    ``plan``: the run's resolved plan (``plan.resolve.plan_for``), whose budget sets the model's iterations;
    ``weights``: what its ``final.pt`` keeps."""
    status_path = model_dir / "status.json"
    previous = read_json(status_path) if ctx.is_main and status_path.exists() else {}
    previous = broadcast_from_main(previous, ctx)
    if resume and previous.get("state") == "done":
        print(f"{name}: done in an earlier run, skipped", file=sys.stderr)
        return "done"
    model_dir.mkdir(parents=True, exist_ok=True)
    if ctx.is_main:
        (model_dir / "error.txt").unlink(missing_ok=True)
    status = {"state": "running", "stage": "build", "error": None,
              "started": previous.get("started") or now(), "finished": None,
              "training": previous.get("training") if resume else None,
              "budget": previous.get("budget") if resume else None,
              # wall and CPU (user + sys of this process) seconds per stage: where a run's time goes
              "stage_seconds": (previous.get("stage_seconds") or {}) if resume else {}}

    def mark(**changes: Any) -> None:
        status.update(changes)
        if ctx.is_main:
            write_json(status, status_path)

    def record_failure(message: str, details: str) -> None:
        status.update(state="failed", error=message, finished=now())
        write_json(status, status_path)
        (model_dir / "error.txt").write_text(details)

    mark()
    job = ModelJob(name, suite, data, ctx, model_dir, resume, status, mark, plan, weights)
    try:
        for stage in STAGES:
            if stage != "train":
                mark(stage=stage)
            error, details = None, ""
            wall, cpu = time.perf_counter(), time.process_time()
            try:
                getattr(job, stage)()
            except Exception as err:  # any failure of one model is recorded and the suite goes on
                error, details = err, traceback.format_exc()
            status["stage_seconds"][stage] = {"wall": round(time.perf_counter() - wall, 3),
                                              "cpu": round(time.process_time() - cpu, 3)}
            try:
                ok = agree(error is None, ctx)
            except AgreementTimeout as timeout:  # the other ranks are stuck where this one failed
                record_failure(_failure_record(error, ctx.rank) or str(timeout), f"{details}\n{timeout}\n")
                print(f"{name}: FAILED on rank {ctx.rank} ({error}); aborting the job", file=sys.stderr)
                abort_job(1)
            if not ok:
                errors = [e for e in gather_to_main(_failure_record(error, ctx.rank), ctx) or [] if e]
                raise StageFailed("; ".join(errors) or "failed on another rank") from error
        mark(state="done", stage="done", finished=now())
        if ctx.is_main:
            discard_resume_state(model_dir, job)
    except StageFailed as failed:
        if ctx.is_main:
            cause = failed.__cause__
            trace = "".join(traceback.format_exception(cause)) if cause else f"{failed}\n"
            record_failure(str(failed), trace)
        print(f"{name}: FAILED ({failed}); see {model_dir / 'error.txt'}", file=sys.stderr)
        status["state"] = "failed"
    return status["state"]
