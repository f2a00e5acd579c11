"""The runner calls what the other modules provide: data health on the console and in the manifest
(``--strict``), TensorBoard events with the evaluation, paired bootstrap comparisons between models, sliced
inference, KITTI's metrics on a KITTI root, and the model's fit to its training boxes (``autoanchor.json``).
"""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest
import torch
from PIL import Image
from tensorboard.backend.event_processing.event_accumulator import EventAccumulator

import bench.run
import tests.fake_detector
from bench.run import main
from detectors.registry import model_names, register

SMOKE = Path(__file__).resolve().parents[1] / "bench" / "suites" / "smoke.toml"

if "tiny_fake_twin" not in model_names():  # the same network under another name: a pair that must tie
    register("tiny_fake_twin", family="ssd", input_size=64)(tests.fake_detector._builder(None))


class AnchoredTiny(tests.fake_detector.TinyDetector):
    """A tiny model with a data-fitted prior: its mean box size, kept in a buffer (so in the state dict)."""

    def __init__(self, num_classes: int, **kwargs) -> None:
        super().__init__(num_classes, 64, kwargs.get("postprocess"))
        self.register_buffer("prior_wh", torch.zeros(2))

    def fit_to_training_boxes(self, boxes, image_sizes, *, seed=0):
        wh = np.concatenate([b[:, 2:] - b[:, :2] for b in boxes])
        self.prior_wh.copy_(torch.from_numpy(wh.mean(0).astype(np.float32)))
        return {"boxes": len(wh), "images": len(image_sizes), "mean_wh": wh.mean(0).tolist(),
                "seed": seed}


if "tiny_anchored" not in model_names():
    register("tiny_anchored", family="ssd", input_size=64)(
        lambda num_classes, **kw: AnchoredTiny(num_classes, **kw))


@pytest.fixture(autouse=True)
def no_report(monkeypatch) -> None:
    monkeypatch.setattr(bench.run, "build_report", lambda out: None)


def run(tmp_path: Path, out: Path, *args: str, suite: str = "smoke") -> int:
    return main(["--suite", suite, "--out", str(out), "--cache-dir", str(tmp_path / "cache"), *args])


def read(path: Path) -> dict:
    return json.loads(path.read_text())


def coco_root_with_annotation_918(tmp_path: Path) -> Path:
    """Eight 64-px images in COCO layout; image 200365 holds train2017's zero-height annotation 918."""
    root = tmp_path / "coco"
    (root / "annotations").mkdir(parents=True)
    images = [{"id": 200365 if i == 0 else i, "file_name": f"{i}.png", "width": 64, "height": 64}
              for i in range(8)]
    annotations = [{"id": 918, "image_id": 200365, "category_id": 1, "bbox": [20.65, 30.33, 1.03, 0.0],
                    "area": 0.0, "iscrowd": 0}]
    annotations += [{"id": 1000 + i, "image_id": image["id"], "category_id": 1 + i % 2,
                     "bbox": [8.0 + i, 10.0, 20.0, 16.0], "area": 320.0, "iscrowd": 0}
                    for i, image in enumerate(images)]
    gt = {"images": images, "annotations": annotations,
          "categories": [{"id": 1, "name": "person"}, {"id": 2, "name": "car"}]}
    for split in ("train2017", "val2017"):
        (root / "annotations" / f"instances_{split}.json").write_text(json.dumps(gt))
        (root / split).mkdir()
        for i, image in enumerate(images):
            Image.new("RGB", (64, 64), (40 * i % 255, 100, 120)).save(root / split / image["file_name"])
    return root


def test_data_health_reaches_the_console_and_the_manifest_and_strict_stops(tmp_path: Path, capsys) -> None:
    root = coco_root_with_annotation_918(tmp_path)
    out = tmp_path / "run"
    assert run(tmp_path, out, "--models", "tiny_fake", "--data", str(root)) == 0
    err = capsys.readouterr().err
    assert "train2017: 1 box with zero height dropped from training (annotations 918)" in err
    health = read(out / "manifest.json")["data_health"]
    train = next(s for s in health["splits"] if s["split"] == "train2017")
    zero = [f for f in train["findings"] if f["count"] and "918" in " ".join(map(str, f["examples"]))]
    assert zero and health["quality_problems"] >= 1
    assert read(out / "manifest.json")["weights"]["final_pt"] == "full"  # real data keeps its weights
    assert (out / "models" / "tiny_fake" / "final.pt").is_file()

    assert run(tmp_path, tmp_path / "strict", "--models", "tiny_fake", "--data", str(root), "--strict") == 2
    assert "--strict" in capsys.readouterr().err and not (tmp_path / "strict" / "manifest.json").exists()


def scalars(log_dir: Path) -> dict[str, list[tuple[int, float]]]:
    acc = EventAccumulator(str(log_dir))
    acc.Reload()
    return {tag: [(e.step, e.value) for e in acc.Scalars(tag)] for tag in acc.Tags()["scalars"]}


def test_tensorboard_paired_comparisons_and_sliced_inference(tmp_path: Path) -> None:
    suite = tmp_path / "sliced.toml"
    suite.write_text(f'base = "{SMOKE}"\ndescription = "smoke, sliced"\n[evaluation.slicing]\n'
                     'enabled = true\nslice_size = 40\noverlap = 0.25\nimages = 2\nprotocol = "coco"\n')
    out = tmp_path / "run"
    assert run(tmp_path, out, "--models", "tiny_fake,tiny_fake_twin", suite=str(suite)) == 0

    events = scalars(out / "models" / "tiny_fake" / "tb" / "train")
    assert [s for s, _ in events["loss/loss"]] == [2, 4, 6] and "lr" in events
    ap50 = read(out / "models" / "tiny_fake" / "metrics.json")["coco"]["AP50"]
    assert events["eval/coco/AP50"] == [(6, pytest.approx(ap50))]

    comparisons = read(out / "comparisons.json")
    assert comparisons["reference"] == "tiny_fake" and comparisons["seed"] == 0
    twin = comparisons["models"]["tiny_fake_twin"]
    assert set(twin) == {"coco", "aitod"}  # the suite's size protocols
    for row in twin["coco"].values():  # the same network on the same resamples: a tie on every draw
        assert row["mean_difference"] == 0 and row["p_not_better"] == 1

    sliced = read(out / "models" / "tiny_fake" / "sliced.json")
    assert sliced["images"] == 2 and sliced["protocol"] == "coco" and sliced["config"]["slice_size"] == 40
    assert sliced["full"]["inputs_per_image"] == 1 and sliced["sliced"]["inputs_per_image"] > 1
    assert set(sliced["delta"]) == set(sliced["sliced"]["stats"])


def test_a_smoke_budget_model_is_not_trained_scored_on_its_subset_and_not_paired(tmp_path: Path) -> None:
    """``iterations = 0`` and ``eval_images`` (coco_small's smoke budget): no training step, the first N
    test images scored, no pairing with a model scored on all of them, and the report says so."""
    suite = tmp_path / "smoke_budget.toml"
    suite.write_text(f'base = "{SMOKE}"\ndescription = "smoke budget"\n[overrides.tiny_fake_twin]\n'
                     'reason = "smoke budget"\niterations = 0\neval_images = 2\n')
    out = tmp_path / "run"
    assert run(tmp_path, out, "--models", "tiny_fake_twin,tiny_fake", suite=str(suite)) == 0
    twin = out / "models" / "tiny_fake_twin"
    assert [(s["iterations"], s["planned_iterations"]) for s in read(twin / "status.json")["training"]] \
        == [(0, 0)]
    assert read(twin / "metrics.json")["settings"]["n_images"] == 2
    assert read(out / "models" / "tiny_fake" / "metrics.json")["settings"]["n_images"] == 4
    first_two = {image["id"] for image in read(out / "data" / "test_gt.json")["images"][:2]}
    assert {d["image_id"] for d in read(twin / "detections.json")} <= first_two
    comparisons = read(out / "comparisons.json")  # the reference is the first model scored on all images
    assert comparisons["reference"] == "tiny_fake"
    assert comparisons["models"]["tiny_fake_twin"] == {
        "skipped": "scored on other test images than the reference (2 against 4)"}
    from reports.build import main as build_report

    assert build_report([str(out)]) == 0
    md = (out / "report.md").read_text(encoding="utf-8")
    row = next(line for line in md.splitlines()
               if line.startswith("| tiny\\_fake\\_twin |") and "budget" in line)
    assert "not trained (a smoke budget of 0 iterations)" in row and "first 2 of the 4 test images" in row


def test_fit_to_training_boxes_runs_once_and_not_on_resume(tmp_path: Path, monkeypatch) -> None:
    out = tmp_path / "run"
    assert run(tmp_path, out, "--models", "tiny_anchored") == 0
    report = read(out / "models" / "tiny_anchored" / "autoanchor.json")
    assert report["seed"] == 0 and report["images"] == read(out / "manifest.json")["data"]["splits"]["train"]
    assert report["boxes"] > 0

    calls = []
    monkeypatch.setattr(AnchoredTiny, "fit_to_training_boxes",
                        lambda self, *a, **k: calls.append("fit") or {"refit": True})
    import bench.runner.model_job

    monkeypatch.setattr(bench.runner.model_job, "discard_resume_state", lambda model_dir, job: None)
    again = tmp_path / "again"
    assert run(tmp_path, again, "--models", "tiny_anchored") == 0 and calls == ["fit"]
    status = again / "models" / "tiny_anchored" / "status.json"
    status.write_text(json.dumps({**read(status), "state": "running"}))  # as if killed after training
    assert run(tmp_path, again, "--models", "tiny_anchored", "--resume") == 0
    assert calls == ["fit"]  # resumed from the checkpoint, whose state dict holds the fitted prior
    no_fit = tmp_path / "noautoanchor.toml"
    no_fit.write_text(f'base = "{SMOKE}"\ndescription = "smoke"\n[recipe]\nautoanchor = false\n')
    assert run(tmp_path, tmp_path / "off", "--models", "tiny_anchored", suite=str(no_fit)) == 0
    assert calls == ["fit"]
    assert not (tmp_path / "off" / "models" / "tiny_anchored" / "autoanchor.json").exists()


def test_a_kitti_root_gets_the_kitti_metrics(tmp_path: Path) -> None:
    from test_kitti import make_kitti_root

    root = make_kitti_root(tmp_path / "kitti")
    suite = tmp_path / "kitti_smoke.toml"
    suite.write_text(f'base = "{SMOKE}"\ndescription = "smoke on KITTI"\n[recipe]\nbatch_size = 2\n')
    out = tmp_path / "run"
    assert run(tmp_path, out, "--models", "tiny_fake", "--data", str(root), suite=str(suite)) == 0
    kitti = read(out / "models" / "tiny_fake" / "metrics.json")["kitti"]
    assert set(kitti["table3"]) >= {"mAP_11pt", "mAP_allpt", "per_class"}
    assert kitti["official"] is not None and "mAP_R40_moderate" in kitti["official"]


def test_the_mosaic_policy_trains_through_the_runner(tmp_path: Path, monkeypatch) -> None:
    """``augment = {family = "mosaic"}`` (the YOLOv5 paper suites) reaches ``bench.data.mosaic``."""
    import bench.data.mosaic

    built = []
    original = bench.data.mosaic.MosaicDataset
    monkeypatch.setattr(bench.data.mosaic, "MosaicDataset",
                        lambda *a, **k: built.append(k["epochs"]) or original(*a, **k))
    suite = tmp_path / "mosaic.toml"
    suite.write_text(f'base = "{SMOKE}"\ndescription = "smoke, mosaic"\n[recipe]\n'
                     'augment = { ssd = "mosaic", yolov5 = "yolo" }\n')
    out = tmp_path / "run"
    assert run(tmp_path, out, "--models", "tiny_fake", suite=str(suite)) == 0
    assert built == [1]  # 6 iterations of 7 per epoch (28 images, batch 4): one epoch, for close_mosaic
    assert read(out / "models" / "tiny_fake" / "status.json")["budget"]["trained_iterations"] == 6
