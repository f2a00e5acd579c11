"""The SSD family's GPU-path numerics and memory (issue 13), checked on the CPU.

fp32 loss normaliser, DDP-aware positive count, fp32 post-processing with NMS decisions equal to a float64
reference, fp32 priors/mean/std in a half-precision copy, L2Norm's eps in fp16, and the chunked paths (matcher
per image, DF-SSD's enlarged map per chunk) equal to the unchunked ones.
"""

from __future__ import annotations

import pytest
import torch
from torch import nn
from torchvision.ops import box_convert, box_iou, nms

from detectors.base import PostprocessConfig, Target, replica_mean
from detectors.ssd.box_coder import SSDBoxCoder
from detectors.ssd.detector import SSDDetector
from detectors.ssd.loss import MultiBoxLoss
from detectors.ssd.matcher import match_priors, pad_targets
from detectors.ssd.necks import dfssd
from detectors.ssd.postprocess import SSDPostprocess
from detectors.ssd.priors import PriorLevel
from detectors.ssd.vgg import L2Norm


def crowded_positives(count: int) -> tuple[torch.Tensor, list[Target]]:
    """``count`` identical priors on one ground truth: every prior is a positive."""
    priors = torch.tensor([[0.5, 0.5, 0.2, 0.2]]).repeat(count, 1)
    return priors, [Target(torch.tensor([[0.4, 0.4, 0.6, 0.6]]), torch.tensor([1]))]


def test_loss_normaliser_stays_fp32_with_an_fp16_head():
    priors, targets = crowded_positives(2049)  # fp16 rounds 2049 to 2048
    generator = torch.Generator().manual_seed(0)
    loc = torch.randn(1, 2049, 4, generator=generator).half()
    conf = torch.randn(1, 2049, 3, generator=generator).half()
    out = MultiBoxLoss()(loc, conf, priors, targets)
    reference = MultiBoxLoss()(loc.double(), conf.double(), priors.double(), targets)
    assert out["loss"].dtype == torch.float32
    torch.testing.assert_close(out["loss"].double(), reference["loss"], rtol=1e-6, atol=0)


def test_loss_divides_by_the_positive_count_averaged_over_replicas():
    priors, targets = crowded_positives(6)
    loc, conf = torch.randn(1, 6, 4), torch.randn(1, 6, 3)
    alone = MultiBoxLoss()(loc, conf, priors, targets)
    seen = []

    def mean_of_ranks(count: torch.Tensor) -> torch.Tensor:  # this rank has 6 positives, another one 18
        seen.append(count.item())
        return (count + 18) / 2

    with replica_mean(mean_of_ranks):
        shared = MultiBoxLoss()(loc, conf, priors, targets)
    assert seen == [6.0]
    torch.testing.assert_close(shared["loss"], alone["loss"] * 6 / 12)


def small_far_boxes(generator: torch.Generator, count: int) -> torch.Tensor:
    """cxcywh boxes 0.5-1 thousandths wide, near the far corner of the image, overlapping each other."""
    centres = 0.98 + 0.0008 * torch.rand(count, 2, generator=generator)
    sizes = 0.0005 + 0.0005 * torch.rand(count, 2, generator=generator)
    return torch.cat([centres, sizes], 1)


def float64_reference(loc, conf, priors, config: PostprocessConfig) -> list[list[tuple[int, int]]]:
    """Kept (class, prior) pairs per image: one image and class at a time, NMS in float64, no offsets."""
    out = []
    for b in range(len(loc)):
        boxes = SSDBoxCoder().decode(loc[b].float(), priors).clamp(0, 1).double()
        scores = conf[b].float().softmax(-1)
        kept = []
        for c in range(1, conf.shape[-1]):
            s, idx = scores[:, c].topk(min(config.pre_nms_topk, len(priors)))
            idx, s = idx[s > config.score_thresh], s[s > config.score_thresh]
            kept += [(float(s[k]), c - 1, int(idx[k])) for k in nms(boxes[idx], s.double(), config.nms_iou)]
        kept.sort(key=lambda item: -item[0])
        out.append([(cls, prior) for _, cls, prior in kept[: config.max_detections]])
    return out


@pytest.mark.parametrize("head_dtype", [torch.float32, torch.float16])
def test_nms_decisions_equal_a_float64_reference_on_small_boxes_far_from_the_origin(head_dtype):
    # 4 images x 80 classes x 3 candidates = 960 boxes: torchvision's batched_nms uses its coordinate offsets
    # here (as on CUDA up to 5,000 boxes); in fp32 with image x class groups, 15 of these decisions flipped.
    generator = torch.Generator().manual_seed(0)
    priors = small_far_boxes(generator, 40)
    loc = torch.zeros(4, 40, 4)
    conf = torch.randn(4, 40, 81, generator=generator).to(head_dtype)  # an fp16 head: post-processed in fp32
    config = PostprocessConfig(score_thresh=0.0, nms_iou=0.45, max_detections=300, pre_nms_topk=3)
    out = SSDPostprocess()(loc, conf, priors, config)
    expected = float64_reference(loc, conf, priors, config)
    boxes = box_convert(priors, "cxcywh", "xyxy")
    for det, ref in zip(out, expected, strict=True):
        assert det.boxes.dtype == det.scores.dtype == torch.float32
        assert len(det.labels) == len(ref) > 150  # NMS removed some of the 240 candidates, not most
        kept = [(int(c), int(box_iou(b[None], boxes).argmax())) for c, b in zip(det.labels, det.boxes,
                                                                               strict=True)]
        assert sorted(kept) == sorted(ref)


class TinyFeatures(nn.Module):
    """Two conv maps (8x8 and 4x4 at a 32 input) with an L2Norm, for precision checks that must be fast."""

    def __init__(self):
        super().__init__()
        self.a, self.b = nn.Conv2d(3, 8, 3, stride=4, padding=1), nn.Conv2d(8, 8, 3, stride=2, padding=1)
        self.norm = L2Norm(8)
        self.out_channels = [8, 8]

    def forward(self, x: torch.Tensor) -> list[torch.Tensor]:
        a = torch.relu(self.a(x))
        return [self.norm(a), torch.relu(self.b(a))]


def tiny_detector() -> SSDDetector:
    levels = [PriorLevel(8, 4, ((4.0, 4.0), (6.0, 3.0))), PriorLevel(4, 8, ((12.0, 12.0),))]
    return SSDDetector(TinyFeatures(), levels, 3, 32, paper="test")


def test_half_precision_copy_keeps_priors_mean_and_std_in_fp32():
    torch.manual_seed(0)
    model = tiny_detector().eval()
    images = torch.rand(2, 3, 32, 32)
    with torch.no_grad():
        expected = model(images)
        model.half()
        assert {model.priors.dtype, model.mean.dtype, model.std.dtype} == {torch.float32}
        assert model.head.loc[0].weight.dtype == torch.float16
        loc, conf = model(images.half())
    assert loc.dtype == conf.dtype == torch.float16
    torch.testing.assert_close(loc.float(), expected[0], atol=2e-2, rtol=2e-2)
    model.float()
    assert model.priors.dtype == torch.float32 and model.head.loc[0].weight.dtype == torch.float32


def test_l2norm_eps_is_effective_in_fp16():
    norm = L2Norm(4).half()
    x = torch.zeros(1, 4, 2, 2, dtype=torch.float16)
    x[..., 0, 0] = 3.0
    out = norm(x)
    assert out.dtype == torch.float16 and torch.isfinite(out).all()  # 0 / (0 + eps), not 0 / 0
    torch.testing.assert_close(out[0, :, 0, 0].float(), torch.full((4,), 10.0))  # 20 x 3 / sqrt(4 x 9)


def dense_batched_match(priors, padded, threshold=0.5):
    """The earlier batched matcher: one ``(B, M, P)`` IoU tensor for the whole batch."""
    b, m = padded.valid.shape
    p = priors.shape[0]
    real = box_iou(padded.boxes[padded.valid], box_convert(priors, "cxcywh", "xyxy"))
    iou = real.new_full((b, m, p), -1.0)
    iou[padded.valid] = real
    best_gt_iou, best_gt = iou.max(dim=1)
    claims = torch.where(padded.valid, torch.arange(m).expand(b, m), -1)
    forced = torch.full((b, p), -1, dtype=torch.long).scatter_reduce(1, iou.argmax(dim=2), claims,
                                                                     reduce="amax")
    best_gt = torch.where(forced >= 0, forced, best_gt)
    best_gt_iou = best_gt_iou.masked_fill(forced >= 0, 2.0)
    labels = (padded.labels.gather(1, best_gt) + 1).masked_fill(best_gt_iou < threshold, 0)
    return labels, padded.boxes.gather(1, best_gt[..., None].expand(b, p, 4))


def test_per_image_matching_equals_the_batched_matrix():
    generator = torch.Generator().manual_seed(3)
    centres, sizes = torch.rand(500, 2, generator=generator), torch.rand(500, 2, generator=generator)
    priors = torch.cat([centres, 0.05 + 0.3 * sizes], 1)
    targets = []
    for n in (5, 0, 12, 1):
        xy = torch.rand(n, 2, generator=generator) * 0.7
        boxes = torch.cat([xy, xy + 0.05 + 0.25 * torch.rand(n, 2, generator=generator)], 1)
        targets.append(Target(boxes, torch.randint(0, 6, (n,), generator=generator)))
    targets[2].boxes[3, 2] = targets[2].boxes[3, 0]  # a box without area: ignored by both
    padded = pad_targets(targets)
    matched = match_priors(priors, padded)
    labels, boxes = dense_batched_match(priors, padded)
    assert torch.equal(matched.labels, labels) and (labels > 0).sum() > 20
    assert torch.equal(matched.boxes[labels > 0], boxes[labels > 0])


def test_dfssd_enlarged_map_in_chunks_equals_the_whole_batch(monkeypatch):
    torch.manual_seed(0)
    enlarge = dfssd.EnlargeMapPool(4, kernel=4, padding=1)
    x = torch.randn(5, 4, 6, 6)
    whole = enlarge(x)  # autograd on: one pass over the batch
    monkeypatch.setattr(dfssd, "ENLARGE_CHUNK_ELEMENTS", 2 * 4 * 48 * 48)  # two images per chunk
    calls = []
    enlarge.deconv.register_forward_hook(lambda _m, args, _out: calls.append(len(args[0])))
    with torch.no_grad():
        chunked = enlarge(x)
    assert calls == [2, 2, 1]
    torch.testing.assert_close(chunked, whole, rtol=0, atol=1e-6)
    assert whole.shape == x.shape
