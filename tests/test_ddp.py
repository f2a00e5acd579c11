"""DDP on CPU: two gloo processes train like one process on the same global batch, and evaluate each test
image exactly once."""

from __future__ import annotations

import json
import os
import socket
import subprocess
import sys
from pathlib import Path
from unittest import mock

import numpy as np
import pytest
import torch
import torch.multiprocessing as mp

from bench.data.resolve import ResolvedData
from bench.distributed import init_from_env, shutdown
from bench.runner.scoring import predict_split
from bench.runner.stages import Stage
from bench.suite.spec import SplitNames
from bench.training.log import TrainLog
from bench.training.loop import Trainer
from tests.fake_detector import TinyDetector
from tests.test_train import RECIPE, AugmentedToySet, collate

ITERATIONS = 4
ROOT = Path(__file__).resolve().parents[1]


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def train_and_predict(rank: int, world: int, port: int, workdir: Path, data: ResolvedData | None) -> None:
    os.environ.update(MASTER_ADDR="127.0.0.1", MASTER_PORT=str(port), RANK=str(rank), LOCAL_RANK=str(rank),
                      WORLD_SIZE=str(world))
    torch.set_num_threads(1)
    ctx = init_from_env("cpu")
    try:
        torch.manual_seed(0)
        model = TinyDetector(2, input_size=32)
        model.name = "tiny"
        trainer = Trainer(model, RECIPE, ctx, workdir / "checkpoint.pt", TrainLog(workdir / "train_log.csv"))
        trainer.train(AugmentedToySet(), collate, Stage("train", ITERATIONS))
        torch.save(model.state_dict(), workdir / f"weights_{world}_{rank}.pt")
        if data is not None:
            arrays = predict_split(model, data, batch_size=2, workers=0, ctx=ctx)
            if ctx.is_main:
                np.savez(workdir / "detections.npz", **arrays)
    finally:
        shutdown()


def test_two_gloo_processes_match_one_process_and_split_evaluation(tmp_path: Path) -> None:
    from bench.data.coco import read_coco
    from bench.data.synth import generate

    paths = generate(tmp_path / "synth", images=20, seed=1, image_size=64)
    test = read_coco(paths["coco_test"])
    data = ResolvedData(test, test, "coco", tmp_path, True, SplitNames("test", "test"), "synth")

    mp.start_processes(train_and_predict, args=(2, free_port(), tmp_path, data), nprocs=2,
                       start_method="spawn")
    with mock.patch.dict(os.environ):  # the single-process reference, global batch 4
        train_and_predict(0, 1, free_port(), tmp_path, None)

    ddp = [torch.load(tmp_path / f"weights_2_{r}.pt", weights_only=True) for r in (0, 1)]
    single = torch.load(tmp_path / "weights_1_0.pt", weights_only=True)
    for name, ref in single.items():
        assert torch.equal(ddp[0][name], ddp[1][name]), name  # replicas stay in sync
        torch.testing.assert_close(ddp[0][name], ref, rtol=1e-5, atol=1e-6)  # averaged gradients = full batch
    torch.manual_seed(0)
    assert not torch.equal(single["box.weight"], TinyDetector(2, input_size=32).box.weight)  # it trained

    dets = np.load(tmp_path / "detections.npz")
    ids = sorted(r.image_id for r in test.records)
    assert len(ids) == 3
    assert sorted(np.unique(dets["image_id"]).tolist()) == ids
    assert len(dets["image_id"]) == len(ids) * 2  # tiny_fake: one detection per class, no duplicated image


@pytest.mark.slow
def test_torchrun_cli_two_processes(tmp_path: Path) -> None:
    """The documented launch: ``torchrun --nproc_per_node=2 -m bench.run ...`` (gloo on CPU)."""
    out = tmp_path / "run"
    subprocess.run([sys.executable, "-m", "torch.distributed.run", "--standalone", "--nproc_per_node=2",
                    "-m", "bench.run", "--suite", "smoke", "--models", "yolov5n", "--out", str(out),
                    "--cache-dir", str(tmp_path / "cache")],
                   cwd=ROOT, env={**os.environ, "OMP_NUM_THREADS": "1"}, check=True, capture_output=True)
    manifest = json.loads((out / "manifest.json").read_text())
    assert manifest["device"]["world_size"] == 2
    model_dir = out / "models" / "yolov5n"
    assert json.loads((model_dir / "status.json").read_text())["state"] == "done"
    assert (model_dir / "metrics.json").is_file() and (model_dir / "speed.json").is_file()
