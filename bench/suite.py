"""Suite files: what a run trains, on which data, with which recipe, and how it is scored and timed.

A suite is a TOML file (``bench/suites/<name>.toml`` or any path). Loading validates every key against the
dataclasses below and rejects unknown keys, so a typo fails at once with the file and the dotted key, not
after an hour of training with a silently ignored setting.
"""

from __future__ import annotations

import dataclasses
import hashlib
import sys
import types
import typing
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Literal

from bench.errors import BenchInputError

if sys.version_info >= (3, 11):
    import tomllib
else:
    import tomli as tomllib

SUITES_DIR = Path(__file__).resolve().parent / "suites"
FORMATS = ("coco", "voc", "yolo")


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
    format: Literal["coco", "voc", "yolo"] = "coco"
    root: str | None = None  # None: the synthetic set (unless ``required``)
    env: str | None = None  # environment variable that may name the root (e.g. BENCH_VOC_ROOT)
    required: bool = False  # a real data set is mandatory (the paper suites): no synthetic fallback
    where: str = ""  # where the data set comes from, shown when it is missing
    classes: list[str] = field(default_factory=list)  # class order for VOC/YOLO (empty: the reader's default)
    test_images: int | None = None  # evaluate on the first N test images only (deterministic subset)
    synthetic: SyntheticData = field(default_factory=SyntheticData)
    splits: dict[str, SplitNames] = field(default_factory=dict)  # format -> split names


@dataclass(frozen=True)
class PruningRecipe:
    """Network slimming for ``mfssd300_pruned``: its iterations split into sparse training and fine-tuning."""

    sparsity: float = 1e-4  # L1 penalty on BN scale factors during sparse training
    target_params: int | None = None  # None: Table I's reduction (33.71M -> 22.79M) for any class count
    finetune_fraction: float = 0.5  # share of the model's iterations (or time cap) spent fine-tuning


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
    schedule: Literal["step", "cosine"] = "step"
    milestones: list[float] = field(default_factory=lambda: [2 / 3, 5 / 6])  # fractions of the schedule
    gamma: float = 0.1
    min_lr_fraction: float = 0.01  # cosine floor, as a fraction of lr
    input_size: dict[str, int] = field(default_factory=lambda: {"yolov5": 320})  # family -> side
    augment: dict[str, str] = field(default_factory=lambda: {"ssd": "ssd", "yolov5": "yolo"})
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

    def __post_init__(self) -> None:
        if (self.iterations is None) == (self.epochs is None):
            raise ValueError("give exactly one of 'iterations' and 'epochs'")
        if self.batch_size < 1 or self.lr <= 0:
            raise ValueError("'batch_size' must be >= 1 and 'lr' > 0")
        if any(not 0 < m < 1 for m in self.milestones):
            raise ValueError("'milestones' are fractions of the schedule in (0, 1)")


@dataclass(frozen=True)
class Override:
    """Recipe keys replaced for one model, with the paper's reason (shown in the report)."""

    reason: str
    values: dict[str, Any]


@dataclass(frozen=True)
class EvaluationProtocol:
    score_thresh: float = 0.01
    nms_iou: float = 0.45
    max_detections: int = 100
    pre_nms_topk: int = 400
    batch_size: int = 8


@dataclass(frozen=True)
class SpeedProtocol:
    """``bench.speed.SpeedConfig`` plus which protocols to run; CPU suites use small counts."""

    protocols: list[str] = field(default_factory=lambda: ["model", "e2e", "throughput"])
    warmup: int = 50
    iterations: int = 500
    max_seconds: float = 30.0  # timed seconds after which a measurement stops early
    throughput_batch: int = 32
    fp16: bool = True  # also time fp16 on CUDA
    fuse: bool = True  # fold conv+BN before timing
    sample_images: int = 8


@dataclass(frozen=True)
class Suite:
    name: str
    description: str
    models: list[str]
    data: DataConfig
    recipe: Recipe
    evaluation: EvaluationProtocol
    speed: SpeedProtocol
    budget_description: str  # one human sentence for the report banner
    paper_budget: bool
    overrides: dict[str, Override] = field(default_factory=dict)
    path: Path | None = None
    sha256: str = ""

    def recipe_for(self, model: str) -> Recipe:
        """The effective recipe of one model: the shared recipe with its override keys replaced."""
        override = self.overrides.get(model)
        return self.recipe if override is None else dataclasses.replace(self.recipe, **override.values)

    def to_dict(self) -> dict[str, Any]:
        out = dataclasses.asdict(self)
        out["path"] = None if self.path is None else str(self.path)
        return out


def suite_path(name_or_path: str) -> Path:
    """A bundled suite name (``coco_small``) or a path to a TOML file."""
    candidate = Path(name_or_path)
    if candidate.suffix == ".toml" or candidate.exists():
        return candidate
    return SUITES_DIR / f"{name_or_path}.toml"


def bundled_suites() -> list[str]:
    return sorted(p.stem for p in SUITES_DIR.glob("*.toml"))


def load_suite(name_or_path: str) -> Suite:
    path = suite_path(name_or_path)
    if not path.is_file():
        raise BenchInputError(path, f"no such suite; bundled suites: {', '.join(bundled_suites())}")
    raw_bytes = path.read_bytes()
    try:
        raw = tomllib.loads(raw_bytes.decode("utf-8"))
    except (tomllib.TOMLDecodeError, UnicodeDecodeError) as err:
        raise BenchInputError(path, f"not valid TOML: {err}") from None
    return parse_suite(raw, path, hashlib.sha256(raw_bytes).hexdigest())


def parse_suite(raw: dict[str, Any], path: Path, sha256: str = "") -> Suite:
    """Validate a parsed TOML document; every error names ``path`` and the dotted key."""
    top = dict(raw)
    known = {"name", "description", "models", "data", "recipe", "evaluation", "speed", "budget", "overrides"}
    _reject_unknown(top, known, path, "")
    models = _convert(top.get("models"), list[str], path, "models")
    if not models:
        raise BenchInputError(path, "a suite needs at least one model", field="models")
    budget = _as_table(top.get("budget", {}), path, "budget")
    _reject_unknown(budget, {"description", "paper_budget"}, path, "budget.")
    recipe = _build(Recipe, top.get("recipe", {}), path, "recipe")
    overrides = {name: _override(recipe, name, table, path)
                 for name, table in _as_table(top.get("overrides", {}), path, "overrides").items()}
    return Suite(
        name=_convert(top.get("name", path.stem), str, path, "name"),
        description=_convert(top.get("description", ""), str, path, "description"),
        models=models,
        data=_build(DataConfig, top.get("data", {}), path, "data"),
        recipe=recipe,
        evaluation=_build(EvaluationProtocol, top.get("evaluation", {}), path, "evaluation"),
        speed=_build(SpeedProtocol, top.get("speed", {}), path, "speed"),
        budget_description=_convert(budget.get("description", ""), str, path, "budget.description"),
        paper_budget=_convert(budget.get("paper_budget", False), bool, path, "budget.paper_budget"),
        overrides=overrides,
        path=path.resolve(),
        sha256=sha256,
    )


def _override(recipe: Recipe, model: str, table: Any, path: Path) -> Override:
    key = f"overrides.{model}"
    values = dict(_as_table(table, path, key))
    reason = values.pop("reason", None)
    if not isinstance(reason, str) or not reason.strip():
        raise BenchInputError(path, "every override needs a non-empty 'reason' (the paper it follows)",
                              field=f"{key}.reason")
    # Validate the overridden keys exactly as the shared recipe's, then keep only what was given.
    merged = {f.name: getattr(recipe, f.name) for f in dataclasses.fields(Recipe)}
    merged = {k: dataclasses.asdict(v) if dataclasses.is_dataclass(v) else v for k, v in merged.items()}
    merged.update(values)
    effective = _build(Recipe, merged, path, key)
    return Override(reason, {k: getattr(effective, k) for k in values})


def _build(cls: type, value: Any, path: Path, key: str) -> Any:
    """Instantiate dataclass ``cls`` from a TOML table, converting nested tables and checking types."""
    table = _as_table(value, path, key)
    hints = typing.get_type_hints(cls)
    names = {f.name for f in dataclasses.fields(cls)}
    _reject_unknown(table, names, path, f"{key}.")
    kwargs = {name: _convert(v, hints[name], path, f"{key}.{name}") for name, v in table.items()}
    try:
        return cls(**kwargs)
    except ValueError as err:
        raise BenchInputError(path, str(err), field=key) from None


def _convert(value: Any, hint: Any, path: Path, key: str) -> Any:
    origin, args = typing.get_origin(hint), typing.get_args(hint)
    if dataclasses.is_dataclass(hint):
        return _build(hint, value, path, key)
    if origin in (typing.Union, types.UnionType):
        if value is None and type(None) in args:
            return None
        inner = [a for a in args if a is not type(None)]
        return _convert(value, inner[0], path, key)
    if origin is Literal:
        if value not in args:
            choices = ", ".join(map(repr, args))
            raise BenchInputError(path, f"must be one of {choices}, got {value!r}", field=key)
        return value
    if origin is list:
        if not isinstance(value, list):
            raise BenchInputError(path, f"must be a list, got {type(value).__name__}", field=key)
        return [_convert(v, args[0], path, f"{key}[{i}]") for i, v in enumerate(value)]
    if origin is dict:
        return {k: _convert(v, args[1], path, f"{key}.{k}") for k, v in _as_table(value, path, key).items()}
    if hint is float and isinstance(value, int) and not isinstance(value, bool):
        return float(value)
    if hint is Any:
        return value
    if not isinstance(value, hint) or (hint is int and isinstance(value, bool)):
        raise BenchInputError(path, f"must be {hint.__name__}, got {value!r}", field=key)
    return value


def _as_table(value: Any, path: Path, key: str) -> dict[str, Any]:
    if not isinstance(value, dict):
        raise BenchInputError(path, f"must be a table, got {type(value).__name__}", field=key)
    return value


def _reject_unknown(table: dict[str, Any], known: set[str], path: Path, prefix: str) -> None:
    unknown = sorted(set(table) - known)
    if unknown:
        raise BenchInputError(path, f"unknown key (known: {', '.join(sorted(known))})",
                              field=f"{prefix}{unknown[0]}")
