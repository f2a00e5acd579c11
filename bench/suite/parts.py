"""Nested tables of a suite's recipe: the ``"mosaic"`` and ``"ssd"`` augmentation parameters and the network
slimming settings of MFSSD-Pruned's plan (re-exported by ``bench.suite.spec``)."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Literal


@dataclass(frozen=True)
class PruningRecipe:
    """Network slimming for ``mfssd300_pruned`` (seed 001 §II.C, Fig. 3): sparse training, a cut by the BN
    scale criterion, fine-tuning; its iterations split into sparse training and fine-tuning.

    ``mode = "criterion"`` (the paper's): cut the channels with the smallest |gamma|, ranked globally over
    every prunable channel (every channel with a BN scale; the prediction heads are never cut). ``ratio`` is
    the share of those channels cut ("a suitable compression ratio (or pruning rate)"); ``threshold``, when
    given, replaces it (every channel with |gamma| below it goes). The parameter count is then measured.
    ``mode = "count_target"``: the global ratio bisected to land on ``target_params`` (Table I's count by
    default); the count is then the input, not a result, and the report says so. Each mode reads only its
    own keys (as the ``mosaic`` table matters only under the mosaic policy), so a variant can switch mode
    without unsetting the other's; the plan's notes say which one cut.

    The default ratio, 0.2: the paper gives none. A global ranking does not cut every layer alike, so the
    parameters kept are not (1 - ratio)^2 (the heads and unprunable layers stay whole); with the scales of
    no layer favoured (i.i.d. U(0, 1) stand-in scales, as in the plan's preview) 20 % of MFSSD-BN's 7,296
    prunable channels leave 22.9-23.0M of its 33,713,888 parameters (67.9-68.2 % over two seeds), next to
    Table I's 67.6 % (22,785,625; about 0.205 would hit it). After real sparse training the cut falls where
    the L1 term shrank the scales, so the count is an outcome that may land elsewhere.

    ``rounds``: Fig. 3 repeats sparse -> prune -> fine-tune while the accuracy holds. The runner scores a
    model only once, after its last stage, so no stage can test the accuracy between rounds: one round only
    (``detectors.ssd.pruning.accuracy_holds`` is the test a multi-round plan would use).
    """

    sparsity: float = 1e-4  # L1 penalty on BN scale factors during sparse training
    mode: Literal["criterion", "count_target"] = "criterion"
    ratio: float = 0.2  # criterion mode: share of the prunable channels cut (smallest |gamma|, global)
    threshold: float | None = None  # criterion mode: cut |gamma| < threshold instead of a ratio
    target_params: int | None = None  # count-target mode; None: Table I's reduction for any class count
    finetune_fraction: float = 0.5  # share of the model's iterations (or time cap) spent fine-tuning
    rounds: int = 1

    def __post_init__(self) -> None:
        if not 0 <= self.ratio < 1:
            raise ValueError(f"'ratio' is the share of channels cut, in [0, 1), got {self.ratio}")
        if self.threshold is not None and self.threshold <= 0:
            raise ValueError(f"'threshold' is a |gamma| bound and must be > 0, got {self.threshold}")
        if not 0 < self.finetune_fraction < 1:
            raise ValueError("'finetune_fraction' must be in (0, 1)")
        if self.rounds != 1:
            raise ValueError("'rounds' must be 1: the runner scores a model only after its last stage, so no "
                             "stage can test whether the accuracy held after a round (seed 001 Fig. 3)")


@dataclass(frozen=True)
class MosaicAugment:
    """The ``"mosaic"`` augmentation policy (``bench.data.mosaic``): ultralytics' mosaic, affine, HSV, flips.

    The defaults are yolov5's ``data/hyps/hyp.scratch-low.yaml`` (v6.2), the hyperparameters its ``train.py``
    uses when given no ``--hyp``; ultralytics 8 has the same values and also closes mosaic for its last 10
    epochs (``close_mosaic``), which yolov5's ``train.py`` never does.
    """

    mosaic: float = 1.0  # probability of a 4-image mosaic (else letterbox)
    hsv_h: float = 0.015  # hue gain, fraction of the hue circle
    hsv_s: float = 0.7
    hsv_v: float = 0.4
    degrees: float = 0.0
    translate: float = 0.1  # fraction of the image side
    scale: float = 0.5  # zoom gain 1 +- scale
    shear: float = 0.0
    perspective: float = 0.0
    flipud: float = 0.0
    fliplr: float = 0.5
    close_mosaic: int = 0  # final epochs trained without mosaic


@dataclass(frozen=True)
class SSDAugment:
    """Parameters of the ``"ssd"`` augmentation policy a suite may change (seed 003 §4.3, Table 3.3).

    The zoom-out ("expansion") places the image on a canvas up to ``expand_max_ratio`` times its side (the
    text: 16x its area, so 4) with probability ``expand_p``; ``expand_p = 0`` is SSD without zoom-out. The
    defaults are ``bench.data.transforms.SSDAugmentConfig``'s; ``augment = { ssd = "none" }`` switches the
    whole augmentation off (Table 3.1's first column).
    """

    expand_p: float = 0.5
    expand_max_ratio: float = 4.0

    def __post_init__(self) -> None:
        if not 0 <= self.expand_p <= 1:
            raise ValueError(f"'expand_p' is a probability, got {self.expand_p}")
        if self.expand_max_ratio < 1:
            raise ValueError(f"'expand_max_ratio' is a canvas side over the image side, >= 1, got "
                             f"{self.expand_max_ratio}")
