"""Suite variants: a registry model under a new name with fixed build options and its own recipe keys.

An ablation (seed 003 Tables 3.1-3.3) trains one model several times, each with one switch changed. A
``[variants.NAME]`` table names the registry ``model``, the ``reason`` the report shows, a ``build`` table of
the model's declared build options (``detectors.registry.ModelSpec.options``; unknown ones are a named
error), optionally ``learned_priors = { shapes = K, seed = S }`` (prior shapes learned by k-means on the
training boxes when the model is built) and any recipe keys, which apply to the variant only, after every
override of its base model. The suite lists the variant in ``models`` by ``NAME``; it runs in its own model
directory like any model.

Loading the suite registers each variant in the model registry under its name (the runner, the plan and the
manifest then resolve it as any model): its builder is the base model's with ``build`` bound, its options
the base's less the bound ones, its training plan the base's. Names are global to a process: a second
suite may define the same variant again only identically.
"""

from __future__ import annotations

import json
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any

from bench.errors import BenchInputError
from bench.suite.schema import as_table, convert

if TYPE_CHECKING:
    from bench.data.resolve import ResolvedData
    from bench.suite.spec import Suite
    from detectors.registry import ModelSpec

VARIANT_KEYS = frozenset({"model", "reason", "build", "learned_priors"})
# Build options the suite sets elsewhere: a variant states them as recipe keys (or not at all).
NOT_BUILD_KEYS = {"postprocess": "the suite's [evaluation] sets it",
                  "pretrained_backbone": "it is a recipe key: set pretrained_backbone in the variant itself",
                  "prior_set": "it is a recipe key: set prior_set in the variant itself",
                  "prior_shapes": "learned shapes come from learned_priors = { shapes, seed }"}


@dataclass(frozen=True)
class LearnedPriors:
    """``prior_shapes = kmeans_prior_shapes(train_wh, shapes, seed=seed)`` (``detectors.ssd.priors``)."""

    shapes: int
    seed: int = 0

    def __post_init__(self) -> None:
        if self.shapes < 1:
            raise ValueError("'shapes' must be >= 1")


@dataclass(frozen=True)
class Variant:
    name: str
    model: str  # the registry model it varies
    reason: str
    build: dict[str, Any] = field(default_factory=dict)
    learned_priors: LearnedPriors | None = None
    recipe: dict[str, Any] = field(default_factory=dict)  # recipe keys as the suite gives them
    source: str = ""  # the suite file that declares it

    def definition(self) -> str:
        """What makes two declarations of one name the same model (the reason and file aside)."""
        learned = None if self.learned_priors is None else vars(self.learned_priors)
        return json.dumps([self.model, self.build, learned, self.recipe], sort_keys=True)

    def note(self) -> str:
        parts = [f"suite variant {self.name!r} of {self.model}: {self.reason}"]
        if self.build:
            parts.append("build " + ", ".join(f"{k} = {json.dumps(v)}" for k, v in self.build.items()))
        if self.learned_priors is not None:
            parts.append(f"{self.learned_priors.shapes} prior shapes learned by k-means (1 - IoU, seed "
                         f"{self.learned_priors.seed}) on the training boxes")
        if self.recipe:
            parts.append("recipe " + ", ".join(f"{k} = {json.dumps(v)}" for k, v in self.recipe.items()))
        return "; ".join(parts)

    def to_dict(self) -> dict[str, Any]:
        return {"model": self.model, "reason": self.reason, "build": self.build,
                "learned_priors": None if self.learned_priors is None else vars(self.learned_priors),
                "recipe": self.recipe, "source": self.source}


def parse_variants(table: Any, path: Path, source_of: Any = None) -> dict[str, Variant]:
    """The ``[variants.*]`` tables of a (merged) suite; recipe keys are validated by the caller."""
    out = {}
    for name, raw in as_table(table, path, "variants").items():
        key = f"variants.{name}"
        source = Path(source_of(key, path)) if source_of is not None else path
        values = dict(as_table(raw, source, key))
        model = values.pop("model", None)
        if not isinstance(model, str) or not model:
            raise BenchInputError(source, "a variant needs 'model', the registry model it varies",
                                  field=f"{key}.model")
        reason = values.pop("reason", None)
        if not isinstance(reason, str) or not reason.strip():
            raise BenchInputError(source, "every variant needs a non-empty 'reason' (the paper it follows)",
                                  field=f"{key}.reason")
        build = dict(as_table(values.pop("build", {}), source, f"{key}.build"))
        learned = values.pop("learned_priors", None)
        learned_priors = None if learned is None else convert(learned, LearnedPriors, source,
                                                               f"{key}.learned_priors")
        out[name] = Variant(name, model, reason.strip(), build, learned_priors, values,
                            str(source.resolve()))
    return out


_DEFINED: dict[str, Variant] = {}  # variants this process registered


def register_variants(suite: Suite) -> None:
    """Register every variant of ``suite`` in the model registry (see the module docstring)."""
    from detectors.registry import model_names, model_spec, register

    for variant in suite.variants.values():
        path, key = Path(variant.source or suite.path or suite.name), f"variants.{variant.name}"
        earlier = _DEFINED.get(variant.name)
        if earlier is not None:
            if earlier.definition() != variant.definition():
                raise BenchInputError(path, f"variant {variant.name!r} is already defined differently in "
                                            f"this process (by {earlier.source}); variant names are global",
                                      field=key)
            continue
        if variant.name in model_names():
            raise BenchInputError(path, f"variant name {variant.name!r} is a registered model; choose "
                                        f"another", field=key)
        if variant.model in _DEFINED or variant.model not in model_names():
            raise BenchInputError(path, f"variant {variant.name!r} names no registered model "
                                        f"{variant.model!r} (a variant varies a registry model, not another "
                                        f"variant)", field=f"{key}.model")
        base = model_spec(variant.model)
        _check_build(variant, base, path, key)
        input_size = variant.build.get("input_size", base.input_size)
        register(variant.name, family=base.family, input_size=int(input_size),
                 options=base.options - set(variant.build), plan=base.plan_factory)(_builder(base, variant))
        _DEFINED[variant.name] = variant


def _check_build(variant: Variant, base: ModelSpec, path: Path, key: str) -> None:
    """Build options the base declares, with values its builder accepts (built on the meta device)."""
    import torch

    declared = sorted(base.options - set(NOT_BUILD_KEYS))
    for option in variant.build:
        if option in NOT_BUILD_KEYS:
            raise BenchInputError(path, f"{option!r} is not a variant build option: {NOT_BUILD_KEYS[option]}",
                                  field=f"{key}.build.{option}")
        if option not in base.options:
            raise BenchInputError(path, f"model {base.name!r} has no build option {option!r}; it declares "
                                        f"{', '.join(declared) or 'none'}", field=f"{key}.build.{option}")
    if variant.learned_priors is not None and "prior_shapes" not in base.options:
        raise BenchInputError(path, f"model {base.name!r} takes no learned prior shapes (no 'prior_shapes' "
                                    f"build option)", field=f"{key}.learned_priors")
    try:
        with torch.device("meta"):  # no weights are materialised: milliseconds
            base.builder(num_classes=2, **variant.build)
        return
    except Exception:  # a bad value, or a constructor needing real tensors: the CPU build tells them apart
        pass
    try:
        base.builder(num_classes=2, **variant.build)
    except (ValueError, TypeError, KeyError) as err:
        raise BenchInputError(path, f"variant {variant.name!r}: {err}", field=f"{key}.build") from None


def _builder(base: ModelSpec, variant: Variant) -> Any:
    def build(num_classes: int, **options: Any) -> Any:
        model = base.builder(num_classes=num_classes, **variant.build, **options)
        model.notes.append(variant.note())
        return model

    return build


def learned_prior_options(suite: Suite, name: str, data: ResolvedData | None) -> dict[str, Any]:
    """``{"prior_shapes": ...}`` for a variant with ``learned_priors``, from the training split's boxes;
    empty for every other model. Deterministic (seeded k-means), so every rank and every resumed run builds
    the same head."""
    variant = suite.variants.get(name)
    if variant is None or variant.learned_priors is None:
        return {}
    if data is None:
        raise ValueError(f"{name}: learned priors need the training data")
    from detectors.ssd.priors import kmeans_prior_shapes

    shapes = kmeans_prior_shapes(training_box_shapes(data.train.records), variant.learned_priors.shapes,
                                 seed=variant.learned_priors.seed)
    return {"prior_shapes": [(float(w), float(h)) for w, h in shapes]}


def training_box_shapes(records: Any) -> Any:
    """``(N, 2)`` widths and heights of the non-crowd boxes, clipped to the image and normalised by its width
    and height: their size at the network input, since SSD stretches every image to its square input."""
    import numpy as np

    rows = []
    for r in records:
        boxes = r.boxes[~r.iscrowd]
        if not len(boxes):
            continue
        x = np.clip(boxes[:, [0, 2]], 0, r.width)
        y = np.clip(boxes[:, [1, 3]], 0, r.height)
        rows.append(np.stack([(x[:, 1] - x[:, 0]) / r.width, (y[:, 1] - y[:, 0]) / r.height], axis=1))
    return np.concatenate(rows) if rows else np.zeros((0, 2))
