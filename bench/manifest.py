"""``manifest.json``: everything needed to know what a run directory's numbers mean and to repeat it."""

from __future__ import annotations

import hashlib
import json
import platform
import shlex
import subprocess
import sys
from datetime import datetime, timezone
from importlib import metadata
from pathlib import Path
from typing import Any

import numpy as np
import torch
import torchvision

from bench.datasets import ResolvedData
from bench.distributed import DistContext
from bench.suite import Suite


def now() -> str:
    return datetime.now(timezone.utc).isoformat(timespec="seconds")


def sha256_files(paths: list[Path]) -> str:
    digest = hashlib.sha256()
    for path in paths:
        digest.update(path.read_bytes())
    return digest.hexdigest()


def git_state(repo: Path) -> dict[str, Any]:
    def git(*args: str) -> str | None:
        try:
            return subprocess.run(["git", "-C", str(repo), *args], capture_output=True, text=True,
                                  check=True, timeout=10).stdout.strip()
        except (OSError, subprocess.SubprocessError):
            return None

    commit = git("rev-parse", "HEAD")
    status = git("status", "--porcelain")
    return {"commit": commit, "dirty": None if status is None else bool(status)}


def versions() -> dict[str, str | None]:
    def version(dist: str) -> str | None:
        try:
            return metadata.version(dist)
        except metadata.PackageNotFoundError:
            return None

    return {"python": platform.python_version(), "torch": torch.__version__,
            "torchvision": torchvision.__version__, "ultralytics": version("ultralytics"),
            "numpy": np.__version__, "eval_engine": f"faster-coco-eval {version('faster-coco-eval')}"}


def cpu_name() -> str:
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                return line.split(":", 1)[1].strip()
    except OSError:
        pass
    return platform.processor() or platform.machine()


def device_info(requested: str, ctx: DistContext) -> dict[str, Any]:
    cuda = ctx.device.type == "cuda"
    driver = None
    if cuda:
        try:
            driver = subprocess.run(["nvidia-smi", "--query-gpu=driver_version", "--format=csv,noheader"],
                                    capture_output=True, text=True, timeout=10).stdout.split("\n")[0] or None
        except (OSError, subprocess.SubprocessError):
            driver = None
    return {"requested": requested, "type": ctx.device.type,
            "name": torch.cuda.get_device_name(ctx.device) if cuda else cpu_name(),
            "driver": driver, "cuda": torch.version.cuda if cuda else None, "world_size": ctx.world_size,
            "cpu_threads": torch.get_num_threads()}


def build_manifest(suite: Suite, argv: list[str], requested_device: str, ctx: DistContext,
                   data: ResolvedData, gt_files: list[Path]) -> dict[str, Any]:
    recipe = suite.recipe
    input_protocol = {"ssd": "fixed by the architecture (300 or 512)", **recipe.input_size}
    budget = {"iterations": recipe.iterations, "epochs": recipe.epochs, "batch_size": recipe.batch_size,
              "max_train_seconds": recipe.max_train_seconds, "input_protocol": input_protocol,
              "paper_budget": suite.paper_budget, "description": suite.budget_description}
    return {
        "suite": {"name": suite.name, "path": str(suite.path), "sha256": suite.sha256,
                  "config": suite.to_dict()},
        "command": shlex.join([Path(sys.executable).name, "-m", "bench.run", *argv]),
        "git": git_state(Path(__file__).resolve().parents[1]),
        "seed": recipe.seed,
        "versions": versions(),
        "device": device_info(requested_device, ctx),
        "precision": "amp" if recipe.precision == "amp" and ctx.device.type == "cuda" else "fp32",
        "data": {"name": data.name, "format": data.format, "root": str(data.root),
                 "synthetic": data.synthetic,
                 "splits": {"train": len(data.train), "test": len(data.test)},
                 "split_names": {"train": data.splits.train, "test": data.splits.test},
                 # The canonical COCO GT actually trained on and scored, whatever the source format.
                 "annotation_sha256": sha256_files(gt_files), "classes": data.train.classes},
        "budget": budget,
        "started": now(),
        "finished": None,
    }


def write_json(obj: Any, path: Path) -> None:
    """Write JSON through a temporary file and a rename, so readers never see half a file."""
    tmp = path.with_name(f".{path.name}.tmp")
    tmp.write_text(json.dumps(obj, indent=2, default=str))
    tmp.replace(path)
