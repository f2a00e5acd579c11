"""``python -m detectors list``: every registered model with exact sizes, as JSON or as a table."""

from __future__ import annotations

import json
import re
import subprocess
import sys
from pathlib import Path

import pytest

from detectors import __main__ as cli
from detectors.registry import _REGISTRY, ModelSpec

YOLOV5 = {"yolov5n", "yolov5s", "yolov5m", "yolov5l", "yolov5x"}  # the anchor-based v6.x models of seed 000
YOLOV5U = {f"{name}u" for name in YOLOV5}  # ultralytics 8's anchor-free YOLOv5u
ALL_MODELS = {"ssd300", "ssd300_11620", "ssd512", "fssd300", "fssd300_8732", "mfssd300", "mfssd300_bn",
              "mfssd300_pruned", "mdssd300", "mdssd512", "dfssd300", "dfssd512", *YOLOV5, *YOLOV5U}
README = Path(__file__).resolve().parents[1] / "README.md"
SSD_COUNTS_20 = {"ssd300": (26_285_486, 8732), "ssd512": (27_188_676, 24564), "fssd300": (34_132_960, 11620),
                 "ssd300_11620": (None, 11620), "fssd300_8732": (None, 8732)}


@pytest.mark.slow  # builds every model and runs the YOLO forwards at 640 for FLOPs: ~30-60 s on one core
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
        assert by_name[name]["priors"] == priors
        assert params is None or by_name[name]["params"] == params
    for row in rows:
        assert set(row) == set(cli.COLUMNS)
        assert row["gflops"] > 0 and row["params"] > 0 and row["input_size"] in (300, 512, 640)
        assert (row["priors"] is None) == (row["name"] in YOLOV5U)  # anchor-free: no fixed prior set
    assert readme_parameter_table() == {name: by_name[name]["params"] for name in readme_parameter_table()}
    assert set(readme_parameter_table()) == ALL_MODELS  # the README lists every model, with its exact count
    # Snapshot of thop's count for SSD300 (2 x 31.37 GMACs; the SSD paper's VGG16 at 300 is ~31 GMACs).
    assert by_name["ssd300"]["gflops"] == pytest.approx(62.75, abs=0.01)
    # Anchor-based YOLOv5 at 640: 3 anchors x (80^2 + 40^2 + 20^2) cells.
    assert all(by_name[name]["priors"] == 3 * (80**2 + 40**2 + 20**2) for name in YOLOV5)


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


def readme_parameter_table() -> dict[str, int]:
    """``name -> params (20 classes)`` from the README's Models table: the names of a row, in order, against
    its ``a / b / ...`` counts."""
    text = README.read_text(encoding="utf-8").split("## Models", 1)[1].split("\n## ", 1)[0]
    table: dict[str, int] = {}
    for line in text.splitlines():
        cells = [c.strip() for c in re.split(r"(?<!\\)\|", line.strip().strip("|"))]  # "\|" is a literal pipe
        if len(cells) != 4 or not cells[0].startswith("`"):
            continue
        names = re.findall(r"`([a-z0-9_]+)`", cells[0])
        counts = [int(c.replace(",", "")) for c in cells[2].split("/")]
        assert len(names) == len(counts), line
        table.update(zip(names, counts, strict=True))
    return table


def test_readme_parameter_table_parses():
    table = readme_parameter_table()
    assert table["ssd300"] == 26_285_486 and table["yolov5x"] == 86_345_665
