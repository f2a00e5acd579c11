"""Devices (issue 13 failure 1, issue 14's device errors): an index for ``cuda``, one named line and exit 2
for a device that is not there, and the process group's timeout and ``device_id`` guard. ``torch.cuda`` is
mocked where a GPU would be needed."""

from __future__ import annotations

import inspect
from pathlib import Path

import pytest
import torch
import torch.distributed as dist

import bench.distributed
from bench.distributed import init_from_env
from bench.environment import resolve_device
from bench.errors import BenchInputError


def fake_cuda(monkeypatch: pytest.MonkeyPatch, count: int = 2) -> list[torch.device]:
    selected: list[torch.device] = []
    monkeypatch.setattr(torch.cuda, "is_available", lambda: True)
    monkeypatch.setattr(torch.cuda, "device_count", lambda: count)
    monkeypatch.setattr(torch.cuda, "set_device", selected.append)
    return selected


def test_cuda_without_index_is_cuda_0_in_one_process(monkeypatch: pytest.MonkeyPatch) -> None:
    selected = fake_cuda(monkeypatch, count=4)
    for key in ("WORLD_SIZE", "RANK", "LOCAL_RANK", "LOCAL_WORLD_SIZE"):
        monkeypatch.delenv(key, raising=False)
    ctx = init_from_env("cuda")
    assert ctx.device == torch.device("cuda", 0) and selected == [torch.device("cuda", 0)]
    assert resolve_device("cuda", local_rank=3, world_size=4, local_world_size=4) == torch.device("cuda", 3)


def test_devices_that_are_not_there_are_named_input_errors(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(torch.cuda, "is_available", lambda: False)
    with pytest.raises(BenchInputError, match="--device: cuda asked for CUDA but torch sees no GPU"):
        resolve_device("cuda")
    fake_cuda(monkeypatch, count=2)
    with pytest.raises(BenchInputError, match=r"cuda:2: only 2 GPU\(s\) are visible"):
        resolve_device("cuda:2")
    with pytest.raises(BenchInputError, match="4 processes on this node but only 2 GPU"):
        resolve_device("cuda", local_rank=0, world_size=4, local_world_size=4)
    with pytest.raises(BenchInputError, match="every rank on one GPU"):
        resolve_device("cuda:1", local_rank=0, world_size=2, local_world_size=2)
    with pytest.raises(BenchInputError, match="unknown device 'gpu'"):
        resolve_device("gpu")


def test_cli_without_a_gpu_prints_one_line_and_exits_2(tmp_path: Path, capsys) -> None:
    if torch.cuda.is_available():
        pytest.skip("this machine has a GPU")
    from bench.run import main

    assert main(["--suite", "smoke", "--device", "cuda", "--out", str(tmp_path / "run"),
                 "--cache-dir", str(tmp_path / "cache")]) == 2
    err = capsys.readouterr().err
    assert err.count("\n") == 1 and err.startswith("error: --device: cuda asked for CUDA")


def test_process_group_gets_a_timeout_and_device_id_only_where_torch_has_it(monkeypatch) -> None:
    assert "device_id" in inspect.signature(dist.init_process_group).parameters  # this torch has it
    fake_cuda(monkeypatch)
    monkeypatch.setenv("WORLD_SIZE", "2")
    monkeypatch.setenv("RANK", "1")
    monkeypatch.setenv("LOCAL_RANK", "1")
    calls: list[tuple[str, dict]] = []

    def old_init(backend, *, timeout=None):  # torch < 2.3: no device_id
        calls.append((backend, {"timeout": timeout}))

    monkeypatch.setattr(dist, "is_initialized", lambda: False)
    monkeypatch.setattr(dist, "init_process_group", old_init)
    monkeypatch.setattr(dist, "new_group", lambda **kw: ("gloo group", kw["timeout"]))
    ctx = init_from_env("cuda")
    assert calls == [("nccl", {"timeout": bench.distributed.COLLECTIVE_TIMEOUT})]
    assert ctx.device == torch.device("cuda", 1)
    assert ctx.control == ("gloo group", bench.distributed.CONTROL_TIMEOUT)
