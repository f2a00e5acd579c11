"""The shared SSD machinery against small, independent per-image reference implementations."""

from __future__ import annotations

import math

import pytest
import torch
import torch.nn.functional as F
from torch import nn
from torchvision.models.detection._utils import BoxCoder
from torchvision.ops import box_convert, box_iou, nms

from detectors.base import PostprocessConfig, Target
from detectors.complexity import count_flops, count_params
from detectors.ssd.box_coder import SSDBoxCoder
from detectors.ssd.layers import conv_block
from detectors.ssd.loss import MultiBoxLoss
from detectors.ssd.matcher import match_priors, pad_targets
from detectors.ssd.necks.fssd import fssd300_levels
from detectors.ssd.postprocess import SSDPostprocess
from detectors.ssd.priors import generate_priors, ssd300_levels, ssd512_levels


def random_boxes(n: int, generator: torch.Generator, min_size: float = 0.05) -> torch.Tensor:
    """``(n, 4)`` normalised xyxy boxes of side at least ``min_size``."""
    xy = torch.rand(n, 2, generator=generator) * (1 - min_size)
    wh = min_size + torch.rand(n, 2, generator=generator) * (1 - xy - min_size)
    return torch.cat([xy, xy + wh], 1)


def random_priors(n: int, generator: torch.Generator) -> torch.Tensor:
    return box_convert(random_boxes(n, generator), "xyxy", "cxcywh")


@pytest.fixture
def gen() -> torch.Generator:
    return torch.Generator().manual_seed(0)


# ------------------------------------------------------------------------------------------------- priors


@pytest.mark.parametrize(("levels", "expected"), [
    (ssd300_levels("voc"), 8732), (ssd300_levels("coco"), 8732),
    (ssd512_levels("voc"), 24564), (ssd512_levels("coco"), 24564),
    (fssd300_levels("voc"), 11620),
])
def test_prior_counts(levels, expected):
    size = 512 if levels[0].feature_size == 64 else 300
    assert generate_priors(levels, size).shape == (expected, 4)


def test_unknown_prior_set_names_the_choices():
    with pytest.raises(ValueError, match=r"\['coco', 'voc'\]"):
        fssd300_levels("kitti")


def test_ssd300_voc_prior_shapes_follow_the_paper():
    first, second = ssd300_levels("voc")[:2]
    assert first.shapes[:2] == ((30, 30), (math.sqrt(30 * 60),) * 2)
    assert first.shapes[2] == pytest.approx((30 * math.sqrt(2), 30 / math.sqrt(2)))
    assert second.boxes_per_location == 6
    assert second.shapes[4] == pytest.approx((60 * math.sqrt(3), 60 / math.sqrt(3)))
    assert ssd300_levels("coco")[0].shapes[0] == (21, 21)


# -------------------------------------------------------------------------------------------- box coder


def test_encode_decode_round_trip_batched(gen):
    priors = random_priors(50, gen)
    boxes = torch.stack([random_boxes(50, gen) for _ in range(3)])  # (B, P, 4)
    coder = SSDBoxCoder()
    offsets = coder.encode(boxes, priors)
    assert offsets.shape == (3, 50, 4)
    torch.testing.assert_close(coder.decode(offsets, priors), boxes, atol=1e-5, rtol=1e-5)


def test_encoding_matches_torchvision_weights_10_10_5_5(gen):
    priors, boxes = random_priors(40, gen), random_boxes(40, gen)
    anchors = box_convert(priors, "cxcywh", "xyxy")
    reference = BoxCoder(weights=(10.0, 10.0, 5.0, 5.0)).encode_single(boxes, anchors)
    torch.testing.assert_close(SSDBoxCoder((0.1, 0.2)).encode(boxes, priors), reference, atol=1e-4, rtol=1e-4)


def test_prior_itself_encodes_to_zero(gen):
    priors = random_priors(10, gen)
    offsets = SSDBoxCoder().encode(box_convert(priors, "cxcywh", "xyxy"), priors)
    torch.testing.assert_close(offsets, torch.zeros_like(offsets), atol=1e-5, rtol=0)


# ---------------------------------------------------------------------------------------------- matcher


def reference_match(priors: torch.Tensor, boxes: torch.Tensor, labels: torch.Tensor, threshold: float = 0.5):
    """amdegroot/lufficc ``match`` for one image, with its sequential loop over ground truths."""
    if len(boxes) == 0:
        return torch.zeros(len(priors), dtype=torch.long), torch.zeros(len(priors), 4)
    iou = box_iou(boxes, box_convert(priors, "cxcywh", "xyxy"))
    best_prior = iou.argmax(1)
    best_gt_iou, best_gt = iou.max(0)
    best_gt_iou[best_prior] = 2.0
    for j in range(len(boxes)):
        best_gt[best_prior[j]] = j
    matched_labels = labels[best_gt] + 1
    matched_labels[best_gt_iou < threshold] = 0
    return matched_labels, boxes[best_gt]


def test_batched_matching_equals_the_per_image_reference(gen):
    priors = random_priors(300, gen)
    targets = [Target(random_boxes(n, gen, 0.2), torch.randint(0, 5, (n,), generator=gen)) for n in (4, 0, 9)]
    matched = match_priors(priors, pad_targets(targets))
    for i, t in enumerate(targets):
        labels, boxes = reference_match(priors, t.boxes, t.labels)
        assert torch.equal(matched.labels[i], labels)
        positive = labels > 0
        assert torch.equal(matched.boxes[i][positive], boxes[positive])
    assert (matched.labels[1] == 0).all()  # the image without boxes is all background
    assert (matched.labels[0] > 0).sum() >= 4


def test_every_ground_truth_gets_its_best_prior_even_below_threshold():
    # Two priors; the ground truth overlaps the first with IoU 0.25 (< 0.5) and the second not at all.
    priors = torch.tensor([[0.25, 0.25, 0.5, 0.5], [0.8, 0.8, 0.2, 0.2]])
    gt = Target(torch.tensor([[0.0, 0.0, 0.25, 0.25]]), torch.tensor([3]))
    matched = match_priors(priors, pad_targets([gt]))
    assert matched.labels.tolist() == [[4, 0]]  # class 3 -> label 4; the second prior stays background


def test_threshold_is_inclusive_and_labels_are_shifted():
    # Prior 1 is the left half of the ground truth: IoU exactly 0.5 in binary floating point. Prior 0 is the
    # ground truth itself (forced anyway).
    priors = torch.tensor([[0.5, 0.5, 0.5, 0.5], [0.375, 0.5, 0.25, 0.5]])
    gt = Target(torch.tensor([[0.25, 0.25, 0.75, 0.75]]), torch.tensor([0]))
    iou = box_iou(gt.boxes, box_convert(priors, "cxcywh", "xyxy"))
    assert iou[0, 1].item() == 0.5
    assert match_priors(priors, pad_targets([gt])).labels.tolist() == [[1, 1]]


def test_later_ground_truth_wins_a_shared_best_prior():
    priors = torch.tensor([[0.5, 0.5, 0.2, 0.2], [0.05, 0.05, 0.1, 0.1]])
    boxes = torch.tensor([[0.4, 0.4, 0.6, 0.6], [0.39, 0.39, 0.61, 0.61]])  # both prefer prior 0
    matched = match_priors(priors, pad_targets([Target(boxes, torch.tensor([0, 1]))]))
    assert matched.labels[0, 0].item() == 2


def test_boxes_without_area_are_ignored_not_nan(gen):
    priors = random_priors(30, gen)
    boxes = torch.tensor([[0.2, 0.2, 0.2, 0.6], [0.1, 0.1, 0.5, 0.5]])  # the first has zero width
    targets = [Target(boxes, torch.tensor([0, 1]))]
    assert pad_targets(targets).valid.tolist() == [[False, True]]
    loss = MultiBoxLoss()(torch.zeros(1, 30, 4), torch.zeros(1, 30, 3), priors, targets)
    assert torch.isfinite(loss["loss"]) and loss["loss_box"] > 0


# ------------------------------------------------------------------------------------------------- loss


def reference_multibox(loc, conf, priors, targets, ratio: int = 3):
    """Per-image MultiBox loss written from the paper, with explicit offsets and top-k negatives."""
    loss_box = loss_cls = torch.zeros(())
    num_pos = 0
    for b, t in enumerate(targets):
        labels, boxes = reference_match(priors, t.boxes, t.labels)
        pos = labels > 0
        g = box_convert(boxes[pos], "xyxy", "cxcywh")
        p = priors[pos]
        centre, size = (g[:, :2] - p[:, :2]) / (0.1 * p[:, 2:]), torch.log(g[:, 2:] / p[:, 2:]) / 0.2
        offsets = torch.cat([centre, size], 1)
        loss_box = loss_box + F.smooth_l1_loss(loc[b][pos], offsets, reduction="sum")
        ce = F.cross_entropy(conf[b], labels, reduction="none")
        n_neg = min(ratio * int(pos.sum()), len(priors) - int(pos.sum()))
        negatives = ce.masked_fill(pos, -math.inf).topk(n_neg).indices
        loss_cls = loss_cls + ce[pos].sum() + ce[negatives].sum()
        num_pos += int(pos.sum())
    return loss_box / max(num_pos, 1), loss_cls / max(num_pos, 1)


def test_multibox_loss_equals_the_per_image_reference(gen):
    priors = random_priors(200, gen)
    targets = [Target(random_boxes(n, gen, 0.2), torch.randint(0, 4, (n,), generator=gen)) for n in (3, 1, 0)]
    loc = torch.randn(3, 200, 4, generator=gen)
    conf = torch.randn(3, 200, 5, generator=gen)
    out = MultiBoxLoss()(loc, conf, priors, targets)
    box, cls = reference_multibox(loc, conf, priors, targets)
    torch.testing.assert_close(out["loss_box"], box)
    torch.testing.assert_close(out["loss_cls"], cls)
    torch.testing.assert_close(out["loss"], box + cls)


def test_hard_negatives_are_three_per_positive_and_capped():
    ce = torch.arange(10.0).repeat(2, 1)
    positive = torch.zeros(2, 10, dtype=torch.bool)
    positive[0, 9] = True  # one positive: 3 negatives, the highest-loss background priors 8, 7, 6
    positive[1, :4] = True  # four positives want 12 negatives; only 6 background priors exist
    negatives = MultiBoxLoss()._hard_negatives(ce, positive)
    assert negatives[0].nonzero().flatten().tolist() == [6, 7, 8]
    assert negatives[1].nonzero().flatten().tolist() == [4, 5, 6, 7, 8, 9]


def test_loss_without_any_ground_truth_is_finite_and_zero(gen):
    priors = random_priors(20, gen)
    empty = Target(torch.zeros(0, 4), torch.zeros(0, dtype=torch.long))
    loc = torch.randn(2, 20, 4, requires_grad=True)
    out = MultiBoxLoss()(loc, torch.randn(2, 20, 3), priors, [empty, empty])
    assert out["loss"].item() == 0.0
    out["loss"].backward()
    assert torch.isfinite(loc.grad).all()


# ---------------------------------------------------------------------------------------- postprocessing


def reference_postprocess(loc, conf, priors, config: PostprocessConfig):
    """One image and one class at a time, as amdegroot's ``Detect``."""
    results = []
    for b in range(loc.shape[0]):
        boxes = SSDBoxCoder().decode(loc[b], priors).clamp(0, 1)
        scores = conf[b].softmax(-1)
        kept = []
        for c in range(1, conf.shape[-1]):
            s, idx = scores[:, c].topk(min(config.pre_nms_topk, len(priors)))
            idx, s = idx[s > config.score_thresh], s[s > config.score_thresh]
            keep = nms(boxes[idx], s, config.nms_iou)
            kept += [(float(s[k]), c - 1, boxes[idx[k]]) for k in keep]
        kept.sort(key=lambda item: -item[0])
        results.append(kept[: config.max_detections])
    return results


def test_batched_postprocess_equals_the_per_image_per_class_reference(gen):
    priors = random_priors(60, gen)
    loc = torch.randn(3, 60, 4, generator=gen) * 0.5
    conf = torch.randn(3, 60, 4, generator=gen) * 2
    config = PostprocessConfig(score_thresh=0.2, nms_iou=0.45, max_detections=12, pre_nms_topk=15)
    out = SSDPostprocess()(loc, conf, priors, config)
    expected = reference_postprocess(loc, conf, priors, config)
    assert len(out) == 3
    for det, ref in zip(out, expected, strict=True):
        assert len(det.scores) == len(ref) == config.max_detections  # the cap binds on this data
        torch.testing.assert_close(det.scores, torch.tensor([r[0] for r in ref]))
        assert det.labels.tolist() == [r[1] for r in ref]
        torch.testing.assert_close(det.boxes, torch.stack([r[2] for r in ref]))


def test_nms_never_suppresses_across_images_or_classes():
    priors = torch.tensor([[0.5, 0.5, 0.4, 0.4]] * 2)  # two identical priors
    loc = torch.zeros(2, 2, 4)
    conf = torch.full((2, 2, 3), -10.0)
    conf[:, 0, 1] = 10.0  # prior 0 -> class 0, prior 1 -> class 1, same box
    conf[:, 1, 2] = 10.0
    out = SSDPostprocess()(loc, conf, priors, PostprocessConfig(score_thresh=0.5))
    for det in out:  # both images keep both classes
        assert sorted(det.labels.tolist()) == [0, 1]
    conf[:, 1] = conf[:, 0]  # now the same class twice per image: one suppressed in each image
    out = SSDPostprocess()(loc, conf, priors, PostprocessConfig(score_thresh=0.5))
    assert [d.labels.tolist() for d in out] == [[0], [0]]
    out = SSDPostprocess()(loc, conf, priors, PostprocessConfig(score_thresh=1.0))  # nothing passes
    assert [(d.boxes.shape, d.scores.shape, d.labels.shape) for d in out] == [((0, 4), (0,), (0,))] * 2


# ------------------------------------------------------------------------------------------- complexity


def test_params_count_bn_affine_only_and_flops_are_twice_the_macs():
    model = nn.Sequential(conv_block(3, 8, 3, padding=1, batch_norm=True), nn.Conv2d(8, 4, 1))
    assert count_params(model) == 3 * 8 * 9 + 2 * 8 + (8 * 4 + 4)  # conv (no bias), BN gamma/beta, 1x1 conv
    macs = 16 * 16 * (8 * 3 * 9 + 4 * 8)  # the BN folds into the conv: no BN operations remain
    assert count_flops(model, 16) == pytest.approx(2 * macs / 1e9)
    assert isinstance(model[0][1], nn.BatchNorm2d) and model.training  # the caller's model is untouched


def test_fusion_preserves_outputs_and_meta_models_count_alike():
    from detectors.complexity import fuse_conv_bn

    torch.manual_seed(0)
    model = nn.Sequential(conv_block(3, 8, 3, padding=1, batch_norm=True)).eval()
    bn = model[0][1]
    bn.running_mean.uniform_(-1, 1)
    bn.running_var.uniform_(0.5, 2)
    bn.weight.data.uniform_(0.5, 2)
    x = torch.randn(2, 3, 8, 8)
    expected = model(x)
    fused = fuse_conv_bn(model)
    assert not any(isinstance(m, nn.BatchNorm2d) for m in fused.modules())
    torch.testing.assert_close(fused(x), expected, atol=1e-5, rtol=1e-5)
    with torch.device("meta"):
        meta = nn.Sequential(conv_block(3, 8, 3, padding=1, batch_norm=True))
    assert count_flops(meta, 8) == count_flops(model, 8) > 0
