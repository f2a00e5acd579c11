"""``python -m bench.data.check ROOT``: every format, every problem of the policy table, the exit status."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import pytest
from PIL import Image
from test_data_health import PROBLEM_GT, coco_root
from test_kitti import LABELS
from test_tt100k import ANNOTATIONS

from bench.data.check import main
from bench.data.synth import generate


def run(capsys: pytest.CaptureFixture[str], *args: str) -> tuple[int, str, str]:
    code = main([str(a) for a in args])
    out, err = capsys.readouterr()
    return code, out, err


def test_coco_quality_problems_exit_0_or_1_with_strict(tmp_path: Path,
                                                       capsys: pytest.CaptureFixture[str]) -> None:
    root = coco_root(tmp_path, PROBLEM_GT)
    code, out, _ = run(capsys, root, "--json", tmp_path / "report.json")
    assert code == 0
    assert "train2017: 1 box with zero height found (annotations 918)" in out
    assert "val2017: 1 box partly outside the image found (annotations 919)" in out
    assert "summary: 2 splits, 10 boxes, 0 structural problems, 4 quality problems" in out
    report = json.loads((tmp_path / "report.json").read_text())
    assert report["format"] == "coco" and [s["split"] for s in report["splits"]] == ["train2017", "val2017"]
    assert report["splits"][0]["instances"] == {"person": 3, "car": 2}
    assert run(capsys, root, "--strict")[0] == 1
    file_only = run(capsys, root / "annotations" / "instances_val2017.json")
    assert file_only[0] == 0 and "val2017: 2 images, 5 boxes" in file_only[1]


def test_structural_problems_exit_2_and_every_bad_file_is_listed(tmp_path: Path,
                                                                  capsys: pytest.CaptureFixture[str]) -> None:
    root = tmp_path / "kitti"
    (root / "training" / "label_2").mkdir(parents=True)
    for image_id, lines in LABELS.items():
        (root / "training" / "label_2" / f"{image_id}.txt").write_text("\n".join(lines) + "\n")
    (root / "training" / "label_2" / "000003.txt").write_text("Bus 0 0 0 1 2 3 4 1 1 1 1 1 1 0\n")
    (root / "training" / "label_2" / "000004.txt").write_text("Car 0 0 0 1 2 3\n")
    code, out, _ = run(capsys, root)
    assert code == 2
    assert "000003.txt [line 1] field 'type': unknown KITTI type 'Bus'" in out
    assert "000004.txt [line 1]: expected 15 fields" in out
    (root / "training" / "label_2" / "000003.txt").unlink()
    (root / "training" / "label_2" / "000004.txt").unlink()
    code, out, _ = run(capsys, root)  # no images at all: an annotation-only check
    assert code == 0 and "annotation-only check" in out and "1 box with zero height found" in out
    malformed = tmp_path / "bad.json"
    malformed.write_text('{"images": [')
    code, out, _ = run(capsys, malformed)
    assert code == 2 and "malformed JSON at line 1" in out


def test_images_missing_corrupt_and_mis_sized(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    root = coco_root(tmp_path, PROBLEM_GT)
    assert "cannot be loaded" not in run(capsys, root, "--images")[1]
    (root / "val2017" / "7.jpg").write_bytes(b"\xff\xd8\xff\xe0 not a jpeg")
    Image.new("RGB", (10, 10)).save(root / "train2017" / "7.jpg")
    code, out, _ = run(capsys, root, "--images", "--workers", "1")
    assert code == 0  # training would skip them: quality, not structure
    assert "val2017: 1 image that cannot be loaded found (skipped in training)" in out
    assert "val2017/7.jpg: corrupt or truncated image" in out
    assert "train2017/7.jpg: image is 10x10 but the annotation says 320x240" in out
    (root / "val2017" / "7.jpg").unlink()
    code, out, _ = run(capsys, root)
    assert code == 2 and "val2017/7.jpg: image not found" in out


def test_voc_yolo_and_tt100k_roots(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    paths = generate(tmp_path / "synth", 6, seed=2, image_size=64, splits={"train": 0.5, "test": 0.5})
    code, out, _ = run(capsys, paths["voc"])
    assert code == 0 and "SYNTH: 6 images" in out and "0 quality problems" in out
    yolo = tmp_path / "yolo"
    (yolo / "images" / "train").mkdir(parents=True)
    (yolo / "labels" / "train").mkdir(parents=True)
    Image.new("RGB", (40, 20)).save(yolo / "images" / "train" / "a.png")
    (yolo / "labels" / "train" / "a.txt").write_text("2 0.5 0.5 0.5 0.5\n0 0.5 0.5 0.5 0\n")
    code, out, _ = run(capsys, yolo)
    assert code == 0 and "train: 1 images, 2 boxes, 3 classes" in out  # names from the labels: 0, 1, 2
    assert "zero height found (a.txt line 2)" in out
    tt100k = tmp_path / "data"
    for split, ids in (("train", ["10", "11"]), ("test", ["20"])):
        (tt100k / split).mkdir(parents=True)
        (tt100k / split / "ids.txt").write_text("\n".join(ids) + "\n")
    (tt100k / "annotations.json").write_text(json.dumps(ANNOTATIONS))
    code, out, _ = run(capsys, tt100k)
    assert code == 0 and "train: 2 images, 4 boxes, 45 classes" in out
    assert "1 box with zero width found (annotations.json imgs[11] object 1)" in out


def test_command_line_prints_one_line_errors(tmp_path: Path) -> None:
    result = subprocess.run([sys.executable, "-m", "bench.data.check", str(tmp_path / "nowhere")],
                            capture_output=True, text=True)
    assert result.returncode == 2 and result.stderr.count("\n") == 1 and "does not exist" in result.stderr
