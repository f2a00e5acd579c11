"""Bad input to ``python -m bench.run``: exit 2 before anything trains, one line on stderr naming the file
(or flag) and, where the problem is a suite or manifest field, that field."""

from __future__ import annotations

import json
from collections.abc import Callable
from pathlib import Path

import pytest
import torch

import bench.run
import tests.fake_detector  # noqa: F401  (registers tiny_fake)
from bench.data.synth import generate
from bench.distributed import DistContext
from bench.run import main

SMOKE = Path(bench.run.__file__).resolve().parent / "suites" / "smoke.toml"
Case = Callable[[Path, pytest.MonkeyPatch], tuple[list[str], str, str | None]]


def suite_file(tmp_path: Path, extra: str) -> Path:
    """The smoke suite with ``extra`` TOML laid over it."""
    path = tmp_path / "suite.toml"
    path.write_text(f'base = "{SMOKE}"\n{extra}')
    return path


def coco_root(tmp_path: Path) -> Path:
    """A generated COCO root with splits ``train``, ``val`` and ``test`` (no ``train2017``)."""
    return generate(tmp_path / "synth", images=20, seed=3, image_size=64)["coco_train"].parents[1]


def missing_data_root(tmp_path, monkeypatch):
    absent = tmp_path / "absent"
    return ["--data", str(absent)], str(absent), None


def resume_with_other_data(tmp_path, monkeypatch):
    out = tmp_path / "run"
    out.mkdir()  # an earlier run of this directory, started on data with another annotation hash
    (out / "manifest.json").write_text(json.dumps({"data": {"annotation_sha256": "0" * 64}}))
    return ["--out", str(out), "--resume"], str(out / "manifest.json"), "data.annotation_sha256"


def resume_without_an_earlier_run(tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)  # results/ is relative to the working directory: empty here
    return ["--resume"], str(Path("results") / "smoke"), None


def yolo_without_classes(tmp_path, monkeypatch):
    root = tmp_path / "yolo"
    for sub in ("images/train", "labels/train", "images/val", "labels/val"):
        (root / sub).mkdir(parents=True)
    return ["--data", str(root)], str(root), "data.classes"


def missing_split(tmp_path, monkeypatch):
    root = coco_root(tmp_path)  # the smoke suite reads COCO's train2017 / val2017
    return ["--data", str(root)], str(root / "annotations" / "instances_train2017.json"), "data.splits"


def splits_with_different_classes(tmp_path, monkeypatch):
    root = coco_root(tmp_path)
    test_file = root / "annotations" / "instances_test.json"
    gt = json.loads(test_file.read_text())
    gt["categories"][0]["name"] = "renamed"
    test_file.write_text(json.dumps(gt))
    suite = suite_file(tmp_path, '[data.splits.coco]\ntrain = "train"\ntest = "test"\n')
    return ["--suite", str(suite), "--data", str(root)], str(root), "data.splits"


def batch_not_divisible_by_the_world_size(tmp_path, monkeypatch):
    three = DistContext(rank=0, world_size=3, local_rank=0, device=torch.device("cpu"))
    monkeypatch.setattr(bench.run, "init_from_env", lambda device: three)  # rank 0 of 3, no process group
    monkeypatch.setattr(bench.run, "barrier", lambda ctx: None)
    monkeypatch.setattr(bench.run, "broadcast_from_main", lambda obj, ctx: obj)
    return [], str(SMOKE), "recipe.batch_size"  # smoke: batch 4


def fewer_images_than_one_batch(tmp_path, monkeypatch):
    suite = suite_file(tmp_path, "[recipe]\nbatch_size = 64\n")  # the synthetic train split has 28 images
    return ["--suite", str(suite)], str(suite), "recipe.batch_size"


CASES: list[Case] = [missing_data_root, resume_with_other_data, resume_without_an_earlier_run,
                     yolo_without_classes, missing_split, splits_with_different_classes,
                     batch_not_divisible_by_the_world_size, fewer_images_than_one_batch]


@pytest.mark.parametrize("case", CASES, ids=[c.__name__ for c in CASES])
def test_bad_input_exits_2_with_one_line_naming_path_and_field(case: Case, tmp_path: Path, monkeypatch,
                                                               capsys) -> None:
    args, path, field = case(tmp_path, monkeypatch)
    if "--suite" not in args:
        args = ["--suite", "smoke", *args]
    if "--out" not in args and "--resume" not in args:
        args = [*args, "--out", str(tmp_path / "new")]
    code = main([*args, "--models", "tiny_fake", "--cache-dir", str(tmp_path / "cache"), "--no-report"])
    err = capsys.readouterr().err
    assert code == 2, err
    assert err.count("\n") == 1 and err.startswith(f"error: {path}"), err
    if field is not None:
        assert f"field '{field}'" in err, err
    assert not (tmp_path / "new" / "models").exists()  # nothing trained
