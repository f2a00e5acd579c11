"""What a run runs on: the device, validated before any work (one named line and exit 2 for a device that is
not there), its name, the TF32 switches, and package versions. One definition of each, for the manifest,
``speed.json`` and ``metrics.json``. torch is imported where a function needs it, so the evaluator (no torch)
can use ``package_version``.
"""

from __future__ import annotations

import platform
import re
from collections.abc import Iterator
from contextlib import contextmanager
from importlib import metadata
from pathlib import Path
from typing import TYPE_CHECKING

from bench.errors import BenchInputError

if TYPE_CHECKING:
    import torch

DEVICE_FLAG = "--device"


def package_version(distribution: str) -> str | None:
    """The installed version of ``distribution``, ``None`` when it is not installed."""
    try:
        return metadata.version(distribution)
    except metadata.PackageNotFoundError:
        return None


def cpu_name() -> str:
    """The CPU model from /proc/cpuinfo (``platform`` where that file does not exist)."""
    cpuinfo = Path("/proc/cpuinfo")
    try:
        found = re.search(r"^model name\s*:\s*(.+)$", cpuinfo.read_text(), re.M) if cpuinfo.exists() else None
    except OSError:
        found = None
    return found.group(1).strip() if found else (platform.processor() or platform.machine())


def device_name(device: torch.device | str) -> str:
    """GPU name, or the CPU model."""
    import torch

    device = torch.device(device)
    return torch.cuda.get_device_name(device) if device.type == "cuda" else cpu_name()


def resolve_device(requested: str, *, local_rank: int = 0, world_size: int = 1,
                   local_world_size: int = 1) -> torch.device:
    """The device of this process, with an index; ``BenchInputError`` for one that is not there.

    ``cuda`` alone is ``cuda:0`` in one process and ``cuda:LOCAL_RANK`` under torchrun. An explicit
    ``cuda:N`` under a multi-process torchrun is refused: it would put every rank on the same GPU.
    """
    import torch

    try:
        device = torch.device(requested)
    except (RuntimeError, ValueError):
        raise BenchInputError(DEVICE_FLAG, f"unknown device {requested!r}; use cpu, cuda or cuda:N") from None
    if device.type == "cpu":
        return torch.device("cpu")
    if device.type != "cuda":
        raise BenchInputError(DEVICE_FLAG, f"unsupported device {requested!r}; use cpu, cuda or cuda:N")
    if not torch.cuda.is_available():
        raise BenchInputError(DEVICE_FLAG, f"{requested} asked for CUDA but torch sees no GPU "
                                           f"(torch {torch.__version__}, CUDA build {torch.version.cuda})")
    count = torch.cuda.device_count()
    if world_size > 1:
        if device.index is not None:
            raise BenchInputError(DEVICE_FLAG, f"{requested} under a {world_size}-process torchrun would put "
                                               f"every rank on one GPU; pass --device cuda (rank r uses "
                                               f"cuda:LOCAL_RANK) and choose GPUs with CUDA_VISIBLE_DEVICES")
        if local_world_size > count:
            raise BenchInputError(DEVICE_FLAG, f"torchrun started {local_world_size} processes on this node "
                                               f"but only {count} GPU(s) are visible")
        return torch.device("cuda", local_rank)
    index = 0 if device.index is None else device.index
    if index >= count:
        raise BenchInputError(DEVICE_FLAG, f"{requested}: only {count} GPU(s) are visible "
                                           f"(cuda:0 to cuda:{count - 1})")
    return torch.device("cuda", index)


def tf32_state() -> dict[str, bool]:
    """Whether fp32 matrix multiplications and cuDNN convolutions may use TF32 (Ampere and later)."""
    import torch

    return {"matmul": bool(torch.backends.cuda.matmul.allow_tf32),
            "cudnn": bool(torch.backends.cudnn.allow_tf32)}


@contextmanager
def tf32_disabled() -> Iterator[None]:
    """True fp32 while the block runs (the speed harness's fp32 rows), the previous switches afterwards."""
    import torch

    previous = tf32_state()
    torch.backends.cuda.matmul.allow_tf32 = False
    torch.backends.cudnn.allow_tf32 = False
    try:
        yield
    finally:
        torch.backends.cuda.matmul.allow_tf32 = previous["matmul"]
        torch.backends.cudnn.allow_tf32 = previous["cudnn"]
