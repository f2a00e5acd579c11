"""Issue 13.4 on real hardware: under AMP the network-slimming L1 term moves every BN scale by lr * reg.

Two copies of MFSSD-BN, identical weights and batch, take one SGD step (no momentum, no weight decay)
through ``bench.training.loop.Trainer`` with the real ``GradScaler``: one with the slimming penalty
(``detectors.ssd.pruning.sparsity_step`` as the stage's ``after_backward``), one without. The difference of
their BN scales is the penalty's own step, ``lr * reg * sign(gamma)``. Were the penalty added to the scaled
gradients, the step would be ``lr * reg / loss_scale``: 1/1024 of it at the scale set here.
"""

from __future__ import annotations

import copy
import statistics
from typing import Any

import torch
from torch import nn

from bench.gpu_check import Check, CheckContext, expect
from bench.gpu_check.common import SyntheticSet, build, collate, recipe, single_process

LR, REG = 1e-2, 1e-2
INITIAL_SCALE = 1024.0  # below the default 65536 so the very first fp16 step does not overflow and skip


def _bn_scales(model: nn.Module) -> list[torch.Tensor]:
    return [m.weight.detach().float().cpu().clone() for m in model.modules()
            if isinstance(m, nn.modules.batchnorm._BatchNorm) and m.weight is not None]


def _one_step(ctx: CheckContext, initial: dict[str, torch.Tensor], penalty: bool) -> tuple[Any, Any]:
    from bench.training.loop import Stage, Trainer, TrainLog
    from detectors.ssd import pruning

    model = build("mfssd300_bn", ctx.device)
    model.load_state_dict(initial)
    folder = ctx.workdir / "slimming" / ("penalty" if penalty else "plain")
    folder.mkdir(parents=True, exist_ok=True)
    rec = recipe(optimizer="sgd", lr=LR, momentum=0.0, weight_decay=0.0, warmup_iterations=0, grad_clip=None,
                 ema_decay=None, precision="amp", iterations=1, batch_size=ctx.size(4, 2), log_every=1,
                 checkpoint_every=10_000, max_train_seconds=None, schedule="step", workers=0)
    after = None
    if penalty:
        example = torch.zeros(1, 3, model.input_size, model.input_size, device=ctx.device)
        pruner = pruning.make_slimming_pruner(model, example, reg=REG)

        def after() -> None:
            pruning.sparsity_step(pruner, model)

    trainer = Trainer(model, rec, single_process(ctx.device), folder / "checkpoint.pt",
                      TrainLog(folder / "train_log.csv"))
    if trainer.scaler.is_enabled():
        trainer.scaler = torch.amp.GradScaler(ctx.device.type, init_scale=INITIAL_SCALE)
    torch.manual_seed(0)
    stage = Stage("sparse", 1, after_backward=after)
    trainer.train(SyntheticSet(rec.batch_size, model.input_size), collate, stage)
    return model, trainer


def amp_slimming_l1(ctx: CheckContext) -> dict[str, Any]:
    deterministic = torch.backends.cudnn.deterministic, torch.backends.cudnn.benchmark
    torch.backends.cudnn.deterministic, torch.backends.cudnn.benchmark = True, False
    try:
        reference = build("mfssd300_bn", torch.device("cpu"))
        initial, start = copy.deepcopy(reference.state_dict()), _bn_scales(reference)
        penalised, trainer = _one_step(ctx, initial, penalty=True)
        plain, plain_trainer = _one_step(ctx, initial, penalty=False)
    finally:
        torch.backends.cudnn.deterministic, torch.backends.cudnn.benchmark = deterministic
    scale = trainer.scaler.get_scale() if trainer.scaler.is_enabled() else 1.0
    ratios = []
    for g0, g_pen, g_plain in zip(start, _bn_scales(penalised), _bn_scales(plain), strict=True):
        moved = (g_plain - g_pen) * torch.sign(g0)  # the penalty pulls each scale towards 0
        ratios.extend((moved[g0 != 0] / (LR * REG)).tolist())
    result = {"lr": LR, "reg": REG, "expected_step": LR * REG, "loss_scale_after": scale,
              "amp": trainer.amp, "bn_scales": len(ratios),
              "median_step_over_lr_reg": round(statistics.median(ratios), 4),
              "min_step_over_lr_reg": round(min(ratios), 4), "max_step_over_lr_reg": round(max(ratios), 4),
              "optimizer_steps": [getattr(t, "optimizer_steps", None) for t in (trainer, plain_trainer)],
              "if_added_to_scaled_gradients": LR * REG / INITIAL_SCALE}
    expect(0.9 <= result["median_step_over_lr_reg"] <= 1.1,
           "the slimming penalty did not move the BN scales by lr * reg", **result)
    if ctx.cuda:
        expect(trainer.amp and trainer.scaler.is_enabled(), "AMP with a GradScaler was not active", **result)
    return result


CHECK = Check("amp_slimming_l1", amp_slimming_l1,
              "issue 13.4: under AMP the slimming L1 term moves each BN scale by lr * reg")
