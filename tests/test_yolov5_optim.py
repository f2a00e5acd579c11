"""Both YOLOv5 families' ``param_groups`` give exactly the SGD step of ultralytics' own optimizer builder.

The reference is ``ultralytics.engine.trainer.BaseTrainer.build_optimizer`` (called, not re-implemented) on an
identical copy of the model, with the ultralytics/yolov5 recipe: SGD, momentum 0.937, Nesterov, lr0 0.01,
weight decay 5e-4 scaled by ``batch * accumulate / 64`` (``accumulate = round(64 / batch)``).
"""

from __future__ import annotations

import copy
from pathlib import Path
from types import SimpleNamespace

import pytest
import torch
from torch import nn
from ultralytics.engine.trainer import BaseTrainer

from bench.distributed import DistContext
from bench.runner.stages import Stage
from bench.suite.spec import Recipe
from bench.training.log import TrainLog
from bench.training.loop import Trainer
from bench.training.schedule import base_accumulation, effective_weight_decay
from detectors import ImageMeta, Target, build_model

SIZE = 64
LR0, MOMENTUM, WEIGHT_DECAY, NOMINAL_BATCH = 0.01, 0.937, 5e-4, 64
BATCH = 24  # accumulate = round(64 / 24) = 3, so the decay is scaled by 72 / 64


def _scaled_decay(batch: int) -> float:
    accumulate = max(round(NOMINAL_BATCH / batch), 1)  # ultralytics' trainer and v5's train.py
    return WEIGHT_DECAY * batch * accumulate / NOMINAL_BATCH


def _batch() -> tuple[torch.Tensor, list[Target]]:
    generator = torch.Generator().manual_seed(0)
    images = torch.rand(2, 3, SIZE, SIZE, generator=generator)
    targets = [Target(torch.tensor([[8.0, 10.0, 50.0, 40.0]]), torch.tensor([0])),
               Target(torch.tensor([[20.0, 30.0, 44.0, 60.0], [2.0, 2.0, 12.0, 9.0]]), torch.tensor([1, 0]))]
    return images, targets


def _ultralytics_sgd(model: nn.Module, decay: float) -> torch.optim.Optimizer:
    # Only the 'auto' optimizer choice reads the trainer's own state, so a bare namespace stands in for it.
    trainer = SimpleNamespace(args=SimpleNamespace(), data={})
    return BaseTrainer.build_optimizer(trainer, model, name="SGD", lr=LR0, momentum=MOMENTUM, decay=decay)


@pytest.mark.parametrize("name", ["yolov5n", "yolov5nu"])
def test_param_groups_step_equals_ultralytics_build_optimizer(name: str) -> None:
    torch.manual_seed(0)
    ours = build_model(name, num_classes=2, input_size=SIZE).train()
    theirs = copy.deepcopy(ours)
    decay = _scaled_decay(BATCH)
    groups = ours.param_groups(decay)
    assert [g["kind"] for g in groups] == ["weight", "bn", "bias"]
    ours_opt = torch.optim.SGD(groups, lr=LR0, momentum=MOMENTUM, nesterov=True)
    theirs_opt = _ultralytics_sgd(theirs, decay)
    # Same partition, same order, same settings as ultralytics' groups.
    names = {id(p): n for n, p in ours.named_parameters()}
    their_names = {id(p): n for n, p in theirs.named_parameters()}
    for mine, ref in zip(ours_opt.param_groups, theirs_opt.param_groups, strict=True):
        assert [names[id(p)] for p in mine["params"]] == [their_names[id(p)] for p in ref["params"]]
        for key in ("lr", "momentum", "nesterov", "weight_decay", "dampening"):
            assert mine[key] == ref[key], key
    bn_weights = {f"{m}.weight" for m, mod in ours.named_modules() if isinstance(mod, nn.BatchNorm2d)}
    assert {names[id(p)] for p in groups[1]["params"]} == bn_weights
    assert all("bias" in names[id(p)] for p in groups[2]["params"]) and groups[0]["weight_decay"] == decay

    images, targets = _batch()
    for _ in range(2):  # the second step also goes through the Nesterov momentum buffers
        loss = ours.loss(images, targets)["loss"] * len(images)  # ultralytics' summed loss (x batch size)
        ours_opt.zero_grad()
        loss.backward()
        for p, q in zip(ours.parameters(), theirs.parameters(), strict=True):
            q.grad = None if p.grad is None else p.grad.clone()
        ours_opt.step()
        theirs_opt.step()
        for (n, p), q in zip(ours.named_parameters(), theirs.parameters(), strict=True):
            assert torch.equal(p, q), n


def test_one_decayed_group_would_not_match() -> None:
    """The comparison is sensitive: decaying BatchNorm weights and biases too changes the step."""
    torch.manual_seed(0)
    model = build_model("yolov5n", num_classes=2, input_size=SIZE).train()
    reference = copy.deepcopy(model)
    decay = _scaled_decay(BATCH)
    plain = torch.optim.SGD(model.parameters(), lr=LR0, momentum=MOMENTUM, nesterov=True, weight_decay=decay)
    theirs = _ultralytics_sgd(reference, decay)
    images, targets = _batch()
    loss = model.loss(images, targets)["loss"] * len(images)
    loss.backward()
    for p, q in zip(model.parameters(), reference.parameters(), strict=True):
        q.grad = p.grad.clone()
    plain.step()
    theirs.step()
    bn = model.model.body.layers[0].bn
    assert not torch.equal(bn.weight, reference.model.body.layers[0].bn.weight)
    assert torch.equal(model.model.body.layers[0].conv.weight, reference.model.body.layers[0].conv.weight)


class _SameImageSet:
    """``72`` copies of one image: every micro-batch of 24 is the same, whatever the sampler's order."""

    def __init__(self) -> None:
        images, targets = _batch()
        self.image, self.target = images[1], targets[1]

    def set_epoch(self, epoch: int) -> None:
        pass

    def __len__(self) -> int:
        return 3 * BATCH

    def __getitem__(self, index: int) -> tuple[torch.Tensor, Target, ImageMeta]:
        return self.image, self.target, ImageMeta(index, (SIZE, SIZE))


def _collate(items: list) -> tuple[torch.Tensor, list[Target], list[ImageMeta]]:
    images, targets, metas = zip(*items, strict=True)
    return torch.stack(images), list(targets), list(metas)


def test_trainer_step_equals_ultralytics_trainer_step(tmp_path: Path) -> None:
    """The runner's Trainer with the train.py recipe fields takes ultralytics' step after ``accumulate``
    micro-batches: summed loss (x batch), 3 accumulated micro-batches (round(64 / 24)), clipping at 10 and
    SGD on ultralytics' groups with the scaled decay. Warm-up is off (its schedule is tested in bench)."""
    recipe = Recipe(iterations=3, batch_size=BATCH, optimizer="sgd", lr=LR0, momentum=MOMENTUM, nesterov=True,
                    weight_decay=WEIGHT_DECAY, nominal_batch=NOMINAL_BATCH, loss_reduction="sum",
                    warmup_iterations=0, schedule="step", milestones=[0.999], grad_clip=10.0,
                    precision="fp32", log_every=3, checkpoint_every=3)
    assert base_accumulation(recipe) == 3 and effective_weight_decay(recipe) == _scaled_decay(BATCH)
    torch.manual_seed(0)
    model = build_model("yolov5n", num_classes=2, input_size=SIZE)
    model.name = "yolov5n"
    reference = copy.deepcopy(model).train()
    cpu = DistContext(rank=0, world_size=1, local_rank=0, device=torch.device("cpu"))
    trainer = Trainer(model, recipe, cpu, tmp_path / "checkpoint.pt", TrainLog(tmp_path / "train_log.csv"))
    outcome = trainer.train(_SameImageSet(), _collate, Stage("train", 3))
    assert outcome.optimizer_steps == 1

    # ultralytics' trainer on the copy: 3 x backward of loss * batch, unscale, clip_grad_norm_(10), step.
    optimizer = _ultralytics_sgd(reference, _scaled_decay(BATCH))
    dataset = _SameImageSet()
    images = torch.stack([dataset.image] * BATCH)
    for _ in range(3):
        (reference.loss(images, [dataset.target] * BATCH)["loss"] * BATCH).backward()
    nn.utils.clip_grad_norm_(reference.parameters(), max_norm=10.0)
    optimizer.step()
    for (name, p), q in zip(model.named_parameters(), reference.parameters(), strict=True):
        assert torch.equal(p, q), name
    for (name, b), c in zip(model.named_buffers(), reference.buffers(), strict=True):
        assert torch.equal(b, c), name  # BatchNorm statistics of the same three forwards
