"""Suite files: what a run trains, on which data, with which recipe, and how it is scored and timed.

A suite is a TOML file (``bench/suites/<name>.toml`` or any path). Loading validates every key against the
dataclasses below and rejects unknown keys (``bench.suite.schema``), so a typo fails at once with the file and
the dotted key, not after an hour of training with a silently ignored setting.

A suite may build on others (``base = "voc07.toml"``; the rules are in ``bench.suite.compose``) and override
recipe keys for a family (``[overrides.family.yolov5]``), a named group of models (``[overrides.group.NAME]``
with ``models = [...]``) or one model (``[overrides.MODEL]``), each with the ``reason`` the report shows. A
model's recipe is the shared one with every override that applies to it laid over it: family, then group,
then model (the more specific wins) and, within each, base files before the suite that includes them.
A ``[variants.NAME]`` table runs a registry model under a new name with fixed build options and its own
recipe keys (an ablation; ``bench.suite.variants``).
"""

from __future__ import annotations

import dataclasses
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Literal

from bench.errors import BenchInputError
from bench.suite.compose import exclusive_schedule_length, merge_into
from bench.suite.overrides import Override, Overrides
from bench.suite.parts import MosaicAugment, PruningRecipe, SSDAugment
from bench.suite.schema import from_table
from bench.suite.settings import EvaluationSettings, SlicingSettings, SpeedSettings
from bench.suite.variants import Variant

__all__ = ["Budget", "DataConfig", "EvaluationSettings", "MosaicAugment", "Override", "Overrides",
           "PruningRecipe", "Recipe", "SSDAugment", "SlicingSettings", "SpeedSettings", "SplitNames", "Suite",
           "SyntheticData", "Variant", "bundled_suites", "load_suite", "suite_path"]

SUITES_DIR = Path(__file__).resolve().parents[1] / "suites"
FORMATS = ("coco", "voc", "yolo", "kitti", "tt100k")


@dataclass(frozen=True)
class SplitNames:
    """Split names for one format (e.g. COCO ``train2017``, VOC ``VOC2007:trainval+VOC2012:trainval``)."""

    train: str
    test: str


@dataclass(frozen=True)
class SyntheticData:
    """The generated embedded default, used when the suite has no root and no ``--data`` is given."""

    images: int = 240
    seed: int = 0
    image_size: int = 320
    test_images: int | None = None  # evaluate on the first N synthetic test images (not applied to --data)


@dataclass(frozen=True)
class DataConfig:
    format: Literal["coco", "voc", "yolo", "kitti", "tt100k"] = "coco"
    root: str | None = None  # None: the synthetic set (unless ``required``)
    env: str | None = None  # environment variable that may name the root (e.g. BENCH_VOC_ROOT)
    required: bool = False  # a real data set is mandatory (the paper suites): no synthetic fallback
    where: str = ""  # where the data set comes from, shown when it is missing
    classes: list[str] = field(default_factory=list)  # class order for VOC/YOLO (empty: the reader's default)
    test_images: int | None = None  # evaluate on the first N test images only (deterministic subset)
    synthetic: SyntheticData = field(default_factory=SyntheticData)
    splits: dict[str, SplitNames] = field(default_factory=dict)  # format -> split names
    train_images: int | None = None  # the training split's documented size: --plan before the data is read
    # target class -> the source classes it merges (KITTI's 8 types into DF-SSD's 3); empty: no merge
    class_map: dict[str, list[str]] = field(default_factory=dict)
    strict: bool = False  # quality problems (bench.data.health) are errors, as with --strict


@dataclass(frozen=True)
class Recipe:
    """The training recipe every model shares (per-model overrides replace single keys)."""

    iterations: int | None = None
    epochs: int | None = None
    batch_size: int = 32
    optimizer: Literal["sgd", "adamw"] = "sgd"
    lr: float = 1e-3
    momentum: float = 0.9
    weight_decay: float = 5e-4
    warmup_iterations: int = 500
    warmup_factor: float = 1 / 3
    schedule: Literal["step", "cosine", "linear"] = "step"  # linear: ultralytics' per-epoch lf
    milestones: list[float] = field(default_factory=lambda: [2 / 3, 5 / 6])  # fractions of the schedule
    gamma: float = 0.1
    min_lr_fraction: float = 0.01  # cosine floor, as a fraction of lr
    input_size: dict[str, int] = field(default_factory=lambda: {"yolov5": 320})  # family -> side
    augment: dict[str, str] = field(default_factory=lambda: {"ssd": "ssd", "yolov5": "yolo"})
    mosaic: MosaicAugment = field(default_factory=MosaicAugment)  # parameters of the "mosaic" policy
    ssd_augment: SSDAugment = field(default_factory=SSDAugment)  # parameters of the "ssd" policy
    precision: Literal["fp32", "amp"] = "amp"  # amp applies on CUDA only; CPU always trains in fp32
    seed: int = 0
    grad_clip: float | None = None  # max global gradient norm
    ema_decay: float | None = None
    max_train_seconds: float | None = None  # equal-compute cap, identical for every model
    pretrained_backbone: bool = False
    prior_set: Literal["voc", "coco"] = "coco"
    workers: int = 0
    log_every: int = 10
    checkpoint_every: int = 1000  # iterations (also at every epoch end)
    checkpoint_minutes: float = 10.0
    pruning: PruningRecipe = field(default_factory=PruningRecipe)
    amp_dtype: Literal["float16", "bfloat16"] = "float16"
    """Autocast dtype under ``precision = "amp"``: bfloat16 needs no loss scaling (GPUs that support it)."""
    # The YOLOv5 paper recipe (ultralytics/yolov5 train.py); the defaults leave every other recipe unchanged.
    nominal_batch: int | None = None
    """train.py's ``nbs``: gradients of ``accumulate = max(round(nominal_batch / batch_size), 1)`` batches
    are summed per optimizer step and ``weight_decay`` is scaled by
    ``batch_size * accumulate / nominal_batch``."""
    loss_reduction: Literal["mean", "sum"] = "mean"
    """``"sum"``: the detector's batch-mean loss times the global batch size, as train.py's ``loss * bs``
    (times ``WORLD_SIZE`` under DDP, i.e. the global batch)."""
    nesterov: bool = False
    """SGD with Nesterov momentum (train.py's ``smart_optimizer`` uses it)."""
    warmup_epochs: float | None = None
    """train.py's warm-up: ``nw = max(round(warmup_epochs * iterations_per_epoch), 100)`` iterations, lr,
    momentum and accumulation interpolated with ``np.interp`` (replaces ``warmup_iterations``/``_factor``)."""
    warmup_bias_lr: float | None = None
    """During train.py's warm-up the bias group's lr falls from this to ``lr * lf(epoch)`` (others: 0 up)."""
    warmup_momentum: float | None = None
    """During train.py's warm-up the momentum rises from this to ``momentum``."""
    ema_tau: float | None = None
    """train.py's ``ModelEMA``: decay ``ema_decay * (1 - exp(-updates / ema_tau))``, one update per optimizer
    step (needs ``ema_decay``)."""
    eval_images: int | None = None
    """Score this model on the first N of the run's test images only (a smoke budget's evaluation: the
    pipeline runs, on less work); ``None``: all of them. The paired comparisons skip a model scored on other
    images than the reference (``bench.runner.comparisons``)."""
    autoanchor: bool = True
    """Fit the model's anchors to the training boxes before training (``Detector.fit_to_training_boxes``:
    YOLOv5's AutoAnchor, train.py's default; ``false`` is its ``--noautoanchor``); models without anchors to
    fit ignore it."""

    def __post_init__(self) -> None:
        if (self.iterations is None) == (self.epochs is None):
            raise ValueError("give exactly one of 'iterations' and 'epochs'")
        if self.iterations is not None and self.iterations < 0:
            raise ValueError("'iterations' must be >= 0 (0: evaluated at initialisation, not trained)")
        if self.eval_images is not None and self.eval_images < 1:
            raise ValueError("'eval_images' must be >= 1")
        if self.batch_size < 1 or self.lr <= 0:
            raise ValueError("'batch_size' must be >= 1 and 'lr' > 0")
        if any(not 0 < m < 1 for m in self.milestones):
            raise ValueError("'milestones' are fractions of the schedule in (0, 1)")
        if self.nominal_batch is not None and self.nominal_batch < 1:
            raise ValueError("'nominal_batch' must be >= 1")
        if self.ema_tau is not None and (self.ema_decay is None or self.ema_tau <= 0):
            raise ValueError("'ema_tau' needs 'ema_decay' and must be > 0")
        if self.warmup_epochs is not None and self.warmup_epochs < 0:
            raise ValueError("'warmup_epochs' must be >= 0")


@dataclass(frozen=True)
class Budget:
    """How much each model trains, and what the report says about it.

    ``rule = "schedule"``: the recipe's iterations or epochs, per model after overrides. ``"equal_compute"``:
    every model gets the same training compute, ``train_flops``, its iterations being ``train_flops`` over its
    training FLOPs per iteration (3 x forward FLOPs at its input size x images per iteration), at least
    ``min_iterations`` and at most its recipe's length; ``bench.plan`` computes them before training, from
    the architecture alone, so they do not depend on the machine or its load.
    """

    description: str = ""  # one human sentence for the report banner
    paper_budget: bool = False  # the papers' schedule length (accuracies are comparable with theirs)
    rule: Literal["schedule", "equal_compute"] = "schedule"
    train_flops: float | None = None
    min_iterations: int = 1

    def __post_init__(self) -> None:
        if self.rule == "equal_compute" and not (self.train_flops and self.train_flops > 0):
            raise ValueError("rule 'equal_compute' needs 'train_flops' > 0")
        if self.min_iterations < 1:
            raise ValueError("'min_iterations' must be >= 1")


Protocol = Literal["identical", "paper", "custom"]


@dataclass(frozen=True)
class Suite:
    name: str
    description: str
    models: list[str]
    data: DataConfig
    recipe: Recipe
    evaluation: EvaluationSettings
    speed: SpeedSettings
    budget: Budget = field(default_factory=Budget)
    protocol: Protocol = "custom"  # "identical": the fair comparison; "paper": each model as its paper says
    overrides: Overrides = field(default_factory=Overrides)
    variants: dict[str, Variant] = field(default_factory=dict)  # [variants.NAME] (bench.suite.variants)
    path: Path | None = None
    sha256: str = ""
    files: list[str] = field(default_factory=list)  # this suite and its bases, bases first

    @property
    def budget_description(self) -> str:
        return self.budget.description

    @property
    def paper_budget(self) -> bool:
        return self.budget.paper_budget

    def base_model(self, model: str) -> str:
        """The registry model behind ``model``: a variant's base, else ``model`` itself."""
        variant = self.variants.get(model)
        return model if variant is None else variant.model

    def overrides_for(self, model: str, family: str | None = None) -> list[Override]:
        """The overrides of ``model`` in the order they apply; a variant's are its base model's, then its own
        recipe keys, then ``[overrides.VARIANT]``."""
        return self.overrides.applying_to(model, _family_of(model) if family is None else family,
                                          base=self.base_model(model))

    def recipe_for(self, model: str, family: str | None = None) -> Recipe:
        """The effective recipe of one model: the shared recipe with its overrides laid over it in order.

        ``family`` defaults to the registry's (``detectors.model_spec``), looked up only if a family override
        exists, so loading a suite never imports the models.
        """
        if family is None and any(o.kind == "family" for o in self.overrides):
            family = _family_of(model)
        layers = self.overrides.applying_to(model, family, base=self.base_model(model))
        if not layers:
            return self.recipe
        merged = as_dict(self.recipe)
        for layer in layers:
            merge_into(merged, layer.values)
            exclusive_schedule_length(merged, layer.values)
        where = ", ".join(f"overrides.{o.label}" for o in layers)
        try:
            return from_table(Recipe, merged, self.path or Path(self.name), "recipe")
        except BenchInputError as err:
            raise BenchInputError(self.path, f"the recipe of {model} ({where}) is invalid: {err.detail}",
                                  field=err.field) from None

    def to_dict(self) -> dict[str, Any]:
        out = dataclasses.asdict(self)
        out["path"] = None if self.path is None else str(self.path)
        out["budget_description"], out["paper_budget"] = self.budget.description, self.budget.paper_budget
        return out


def _family_of(model: str) -> str | None:
    from detectors.registry import model_spec

    try:
        return model_spec(model).family
    except KeyError:
        return None


def as_dict(value: Any) -> dict[str, Any]:
    """A dataclass as plain nested dicts (the form override layers are merged into)."""
    return dataclasses.asdict(value)


def suite_path(name_or_path: str) -> Path:
    """A bundled suite name (``coco_small``) or a path to a TOML file."""
    candidate = Path(name_or_path)
    if candidate.suffix == ".toml" or candidate.exists():
        return candidate
    return SUITES_DIR / f"{name_or_path}.toml"


def bundled_suites() -> list[str]:
    """The suites in ``bench/suites/`` (``common/`` holds shared fragments, not suites)."""
    return sorted(p.stem for p in SUITES_DIR.glob("*.toml"))


def load_suite(name_or_path: str) -> Suite:
    """Load, compose and validate a suite (``bench.suite.load``; the loader needs the dataclasses above)."""
    from bench.suite.load import load

    return load(name_or_path)
