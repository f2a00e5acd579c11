"""Live logs: TensorBoard events per model and stage, read back with tensorboard's EventAccumulator; a
resumed stage hiding the killed process's extra steps; the optional W&B / MLflow sinks (fake modules)."""

from __future__ import annotations

import argparse
import sys
import types
from pathlib import Path
from typing import ClassVar

import pytest
from tensorboard.backend.event_processing.event_accumulator import EventAccumulator

import bench.training.tblog
from bench.errors import BenchInputError
from bench.training.tblog import LoggingOptions, add_logging_arguments, configure, log_evaluation, open_logger


def scalars(log_dir: Path) -> dict[str, list[tuple[int, float]]]:
    acc = EventAccumulator(str(log_dir))
    acc.Reload()
    return {tag: [(e.step, e.value) for e in acc.Scalars(tag)] for tag in acc.Tags()["scalars"]}


def test_train_and_eval_scalars_read_back(tmp_path: Path) -> None:
    model_dir = tmp_path / "run" / "models" / "tiny"
    logger = open_logger(model_dir, "train", batch_size=8, config={"lr": 0.01})
    logger.log_train(2, {"loss": 3.0, "loss_cls": 2.0, "lr": 0.01}, seconds=0.5)
    logger.log_train(4, {"loss": 2.0, "loss_cls": 1.5, "lr": 0.02}, seconds=1.5)
    logger.close()
    log_evaluation(model_dir, "train", 4, {
        "coco": {"AP50": 0.25, "AP": None}, "voc": {"mAP_11pt": 0.5}, "per_class": [{"AP": 0.1}],
        "engine": {"name": "x"}, "settings": {"n_images": 4},
        "small_objects": {"protocols": {"nwd": {"stats": {"AP50": 0.125}, "max_dets": [1, 10, 100]}},
                          "bootstrap": {"seed": 0}}})

    got = scalars(model_dir / "tb" / "train")
    assert got["loss/loss"] == [(2, 3.0), (4, 2.0)]
    assert got["loss/loss_cls"] == [(2, 2.0), (4, 1.5)]
    assert [v for _, v in got["lr"]] == pytest.approx([0.01, 0.02])
    # 2 steps x batch 8 = 16 images in 0.5 s, then 16 in 1.0 s
    assert [v for _, v in got["throughput/images_per_s"]] == pytest.approx([32.0, 16.0])
    assert [s for s, _ in got["throughput/wall_images_per_s"]] == [2, 4]
    assert got["time/train_seconds"] == [(2, 0.5), (4, 1.5)]
    assert got["eval/coco/AP50"] == [(4, 0.25)] and got["eval/voc/mAP_11pt"] == [(4, 0.5)]
    assert "eval/coco/AP" not in got  # null (undefined) metrics are not drawn as numbers
    assert got["eval/small_objects/nwd/AP50"] == [(4, 0.125)]
    assert sorted(t for t in got if t.startswith("eval/")) == [  # summaries only: no settings, seeds, engine
        "eval/coco/AP50", "eval/small_objects/nwd/AP50", "eval/voc/mAP_11pt"]


def test_resumed_stage_hides_the_steps_after_its_checkpoint(tmp_path: Path) -> None:
    """Killed at step 6 after a checkpoint at 4: resumed from 4, steps 5-6 are logged again, not twice."""
    model_dir = tmp_path / "m"
    first = open_logger(model_dir, "sparse", batch_size=2)
    for step in range(1, 7):
        first.log_train(step, {"loss": float(step)}, seconds=float(step))
    first.close()
    resumed = open_logger(model_dir, "sparse", batch_size=2, start_step=4, start_seconds=4.0)
    for step in range(5, 9):
        resumed.log_train(step, {"loss": 10.0 + step}, seconds=float(step))
    resumed.close()

    loss = scalars(model_dir / "tb" / "sparse")["loss/loss"]
    assert loss == [(1, 1.0), (2, 2.0), (3, 3.0), (4, 4.0), (5, 15.0), (6, 16.0), (7, 17.0), (8, 18.0)]
    assert open_logger(model_dir, "finetune", batch_size=2, enabled=False).sinks == []  # rank > 0
    assert not (model_dir / "tb" / "finetune").exists()


class FakeWandbRun:
    def __init__(self, **kwargs):
        self.init = kwargs
        self.logged: list[tuple[int, dict]] = []
        self.finished = False

    def log(self, values, step):
        self.logged.append((step, values))

    def finish(self):
        self.finished = True


def test_optional_wandb_and_mlflow_sinks(tmp_path: Path, monkeypatch) -> None:
    runs: list[FakeWandbRun] = []
    wandb = types.ModuleType("wandb")
    wandb.init = lambda **kw: runs.append(FakeWandbRun(**kw)) or runs[-1]
    monkeypatch.setitem(sys.modules, "wandb", wandb)

    class Client:
        experiments: ClassVar[dict[str, str]] = {}
        store: ClassVar[dict[str, list]] = {}

        def __init__(self, tracking_uri):
            self.uri = tracking_uri

        def get_experiment_by_name(self, name):
            eid = self.experiments.get(name)
            return None if eid is None else types.SimpleNamespace(experiment_id=eid)

        def create_experiment(self, name):
            self.experiments[name] = "1"
            return "1"

        def search_runs(self, ids, filter_string):
            return [types.SimpleNamespace(info=types.SimpleNamespace(run_id=r)) for r in self.store
                    if r in filter_string]

        def create_run(self, exp_id, run_name, tags):
            self.store[tags["bench.key"]] = []
            return types.SimpleNamespace(info=types.SimpleNamespace(run_id=tags["bench.key"]))

        def log_param(self, run_id, key, value):
            pass

        def log_batch(self, run_id, metrics):
            self.store[run_id].extend(metrics)

        def set_terminated(self, run_id):
            pass

    mlflow = types.ModuleType("mlflow")
    mlflow.MlflowClient = Client
    entities = types.ModuleType("mlflow.entities")
    entities.Metric = lambda key, value, timestamp, step: (key, value, step)
    monkeypatch.setitem(sys.modules, "mlflow", mlflow)
    monkeypatch.setitem(sys.modules, "mlflow.entities", entities)

    monkeypatch.setattr(bench.training.tblog, "_defaults", dict(bench.training.tblog._defaults))
    configure(LoggingOptions(wandb_project="proj", mlflow_uri="file:./mlruns"), experiment="smoke")  # the CLI
    model_dir = tmp_path / "run1" / "models" / "tiny"
    for start in (0, 2):  # a first attempt and a requeued one: the same W&B id and MLflow run
        logger = open_logger(model_dir, "train", batch_size=4, start_step=start)
        logger.log_train(start + 2, {"loss": 1.0, "lr": 0.1}, seconds=float(start + 2))
        logger.close()
    assert runs[0].init["id"] == runs[1].init["id"] and runs[0].init["project"] == "proj"
    assert runs[0].init["group"] == "run1" and runs[0].init["resume"] == "allow"
    assert [s for s, _ in runs[0].logged + runs[1].logged] == [2, 4] and runs[1].finished
    assert runs[0].logged[0][1]["loss/loss"] == 1.0
    (logged,) = Client.store.values()
    assert ("loss.loss", 1.0, 2) in logged and ("loss.loss", 1.0, 4) in logged
    assert Client.experiments == {"smoke": "1"}


def test_missing_backend_package_is_a_start_up_error(monkeypatch) -> None:
    parser = argparse.ArgumentParser()
    add_logging_arguments(parser)
    assert LoggingOptions.from_args(parser.parse_args([])) == LoggingOptions()  # off by default
    monkeypatch.setattr("importlib.util.find_spec", lambda name: None)
    with pytest.raises(BenchInputError, match="pip install wandb"):
        LoggingOptions.from_args(parser.parse_args(["--wandb-project", "p"]))
