"""The training loop on a tiny fake detector: it learns, resumes exactly, and refuses non-finite losses."""

from __future__ import annotations

import csv
import dataclasses
import math
from pathlib import Path

import pytest
import torch

import bench.training.loop
from bench.distributed import DistContext
from bench.runner.stages import Stage, stage_iterations
from bench.suite.spec import Recipe
from bench.training import checkpoint
from bench.training.log import TrainLog
from bench.training.loop import NonFiniteLossError, Trainer
from bench.training.schedule import (
    build_optimizer,
    lr_at,
)
from detectors import ImageMeta, Target
from tests.fake_detector import TinyDetector

CPU = DistContext(rank=0, world_size=1, local_rank=0, device=torch.device("cpu"))
RECIPE = Recipe(iterations=12, batch_size=4, optimizer="adamw", lr=0.02, weight_decay=0.0,
                warmup_iterations=2, schedule="cosine", precision="fp32", log_every=3, checkpoint_every=4,
                seed=7)


class AugmentedToySet:
    """Eight 32-px images whose "augmentation" noise depends only on (epoch, index), like the real loader."""

    def __init__(self) -> None:
        self.epoch = 0

    def set_epoch(self, epoch: int) -> None:
        self.epoch = epoch

    def __len__(self) -> int:
        return 8

    def __getitem__(self, index: int) -> tuple[torch.Tensor, Target, ImageMeta]:
        gen = torch.Generator().manual_seed(1000 * self.epoch + index)
        label = index % 2
        image = torch.full((3, 32, 32), 0.2 + 0.6 * label) + 0.05 * torch.rand(3, 32, 32, generator=gen)
        box = torch.tensor([[4.0, 4.0, 20.0, 20.0]]) + 8 * label
        return image, Target(box, torch.tensor([label])), ImageMeta(index + 1, (32, 32))


def collate(batch):
    images, targets, metas = zip(*batch, strict=True)
    return torch.stack(images), list(targets), list(metas)


def make_trainer(tmp_path: Path, recipe: Recipe = RECIPE, failure: str | None = None) -> Trainer:
    torch.manual_seed(0)
    model = TinyDetector(2, input_size=32, failure=failure)
    model.name = "tiny"
    return Trainer(model, recipe, CPU, tmp_path / "checkpoint.pt", TrainLog(tmp_path / "train_log.csv"))


def read_log(path: Path) -> list[dict[str, str]]:
    with path.open(newline="") as fh:
        return list(csv.DictReader(fh))


def test_loss_falls_and_log_has_contract_columns(tmp_path: Path) -> None:
    trainer = make_trainer(tmp_path)
    outcome = trainer.train(AugmentedToySet(), collate, Stage("train", 12))
    assert outcome.iterations == 12 and not outcome.stopped_by_time
    rows = read_log(tmp_path / "train_log.csv")
    assert list(rows[0]) == ["stage", "epoch", "iteration", "lr", "loss", "loss_box", "loss_cls", "seconds"]
    assert [int(r["iteration"]) for r in rows] == [3, 6, 9, 12]
    assert [int(r["epoch"]) for r in rows] == [1, 2, 4, 5]  # 2 iterations per epoch (8 images, batch 4)
    assert float(rows[-1]["loss"]) < 0.6 * float(rows[0]["loss"])
    saved = checkpoint.load(tmp_path / "checkpoint.pt")
    assert saved["iteration"] == 12 and saved["stage_done"] and saved["stage"] == "train"


def test_resume_after_interruption_matches_uninterrupted_run(tmp_path: Path) -> None:
    reference = make_trainer(tmp_path / "a")
    reference.train(AugmentedToySet(), collate, Stage("train", 12))

    interrupted = make_trainer(tmp_path / "b")
    calls = 0

    def crash_at_iteration_ten() -> None:  # killed mid-epoch: checkpoint at 8, log row 9 already written
        nonlocal calls
        calls += 1
        if calls == 10:
            raise KeyboardInterrupt

    with pytest.raises(KeyboardInterrupt):
        interrupted.train(AugmentedToySet(), collate,
                          Stage("train", 12, after_backward=crash_at_iteration_ten))
    state = checkpoint.load(tmp_path / "b" / "checkpoint.pt")
    assert state["iteration"] == 8 and not state["stage_done"]
    torch.manual_seed(123)  # a fresh process: other RNG state, freshly initialised model
    resumed = make_trainer(tmp_path / "b")
    resumed.train(AugmentedToySet(), collate, Stage("train", 12), resume=state)

    for (name, a), b in zip(reference.model.state_dict().items(), resumed.model.state_dict().values(),
                            strict=True):
        assert torch.equal(a, b), name
    # No duplicated rows, and the row of iteration 9 averages 7-9 although 7 and 8 ran before the kill.
    logs = [[{k: v for k, v in row.items() if k != "seconds"} for row in read_log(path)]
            for path in (tmp_path / "a" / "train_log.csv", tmp_path / "b" / "train_log.csv")]
    assert logs[0] == logs[1]


def test_non_finite_loss_raises(tmp_path: Path) -> None:
    trainer = make_trainer(tmp_path, failure="nan")
    with pytest.raises(NonFiniteLossError, match="iteration 0"):
        trainer.train(AugmentedToySet(), collate, Stage("train", 4))


def test_time_cap_stops_training_and_is_checkpointed(tmp_path: Path) -> None:
    trainer = make_trainer(tmp_path)
    outcome = trainer.train(AugmentedToySet(), collate, Stage("train", 10_000, max_seconds=1e-9))
    assert outcome.stopped_by_time and outcome.iterations == 1
    assert checkpoint.load(tmp_path / "checkpoint.pt")["stage_done"]


def test_a_slow_machine_trains_the_same_weights_when_the_safety_net_does_not_trigger(tmp_path: Path,
                                                                                  monkeypatch) -> None:
    """The lr schedule follows iterations, never the clock: a machine so loaded that the first step takes
    200 s, under a 450 s cap the run never reaches, trains the weights and log of an uncapped idle run (a
    schedule that mixed in the elapsed share of the cap, 200/450 after one of 12 steps, would not)."""
    reference = make_trainer(tmp_path / "idle")
    reference.train(AugmentedToySet(), collate, Stage("train", 12))

    def loaded_clock():  # _clock() is read at the start and at the end of every step
        now = 0.0
        for duration in [200.0] + [1.0] * 11:
            yield now
            now += duration
            yield now

    ticks = loaded_clock()
    slow = make_trainer(tmp_path / "loaded")
    monkeypatch.setattr(slow, "_clock", lambda: next(ticks))
    outcome = slow.train(AugmentedToySet(), collate, Stage("train", 12, max_seconds=450.0))
    assert not outcome.stopped_by_time and outcome.iterations == 12 and outcome.seconds == 211.0
    for (name, a), b in zip(reference.model.state_dict().items(), slow.model.state_dict().values(),
                            strict=True):
        assert torch.equal(a, b), name
    logs = [[{k: v for k, v in row.items() if k != "seconds"} for row in read_log(path)]
            for path in (tmp_path / "idle" / "train_log.csv", tmp_path / "loaded" / "train_log.csv")]
    assert logs[0] == logs[1]


def test_ema_and_grad_clip_paths(tmp_path: Path) -> None:
    recipe = dataclasses.replace(RECIPE, ema_decay=0.5, grad_clip=0.1, optimizer="sgd", lr=0.01)
    trainer = make_trainer(tmp_path, recipe)
    before = [p.detach().clone() for p in trainer.model.parameters()]
    trainer.train(AugmentedToySet(), collate, Stage("train", 2))
    ema_params = list(trainer.eval_model.parameters())
    model_params = list(trainer.model.parameters())
    assert trainer.eval_model is not trainer.model
    # EMA after two updates with decay 0.5 lies strictly between the start and the trained weights.
    assert any(not torch.equal(e, m) for e, m in zip(ema_params, model_params, strict=True))
    step = max((m - b).abs().max().item() for m, b in zip(model_params, before, strict=True))
    assert 0 < step <= 2 * 0.01 * 0.1 * 1.0001 * 10  # lr x clipped norm, twice (with momentum)
    saved = checkpoint.load(tmp_path / "checkpoint.pt")
    assert saved["ema"] is not None and int(saved["ema"]["n_averaged"]) == 2


def test_schedule_shapes() -> None:
    step = dataclasses.replace(RECIPE, schedule="step", lr=1.0, warmup_iterations=10, warmup_factor=0.1)
    assert lr_at(step, 0, 0.0) == pytest.approx(0.1)
    assert lr_at(step, 5, 0.0) == pytest.approx(0.55)
    assert lr_at(step, 10, 0.5) == 1.0
    assert lr_at(step, 10, 0.7) == pytest.approx(0.1) and lr_at(step, 10, 0.9) == pytest.approx(0.01)
    cosine = dataclasses.replace(step, schedule="cosine", min_lr_fraction=0.0)
    assert lr_at(cosine, 10, 0.5) == pytest.approx(0.5) and lr_at(cosine, 10, 1.0) == pytest.approx(0.0)
    assert stage_iterations(10, [0.5, 0.5]) == [5, 5] and stage_iterations(1, [0.5, 0.5]) == [1, 1]
    assert stage_iterations(0, [0.5, 0.5]) == [0, 0]  # a smoke budget: not trained


def test_amp_is_cuda_only() -> None:
    amp = dataclasses.replace(RECIPE, precision="amp")
    assert bench.training.loop.uses_amp(amp, torch.device("cuda", 0))
    assert not bench.training.loop.uses_amp(amp, torch.device("cpu"))
    assert not bench.training.loop.uses_amp(RECIPE, torch.device("cuda", 0))


def test_amp_path_scales_unscales_for_clipping_and_saves_the_scaler(tmp_path: Path, monkeypatch) -> None:
    """The CUDA branch (fp16 autocast + GradScaler) run on CPU, where both exist, to test its logic."""
    monkeypatch.setattr(bench.training.loop, "uses_amp", lambda recipe, device: True)
    recipe = dataclasses.replace(RECIPE, precision="amp", grad_clip=1.0)
    trainer = make_trainer(tmp_path, recipe)
    assert trainer.amp and trainer.scaler.is_enabled()
    trainer.train(AugmentedToySet(), collate, Stage("train", 12))
    rows = read_log(tmp_path / "train_log.csv")
    assert float(rows[-1]["loss"]) < 0.6 * float(rows[0]["loss"])  # unscaled gradients, sane clipping
    saved = checkpoint.load(tmp_path / "checkpoint.pt")
    assert saved["scaler"]["scale"] > 0  # the loss scale resumes with the run


# ------------------------------------------------------- the optimizer step, exactly (SGD, no momentum)

SGD = dataclasses.replace(RECIPE, optimizer="sgd", momentum=0.0, weight_decay=0.0, lr=0.05,
                          warmup_iterations=0, schedule="step", milestones=[0.99])


def flat(tensors) -> torch.Tensor:
    return torch.cat([t.detach().reshape(-1) for t in tensors])


def test_clipped_update_has_exactly_the_clip_norm_and_unscale_comes_first(tmp_path: Path, monkeypatch):
    monkeypatch.setattr(bench.training.loop, "uses_amp", lambda recipe, device: True)  # GradScaler on (CPU)
    recipe = dataclasses.replace(SGD, precision="amp", grad_clip=1e-3)
    trainer = make_trainer(tmp_path, recipe)
    order: list[str] = []
    norms: list[float] = []
    unscale, clip = trainer.scaler.unscale_, torch.nn.utils.clip_grad_norm_

    def clip_and_record(params, max_norm):
        params = list(params)
        order.append("clip")
        total = clip(params, max_norm)
        norms.append(float(flat(p.grad for p in params).norm()))
        return total

    monkeypatch.setattr(trainer.scaler, "unscale_", lambda opt: order.append("unscale") or unscale(opt))
    monkeypatch.setattr(torch.nn.utils, "clip_grad_norm_", clip_and_record)
    before = flat(trainer.model.parameters()).clone()
    trainer.train(AugmentedToySet(), collate, Stage("train", 1))
    assert order == ["unscale", "clip"] and norms[0] <= 1e-3 * (1 + 1e-5)
    step = flat(trainer.model.parameters()) - before
    assert float(step.norm()) == pytest.approx(0.05 * 1e-3, rel=1e-4)  # lr x clip norm (raw norm larger)


@pytest.mark.parametrize("tau", [None, 2.0])
def test_one_ema_update_is_decay_times_ema_plus_the_rest_times_the_model(tmp_path: Path, tau) -> None:
    decay = 0.7
    recipe = dataclasses.replace(SGD, ema_decay=decay, ema_tau=tau)
    trainer = make_trainer(tmp_path, recipe)
    if tau is None:  # AveragedModel copies the model at its first update: check the second one
        trainer.train(AugmentedToySet(), collate, Stage("train", 1))
        trainer = make_trainer(tmp_path, recipe)
        trainer.load_state_dict(checkpoint.load(tmp_path / "checkpoint.pt"))
        resume, d = checkpoint.load(tmp_path / "checkpoint.pt"), decay
    else:  # ultralytics' ramp: d = decay * (1 - exp(-updates / tau)) at update 1
        resume, d = None, decay * (1 - math.exp(-1 / tau))
    ema_before = {k: v.clone() for k, v in trainer.eval_model.state_dict().items()}
    trainer.train(AugmentedToySet(), collate, Stage("train", 2 if tau is None else 1), resume=resume)
    model = trainer.model.state_dict()
    for key, value in trainer.eval_model.state_dict().items():
        if value.is_floating_point():
            expected = d * ema_before[key] + (1 - d) * model[key]
            torch.testing.assert_close(value, expected, rtol=1e-6, atol=1e-7)


def test_accumulation_sums_micro_batch_gradients_and_scales_weight_decay(tmp_path: Path) -> None:
    recipe = dataclasses.replace(SGD, nominal_batch=8, weight_decay=1e-2)  # batch 4: accumulate 2
    trainer = make_trainer(tmp_path, recipe)
    assert [g["weight_decay"] for g in trainer.optimizer.param_groups] == [1e-2 * 4 * 2 / 8]
    reference = make_trainer(tmp_path / "ref", SGD)
    start = [p.detach().clone() for p in reference.model.parameters()]
    from bench.runner.stages import epoch_batches

    grads = [torch.zeros_like(p) for p in start]
    for images, targets in list(epoch_batches(AugmentedToySet(), collate, SGD, CPU, 0, 0))[:2]:
        reference.model.zero_grad()
        reference.model.loss(images, targets)["loss"].backward()  # both at the starting weights
        grads = [g + p.grad for g, p in zip(grads, reference.model.parameters(), strict=True)]
    outcome = trainer.train(AugmentedToySet(), collate, Stage("train", 2))
    assert outcome.optimizer_steps == 1
    for p, p0, g in zip(trainer.model.parameters(), start, grads, strict=True):
        expected = p0 - 0.05 * (g + 1e-2 * p0)  # one step on the summed gradient, decay 1e-2 x 4 x 2 / 8
        torch.testing.assert_close(p.detach(), expected, rtol=1e-5, atol=1e-7)


def test_sum_reduction_multiplies_the_loss_by_the_global_batch(tmp_path: Path) -> None:
    (tmp_path / "a").mkdir()
    (tmp_path / "b").mkdir()
    summed = make_trainer(tmp_path / "a", dataclasses.replace(SGD, loss_reduction="sum"))
    summed.train(AugmentedToySet(), collate, Stage("train", 1))
    mean = make_trainer(tmp_path / "b", dataclasses.replace(SGD, lr=0.05 * 4))  # batch 4
    mean.train(AugmentedToySet(), collate, Stage("train", 1))
    torch.testing.assert_close(flat(summed.model.parameters()), flat(mean.model.parameters()), rtol=1e-5,
                               atol=1e-7)


def test_nesterov_reaches_the_optimizer() -> None:
    model = TinyDetector(2, input_size=32)
    optimizer = build_optimizer(model, dataclasses.replace(SGD, momentum=0.9, nesterov=True))
    assert optimizer.param_groups[0]["nesterov"] and optimizer.param_groups[0]["momentum"] == 0.9
