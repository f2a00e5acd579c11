"""Execute a model's training plan (``detectors.plans``): its stages, resumable, knowing no model by name.

Resumption: the checkpoint names the training stage it belongs to. Steps before it are not repeated; the
last transform before it is loaded from its saved output (e.g. the pruned model), and the stage itself
resumes from the checkpoint (or, if finished, only reloads it). Under several processes rank 0 decides
whether to resume and every rank must see the same run directory (a shared file system).
"""

from __future__ import annotations

import io
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import IO, Any, Literal

import torch

from bench.distributed import DistContext, broadcast_from_main
from bench.io import write_atomic
from bench.runner.stages import EpochDataset, Stage, stage_iterations, total_iterations
from bench.suite.spec import Recipe
from bench.training import checkpoint
from bench.training.log import TrainLog
from bench.training.loop import Trainer
from detectors.base import Detector
from detectors.plans import Train, TrainingPlan, Transform

Mark = Callable[..., None]  # updates and writes the model's status.json
WeightsPolicy = Literal["full", "fp16", "none"]  # what ``final.pt`` holds (``bench.run --weights``)


@dataclass
class PlanResult:
    model: Detector  # the model to evaluate: the EMA weights when EMA is on
    training: list[dict[str, Any]]  # one ``TrainOutcome.as_record`` per training stage


def shared_file(path: Path, ctx: DistContext) -> bool:
    """Whether ``path`` exists, decided on rank 0; a rank that cannot see it has no shared run directory."""
    exists = bool(broadcast_from_main(path.exists(), ctx))
    if exists and not path.exists():
        raise RuntimeError(f"rank {ctx.rank} cannot see {path}: a multi-node run needs its run directory "
                           f"on a file system every node shares")
    return exists


def load_resume_state(path: Path, ctx: DistContext) -> dict[str, Any] | None:
    """The checkpoint to resume from, read onto the CPU (RNG keys must stay CPU tensors), or ``None``."""
    return checkpoint.load(path) if shared_file(path, ctx) else None


def example_input(model: Detector, device: torch.device) -> torch.Tensor:
    return torch.zeros(1, 3, model.input_size, model.input_size, device=device)


def stage_hook(step: Train, model: Detector, device: torch.device) -> Callable[[], None] | None:
    """The stage's ``after_backward`` callback, made with the model moved to ``device`` first (a pruner traces
    the model with the example input: both must be on the training device)."""
    if step.after_backward is None:
        return None
    model.to(device)
    return step.after_backward(model, example_input(model, device))


def _half(value: Any) -> Any:
    if isinstance(value, torch.Tensor) and value.is_floating_point():
        return value.half()
    if isinstance(value, dict):
        return {k: _half(v) for k, v in value.items()}
    if isinstance(value, list | tuple):
        return type(value)(_half(v) for v in value)
    return value


def save_final(plan: TrainingPlan, model: Detector, fh: IO[bytes], weights: WeightsPolicy) -> None:
    """``final.pt`` as the plan writes it; with ``"fp16"`` every floating tensor in it halved (half the disk;
    ``load_state_dict`` into the fp32 model casts back), marked ``"stored_dtype": "float16"``."""
    if weights == "full":
        plan.save_final(model, fh)
        return
    buffer = io.BytesIO()
    plan.save_final(model, buffer)
    buffer.seek(0)
    content = torch.load(buffer, map_location="cpu", weights_only=True)
    if isinstance(content, dict):
        content = {**_half(content), "stored_dtype": "float16"}
    torch.save(content, fh)


def run_plan(plan: TrainingPlan, model: Detector, recipe: Recipe, dataset: EpochDataset,
             collate: Callable[[list[Any]], Any], ctx: DistContext, model_dir: Path, resume: bool,
             earlier_training: list[dict[str, Any]], mark: Mark, weights: WeightsPolicy = "full"
             ) -> PlanResult:
    """Run ``plan`` on ``model`` (the network it starts from) and return the model that comes out;
    ``weights``: what ``final.pt`` keeps (``"none"``: no file; resuming never needs it)."""
    ckpt_path = model_dir / "checkpoint.pt"
    state = load_resume_state(ckpt_path, ctx) if resume else None
    if state is None and ctx.is_main:
        (model_dir / "train_log.csv").unlink(missing_ok=True)
    trains = [s for s in plan.steps if isinstance(s, Train)]
    total = total_iterations(len(dataset), recipe, ctx)
    counts = dict(zip([s.name for s in trains], stage_iterations(total, [s.share for s in trains]),
                      strict=True))
    names = [s.name for s in plan.steps]
    current = names.index(state["stage"]) if state is not None else 0
    training = {r["stage"]: r for r in earlier_training if r["stage"] in names[:current]}
    log = TrainLog(model_dir / "train_log.csv")
    trainer: Trainer | None = None
    for index, step in enumerate(plan.steps):
        output = model_dir / (step.output_file if isinstance(step, Transform) else "")
        if index < current:
            if isinstance(step, Transform):
                if not shared_file(output, ctx):
                    raise RuntimeError(f"{output} is missing: cannot resume after step {step.name!r}")
                model = step.load(output)
            continue
        if isinstance(step, Transform):
            mark(stage=step.name)
            model = model.to(ctx.device).eval()
            model = step.apply(model, example_input(model, ctx.device))
            if ctx.is_main:
                write_atomic(output, lambda fh, m=model, s=step: s.save(m, fh))
            continue
        cap = recipe.max_train_seconds and recipe.max_train_seconds * step.share
        stage = Stage(step.name, counts[step.name], cap, stage_hook(step, model, ctx.device))
        trainer = Trainer(model, recipe, ctx, ckpt_path, log)
        mark(stage=f"train:{step.name}")
        own = state if state is not None and state["stage"] == step.name else None
        if own is not None and own["stage_done"]:
            trainer.load_state_dict(own)
            iteration = int(own["iteration"])
            outcome = trainer.outcome(iteration, float(own["seconds"]), iteration < stage.iterations, stage)
        else:
            outcome = trainer.train(dataset, collate, stage, resume=own)
        training[step.name] = outcome.as_record(step.name)
        mark(training=list(training.values()))
    if trainer is None:
        raise ValueError("a plan must end with a training stage")
    final = trainer.eval_model
    if ctx.is_main:
        if weights == "none":
            (model_dir / "final.pt").unlink(missing_ok=True)
        else:
            write_atomic(model_dir / "final.pt", lambda fh: save_final(plan, final, fh, weights))
    return PlanResult(final, list(training.values()))


def resume_files(plan: TrainingPlan) -> list[str]:
    """The files a finished model no longer needs: its checkpoint and the transforms' outputs."""
    return ["checkpoint.pt", *(s.output_file for s in plan.steps if isinstance(s, Transform))]
