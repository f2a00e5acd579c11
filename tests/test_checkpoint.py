"""Checkpoints: atomic replacement, weights-only loading, exact RNG round trip."""

from __future__ import annotations

import random
from pathlib import Path

import numpy as np
import pytest
import torch

from bench.training import checkpoint


def test_failed_save_keeps_previous_file_and_leaves_no_temp(tmp_path: Path, monkeypatch) -> None:
    path = tmp_path / "checkpoint.pt"
    checkpoint.save_atomic({"iteration": 1}, path)

    def torn_save(obj, fh) -> None:
        fh.write(b"half a checkpoint")
        raise OSError("disk full")

    monkeypatch.setattr(torch, "save", torn_save)
    with pytest.raises(OSError, match="disk full"):
        checkpoint.save_atomic({"iteration": 2}, path)
    monkeypatch.undo()
    assert checkpoint.load(path) == {"iteration": 1}
    assert [p.name for p in tmp_path.iterdir()] == ["checkpoint.pt"]


def test_rng_state_round_trips_through_weights_only_load(tmp_path: Path) -> None:
    random.seed(1)
    np.random.seed(2)
    torch.manual_seed(3)
    checkpoint.save_atomic({"rng": checkpoint.rng_state()}, tmp_path / "c.pt")
    expected = (random.random(), np.random.rand(3), torch.rand(3))
    random.seed(9)
    np.random.seed(9)
    torch.manual_seed(9)
    checkpoint.set_rng_state(checkpoint.load(tmp_path / "c.pt")["rng"])  # weights_only=True inside
    assert random.random() == expected[0]
    np.testing.assert_array_equal(np.random.rand(3), expected[1])
    assert torch.equal(torch.rand(3), expected[2])


def test_load_refuses_pickled_objects(tmp_path: Path) -> None:
    torch.save({"payload": Path("/etc/passwd")}, tmp_path / "evil.pt")
    with pytest.raises(Exception, match=r"[Ww]eights only load failed"):
        checkpoint.load(tmp_path / "evil.pt")
