"""Shared test fixtures: one torch thread per worker, the third-party fixtures in ../shared/data.

Under CI (``CI`` set) a missing required fixture fails instead of skipping: the shared data sets hold the only
published-number checks for COCO and the devkit, and the browser test the only check that the report renders.
"""

from __future__ import annotations

import os
from pathlib import Path

import pytest
import torch

os.environ.setdefault("YOLO_OFFLINE", "1")
torch.set_num_threads(1)

SHARED_DATA = Path(__file__).resolve().parents[1].parent / "shared" / "data"


def require(condition: bool, reason: str) -> None:
    """Skip when ``condition`` is false on a developer machine; fail under CI, where it must hold."""
    if condition:
        return
    if os.environ.get("CI"):
        pytest.fail(f"required under CI: {reason}")
    pytest.skip(reason)


@pytest.fixture(scope="session")
def shared_data() -> Path:
    """Root of the shared third-party data sets; tests using it skip when it is absent (fail under CI)."""
    require(SHARED_DATA.is_dir(), f"shared data not found at {SHARED_DATA}")
    return SHARED_DATA
