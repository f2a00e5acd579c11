"""Live training logs: TensorBoard event files per model and stage, optionally mirrored to W&B or MLflow.

``models/<name>/tb/<stage>/`` holds the events of one training stage (``train``; ``sparse`` and ``finetune``
for the pruned model), beside ``train_log.csv``, so ``tensorboard --logdir results/<suite>/<run>`` shows one
run per model and stage. Tags: ``loss/<term>`` (the window means ``train_log.csv`` also holds), ``lr``,
``throughput/images_per_s`` (global batch over the trainer's step time, data loading excluded),
``throughput/wall_images_per_s`` (over wall-clock time between log rows, data loading included),
``time/train_seconds`` and, once evaluated, ``eval/<group>/<metric>`` (e.g. ``eval/coco/AP50``).

A resumed stage opens its writer with ``purge_step`` = the checkpoint's iteration, so the steps logged after
that checkpoint by the killed process are hidden rather than drawn twice. W&B and MLflow are off by default,
imported only when asked for, and never needed offline; only rank 0 logs (``open_logger(enabled=...)``).
"""

from __future__ import annotations

import argparse
import hashlib
import importlib.util
import time
from collections.abc import Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Protocol

from bench.errors import BenchInputError

TB_FOLDER = "tb"


def add_logging_arguments(parser: argparse.ArgumentParser) -> None:
    group = parser.add_argument_group("live logs (TensorBoard is always written)")
    group.add_argument("--wandb-project", metavar="NAME",
                       help="also log to Weights & Biases in this project (WANDB_MODE=offline works)")
    group.add_argument("--mlflow-uri", metavar="URI",
                       help="also log to MLflow at this tracking URI (e.g. file:./mlruns), one experiment")


@dataclass(frozen=True)
class LoggingOptions:
    wandb_project: str | None = None
    mlflow_uri: str | None = None

    @classmethod
    def from_args(cls, args: argparse.Namespace) -> LoggingOptions:
        """Fails at start-up (one line, exit 2) when an asked-for backend is not installed."""
        options = cls(getattr(args, "wandb_project", None), getattr(args, "mlflow_uri", None))
        for wanted, package, flag in ((options.wandb_project, "wandb", "--wandb-project"),
                                      (options.mlflow_uri, "mlflow", "--mlflow-uri")):
            if wanted and importlib.util.find_spec(package) is None:
                raise BenchInputError(flag, f"needs the {package} package (pip install {package})")
        return options


_defaults: dict[str, Any] = {"options": LoggingOptions(), "experiment": "bench"}


def configure(options: LoggingOptions, experiment: str) -> None:
    """Process-wide backends and experiment name (the CLI calls it once, after parsing: the suite's name),
    so the trainer opens its loggers without the options being threaded through every runner signature."""
    _defaults.update(options=options, experiment=experiment)


class Sink(Protocol):
    def log(self, step: int, scalars: Mapping[str, float]) -> None: ...

    def close(self) -> None: ...


class TensorBoardSink:
    def __init__(self, log_dir: Path, purge_step: int | None, config: Mapping[str, Any] | None) -> None:
        """``purge_step``: hide earlier files' events from this step on (a resumed stage's first new step)."""
        from torch.utils.tensorboard import SummaryWriter

        self.writer = SummaryWriter(str(log_dir), purge_step=purge_step, flush_secs=30)
        if config and purge_step is None:
            import json

            self.writer.add_text("config", f"```\n{json.dumps(config, indent=1, default=str)}\n```", 0)

    def log(self, step: int, scalars: Mapping[str, float]) -> None:
        for tag, value in scalars.items():
            self.writer.add_scalar(tag, value, step)

    def close(self) -> None:
        self.writer.close()


class WandbSink:
    """One W&B run per (run directory, model, stage); a requeued job resumes it (same deterministic id)."""

    def __init__(self, project: str, key: str, name: str, group: str, log_dir: Path,
                 config: Mapping[str, Any] | None) -> None:
        import wandb

        run_id = hashlib.sha1(key.encode()).hexdigest()[:16]
        self.run = wandb.init(project=project, id=run_id, name=name, group=group, resume="allow",
                              dir=str(log_dir), config=dict(config or {}))

    def log(self, step: int, scalars: Mapping[str, float]) -> None:
        self.run.log(dict(scalars), step=step)  # W&B drops steps below its last one after a resume

    def close(self) -> None:
        self.run.finish()


class MlflowSink:
    """One MLflow run per (run directory, model, stage), found again by its ``bench.key`` tag on resume."""

    def __init__(self, uri: str, experiment: str, key: str, name: str,
                 config: Mapping[str, Any] | None) -> None:
        from mlflow import MlflowClient

        self.client = MlflowClient(tracking_uri=uri)
        found = self.client.get_experiment_by_name(experiment)
        exp_id = found.experiment_id if found is not None else self.client.create_experiment(experiment)
        runs = self.client.search_runs([exp_id], filter_string=f"tags.`bench.key` = '{key}'")
        if runs:
            self.run_id = runs[0].info.run_id
        else:
            self.run_id = self.client.create_run(exp_id, run_name=name, tags={"bench.key": key}).info.run_id
            for param, value in (config or {}).items():
                self.client.log_param(self.run_id, param, str(value)[:500])

    def log(self, step: int, scalars: Mapping[str, float]) -> None:
        from mlflow.entities import Metric

        stamp = int(time.time() * 1000)
        self.client.log_batch(self.run_id, metrics=[Metric(k.replace("/", "."), float(v), stamp, step)
                                                    for k, v in scalars.items()])

    def close(self) -> None:
        self.client.set_terminated(self.run_id)


class TrainingLogger:
    """What the trainer calls (rank 0): ``log_train`` per log row, ``log_eval`` once scored, ``close``."""

    def __init__(self, sinks: list[Sink], batch_size: int, start_step: int = 0,
                 start_seconds: float = 0.0) -> None:
        self.sinks = sinks
        self.batch_size = batch_size
        self._last = (start_step, start_seconds, time.monotonic())

    def log_train(self, step: int, scalars: Mapping[str, float], seconds: float | None = None) -> None:
        """``scalars``: loss terms (``loss``, ``loss_cls``, ...) and ``lr``; ``seconds``: training seconds."""
        values = {("lr" if k == "lr" else f"loss/{k}"): float(v) for k, v in scalars.items()}
        last_step, last_seconds, last_wall = self._last
        wall = time.monotonic()
        images = (step - last_step) * self.batch_size
        if seconds is not None:
            values["time/train_seconds"] = float(seconds)
            if images > 0 and seconds > last_seconds:
                values["throughput/images_per_s"] = images / (seconds - last_seconds)
        if images > 0 and wall > last_wall:
            values["throughput/wall_images_per_s"] = images / (wall - last_wall)
        self._last = (step, last_seconds if seconds is None else seconds, wall)
        self._emit(step, values)

    def log_eval(self, step: int, metrics: Mapping[str, Any]) -> None:
        """``metrics``: ``metrics.json``'s content, logged as ``summary_metrics`` picks it."""
        self._emit(step, summary_metrics(metrics))

    def close(self) -> None:
        for sink in self.sinks:
            sink.close()

    def _emit(self, step: int, values: Mapping[str, float]) -> None:
        if values:
            for sink in self.sinks:
                sink.log(step, values)


class NullLogger(TrainingLogger):
    """Ranks other than 0."""

    def __init__(self) -> None:
        super().__init__([], batch_size=1)


def summary_metrics(metrics: Mapping[str, Any]) -> dict[str, float]:
    """``eval/coco/*``, ``eval/voc/*`` and each small-object protocol's ``stats`` as
    ``eval/small_objects/<protocol>/*``; settings, engine versions and per-class tables are not curves."""
    out: dict[str, float] = {}
    for group in ("coco", "voc"):
        out.update(flatten_numbers(metrics.get(group) or {}, f"eval/{group}"))
    protocols = (metrics.get("small_objects") or {}).get("protocols") or {}
    for name, protocol in protocols.items():
        if isinstance(protocol, Mapping):
            out.update(flatten_numbers(protocol.get("stats") or {}, f"eval/small_objects/{name}"))
    return out


def flatten_numbers(tree: Mapping[str, Any], prefix: str) -> dict[str, float]:
    """Numbers of nested dicts as ``prefix/a/b``; lists (per-class tables), strings and nulls are skipped."""
    out: dict[str, float] = {}
    for key, value in tree.items():
        tag = f"{prefix}/{key}"
        if isinstance(value, Mapping):
            out.update(flatten_numbers(value, tag))
        elif isinstance(value, int | float) and not isinstance(value, bool):
            out[tag] = float(value)
    return out


def open_logger(model_dir: Path, stage: str, *, batch_size: int, start_step: int = 0,
                start_seconds: float = 0.0, config: Mapping[str, Any] | None = None,
                options: LoggingOptions | None = None, experiment: str | None = None,
                enabled: bool = True) -> TrainingLogger:
    """The logger of one model's stage: TensorBoard in ``model_dir/tb/<stage>``, plus W&B/MLflow if asked
    (``options`` and ``experiment`` default to what ``configure`` set)."""
    if not enabled:
        return NullLogger()
    options = options or _defaults["options"]
    experiment = experiment or _defaults["experiment"]
    model_dir = Path(model_dir)
    log_dir = model_dir / TB_FOLDER / stage
    # The row of the checkpoint's own iteration was logged before the save: hide only the steps after it.
    sinks: list[Sink] = [TensorBoardSink(log_dir, start_step + 1 if start_step else None, config)]
    key = f"{model_dir.resolve()}::{stage}"
    name = f"{model_dir.name}/{stage}"
    if options.wandb_project:
        group = model_dir.parent.parent.name  # the run directory
        sinks.append(WandbSink(options.wandb_project, key, name, group, log_dir, config))
    if options.mlflow_uri:
        sinks.append(MlflowSink(options.mlflow_uri, experiment, key, name, config))
    return TrainingLogger(sinks, batch_size, start_step, start_seconds)


def log_evaluation(model_dir: Path, stage: str, step: int, metrics: Mapping[str, Any],
                   options: LoggingOptions | None = None, experiment: str | None = None) -> None:
    """Evaluation metrics into the last training stage's run at its final ``step`` (rank 0, once scored)."""
    logger = open_logger(model_dir, stage, batch_size=1, start_step=0, options=options, experiment=experiment)
    try:
        logger.log_eval(step, metrics)
    finally:
        logger.close()
