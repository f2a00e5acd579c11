"""Atomic, weights-only-loadable checkpoints, including every RNG a resumed run needs to continue exactly.

RNG states are stored as tensors and lists (never pickled objects) so ``torch.load(weights_only=True)``
accepts the file: a checkpoint from an untrusted results folder cannot execute code. Checkpoints are always
read onto the CPU (``map_location="cpu"``): ``load_state_dict`` moves what it needs to the model's device,
while the RNG states must stay CPU tensors and AdamW's ``step`` counters CPU scalars.
"""

from __future__ import annotations

import random
from pathlib import Path
from typing import Any

import numpy as np
import torch

from bench.io import write_atomic


def save_atomic(obj: Any, path: str | Path) -> None:
    """``torch.save`` through a temporary file, fsync and rename (``bench.io.write_atomic``).

    A ``kill -9`` at any moment leaves either the previous file or the new one, never a torn one.
    """
    write_atomic(path, lambda fh: torch.save(obj, fh))


def load(path: str | Path) -> dict[str, Any]:
    """A checkpoint on the CPU, loaded with ``weights_only=True``."""
    return torch.load(path, map_location="cpu", weights_only=True)


def rng_state() -> dict[str, Any]:
    """Python, NumPy, torch and CUDA generator states as tensors and lists."""
    version, mt, gauss = random.getstate()
    kind, keys, pos, has_gauss, cached = np.random.get_state()
    return {
        "python": [version, list(mt), gauss],
        "numpy": [kind, torch.from_numpy(keys.astype(np.int64)), int(pos), int(has_gauss), float(cached)],
        "torch": torch.get_rng_state(),
        "cuda": torch.cuda.get_rng_state_all() if torch.cuda.is_available() else [],
    }


def set_rng_state(state: dict[str, Any]) -> None:
    """Restore ``rng_state()``; CUDA generators for ``min(saved, present)`` GPUs (a resume may see fewer)."""
    version, mt, gauss = state["python"]
    random.setstate((version, tuple(mt), gauss))
    kind, keys, pos, has_gauss, cached = state["numpy"]
    np.random.set_state((kind, keys.cpu().numpy().astype(np.uint32), pos, has_gauss, cached))
    torch.set_rng_state(state["torch"].cpu())
    if state["cuda"] and torch.cuda.is_available():
        for index, cuda_state in enumerate(state["cuda"][:torch.cuda.device_count()]):
            torch.cuda.set_rng_state(cuda_state.cpu(), index)
