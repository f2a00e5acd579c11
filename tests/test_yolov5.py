"""The ultralytics YOLOv5u adapter (``yolov5nu`` ... ``yolov5xu``): sizes, forward modes, loss, training."""

from __future__ import annotations

from pathlib import Path

import pytest
import torch
from torch import nn

from detectors import ImageMeta, PostprocessConfig, Target, build_model, model_spec
from detectors.yolov5 import YOLOv5uDetector

# ultralytics 8 YOLOv5u with 80 classes (architectures.md §6, verified), unfused and fused.
PARAMS_80 = {"yolov5nu": 2_654_816, "yolov5su": 9_153_152, "yolov5mu": 25_111_456, "yolov5lu": 53_225_024,
             "yolov5xu": 97_276_448}
FUSED_PARAMS_80_N = 2_649_200

SIZE = 64  # smallest input with all three strides (8, 16, 32) -> 8x8 + 4x4 + 2x2 = 84 anchor points
ANCHOR_POINTS = 84


def _tiny_batch() -> tuple[torch.Tensor, list[Target]]:
    """Two images, each with one bright rectangle that is its object (class 0 and 1)."""
    images = torch.full((2, 3, SIZE, SIZE), 0.1)
    images[0, :, 10:40, 8:50] = 0.9
    images[1, 0, 30:60, 20:44] = 1.0
    targets = [Target(torch.tensor([[8.0, 10.0, 50.0, 40.0]]), torch.tensor([0])),
               Target(torch.tensor([[20.0, 30.0, 44.0, 60.0]]), torch.tensor([1]))]
    return images, targets


@pytest.fixture
def yolov5nu() -> YOLOv5uDetector:
    torch.manual_seed(0)
    return build_model("yolov5nu", num_classes=2, input_size=SIZE)


@pytest.mark.parametrize("name", list(PARAMS_80))
def test_parameter_counts_with_80_classes(name: str) -> None:
    info = build_model(name, num_classes=80).info()
    assert info.params == PARAMS_80[name]
    assert (info.family, info.input_size, info.priors, info.num_classes) == ("yolov5", 640, None, 80)
    assert "ultralytics 8" in info.paper and "anchor-free" in info.paper


def test_registry_and_letterbox_protocol() -> None:
    spec = model_spec("yolov5su")
    assert (spec.family, spec.input_size) == ("yolov5", 640)
    model = build_model("yolov5su", num_classes=3, input_size=320)
    assert model.name == "yolov5su" and model.input_size == 320
    protocol = model.input_spec
    assert (protocol.size, protocol.resize) == (320, "letterbox")
    assert (protocol.mean, protocol.std) == ((0, 0, 0), (1, 1, 1))
    with pytest.raises(ValueError, match="multiple of 32"):
        build_model("yolov5nu", num_classes=3, input_size=300)


def test_forward_modes(yolov5nu: YOLOv5uDetector) -> None:
    images, _ = _tiny_batch()
    raw = yolov5nu.train()(images)
    assert set(raw) == {"boxes", "scores", "feats"}
    assert raw["scores"].shape == (2, 2, ANCHOR_POINTS)
    decoded = yolov5nu.eval()(images)
    assert decoded.shape == (2, 4 + 2, ANCHOR_POINTS)
    scores = decoded[:, 4:]
    assert bool(((scores >= 0) & (scores <= 1)).all())  # sigmoid class scores after the xywh boxes


def test_loss_is_ultralytics_loss_on_normalised_xywh_divided_by_batch(yolov5nu: YOLOv5uDetector) -> None:
    images, targets = _tiny_batch()
    losses = yolov5nu.train().loss(images, targets)
    assert set(losses) == {"loss", "loss_box", "loss_cls", "loss_dfl"}
    assert torch.isfinite(losses["loss"])
    assert torch.allclose(losses["loss"], losses["loss_box"] + losses["loss_cls"] + losses["loss_dfl"])
    # The same batch written by hand in ultralytics' own format: centre x, centre y, w, h as image fractions.
    batch = {"img": images, "batch_idx": torch.tensor([0.0, 1.0]), "cls": torch.tensor([[0.0], [1.0]]),
             "bboxes": torch.tensor([[29, 25, 42, 30], [32, 45, 24, 30]]) / SIZE}
    summed, _ = yolov5nu.model.loss(batch)
    assert torch.allclose(losses["loss"], summed.sum() / 2)


def test_loss_does_not_grow_with_the_batch(yolov5nu: YOLOv5uDetector) -> None:
    # Enough objects that the target-score normaliser exceeds its floor of 1 (see ``YOLOv5uDetector.loss``).
    image = torch.full((1, 3, SIZE, SIZE), 0.1)
    boxes = torch.tensor([[8.0, 10.0, 50.0, 40.0], [0, 0, 32, 32], [30, 30, 64, 64], [4, 40, 28, 60]])
    target = Target(boxes, torch.tensor([0, 1, 1, 0]))
    yolov5nu.eval()  # BatchNorm on running statistics: both batches see identical features
    single = yolov5nu.loss(image, [target])["loss"]
    doubled = yolov5nu.loss(image.repeat(2, 1, 1, 1), [target, target])["loss"]
    assert torch.allclose(doubled, single, rtol=1e-5)


def test_loss_without_objects_is_classification_only(yolov5nu: YOLOv5uDetector) -> None:
    images, _ = _tiny_batch()
    empty = [Target(torch.zeros(0, 4), torch.zeros(0, dtype=torch.int64)) for _ in range(2)]
    losses = yolov5nu.train().loss(images, empty)
    losses["loss"].backward()
    assert losses["loss_cls"] > 0 and losses["loss_box"] == 0 and losses["loss_dfl"] == 0


def test_a_few_steps_lower_the_loss(yolov5nu: YOLOv5uDetector) -> None:
    images, targets = _tiny_batch()
    yolov5nu.train()
    optimizer = torch.optim.AdamW(yolov5nu.parameters(), lr=2e-3, weight_decay=0.0)
    history = []
    for _ in range(20):
        loss = yolov5nu.loss(images, targets)["loss"]
        optimizer.zero_grad()
        loss.backward()
        optimizer.step()
        history.append(loss.item())
    assert history[-1] < 0.5 * history[0], history


def test_predict_maps_letterboxed_boxes_into_the_original_image(yolov5nu: YOLOv5uDetector) -> None:
    # A 200 x 300 (h x w) original letterboxed to 64: scale 64/300, content 43 rows high, 10.5 px bars on top.
    height, width = 200, 300
    scale = SIZE / width
    top = (SIZE - height * scale) / 2
    meta = ImageMeta(image_id=7, orig_size=(height, width), scale=(scale, scale), pad=(top, 0.0))
    yolov5nu.postprocess_config = PostprocessConfig(score_thresh=0.0, nms_iou=0.6, max_detections=30)
    images, _ = _tiny_batch()
    (det,) = yolov5nu.eval().predict(images[:1], [meta])
    assert 0 < len(det.boxes) <= 30 and det.labels.dtype == torch.int64
    assert bool(((det.labels >= 0) & (det.labels < 2)).all())
    assert bool((det.scores[:-1] >= det.scores[1:]).all())
    x1, y1, x2, y2 = det.boxes.unbind(1)
    assert bool(((x1 >= 0) & (x1 <= x2) & (x2 <= width) & (y1 >= 0) & (y1 <= y2) & (y2 <= height)).all())
    assert float(x2.max()) > SIZE  # rescaled to original pixels, not left in the 64-pixel input


def test_predict_refuses_train_mode(yolov5nu: YOLOv5uDetector) -> None:
    images, _ = _tiny_batch()
    with pytest.raises(RuntimeError, match="eval mode"):
        yolov5nu.train().predict(images, [ImageMeta(0, (SIZE, SIZE))] * 2)


def test_fuse_folds_batchnorm_without_changing_outputs() -> None:
    model = build_model("yolov5nu", num_classes=80, input_size=SIZE).eval()
    images = torch.rand(1, 3, SIZE, SIZE)
    before = model(images)
    model.fuse()
    assert not any(isinstance(m, nn.BatchNorm2d) for m in model.modules())
    assert model.info().params == FUSED_PARAMS_80_N
    assert torch.allclose(model(images), before, atol=1e-4)


def test_state_dict_round_trips_through_weights_only_loading(yolov5nu: YOLOv5uDetector,
                                                             tmp_path: Path) -> None:
    path = tmp_path / "yolov5nu.pt"
    torch.save(yolov5nu.state_dict(), path)
    fresh = build_model("yolov5nu", num_classes=2, input_size=SIZE)
    fresh.load_state_dict(torch.load(path, weights_only=True), strict=True)
    images, _ = _tiny_batch()
    assert torch.equal(fresh.eval()(images), yolov5nu.eval()(images))


@pytest.mark.parametrize("name", ["yolov5su", "yolov5mu", "yolov5lu", "yolov5xu"])
def test_every_larger_scale_trains_and_predicts(name: str) -> None:
    """The other scales share yolov5nu's code path; this checks each still learns and maps boxes back."""
    torch.manual_seed(0)
    model = build_model(name, num_classes=2, input_size=SIZE).train()
    images, targets = _tiny_batch()
    optimizer = torch.optim.AdamW(model.parameters(), lr=3e-4, weight_decay=0.0)
    history = []
    for _ in range(10):  # two 64-px images: BN batch statistics make single steps noisy, the trend is clear
        loss = model.loss(images, targets)["loss"]
        optimizer.zero_grad()
        loss.backward()
        optimizer.step()
        history.append(loss.item())
    assert min(history[-3:]) < 0.8 * history[0], history
    meta = ImageMeta(image_id=0, orig_size=(128, 128), scale=(0.5, 0.5))
    model.postprocess_config = PostprocessConfig(score_thresh=0.0, nms_iou=0.6, max_detections=10)
    (det,) = model.eval().predict(images[:1], [meta])
    assert 0 < len(det.boxes) <= 10
    assert bool(((det.boxes >= 0) & (det.boxes <= 128)).all())
