"""The torch dataset: shapes and dtypes, reproducibility with workers, crowd regions, named image errors."""

from __future__ import annotations

import dataclasses
from pathlib import Path

import numpy as np
import pytest
import torch
from torch.utils.data import DataLoader

from bench.data import DetectionDataset, read_coco
from bench.data.loader import DetectionTorchDataset, collate
from bench.data.synth import generate
from bench.errors import BenchInputError
from detectors.base import InputSpec, Target

SSD = InputSpec(size=64, resize="stretch", mean=(0.48, 0.46, 0.41), std=(1 / 255,) * 3)
YOLO = InputSpec(size=64, resize="letterbox", mean=(0.0,) * 3, std=(1.0,) * 3)


@pytest.fixture(scope="module")
def ds(tmp_path_factory: pytest.TempPathFactory) -> DetectionDataset:
    paths = generate(tmp_path_factory.mktemp("synth"), 4, seed=5, image_size=96, splits={"train": 1.0})
    return read_coco(paths["coco_train"])


@pytest.mark.parametrize(("protocol", "train", "augment"), [
    (SSD, True, "ssd"), (SSD, False, "ssd"), (YOLO, True, "yolo"), (YOLO, False, "none"), (SSD, True, "none"),
])
def test_items_and_batches(ds: DetectionDataset, protocol: InputSpec, train: bool, augment: str) -> None:
    data = DetectionTorchDataset(ds, protocol, train, augment, seed=1)
    images, targets, metas = collate([data[i] for i in range(len(data))])
    assert images.shape == (4, 3, 64, 64) and images.dtype == torch.float32
    assert images.min() >= 0 and images.max() <= 1
    assert [m.image_id for m in metas] == [r.image_id for r in ds.records]
    for target, meta, record in zip(targets, metas, ds.records, strict=True):
        assert isinstance(target, Target)
        assert target.boxes.dtype == torch.float32 and target.labels.dtype == torch.int64
        assert len(target.boxes) == len(target.labels) > 0
        assert (target.boxes[:, 2:] > target.boxes[:, :2]).all() and (target.boxes >= 0).all()
        assert (target.boxes <= 64).all() and target.labels.max() < ds.num_classes
        if not train or augment == "none":  # pure geometry: the meta maps the targets back to the records
            back = meta.to_original(target.boxes.double()).numpy()
            np.testing.assert_allclose(back, record.boxes, atol=1e-3)
            np.testing.assert_array_equal(target.labels.numpy(), record.labels)


def test_reproducible_per_seed_epoch_and_index_with_workers(ds: DetectionDataset) -> None:
    data = DetectionTorchDataset(ds, SSD, train=True, augment="ssd", seed=3)
    serial = [data[i] for i in range(len(data))]
    loader = DataLoader(data, batch_size=2, num_workers=1, collate_fn=collate)
    parallel = [item for images, targets, _ in loader for item in zip(images, targets, strict=True)]
    for (image, target, _), (image2, target2) in zip(serial, parallel, strict=True):
        assert torch.equal(image, image2) and torch.equal(target.boxes, target2.boxes)
    data.set_epoch(1)
    assert not torch.equal(data[0][0], serial[0][0])
    other_seed = DetectionTorchDataset(ds, SSD, train=True, augment="ssd", seed=4)
    assert not torch.equal(other_seed[0][0], serial[0][0])
    data.set_epoch(0)
    assert torch.equal(data[0][0], serial[0][0])


def test_crowd_regions_are_not_targets(ds: DetectionDataset) -> None:
    record = ds.records[0]
    crowd = dataclasses.replace(record, iscrowd=np.arange(len(record.boxes)) == 0)
    data = DetectionTorchDataset(dataclasses.replace(ds, records=[crowd]), SSD, train=False)
    _, target, _ = data[0]
    assert len(target.boxes) == len(record.boxes) - 1
    np.testing.assert_array_equal(target.labels.numpy(), record.labels[1:])


def test_bad_images_are_named(ds: DetectionDataset, tmp_path: Path) -> None:
    record = ds.records[0]
    (tmp_path / "corrupt.png").write_bytes(b"\x89PNG\r\n\x1a\n not really")
    (tmp_path / record.file_name).write_bytes(ds.image_path(record).read_bytes())
    cases = {"missing.png": "image not found", "corrupt.png": "cannot decode",
             record.file_name: "annotation says"}  # a good image whose annotated width is one too many
    for file_name, message in cases.items():
        wrong_width = record.width + (file_name == record.file_name)
        broken = dataclasses.replace(record, file_name=file_name, width=wrong_width)
        data = DetectionTorchDataset(DetectionDataset(ds.classes, [broken], tmp_path), SSD, train=False)
        with pytest.raises(BenchInputError, match=message) as info:
            data[0]
        assert info.value.path == str(tmp_path / file_name)


def test_image_paths_cannot_escape_the_root(ds: DetectionDataset, tmp_path: Path) -> None:
    (tmp_path / "root").mkdir()
    (tmp_path / "outside.png").write_bytes(ds.image_path(ds.records[0]).read_bytes())
    (tmp_path / "root" / "link.png").symlink_to(tmp_path / "outside.png")
    for name in ("../outside.png", "link.png"):
        record = dataclasses.replace(ds.records[0], file_name=name)
        data = DetectionTorchDataset(DetectionDataset(ds.classes, [record], tmp_path / "root"), SSD, False)
        with pytest.raises(BenchInputError, match="escapes the data root"):
            data[0]


def test_unknown_augmentation_is_refused(ds: DetectionDataset) -> None:
    with pytest.raises(ValueError, match="unknown augmentation"):
        DetectionTorchDataset(ds, SSD, train=True, augment="mosaic")  # type: ignore[arg-type]


def test_corrupt_training_images_are_skipped_and_counted_across_workers(ds: DetectionDataset,
                                                                         tmp_path: Path) -> None:
    """Training never stops on a corrupt or truncated image: the next decodable image takes its slot and the
    skip is recorded in shared memory, so a DataLoader worker's skips reach the main process."""
    good = ds.image_path(ds.records[1]).read_bytes()
    (tmp_path / "truncated.png").write_bytes(good[: len(good) // 2])
    (tmp_path / "corrupt.png").write_bytes(b"\x89PNG\r\n\x1a\n not really")
    records = [dataclasses.replace(ds.records[0], file_name="truncated.png"),
               dataclasses.replace(ds.records[1], file_name="corrupt.png"),
               dataclasses.replace(ds.records[2], file_name="good.png")]
    (tmp_path / "good.png").write_bytes(ds.image_path(ds.records[2]).read_bytes())
    data = DetectionTorchDataset(DetectionDataset(ds.classes, records, tmp_path), SSD, train=True,
                                 augment="ssd")
    loader = DataLoader(data, batch_size=3, num_workers=1, collate_fn=collate)
    images, _, metas = next(iter(loader))
    assert images.shape[0] == 3  # batch shape kept: the two bad slots hold the good image
    assert [m.image_id for m in metas] == [records[2].image_id] * 3
    assert data.skipped() == [0, 1]
    with pytest.raises(BenchInputError, match="cannot decode"):  # evaluation never skips silently
        DetectionTorchDataset(DetectionDataset(ds.classes, records, tmp_path), SSD, train=False)[0]
    (tmp_path / "good.png").unlink()
    with pytest.raises(BenchInputError, match="image not found"):  # a missing image stays structural
        DetectionTorchDataset(DetectionDataset(ds.classes, records, tmp_path), SSD, train=True)[2]


def test_training_items_never_carry_degenerate_boxes(ds: DetectionDataset) -> None:
    """A zero-height box, one past the image and one wholly outside: training clips or drops them."""
    record = ds.records[0]
    w = record.width
    boxes = np.array([[5, 5, 20, 5], [w - 10, 2, w + 7, 12], [w + 5, 5, w + 9, 9], [3, 3, 30, 30]], float)
    broken = dataclasses.replace(record, boxes=boxes, labels=np.zeros(4, np.int64),
                                 difficult=np.zeros(4, bool), iscrowd=np.zeros(4, bool), area=None,
                                 entry_ids=np.arange(4))
    data = DetectionTorchDataset(dataclasses.replace(ds, records=[broken]), SSD, train=True, augment="none")
    _, target, meta = data[0]
    back = meta.to_original(target.boxes.double()).numpy()
    np.testing.assert_allclose(back, [[w - 10, 2, w, 12], [3, 3, 30, 30]], atol=1e-3)
