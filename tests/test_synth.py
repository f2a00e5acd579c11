"""The synthetic data set: byte-identical from a seed, COCO-like scales, COCO and VOC copies, true labels."""

from __future__ import annotations

import colorsys
import hashlib
import json
from pathlib import Path

import numpy as np
import pytest
from PIL import Image, ImageDraw

from bench.data import read_coco, read_voc
from bench.data.synth import CLASSES, HUES_DEG, _draw_object, generate, main, render_image

IMAGES, SEED = 24, 11


def _digests(root: Path) -> dict[str, str]:
    return {str(p.relative_to(root)): hashlib.sha256(p.read_bytes()).hexdigest()
            for p in sorted(root.rglob("*")) if p.is_file()}


@pytest.fixture(scope="module")
def synth(tmp_path_factory: pytest.TempPathFactory) -> tuple[Path, dict[str, Path]]:
    out = tmp_path_factory.mktemp("synth")
    return out, generate(out, IMAGES, SEED)


def test_same_seed_gives_identical_bytes(synth: tuple[Path, dict[str, Path]], tmp_path: Path) -> None:
    out, _ = synth
    generate(tmp_path / "again", IMAGES, SEED)
    first, second = _digests(out), _digests(tmp_path / "again")
    assert len(first) == 3 * IMAGES + 3 + 3 + 2  # PNG, VOC link, XML; 3 JSON, 3 split files; manifest, README
    assert first == second
    generate(tmp_path / "other", 3, SEED + 1, splits={"train": 1.0})
    other = _digests(tmp_path / "other")
    assert other["coco/images/train/synth_000000.png"] != first["coco/images/train/synth_000000.png"]


def test_splits_and_formats_agree(synth: tuple[Path, dict[str, Path]]) -> None:
    out, paths = synth
    assert set(paths) == {"voc", "coco_train", "coco_val", "coco_test", "manifest", "readme"}
    manifest = json.loads(paths["manifest"].read_text())
    sizes = {}
    for split in ("train", "val", "test"):
        coco = read_coco(paths[f"coco_{split}"])
        voc = read_voc(paths["voc"], split, classes=CLASSES)  # VOC XML does not record the class order
        assert coco.classes == voc.classes == CLASSES
        assert all(coco.image_path(r).is_file() and voc.image_path(r).is_file() for r in coco.records)
        for a, b in zip(coco.records, voc.records, strict=True):
            assert a.file_name == b.file_name
            np.testing.assert_array_equal(a.boxes, b.boxes)
            np.testing.assert_array_equal(a.labels, b.labels)
        sizes[split] = len(coco)
        assert manifest["statistics"][split]["objects"] == sum(len(r.boxes) for r in coco.records)
    assert sizes == {"train": 17, "val": 3, "test": 4}  # 70/15/15 of 24, cut at rounded cumulative shares
    assert manifest["seed"] == SEED and manifest["images"] == IMAGES
    assert (out / "VOCdevkit" / "SYNTH" / "JPEGImages" / "synth_000000.png").samefile(
        out / "coco" / "images" / "train" / "synth_000000.png")


def test_scale_statistics_are_coco_like(synth: tuple[Path, dict[str, Path]]) -> None:
    _, paths = synth
    records = [r for split in ("train", "val", "test") for r in read_coco(paths[f"coco_{split}"]).records]
    areas = np.concatenate([r.box_area for r in records])
    per_image = np.array([len(r.boxes) for r in records])
    small, large = (areas < 32**2).mean(), (areas >= 96**2).mean()
    assert small >= 0.4 and large > 0.02 and 1 - small - large > 0.2
    assert per_image.min() >= 3 and per_image.max() <= 15 and per_image.mean() > 5
    assert set(np.concatenate([r.labels for r in records]).tolist()) == set(range(len(CLASSES)))
    boxes = np.concatenate([r.boxes for r in records])
    assert (boxes >= 0).all() and (boxes <= 320).all() and (boxes == np.round(boxes)).all()


def _hue_distance(a: float, b: float) -> float:
    return abs((a - b + 180) % 360 - 180)


def test_each_box_holds_its_class_colour() -> None:
    """The centre pixel of every unoccluded filled shape has its class hue: labels and pixels agree."""
    checked = 0
    for index in range(6):
        pixels, boxes, labels = render_image(SEED, index, 320)
        for k, (box, label) in enumerate(zip(boxes, labels, strict=True)):
            cx, cy = (box[0] + box[2]) // 2, (box[1] + box[3]) // 2
            later = boxes[k + 1:]
            covered = ((later[:, :2] <= [cx, cy]) & ([cx, cy] < later[:, 2:])).all(1).any()
            if CLASSES[label] == "ring" or covered:
                continue
            h, s, _ = colorsys.rgb_to_hsv(*(pixels[cy, cx] / 255))
            assert s > 0.5 and _hue_distance(h * 360, HUES_DEG[label]) < 15, (index, k, CLASSES[label])
            checked += 1
    assert checked > 20


@pytest.mark.parametrize("box", [[10, 12, 40, 50], [5, 5, 17, 15], [3, 4, 90, 70]])
def test_every_shape_fills_exactly_its_box(box: list[int]) -> None:
    for label in range(len(CLASSES)):
        image = Image.new("RGB", (100, 100))
        _draw_object(ImageDraw.Draw(image), np.random.default_rng(label), label, np.array(box))
        ys, xs = np.nonzero(np.asarray(image).max(2))
        assert [xs.min(), ys.min(), xs.max() + 1, ys.max() + 1] == box, CLASSES[label]


def test_cli(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    assert main(["--out", str(tmp_path), "--images", "2", "--seed", "0", "--size", "96"]) == 0
    assert "coco_train:" in capsys.readouterr().out
    assert json.loads((tmp_path / "dataset.json").read_text())["image_size"] == 96
    assert main(["--out", str(tmp_path / "bad"), "--images", "0", "--seed", "0"]) == 2
    assert "need at least one image" in capsys.readouterr().err
