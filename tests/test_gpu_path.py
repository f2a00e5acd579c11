"""The CUDA and multi-process paths, read on a CPU (issue 13 and issue 14's device errors).

Each test replays one GPU failure with what a CPU has: a mocked ``torch.cuda``, the ``meta`` device, a
monkeypatched ``uses_amp`` (fp16 autocast and ``GradScaler`` both run on CPU), or two gloo processes.
"""

from __future__ import annotations

import dataclasses
from pathlib import Path
from types import SimpleNamespace

import pytest
import torch
from torch import Tensor, nn

import bench.distributed
import bench.training.loop
from bench.distributed import DistContext, from_sync_batchnorm, to_sync_batchnorm
from bench.environment import tf32_disabled, tf32_state
from bench.runner.plan_runner import load_resume_state, stage_hook
from bench.runner.stages import Stage
from bench.speed.half_precision import to_half
from bench.training import checkpoint
from bench.training.log import TrainLog
from bench.training.loop import NonFiniteLossError, Trainer
from detectors import Detections, Detector, ImageMeta, InputSpec, Target
from detectors.base import mean_over_replicas, replica_mean
from detectors.plans import Train
from tests.test_train import RECIPE, AugmentedToySet, collate

CPU = DistContext(rank=0, world_size=1, local_rank=0, device=torch.device("cpu"))
SGD = dataclasses.replace(RECIPE, optimizer="sgd", momentum=0.0, weight_decay=0.0, lr=0.1,
                          warmup_iterations=0, schedule="step", milestones=[0.99])


class BNDetector(Detector):
    """A conv + BN network whose loss does not depend on the BN scale: only a penalty can move it."""

    family = "test"

    def __init__(self, failure_at: int | None = None) -> None:
        super().__init__(num_classes=2, input_size=32)
        self.conv = nn.Conv2d(3, 4, 3, stride=4)
        self.bn = nn.BatchNorm2d(4)
        self.head = nn.Linear(4, 2)
        self.failure_at, self.calls = failure_at, 0

    @property
    def input_spec(self) -> InputSpec:
        return InputSpec(32, "stretch", (0.5, 0.5, 0.5), (0.25, 0.25, 0.25))

    def forward(self, images: Tensor) -> Tensor:
        return self.head(self.conv(images).mean((2, 3)))

    def loss(self, images: Tensor, targets: list[Target]) -> dict[str, Tensor]:
        self.calls += 1
        out = self(images)
        loss = out.float().pow(2).mean() + 0.0 * self.bn(self.conv(images)).float().sum()
        if self.calls - 1 == self.failure_at:
            loss = loss * float("inf")
        return {"loss": loss}

    def predict(self, images: Tensor, metas: list[ImageMeta]) -> list[Detections]:
        raise NotImplementedError


# ----------------------------------------------------------------------------------- resume (2) and RNG


def test_resume_state_is_read_onto_the_cpu_whatever_the_device(tmp_path: Path) -> None:
    path = tmp_path / "checkpoint.pt"
    checkpoint.save_atomic({"rng": checkpoint.rng_state(), "w": torch.ones(2)}, path)
    meta = DistContext(0, 1, 0, torch.device("meta"))  # a device the NumPy RNG key cannot live on
    state = load_resume_state(path, meta)
    assert state is not None and state["w"].device.type == "cpu"
    checkpoint.set_rng_state(state["rng"])  # .numpy() on the key tensor works
    assert load_resume_state(tmp_path / "absent.pt", meta) is None


def test_cuda_rng_restores_the_gpus_present(monkeypatch: pytest.MonkeyPatch) -> None:
    restored: list[int] = []
    monkeypatch.setattr(torch.cuda, "is_available", lambda: True)
    monkeypatch.setattr(torch.cuda, "device_count", lambda: 1)
    monkeypatch.setattr(torch.cuda, "set_rng_state", lambda state, index: restored.append(index))
    state = {**checkpoint.rng_state(), "cuda": [torch.zeros(8, dtype=torch.uint8)] * 4}  # saved on 4 GPUs
    checkpoint.set_rng_state(state)
    assert restored == [0]


def test_fp32_checkpoint_resumes_into_an_amp_trainer(tmp_path: Path, monkeypatch) -> None:
    fp32 = Trainer(BNDetector(), SGD, CPU, tmp_path / "c.pt", TrainLog(tmp_path / "log.csv"))
    fp32.train(AugmentedToySet(), collate, Stage("train", 2))
    monkeypatch.setattr(bench.training.loop, "uses_amp", lambda recipe, device: True)
    amp = Trainer(BNDetector(), dataclasses.replace(SGD, precision="amp"), CPU, tmp_path / "c.pt",
                  TrainLog(tmp_path / "log.csv"))
    amp.train(AugmentedToySet(), collate, Stage("train", 4), resume=checkpoint.load(tmp_path / "c.pt"))
    assert amp.scaler.is_enabled() and amp.scaler.get_scale() > 0


# --------------------------------------------------------------------- the plan's hook (3) and AMP (4)


def test_stage_hook_sees_model_and_example_on_the_training_device() -> None:
    seen: list[tuple[str, str]] = []

    def factory(model: Detector, example: Tensor):
        seen.append((next(model.parameters()).device.type, example.device.type))
        return lambda: None

    model = BNDetector()
    assert stage_hook(Train("sparse", 1.0, after_backward=factory), model, torch.device("meta")) is not None
    assert seen == [("meta", "meta")]


@pytest.mark.parametrize("amp", [False, True])
def test_bn_scale_moves_by_lr_times_reg_with_and_without_the_scaler(tmp_path: Path, monkeypatch, amp) -> None:
    monkeypatch.setattr(bench.training.loop, "uses_amp", lambda recipe, device: amp)
    reg, lr = 0.01, 0.1
    trainer = Trainer(BNDetector(), dataclasses.replace(SGD, lr=lr, precision="amp"), CPU, tmp_path / "c.pt",
                      TrainLog(tmp_path / "log.csv"))
    assert trainer.scaler.is_enabled() == amp and (not amp or trainer.scaler.get_scale() == 2.0**16)
    bn = trainer.model.bn

    def slimming_l1() -> None:  # network slimming's sub-gradient, as torch-pruning's regularize adds it
        bn.weight.grad.add_(reg * torch.sign(bn.weight.detach()))

    trainer.train(AugmentedToySet(), collate, Stage("train", 1, after_backward=slimming_l1))
    torch.testing.assert_close(bn.weight.detach(), torch.full((4,), 1 - lr * reg), rtol=0, atol=1e-7)


def test_fp16_overflow_is_skipped_and_counted_but_fp32_nan_fails(tmp_path: Path, monkeypatch) -> None:
    monkeypatch.setattr(bench.training.loop, "uses_amp", lambda recipe, device: True)
    trainer = Trainer(BNDetector(failure_at=1), dataclasses.replace(SGD, precision="amp"), CPU,
                      tmp_path / "c.pt", TrainLog(tmp_path / "log.csv"))
    outcome = trainer.train(AugmentedToySet(), collate, Stage("train", 4))
    assert (outcome.iterations, outcome.skipped_steps, outcome.optimizer_steps) == (4, 1, 3)
    monkeypatch.setattr(bench.training.loop, "uses_amp", lambda recipe, device: False)
    fp32 = Trainer(BNDetector(failure_at=1), SGD, CPU, tmp_path / "d.pt", TrainLog(tmp_path / "d.csv"))
    with pytest.raises(NonFiniteLossError, match="iteration 1"):
        fp32.train(AugmentedToySet(), collate, Stage("train", 4))


def test_bfloat16_autocast_needs_no_scaler_and_a_gpu_that_has_it(tmp_path: Path, monkeypatch) -> None:
    monkeypatch.setattr(bench.training.loop, "uses_amp", lambda recipe, device: True)
    recipe = dataclasses.replace(SGD, precision="amp", amp_dtype="bfloat16")
    trainer = Trainer(BNDetector(), recipe, CPU, tmp_path / "c.pt", TrainLog(tmp_path / "log.csv"))
    assert trainer.amp_dtype == torch.bfloat16 and not trainer.scaler.is_enabled()
    assert trainer.train(AugmentedToySet(), collate, Stage("train", 2)).optimizer_steps == 2
    monkeypatch.setattr(torch.cuda, "is_bf16_supported", lambda: False)
    monkeypatch.setattr(torch.cuda, "get_device_name", lambda device: "Tesla V100")
    with pytest.raises(ValueError, match="V100 does not support bfloat16"):
        bench.training.loop.autocast_dtype(recipe, torch.device("cuda", 0))


# ------------------------------------------------------------------------------- BatchNorm under DDP


def test_sync_batchnorm_for_training_then_plain_batchnorm_again(tmp_path: Path) -> None:
    trainer = Trainer(BNDetector(), SGD, CPU, tmp_path / "c.pt", TrainLog(tmp_path / "log.csv"))
    trainer.sync_batchnorm = True  # as under multi-GPU DDP; SyncBatchNorm runs like BatchNorm without a group
    weight = trainer.model.bn.weight
    during: list[type] = []
    trainer.train(AugmentedToySet(), collate,
                  Stage("train", 2, after_backward=lambda: during.append(type(trainer.model.bn))))
    assert during == [nn.SyncBatchNorm] * 2
    assert type(trainer.model.bn) is nn.BatchNorm2d and trainer.model.bn.weight is weight  # pruning/fusion


def test_sync_batchnorm_round_trip_keeps_parameters_and_buffers() -> None:
    model = nn.Sequential(nn.Conv2d(3, 4, 1), nn.BatchNorm2d(4), nn.Sequential(nn.BatchNorm1d(4)))
    model[1].running_mean.fill_(3.0)
    params = [id(p) for p in model.parameters()]
    originals = to_sync_batchnorm(model)
    assert isinstance(model[1], nn.SyncBatchNorm) and isinstance(model[2][0], nn.SyncBatchNorm)
    from_sync_batchnorm(model, originals)
    assert type(model[1]) is nn.BatchNorm2d and type(model[2][0]) is nn.BatchNorm1d
    assert [id(p) for p in model.parameters()] == params and float(model[1].running_mean[0]) == 3.0


# --------------------------------------------------------------------------------- timing and memory


def test_training_clock_waits_for_the_gpu(monkeypatch: pytest.MonkeyPatch) -> None:
    synced: list[torch.device] = []
    monkeypatch.setattr(torch.cuda, "synchronize", synced.append)
    fake = SimpleNamespace(ctx=SimpleNamespace(device=torch.device("cuda", 1)))
    Trainer._clock(fake)
    assert synced == [torch.device("cuda", 1)]


def test_targets_are_pinned_and_copied_without_blocking(monkeypatch: pytest.MonkeyPatch) -> None:
    from torch.utils.data._utils.pin_memory import pin_memory

    pinned: list[Target] = []
    monkeypatch.setattr(Target, "pin_memory", lambda self: pinned.append(self) or self)
    target = Target(torch.zeros(1, 4), torch.zeros(1, dtype=torch.int64))
    pin_memory([target])  # what DataLoader(pin_memory=True) does to a batch's list of targets
    assert pinned == [target]
    moved = target.to("meta", non_blocking=True)
    assert moved.boxes.device.type == "meta" and moved.labels.device.type == "meta"


def test_tf32_is_switched_off_for_true_fp32_and_restored() -> None:
    before = tf32_state()
    torch.backends.cudnn.allow_tf32 = True
    with tf32_disabled():
        assert tf32_state() == {"matmul": False, "cudnn": False}
    assert tf32_state()["cudnn"] is True
    torch.backends.cuda.matmul.allow_tf32, torch.backends.cudnn.allow_tf32 = before["matmul"], before["cudnn"]


class _Priors(Detector):
    fp32_buffers = ("priors",)

    def __init__(self) -> None:
        super().__init__(num_classes=1, input_size=8)
        self.register_buffer("priors", torch.tensor([[0.1234567, 0.5, 0.25, 0.25]]))
        self.register_buffer("scale", torch.ones(2))
        self.lin = nn.Linear(2, 2)
        self.norm = nn.LayerNorm(2, eps=1e-10)  # an eps fp16 rounds to 0

    input_spec = property(lambda self: InputSpec(8, "stretch", (0, 0, 0), (1, 1, 1)))

    def forward(self, x: Tensor) -> Tensor:
        return self.lin(self.norm(x))

    def loss(self, images, targets):
        raise NotImplementedError

    def predict(self, images, metas):
        raise NotImplementedError


def test_half_precision_keeps_declared_buffers_and_tiny_eps_modules_in_fp32() -> None:
    model = to_half(_Priors())
    assert model.priors.dtype == torch.float32 and float(model.priors[0, 0]) == pytest.approx(0.1234567)
    assert model.scale.dtype == torch.float16 and model.lin.weight.dtype == torch.float16
    assert model.norm.weight.dtype == torch.float32
    assert model(torch.zeros(3, 2, dtype=torch.float16)).dtype == torch.float16  # hooks cast in and out


def test_mean_over_replicas_is_identity_alone_and_the_installed_reduction_under_ddp() -> None:
    count = torch.tensor(6.0, requires_grad=True)
    assert float(mean_over_replicas(count)) == 6.0 and not mean_over_replicas(count).requires_grad
    with replica_mean(lambda value: value / 2):
        assert float(mean_over_replicas(count)) == 3.0
    assert float(mean_over_replicas(count)) == 6.0


def test_throughput_batch_is_halved_until_it_fits(tmp_path: Path, monkeypatch) -> None:
    from torchvision.io import write_png

    from bench.speed.config import SpeedConfig
    from bench.speed.harness import measure_speed

    path = tmp_path / "a.png"
    write_png(torch.zeros(3, 8, 8, dtype=torch.uint8), str(path))

    class Big(_Priors):
        def forward(self, x: Tensor) -> Tensor:
            if x.shape[0] > 2:
                raise torch.cuda.OutOfMemoryError("CUDA out of memory (fake)")
            return x

    config = SpeedConfig(warmup=0, iterations=1, throughput_batch=8, progress=False)
    (row,) = measure_speed(Big(), ["throughput"], config, "cpu", [path])["results"]
    assert (row["batch"], row["requested_batch"]) == (2, 8)



def test_slimming_l1_reaches_sync_batchnorm_scales() -> None:
    import torch_pruning as tp

    from detectors.ssd import pruning

    model = nn.Sequential(nn.Conv2d(3, 4, 3), nn.BatchNorm2d(4), nn.ReLU(), nn.Conv2d(4, 2, 1))
    pruner = tp.pruner.BNScalePruner(model, torch.zeros(1, 3, 8, 8), tp.importance.BNScaleImportance(),
                                     reg=0.1, ignored_layers=[model[3]])
    to_sync_batchnorm(model)  # what the trainer does for the stage under multi-GPU DDP
    model[1].weight.grad = torch.zeros(4)
    pruning.sparsity_step(pruner, model)
    torch.testing.assert_close(model[1].weight.grad, torch.full((4,), 0.1))
