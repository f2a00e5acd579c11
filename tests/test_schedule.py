"""The schedule of ``bench.training.schedule`` against ultralytics/yolov5 ``train.py``: exact SGD values."""

from __future__ import annotations

import dataclasses

import pytest
import torch

from bench.training.schedule import (
    apply_schedule,
    base_accumulation,
    decay_factor,
    effective_weight_decay,
    warmup_length,
)
from tests.test_train import SGD

# ------------------------------------------------- ultralytics' warm-up and linear schedule, exact values

YOLO = dataclasses.replace(SGD, lr=0.01, momentum=0.937, schedule="linear", min_lr_fraction=0.01,
                           warmup_epochs=3.0, warmup_bias_lr=0.1, warmup_momentum=0.8, nominal_batch=64,
                           batch_size=16, iterations=500)


def yolo_optimizer() -> torch.optim.SGD:
    weights, bias = torch.nn.Parameter(torch.zeros(2)), torch.nn.Parameter(torch.zeros(2))
    return torch.optim.SGD([{"params": [weights], "kind": "weights"}, {"params": [bias], "kind": "bias"}],
                           lr=0.01, momentum=0.937)


def test_accumulation_and_decay_scaling_follow_train_py() -> None:
    assert base_accumulation(YOLO) == 4 and effective_weight_decay(YOLO) == 0.0
    odd = dataclasses.replace(YOLO, batch_size=24, weight_decay=5e-4)
    assert base_accumulation(odd) == 3 and effective_weight_decay(odd) == pytest.approx(5e-4 * 24 * 3 / 64)
    assert warmup_length(YOLO, 10) == 100 and warmup_length(YOLO, 50) == 150  # max(round(3 x nb), 100)


@pytest.mark.parametrize(("iteration", "weights_lr", "bias_lr", "momentum", "accumulate"), [
    (0, 0.0, 0.1, 0.8, 1),
    (75, 0.01 * 0.901 / 2, 0.1 + (0.01 * 0.901 - 0.1) / 2, 0.8 + 0.137 / 2, 2),  # epoch 1: lf = 0.901
    (150, 0.01 * 0.703, 0.01 * 0.703, 0.937, 4),  # the last warm-up iteration (ni <= nw), epoch 3
    (151, 0.01 * 0.703, 0.01 * 0.703, 0.937, 4),
    (499, 0.01 * 0.109, 0.01 * 0.109, 0.937, 4),  # epoch 9: lf = 0.1 x 0.99 + 0.01
])
def test_warmup_and_linear_schedule_match_train_py(iteration, weights_lr, bias_lr, momentum, accumulate):
    optimizer = yolo_optimizer()
    per_epoch, epochs = 50, 10.0  # 500 iterations: nw = max(round(3 x 50), 100) = 150
    got = apply_schedule(optimizer, YOLO, iteration, iteration / 500, epochs, per_epoch)
    weights, bias = optimizer.param_groups
    assert got == accumulate
    assert weights["lr"] == pytest.approx(weights_lr, abs=1e-12) and bias["lr"] == pytest.approx(bias_lr)
    assert weights["momentum"] == pytest.approx(momentum) and bias["momentum"] == pytest.approx(momentum)


def test_linear_schedule_ends_at_lrf() -> None:
    assert decay_factor(YOLO, 1.0, 10.0) == pytest.approx(0.01)
    assert decay_factor(YOLO, 0.0, 10.0) == 1.0
