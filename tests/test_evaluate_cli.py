"""``python -m bench.evaluate``: COCO and VOC ground truth, the files written, one-line errors, exit 2."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest

from bench.data.coco import write_coco
from bench.data.records import DetectionDataset, ImageRecord
from bench.data.voc import write_voc
from bench.evaluate import main


def dataset() -> DetectionDataset:
    records = [ImageRecord(i + 1, f"img{i}.jpg", 64, 48, boxes=[[2, 3, 20, 30], [30, 5, 60, 40]],
                           labels=[0, 1], difficult=[False, i == 1]) for i in range(3)]
    return DetectionDataset(["cat", "dog"], records, Path("images"))


DETS = [{"image_id": 1, "category_id": 1, "bbox": [2, 3, 18, 27], "score": 0.9},
        {"file_name": "img1.jpg", "category_name": "dog", "bbox": [30, 5, 30, 35], "score": 0.8},
        {"image_id": 3, "category_id": 2, "bbox": [5, 5, 10, 10], "score": 0.7}]


@pytest.fixture()
def coco_files(tmp_path: Path) -> tuple[Path, Path]:
    gt = write_coco(dataset(), tmp_path / "gt.json")
    dt = tmp_path / "dt.json"
    dt.write_text(json.dumps(DETS))
    return gt, dt


def run_cli(*args: str | Path) -> int:
    return main([str(a) for a in args])


def test_coco_ground_truth_writes_every_file(coco_files: tuple[Path, Path], tmp_path: Path,
                                             capsys: pytest.CaptureFixture[str]) -> None:
    gt, dt = coco_files
    assert run_cli("--gt", gt, "--dt", dt, "--out", tmp_path / "out", "--image-root", tmp_path) == 0
    assert "AP " in capsys.readouterr().out
    metrics = json.loads((tmp_path / "out" / "metrics.json").read_text())
    assert set(metrics["coco"]) == {"AP", "AP50", "AP75", "APs", "APm", "APl", "AR1", "AR10", "AR100", "ARs",
                                    "ARm", "ARl"}
    assert [c["class"] for c in metrics["per_class"]] == ["cat", "dog"]
    assert metrics["per_class"][0]["n_det"] == 1 and metrics["per_class"][1]["n_det"] == 2
    assert metrics["engine"]["name"] == "bench.metrics"
    for name in metrics["files"].values():
        assert (tmp_path / "out" / name).is_file()


def test_voc_devkit_root_and_xml_folder_agree(tmp_path: Path) -> None:
    """VOC image ids are positions, so these detections name their images by file."""
    dt = tmp_path / "by_name.json"
    by_name = [{"file_name": f"img{d.get('image_id', 2) - 1}.jpg",
                "category_name": ["cat", "dog"][d.get("category_id", 2) - 1], "bbox": d["bbox"],
                "score": d["score"]}
               for d in DETS]
    dt.write_text(json.dumps(by_name))
    write_voc(dataset(), tmp_path / "VOC2007", "test")
    assert run_cli("--gt", tmp_path / "VOC2007", "--split", "test", "--dt", dt, "--out", tmp_path / "a") == 0
    assert run_cli("--gt", tmp_path / "VOC2007" / "Annotations", "--dt", dt, "--out", tmp_path / "b") == 0
    a, b = (json.loads((tmp_path / d / "metrics.json").read_text()) for d in ("a", "b"))
    assert a["voc"] == b["voc"] and a["coco"] == b["coco"]
    per_class = {c["class"]: c for c in a["per_class"]}  # the 20 VOC classes, as read_voc defaults to
    assert len(per_class) == 20 and per_class["bicycle"]["voc_ap_allpt"] is None
    assert per_class["cat"]["voc_ap_allpt"] == 1 / 3 and per_class["cat"]["n_gt"] == 3
    assert per_class["dog"]["voc_ap_allpt"] == 0.0 and per_class["dog"]["n_det"] == 2
    assert a["voc"]["mAP_allpt"] == 1 / 6


def test_toy_cats_voc_folder_published_ap(shared_data: Path, tmp_path: Path) -> None:
    folder = shared_data / "voc-toy-cats-padilla"
    dt = folder / "dets_coco_format" / "coco_dets.json"
    gt = folder / "gts_coco_format" / "toy_example_coco.JSON"
    assert run_cli("--gt", gt, "--dt", dt, "--out", tmp_path) == 0
    metrics = json.loads((tmp_path / "metrics.json").read_text())
    expected = json.loads((folder / "expected.json").read_text())
    assert metrics["voc"] == {"mAP_11pt": expected["mAP"]["iou0.5_voc07_11pt"],
                              "mAP_allpt": expected["mAP"]["iou0.5_allpoint"]}
    assert metrics["coco"]["AP"] == expected["coco"]["stats"]["AP"] and metrics["coco"]["APs"] is None


def broken_xml_folder(tmp_path: Path) -> Path:
    folder = tmp_path / "xml"
    folder.mkdir()
    (folder / "a.xml").write_text("<annotation><size><width>10</width>")
    return folder


BAD_DETS = {
    "unknown image": ([{**DETS[0], "image_id": 77}], "[0] field 'image_id'"),
    "unknown class": ([DETS[0], {**DETS[0], "category_id": 9}], "[1] field 'category_id'"),
    "NaN score": ([{**DETS[0], "score": float("nan")}], "[0] field 'score'"),
    "escaping file_name": ([{"file_name": "../../etc/passwd", "category_id": 1, "bbox": [1, 1, 2, 2],
                             "score": 1.0}], "[0] field 'file_name'"),
}


@pytest.mark.parametrize("case", sorted(BAD_DETS))
def test_bad_detections(case: str, coco_files: tuple[Path, Path], tmp_path: Path,
                        capsys: pytest.CaptureFixture[str]) -> None:
    gt, _ = coco_files
    entries, where = BAD_DETS[case]
    dt = tmp_path / "bad.json"
    dt.write_text(json.dumps(entries))
    assert run_cli("--gt", gt, "--dt", dt, "--out", tmp_path / "out") == 2
    err = capsys.readouterr().err
    assert err.count("\n") == 1 and str(dt) in err and where in err
    assert not (tmp_path / "out").exists()


@pytest.mark.parametrize("case", ["missing GT", "malformed GT JSON", "malformed XML", "malformed DT JSON",
                                  "unreadable DT"])
def test_bad_files(case: str, coco_files: tuple[Path, Path], tmp_path: Path,
                   capsys: pytest.CaptureFixture[str]) -> None:
    gt, dt = coco_files
    bad_json = tmp_path / "broken.json"
    bad_json.write_text('{"images": [')
    gt, dt, named = {
        "missing GT": (tmp_path / "nowhere", dt, tmp_path / "nowhere"),
        "malformed GT JSON": (bad_json, dt, bad_json),
        "malformed XML": (broken_xml_folder(tmp_path), dt, tmp_path / "xml" / "a.xml"),
        "malformed DT JSON": (gt, bad_json, bad_json),
        "unreadable DT": (gt, tmp_path, tmp_path),
    }[case]
    assert run_cli("--gt", gt, "--dt", dt, "--out", tmp_path / "out") == 2
    err = capsys.readouterr().err
    assert err.count("\n") == 1 and str(named) in err


def test_subprocess_prints_one_line_without_traceback(coco_files: tuple[Path, Path], tmp_path: Path) -> None:
    gt, _ = coco_files
    dt = tmp_path / "nan.json"
    dt.write_text(json.dumps([DETS[0], {**DETS[0], "score": float("nan")}]))
    proc = subprocess.run([sys.executable, "-m", "bench.evaluate", "--gt", str(gt), "--dt", str(dt), "--out",
                           str(tmp_path / "out")], capture_output=True, text=True, check=False)
    assert proc.returncode == 2 and "Traceback" not in proc.stderr
    assert proc.stderr.strip().splitlines() == [f"error: {dt} [1] field 'score': NaN or infinite value nan"]


def test_evaluator_does_not_import_torch(coco_files: tuple[Path, Path], tmp_path: Path) -> None:
    gt, dt = coco_files
    code = ("import sys; from bench.evaluate import main; main(sys.argv[1:]); "
            "assert not {'torch', 'pandas', 'matplotlib'} & set(sys.modules), 'heavy import'")
    proc = subprocess.run([sys.executable, "-c", code, "--gt", str(gt), "--dt", str(dt), "--out",
                           str(tmp_path / "out")], capture_output=True, text=True, check=False)
    assert proc.returncode == 0, proc.stderr
    assert np.isfinite(json.loads((tmp_path / "out" / "metrics.json").read_text())["coco"]["AP"])


def test_degenerate_detections_score_as_pycocotools(coco_files: tuple[Path, Path], tmp_path: Path) -> None:
    """Zero and negative box sizes are a data-quality problem pycocotools tolerates (IoU 0): never an
    error."""
    import contextlib
    import io

    from pycocotools.coco import COCO
    from pycocotools.cocoeval import COCOeval

    gt, _ = coco_files
    dt = tmp_path / "degenerate.json"
    dt.write_text(json.dumps([DETS[0], DETS[2], {**DETS[0], "bbox": [1, 1, 0, 5], "score": 0.99},
                              {**DETS[0], "bbox": [1, 1, 5, -5], "score": 0.98}]))
    assert run_cli("--gt", gt, "--dt", dt, "--out", tmp_path / "out") == 0
    with contextlib.redirect_stdout(io.StringIO()):
        coco = COCO(str(gt))
        ev = COCOeval(coco, coco.loadRes(str(dt)), "bbox")
        ev.evaluate()
        ev.accumulate()
        ev.summarize()
    metrics = json.loads((tmp_path / "out" / "metrics.json").read_text())
    assert [metrics["coco"][k] if metrics["coco"][k] is not None else -1.0 for k in
            ("AP", "AP50", "AP75", "APs", "APm", "APl", "AR1", "AR10", "AR100", "ARs", "ARm", "ARl")] \
        == [float(s) for s in ev.stats]
