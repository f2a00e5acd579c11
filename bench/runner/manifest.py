"""``manifest.json``: everything needed to know what a run directory's numbers mean and to repeat it."""

from __future__ import annotations

import hashlib
import platform
import shlex
import subprocess
import sys
from datetime import datetime, timezone
from pathlib import Path
from typing import Any

import numpy as np
import torch
import torchvision

from bench.data.resolve import ResolvedData
from bench.distributed import DistContext
from bench.environment import device_name, package_version, tf32_state
from bench.suite.spec import Suite
from detectors.registry import model_names, model_spec


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


def eval_engine() -> dict[str, str]:
    """The evaluator's own description, the same that every ``metrics.json`` records as ``engine``."""
    from bench.metrics import evaluation

    describe = getattr(evaluation, "engine", None) or evaluation._engine
    return describe()


def versions() -> dict[str, Any]:
    return {"python": platform.python_version(), "torch": torch.__version__,
            "torchvision": torchvision.__version__, "ultralytics": package_version("ultralytics"),
            "numpy": np.__version__, "eval_engine": "{name} {version}".format(**eval_engine())}


def device_info(requested: str, ctx: DistContext) -> dict[str, Any]:
    cuda = ctx.device.type == "cuda"
    driver = None
    if cuda:
        try:
            driver = subprocess.run(["nvidia-smi", "--query-gpu=driver_version", "--format=csv,noheader"],
                                    capture_output=True, text=True, timeout=10).stdout.split("\n")[0] or None
        except (OSError, subprocess.SubprocessError):
            driver = None
    return {"requested": requested, "type": ctx.device.type, "index": ctx.device.index,
            "name": device_name(ctx.device), "driver": driver, "cuda": torch.version.cuda if cuda else None,
            "world_size": ctx.world_size, "cpu_threads": torch.get_num_threads(),
            # Training in "fp32" on Ampere and later runs matmuls/convolutions in TF32 where these are true.
            "tf32": tf32_state() if cuda else None,
            "cudnn_benchmark": bool(torch.backends.cudnn.benchmark) if cuda else None}


def zoo() -> list[dict[str, Any]]:
    """Every registered model (registry order) with what reports need: name, family, input size, options."""
    return [model_spec(name).info for name in model_names()]


def build_manifest(suite: Suite, argv: list[str], requested_device: str, ctx: DistContext,
                   data: ResolvedData, gt_files: list[Path]) -> dict[str, Any]:
    recipe = suite.recipe
    fixed: dict[str, set[int]] = {}
    for entry in zoo():
        if "input_size" not in entry["options"]:
            fixed.setdefault(entry["family"], set()).add(entry["input_size"])
    input_protocol: dict[str, Any] = {
        family: f"fixed by the architecture ({' or '.join(map(str, sorted(sizes)))})"
        for family, sizes in fixed.items()}
    input_protocol.update(recipe.input_size)
    budget = {"iterations": recipe.iterations, "epochs": recipe.epochs, "batch_size": recipe.batch_size,
              "max_train_seconds": recipe.max_train_seconds, "input_protocol": input_protocol,
              "paper_budget": suite.paper_budget, "description": suite.budget_description}
    return {
        "suite": {"name": suite.name, "path": str(suite.path), "sha256": suite.sha256,
                  "config": suite.to_dict()},
        "command": shlex.join([Path(sys.executable).name, "-m", "bench.run", *argv]),
        "git": git_state(Path(__file__).resolve().parents[2]),
        "seed": recipe.seed,
        "versions": versions(),
        "eval_engine": eval_engine(),  # equal to every metrics.json's "engine"
        "device": device_info(requested_device, ctx),
        "precision": "amp" if recipe.precision == "amp" and ctx.device.type == "cuda" else "fp32",
        "amp_dtype": recipe.amp_dtype if recipe.precision == "amp" and ctx.device.type == "cuda" else None,
        "zoo": zoo(),
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
