"""torchrun/DDP helpers: one process per device, rank 0 writes, evaluation split without duplicates.

Launch with ``torchrun --nproc_per_node=N -m bench.run --suite ...`` (multi-node: add ``--nnodes``,
``--node_rank`` and ``--rdzv_endpoint``; the run directory must be on a file system every node shares).
torchrun sets ``RANK``, ``LOCAL_RANK``, ``WORLD_SIZE`` and ``LOCAL_WORLD_SIZE``; without them everything here
degrades to a single process and no process group is created.

Two process groups: the default one (NCCL on CUDA, gloo on CPU) carries gradients and tensors, with an
explicit timeout; a gloo *control* group carries decisions, objects and barriers. While rank 0 alone scores,
times and counts FLOPs, the other ranks wait on the control group, whose timeout is long, instead of in an
NCCL collective under its watchdog.

Failure handling (``agree``): every stage of a model ends with all ranks agreeing whether it succeeded. A rank
whose stage raised joins that agreement at once; if the other ranks do not arrive within
``FAILURE_AGREEMENT_SECONDS`` (they are blocked in a collective the failed rank left), the failed rank records
the error and aborts the job (``abort_job``), so torchrun tears every rank down instead of letting them hang;
``--resume`` then skips the finished models.
"""

from __future__ import annotations

import inspect
import os
import sys
from dataclasses import dataclass
from datetime import timedelta
from typing import Any

import numpy as np
import torch
import torch.distributed as dist
from torch import Tensor, nn

from bench.environment import resolve_device
from detectors.base import BATCH_NORMS

COLLECTIVE_TIMEOUT = timedelta(minutes=60)  # default group (gradient all-reduce): far above any step
CONTROL_TIMEOUT = timedelta(hours=12)  # control group: ranks parked while rank 0 works alone
FAILURE_AGREEMENT_SECONDS = float(os.environ.get("BENCH_FAILURE_AGREEMENT_SECONDS", "300"))


@dataclass(frozen=True)
class DistContext:
    rank: int
    world_size: int
    local_rank: int
    device: torch.device
    control: Any = None  # the gloo control group (None: the default group, or no group in one process)

    @property
    def is_main(self) -> bool:
        return self.rank == 0

    @property
    def enabled(self) -> bool:
        return self.world_size > 1


def init_from_env(requested: str) -> DistContext:
    """Pick and check the device and, under torchrun, join the process group (gloo on CPU, nccl on CUDA)."""
    world = int(os.environ.get("WORLD_SIZE", "1"))
    rank = int(os.environ.get("RANK", "0"))
    local_rank = int(os.environ.get("LOCAL_RANK", "0"))
    local_world = int(os.environ.get("LOCAL_WORLD_SIZE", str(world)))
    device = resolve_device(requested, local_rank=local_rank, world_size=world, local_world_size=local_world)
    if device.type == "cuda":
        torch.cuda.set_device(device)
    control = None
    if world > 1:
        if not dist.is_initialized():
            cuda = device.type == "cuda"
            kwargs: dict[str, Any] = {"timeout": COLLECTIVE_TIMEOUT if cuda else CONTROL_TIMEOUT}
            # ``device_id`` binds the NCCL communicator to this GPU; it appeared in torch 2.3.
            if cuda and "device_id" in inspect.signature(dist.init_process_group).parameters:
                kwargs["device_id"] = device
            dist.init_process_group("nccl" if cuda else "gloo", **kwargs)
        control = dist.new_group(backend="gloo", timeout=CONTROL_TIMEOUT)
    return DistContext(rank, world, local_rank, device, control)


def shutdown() -> None:
    if dist.is_initialized():
        dist.destroy_process_group()


def barrier(ctx: DistContext) -> None:
    if ctx.enabled:
        dist.barrier(group=ctx.control)


def shard(n: int, ctx: DistContext) -> np.ndarray:
    """This rank's contiguous slice of ``range(n)``: every index on exactly one rank, none padded."""
    bounds = np.linspace(0, n, ctx.world_size + 1).round().astype(int)
    return np.arange(bounds[ctx.rank], bounds[ctx.rank + 1])


def gather_to_main(obj: Any, ctx: DistContext) -> list[Any] | None:
    """Every rank's ``obj`` in rank order on rank 0, ``None`` elsewhere."""
    if not ctx.enabled:
        return [obj]
    out: list[Any] | None = [None] * ctx.world_size if ctx.is_main else None
    dist.gather_object(obj, out, dst=0, group=ctx.control)
    return out


def broadcast_from_main(obj: Any, ctx: DistContext) -> Any:
    """Rank 0's ``obj`` on every rank (e.g. a decision only rank 0 can make, such as 'skip this model')."""
    if not ctx.enabled:
        return obj
    box = [obj]
    dist.broadcast_object_list(box, src=0, group=ctx.control)
    return box[0]


def all_true(flag: bool | Tensor, ctx: DistContext) -> bool:
    """``flag`` and-ed over all ranks (a one-element all-reduce on the default group): 'loss is finite'."""
    if not ctx.enabled:
        return bool(flag)
    value = torch.as_tensor(flag, device=ctx.device).reshape(1).to(torch.int32)
    dist.all_reduce(value, op=dist.ReduceOp.MIN)
    return bool(value.item())


def agree(ok: bool, ctx: DistContext) -> bool:
    """Whether every rank succeeded; a failed rank waits ``FAILURE_AGREEMENT_SECONDS`` at most (module doc).

    Raises ``AgreementTimeout`` on a failed rank whose peers never arrive.
    """
    if not ctx.enabled:
        return ok
    value = torch.tensor([int(ok)], dtype=torch.int32)
    work = dist.all_reduce(value, op=dist.ReduceOp.MIN, group=ctx.control, async_op=True)
    if ok:
        work.wait()
    else:
        try:
            work.wait(timeout=timedelta(seconds=FAILURE_AGREEMENT_SECONDS))
        except RuntimeError as err:
            raise AgreementTimeout(f"rank {ctx.rank}: the other ranks did not reach the failure agreement "
                                   f"within {FAILURE_AGREEMENT_SECONDS:g} s") from err
    return bool(value.item())


class AgreementTimeout(RuntimeError):
    """The other ranks are stuck where this rank failed: only aborting the job ends the run."""


def abort_job(code: int = 1) -> None:
    """End this process at once (no collective, no finaliser that could block); torchrun stops the rest."""
    sys.stdout.flush()
    sys.stderr.flush()
    os._exit(code)


def all_reduce_mean(value: Tensor, ctx: DistContext) -> Tensor:
    """The mean of ``value`` over ranks (a detached copy): ``detectors.base.mean_over_replicas`` under DDP."""
    out = value.detach().clone()
    if ctx.enabled:
        dist.all_reduce(out)
        out /= ctx.world_size
    return out


def broadcast_buffers(module: nn.Module, ctx: DistContext) -> None:
    """Rank 0's buffers (BatchNorm statistics) on every rank, so every shard is scored with one model.

    DDP syncs buffers at the start of each forward, so the last step's updates still differ across ranks.
    """
    if ctx.enabled:
        for buffer in module.buffers():
            dist.broadcast(buffer, src=0)


def to_sync_batchnorm(model: nn.Module) -> dict[str, type[nn.Module]]:
    """Replace every BatchNorm by ``SyncBatchNorm`` in place (same parameters and buffers); returns the
    original classes by module path, for ``from_sync_batchnorm``."""
    originals = {name: type(m) for name, m in model.named_modules()
                 if isinstance(m, BATCH_NORMS) and not isinstance(m, nn.SyncBatchNorm)}
    nn.SyncBatchNorm.convert_sync_batchnorm(model)
    return originals


def from_sync_batchnorm(model: nn.Module, originals: dict[str, type[nn.Module]]) -> None:
    """Undo ``to_sync_batchnorm``: pruning and conv+BN fusion match the plain BatchNorm classes only."""
    for name, cls in originals.items():
        parent_name, _, child = name.rpartition(".")
        parent = model.get_submodule(parent_name)
        sync = getattr(parent, child)
        if not isinstance(sync, nn.SyncBatchNorm):
            continue
        plain = cls(sync.num_features, sync.eps, sync.momentum, sync.affine, sync.track_running_stats,
                    device=sync.weight.device if sync.affine else None)
        if sync.affine:
            plain.weight, plain.bias = sync.weight, sync.bias
        if sync.track_running_stats:
            plain.running_mean, plain.running_var = sync.running_mean, sync.running_var
            plain.num_batches_tracked = sync.num_batches_tracked
        plain.train(sync.training)
        setattr(parent, child, plain)
