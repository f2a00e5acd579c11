"""The header of the GPU check's JSON: which GPU, driver, CUDA, cuDNN, NCCL, torch; read, never assumed."""

from __future__ import annotations

import platform
import re
import shutil
import socket
import subprocess
from typing import Any

import torch

from bench.environment import package_version


def nvidia_smi() -> list[dict[str, str]]:
    """Per GPU: name, driver version, total memory and power limit as ``nvidia-smi`` reports them."""
    if shutil.which("nvidia-smi") is None:
        return []
    fields = ("name", "driver_version", "memory.total", "power.limit", "pci.bus_id")
    try:
        text = subprocess.run(["nvidia-smi", f"--query-gpu={','.join(fields)}", "--format=csv,noheader"],
                              capture_output=True, text=True, timeout=20, check=True).stdout
    except (OSError, subprocess.SubprocessError):
        return []
    return [dict(zip(fields, (v.strip() for v in line.split(",")), strict=False))
            for line in text.strip().splitlines() if line.strip()]


def environment(device: torch.device) -> dict[str, Any]:
    env: dict[str, Any] = {
        "host": socket.gethostname(), "python": platform.python_version(), "torch": torch.__version__,
        "torchvision": package_version("torchvision"), "ultralytics": package_version("ultralytics"),
        "torch_pruning": package_version("torch-pruning"), "cuda_build": torch.version.cuda,
        "device": str(device), "cuda_available": torch.cuda.is_available(),
    }
    if not torch.cuda.is_available():
        return env
    smi = nvidia_smi()
    gpus = []
    for index in range(torch.cuda.device_count()):
        props = torch.cuda.get_device_properties(index)
        gpus.append({"index": index, "name": props.name, "capability": f"{props.major}.{props.minor}",
                     "memory_gib": round(props.total_memory / 2**30, 1),
                     "multiprocessors": props.multi_processor_count,
                     **({"nvidia_smi": smi[index]} if index < len(smi) else {})})
    nccl = torch.cuda.nccl.version() if torch.distributed.is_nccl_available() else None
    env.update(gpus=gpus, gpu_name=gpus[0]["name"] if gpus else None,
               driver=smi[0].get("driver_version") if smi else None,
               cudnn=torch.backends.cudnn.version(),
               nccl=".".join(map(str, nccl)) if isinstance(nccl, tuple) else nccl,
               tf32={"matmul": torch.backends.cuda.matmul.allow_tf32,
                     "cudnn": torch.backends.cudnn.allow_tf32})
    return env


def slug(env: dict[str, Any]) -> str:
    """A file-name-safe name of the device: ``nvidia-h100-80gb-hbm3`` or ``cpu``."""
    name = env.get("gpu_name") or "cpu"
    return re.sub(r"[^a-z0-9]+", "-", name.lower()).strip("-")
