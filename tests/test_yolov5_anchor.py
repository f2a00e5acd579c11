"""The anchor-based YOLOv5 v6.x (``yolov5n`` ... ``yolov5x``): sizes, head, v5's loss and NMS, training.

``V5_LOSS`` was produced by ultralytics/yolov5 v6.2's own ``utils/loss.py::ComputeLoss`` on the inputs written
here (raw maps from ``torch.randn`` with seed 0, the targets of ``V5_TARGETS``), not by this package.
"""

from __future__ import annotations

import math
from pathlib import Path

import pytest
import torch
from torch import nn

from detectors import ImageMeta, PostprocessConfig, Target, build_model, model_spec
from detectors.yolov5 import YOLOv5Detector
from detectors.yolov5.loss import LossHyp, build_targets, yolov5_loss
from detectors.yolov5.network import DEFAULT_ANCHORS, STRIDES, AnchorDetect
from detectors.yolov5.nms import non_max_suppression

# ultralytics/yolov5 v6.x model summaries at 80 classes: unfused, and after "Fusing layers..." (no n printed).
PARAMS_80 = {"yolov5n": 1_872_157, "yolov5s": 7_235_389, "yolov5m": 21_190_557, "yolov5l": 46_563_709,
             "yolov5x": 86_749_405}
FUSED_PARAMS_80 = {"yolov5s": 7_225_885, "yolov5m": 21_172_173, "yolov5l": 46_533_693, "yolov5x": 86_705_005}

SIZE = 64  # 8x8 + 4x4 + 2x2 cells, 3 anchors each
PREDICTIONS = 3 * (64 + 16 + 4)
ANCHORS_CELLS = torch.tensor(DEFAULT_ANCHORS, dtype=torch.float32).view(3, 3, 2) / torch.tensor(
    STRIDES, dtype=torch.float32).view(-1, 1, 1)


def _tiny_batch() -> tuple[torch.Tensor, list[Target]]:
    """Two images, each with one bright rectangle that is its object (class 0 and 1)."""
    images = torch.full((2, 3, SIZE, SIZE), 0.1)
    images[0, :, 10:40, 8:50] = 0.9
    images[1, 0, 30:60, 20:44] = 1.0
    targets = [Target(torch.tensor([[8.0, 10.0, 50.0, 40.0]]), torch.tensor([0])),
               Target(torch.tensor([[20.0, 30.0, 44.0, 60.0]]), torch.tensor([1]))]
    return images, targets


@pytest.fixture
def yolov5n() -> YOLOv5Detector:
    torch.manual_seed(0)
    return build_model("yolov5n", num_classes=2, input_size=SIZE)


@pytest.mark.parametrize("name", list(PARAMS_80))
def test_parameter_counts_equal_v6_summaries(name: str) -> None:
    with torch.device("meta"):  # nothing is allocated: only the architecture is counted
        model = build_model(name, num_classes=80)
    info = model.info()
    assert info.params == PARAMS_80[name]
    assert (info.family, info.input_size, info.priors, info.num_classes) == ("yolov5", 640, 25_200, 80)
    assert "anchor-based" in info.paper
    # 20 classes: each level's 1x1 conv loses 3 anchors x 60 class outputs of (in_channels + 1) parameters
    with torch.device("meta"):
        small = build_model(name, num_classes=20)
    in_channels = sum(conv.in_channels + 1 for conv in small.model.detect.m)
    assert small.info().params == PARAMS_80[name] - 3 * 60 * in_channels
    if name in FUSED_PARAMS_80:  # fusing drops BatchNorm's two vectors per channel and adds one conv bias
        bn_channels = sum(m.num_features for m in model.modules() if isinstance(m, nn.BatchNorm2d))
        assert info.params - bn_channels == FUSED_PARAMS_80[name]


def test_registry_protocol_and_head_layout() -> None:
    assert (model_spec("yolov5s").family, model_spec("yolov5s").input_size) == ("yolov5", 640)
    model = build_model("yolov5s", num_classes=3, input_size=320)
    assert model.name == "yolov5s" and model.num_priors == 3 * (40 * 40 + 20 * 20 + 10 * 10)
    spec = model.input_spec
    assert (spec.size, spec.resize, spec.std) == (320, "letterbox", (1, 1, 1))
    head = model.model.detect
    assert [conv.out_channels for conv in head.m] == [3 * 8] * 3
    assert [conv.in_channels for conv in head.m] == [128, 256, 512]  # yolov5s: 256/512/1024 x 0.5
    assert torch.equal(head.anchors_pixels(), torch.tensor(DEFAULT_ANCHORS).float().view(3, 3, 2))
    # v5's SPPF applies SiLU after cv1 (ultralytics 8's SPPF does not): restored
    assert isinstance(model.model.body.layers[9].cv1.act, nn.SiLU)
    with pytest.raises(ValueError, match="multiple of 32"):
        build_model("yolov5n", num_classes=3, input_size=300)


def test_bias_prior_is_v5s_initialisation() -> None:
    torch.manual_seed(0)
    plain = [nn.Conv2d(c, 3 * 85, 1) for c in (64, 128, 256)]  # the head's convs before v5's prior
    torch.manual_seed(0)
    head = AnchorDetect(80, [64, 128, 256])
    for conv, before, cells in zip(head.m, plain, (80, 40, 20), strict=True):
        assert torch.equal(conv.weight, before.weight)
        offset = (conv.bias - before.bias).detach().view(3, 85)
        assert torch.allclose(offset[:, :4], torch.zeros(3, 4))
        assert torch.allclose(offset[:, 4], torch.full((3,), math.log(8 / cells**2)))  # 8 objects per image
        assert torch.allclose(offset[:, 5:], torch.full((3, 80), math.log(0.6 / (80 - 0.999999))))


def test_forward_modes_and_decoding(yolov5n: YOLOv5Detector) -> None:
    images, _ = _tiny_batch()
    raw = yolov5n.train()(images)
    assert [tuple(r.shape) for r in raw] == [(2, 3, 8, 8, 7), (2, 3, 4, 4, 7), (2, 3, 2, 2, 7)]
    decoded = yolov5n.eval()(images)
    assert decoded.shape == (2, PREDICTIONS, 7)
    # Decoding by hand for one prediction: P4, anchor 2, cell (row 1, col 3).
    raw = yolov5n.model.detect.raw_maps(yolov5n.model.body(images))
    y = raw[1][0, 2, 1, 3].sigmoid()
    cx, cy = (y[0] * 2 - 0.5 + 3) * 16, (y[1] * 2 - 0.5 + 1) * 16
    w, h = (y[2] * 2) ** 2 * 59, (y[3] * 2) ** 2 * 119
    index = 3 * 64 + 2 * 16 + 1 * 4 + 3
    assert torch.allclose(decoded[0, index], torch.stack([cx, cy, w, h, *y[4:]]), atol=1e-5)


def test_build_targets_matches_anchors_by_ratio_and_adds_neighbour_cells() -> None:
    # cx 18, cy 30, 12 x 18 px. P3 (8 px cells): gx 2.25 (left border nearer), gy 3.75 (lower border nearer);
    # all three P3 anchors within 4x. P4: gx 1.125, gy 1.875 -> left and lower neighbours; only anchor 0
    # (30 x 61) within 4x. P5: no anchor within 4x.
    target = torch.tensor([[0, 1, 18.0, 30.0, 12.0, 18.0]])
    levels = build_targets(target, ANCHORS_CELLS, [(8, 8), (4, 4), (2, 2)], STRIDES, 4.0)
    p3, p4, p5 = levels
    cells = sorted(set(zip(p3.col.tolist(), p3.row.tolist(), strict=True)))
    assert cells == [(1, 3), (2, 3), (2, 4)] and len(p3.image) == 9
    assert sorted(p3.anchor.tolist()) == [0, 0, 0, 1, 1, 1, 2, 2, 2]
    assert sorted(zip(p4.col.tolist(), p4.row.tolist(), strict=True)) == [(0, 1), (1, 1), (1, 2)]
    assert p4.anchor.tolist() == [0, 0, 0] and len(p5.image) == 0
    # Box targets are relative to the assigned cell: x 2.25 - 1 = 1.25 from the left neighbour.
    left = (p3.col == 1) & (p3.anchor == 0)
    assert torch.allclose(p3.box[left], torch.tensor([[1.25, 0.75, 1.5, 2.25]]))
    assert p3.label.tolist() == [1] * 9


V5_TARGETS = torch.tensor([  # image, class, cx, cy, w, h in 64-px input pixels
    [0, 0, 20.0, 30.0, 12.0, 18.0], [0, 2, 60.0, 6.0, 40.0, 10.0], [1, 1, 33.3, 47.9, 5.0, 5.0],
    [1, 0, 64.0, 32.0, 64.0, 60.0], [1, 2, 9.7, 12.2, 3.0, 30.0]])
# v5 ComputeLoss items (lbox, lobj, lcls) and loss / batch size on those inputs.
V5_LOSS = {3: (0.12090943, 0.04394646, 0.046476349, 0.21133225),
           1: (0.13273203, 0.040461421, 0.0, 0.17319345)}


@pytest.mark.parametrize("num_classes", [3, 1])
def test_loss_equals_yolov5_compute_loss(num_classes: int) -> None:
    generator = torch.Generator().manual_seed(0)
    raw = [torch.randn(2, 3, s, s, 5 + num_classes, generator=generator) for s in (8, 4, 2)]
    targets = V5_TARGETS.clone()
    targets[:, 1] = targets[:, 1].clamp(max=num_classes - 1)
    out = yolov5_loss(raw, targets, ANCHORS_CELLS, STRIDES, num_classes, SIZE)
    box, obj, cls, total = V5_LOSS[num_classes]
    got = [out["loss_box"], out["loss_obj"], out["loss_cls"], out["loss"]]
    assert torch.allclose(torch.stack(got), torch.tensor([box, obj, cls, total]), rtol=1e-6, atol=1e-8)


def test_loss_gains_scale_as_v5_train_py() -> None:
    box, obj, cls = LossHyp().scaled(num_levels=3, num_classes=20, image_size=320)
    assert (box, obj, cls) == (0.05, 0.25, 0.125)


def test_loss_without_objects_is_objectness_only(yolov5n: YOLOv5Detector) -> None:
    images, _ = _tiny_batch()
    empty = [Target(torch.zeros(0, 4), torch.zeros(0, dtype=torch.int64)) for _ in range(2)]
    losses = yolov5n.train().loss(images, empty)
    losses["loss"].backward()
    assert losses["loss_obj"] > 0 and losses["loss_box"] == 0 and losses["loss_cls"] == 0


def test_boxes_without_area_are_left_out(yolov5n: YOLOv5Detector) -> None:
    images, targets = _tiny_batch()
    yolov5n.eval()  # BatchNorm on running statistics: the two calls see identical features
    degenerate = [Target(torch.cat([t.boxes, torch.tensor([[30.0, 30.0, 20.0, 40.0], [5.0, 5.0, 5.0, 9.0]])]),
                         torch.cat([t.labels, torch.tensor([0, 1])])) for t in targets]
    clean, noisy = yolov5n.loss(images, targets), yolov5n.loss(images, degenerate)
    assert all(torch.equal(clean[k], noisy[k]) for k in clean)


def test_loss_in_eval_mode_is_the_validation_loss(yolov5n: YOLOv5Detector) -> None:
    images, targets = _tiny_batch()
    yolov5n.eval()
    assert torch.equal(yolov5n.loss(images, targets)["loss"], yolov5n.loss(images, targets)["loss"])
    assert not yolov5n.training and yolov5n(images).dim() == 3  # still decodes afterwards


def test_a_few_steps_lower_the_loss(yolov5n: YOLOv5Detector) -> None:
    images, targets = _tiny_batch()
    yolov5n.train()
    optimizer = torch.optim.AdamW(yolov5n.parameters(), lr=2e-3, weight_decay=0.0)
    history = []
    for _ in range(30):  # CIoU on two boxes dominates and falls steadily (0.149 -> 0.060 measured)
        loss = yolov5n.loss(images, targets)["loss"]
        optimizer.zero_grad()
        loss.backward()
        optimizer.step()
        history.append(loss.item())
    assert history[-1] < 0.5 * history[0], history


def test_nms_follows_yolov5_on_a_hand_made_case() -> None:
    # Two overlapping boxes and one apart, 2 classes; v5: obj x cls, multi-label, per-class NMS.
    pred = torch.tensor([
        [20, 20, 10, 10, 0.9, 0.9, 0.5],  # class 0 0.81, class 1 0.45
        [21, 20, 10, 10, 0.8, 0.95, 0.1],  # class 0 0.76 (IoU 0.82 with the first: suppressed), class 1 0.08
        [50, 50, 8, 8, 0.5, 0.2, 0.8],  # class 1 0.40, class 0 0.10
        [50, 50, 8, 8, 0.05, 1.0, 1.0],  # objectness under the threshold: never a candidate
    ])[None]
    (det,) = non_max_suppression(pred, conf_thres=0.09, iou_thres=0.5, max_det=10, multi_label=True)
    expected = torch.tensor([[15, 15, 25, 25, 0.81, 0], [15, 15, 25, 25, 0.45, 1], [46, 46, 54, 54, 0.40, 1],
                             [46, 46, 54, 54, 0.10, 0]])
    assert torch.allclose(det, expected)
    (best,) = non_max_suppression(pred, conf_thres=0.09, iou_thres=0.5, max_det=10, multi_label=False)
    assert torch.allclose(best, expected[[0, 2]])
    (agnostic,) = non_max_suppression(pred, 0.09, 0.5, max_det=10, multi_label=True, agnostic=True)
    assert torch.allclose(agnostic, expected[[0, 2]])
    (capped,) = non_max_suppression(pred, conf_thres=0.09, iou_thres=0.5, max_det=2, multi_label=True)
    assert torch.allclose(capped, expected[:2])


def test_predict_maps_letterboxed_boxes_into_the_original_image(yolov5n: YOLOv5Detector) -> None:
    # A 200 x 300 (h x w) original letterboxed to 64: scale 64/300, content 43 rows high, 10.5 px bars on top.
    height, width = 200, 300
    scale = SIZE / width
    top = (SIZE - height * scale) / 2
    meta = ImageMeta(image_id=7, orig_size=(height, width), scale=(scale, scale), pad=(top, 0.0))
    yolov5n.postprocess_config = PostprocessConfig(score_thresh=0.0, nms_iou=0.6, max_detections=30)
    images, _ = _tiny_batch()
    (det,) = yolov5n.eval().predict(images[:1], [meta])
    assert 0 < len(det.boxes) <= 30 and det.labels.dtype == torch.int64
    assert bool(((det.labels >= 0) & (det.labels < 2)).all())
    assert bool((det.scores[:-1] >= det.scores[1:]).all())
    x1, y1, x2, y2 = det.boxes.unbind(1)
    assert bool(((x1 >= 0) & (x1 <= x2) & (x2 <= width) & (y1 >= 0) & (y1 <= y2) & (y2 <= height)).all())
    assert float(x2.max()) > SIZE  # rescaled to original pixels, not left in the 64-pixel input
    # The same detections by hand: v5's NMS on the decoded output, then (net - pad) / scale.
    (kept,) = non_max_suppression(yolov5n(images[:1]), 0.0, 0.6, max_det=30, multi_label=True)
    assert torch.allclose(det.boxes, meta.to_original(kept[:, :4]))


def test_predict_refuses_train_mode(yolov5n: YOLOv5Detector) -> None:
    images, _ = _tiny_batch()
    with pytest.raises(RuntimeError, match="eval mode"):
        yolov5n.train().predict(images, [ImageMeta(0, (SIZE, SIZE))] * 2)


def test_fuse_folds_batchnorm_without_changing_outputs() -> None:
    model = build_model("yolov5n", num_classes=80, input_size=SIZE).eval()
    bn_channels = sum(m.num_features for m in model.modules() if isinstance(m, nn.BatchNorm2d))
    images = torch.rand(1, 3, SIZE, SIZE)
    before = model(images)
    model.fuse()
    assert not any(isinstance(m, nn.BatchNorm2d) for m in model.modules())
    assert model.info().params == PARAMS_80["yolov5n"] - bn_channels
    assert torch.allclose(model(images), before, atol=1e-3, rtol=1e-4)


def test_state_dict_round_trips_with_anchors(yolov5n: YOLOv5Detector, tmp_path: Path) -> None:
    yolov5n.set_anchors(torch.arange(1, 19, dtype=torch.float32).view(3, 3, 2) * 3)
    path = tmp_path / "yolov5n.pt"
    torch.save(yolov5n.state_dict(), path)
    fresh = build_model("yolov5n", num_classes=2, input_size=SIZE)
    fresh.load_state_dict(torch.load(path, weights_only=True), strict=True)
    assert torch.equal(fresh.model.detect.anchors_pixels(), yolov5n.model.detect.anchors_pixels())
    images, _ = _tiny_batch()
    assert torch.equal(fresh.eval()(images), yolov5n.eval()(images))


@pytest.mark.parametrize("name", ["yolov5s", "yolov5m", "yolov5l", "yolov5x"])
def test_every_larger_scale_trains_and_predicts(name: str) -> None:
    """The other scales share yolov5n's code path; this checks each still learns and maps boxes back."""
    torch.manual_seed(0)
    model = build_model(name, num_classes=2, input_size=SIZE).train()
    images, targets = _tiny_batch()
    optimizer = torch.optim.AdamW(model.parameters(), lr=1e-3, weight_decay=0.0)
    history = []
    for _ in range(6):  # measured: the loss falls 15-18 % in 6 steps at every scale
        loss = model.loss(images, targets)["loss"]
        optimizer.zero_grad()
        loss.backward()
        optimizer.step()
        history.append(loss.item())
    assert min(history[-2:]) < 0.9 * history[0], history
    meta = ImageMeta(image_id=0, orig_size=(128, 128), scale=(0.5, 0.5))
    model.postprocess_config = PostprocessConfig(score_thresh=0.0, nms_iou=0.6, max_detections=10)
    (det,) = model.eval().predict(images[:1], [meta])
    assert 0 < len(det.boxes) <= 10
    assert bool(((det.boxes >= 0) & (det.boxes <= 128)).all()) and float(det.boxes.max()) > SIZE
