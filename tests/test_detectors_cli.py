"""``python -m detectors list``: every registered model with exact sizes, as JSON or as a table."""

from __future__ import annotations

import json
import subprocess
import sys

import pytest

from detectors import __main__ as cli
from detectors.registry import _REGISTRY, ModelSpec

ALL_MODELS = {"ssd300", "ssd512", "fssd300", "mfssd300", "mfssd300_bn", "mfssd300_pruned", "mdssd300",
              "mdssd512", "dfssd300", "dfssd512", "yolov5n", "yolov5s", "yolov5m", "yolov5l", "yolov5x"}
SSD_COUNTS_20 = {"ssd300": (26_285_486, 8732), "ssd512": (27_188_676, 24564), "fssd300": (34_132_960, 11620)}


@pytest.mark.slow  # builds all 15 models and runs the YOLO forwards at 640 for FLOPs: ~20-30 s on one core
def test_list_json_for_20_classes_lists_every_registered_model():
    result = subprocess.run([sys.executable, "-m", "detectors", "list", "--json", "--num-classes", "20"],
                            capture_output=True, text=True, timeout=300, check=False)
    assert result.returncode == 0, result.stderr
    rows = json.loads(result.stdout)
    names = [r["name"] for r in rows]
    assert len(names) == len(ALL_MODELS)
    assert set(names) == ALL_MODELS  # tests may register tiny extra models in-process; the CLI has none
    by_name = {r["name"]: r for r in rows}
    for name, (params, priors) in SSD_COUNTS_20.items():
        assert (by_name[name]["params"], by_name[name]["priors"]) == (params, priors)
    for row in rows:
        assert set(row) == set(cli.COLUMNS)
        assert row["gflops"] > 0 and row["params"] > 0 and row["input_size"] in (300, 512, 640)
        assert (row["priors"] is None) == (row["family"] != "ssd")
    assert by_name["ssd300"]["gflops"] == pytest.approx(62.75, abs=0.01)  # 2 x 31.37 GMACs


def test_table_and_no_flops(monkeypatch, capsys):
    monkeypatch.setattr(cli, "model_names", lambda: ["ssd300", "fssd300"])
    assert cli.main(["list", "--num-classes", "20", "--no-flops"]) == 0
    header, *lines = capsys.readouterr().out.splitlines()
    assert header.split() == list(cli.COLUMNS)
    assert lines[0].split() == ["ssd300", "ssd", "300", "26,285,486", "8,732", "-"]
    assert lines[1].split()[:5] == ["fssd300", "ssd", "300", "34,132,960", "11,620"]


def test_one_broken_model_does_not_hide_the_others(monkeypatch, capsys):
    def broken(num_classes, **kwargs):
        raise RuntimeError("cannot build")

    monkeypatch.setitem(_REGISTRY, "broken", ModelSpec("broken", "ssd", 300, broken))
    monkeypatch.setattr(cli, "model_names", lambda: ["broken", "ssd300"])
    assert cli.main(["list", "--json", "--no-flops"]) == 1
    out = capsys.readouterr()
    assert [r["name"] for r in json.loads(out.out)] == ["ssd300"]
    assert "broken: RuntimeError: cannot build" in out.err
