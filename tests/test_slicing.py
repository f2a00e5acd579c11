"""Sliced inference on a tiny model: tiles cover the image, detections come back in original pixels,
merges."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
import torch

from bench.data.records import DetectionDataset, ImageRecord
from bench.slicing import SliceConfig, merge, slice_windows, sliced_comparison, sliced_predict, training_tiles
from tests.fake_detector import TinyDetector


def test_windows_cover_the_image_with_overlap() -> None:
    windows = slice_windows(300, 500, SliceConfig(slice_size=128, overlap=0.25))
    covered = np.zeros((300, 500), bool)
    for x1, y1, x2, y2 in windows:
        assert x2 - x1 <= 128 and y2 - y1 <= 128
        covered[y1:y2, x1:x2] = True
    assert covered.all() and len(windows) > 8


@pytest.mark.parametrize("merge_rule", ["nms", "nmm"])
def test_sliced_predict_returns_original_pixels(merge_rule: str) -> None:
    torch.manual_seed(0)
    model = TinyDetector(num_classes=2, input_size=32)
    image = (torch.rand(3, 150, 200) * 255).to(torch.uint8)
    config = SliceConfig(slice_size=64, overlap=0.2, merge=merge_rule)  # type: ignore[arg-type]
    dets, inputs = sliced_predict(model, image, 1, config)
    assert inputs == len(slice_windows(150, 200, config)) + 1  # tiles plus the full-image pass
    assert len(dets.scores) > 0
    assert (dets.boxes[:, 0] >= -1).all() and (dets.boxes[:, 2] <= 201).all()
    assert (dets.boxes[:, 2] > 64).any()  # boxes of right-hand tiles were shifted into image coordinates


def test_nmm_merges_into_the_enclosing_box() -> None:
    boxes = torch.tensor([[0.0, 0, 10, 10], [1, 1, 12, 11], [50, 50, 60, 60]])
    out = merge(boxes, torch.tensor([0.9, 0.8, 0.7]), torch.tensor([0, 0, 0]),
                SliceConfig(merge="nmm", match_metric="IOU", match_threshold=0.5))
    assert out.boxes.tolist() == [[0, 0, 12, 11], [50, 50, 60, 60]]
    assert out.scores.tolist() == pytest.approx([0.9, 0.7])


def test_sliced_comparison_reports_delta_and_cost(tmp_path: Path) -> None:
    torch.manual_seed(0)
    records = [ImageRecord(i + 1, f"{i}.jpg", 160, 120, boxes=[[10, 10, 18, 18], [100, 60, 130, 90]],
                           labels=[0, 1]) for i in range(2)]
    ds = DetectionDataset(["a", "b"], records, tmp_path)
    images = [(r.image_id, (torch.rand(3, 120, 160) * 255).to(torch.uint8)) for r in records]
    out = sliced_comparison(TinyDetector(num_classes=2, input_size=32), ds, images,
                            SliceConfig(slice_size=64, overlap=0.2))
    assert out["sliced"]["inputs_per_image"] > out["full"]["inputs_per_image"] == 1
    assert out["sliced"]["ms_per_image"] > 0 and set(out["delta"]) == set(out["sliced"]["stats"])


def test_training_tiles_keep_visible_boxes_in_tile_pixels() -> None:
    record = ImageRecord(7, "x.jpg", 200, 100, boxes=[[5, 5, 15, 15], [60, 10, 70, 20]], labels=[0, 1])
    tiles = training_tiles(record, SliceConfig(slice_size=64, overlap=0.0))
    by_window = {t.window: t for t in tiles}
    assert by_window[(0, 0, 64, 64)].boxes.tolist() == [[5, 5, 15, 15]]  # 40 % of the second box: dropped
    assert by_window[(64, 0, 128, 64)].boxes.tolist() == [[0, 10, 6, 20]]  # 60 %: kept, clipped, shifted
    assert by_window[(64, 0, 128, 64)].labels.tolist() == [1]
