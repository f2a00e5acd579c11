"""Name -> model registry, so suites and the CLI refer to models by the names the papers use.

An entry holds everything that belongs to one model: its family, native input size, the builder of its
network, the build options that builder accepts (``build_model`` rejects any other) and its training plan
(``detectors.plans``): the runner executes the plan and knows no model by name.
"""

from __future__ import annotations

import contextlib
import inspect
import logging
import sys
from collections.abc import Callable, Iterable, Iterator
from dataclasses import dataclass
from typing import Any

import torch

from detectors.base import Detector
from detectors.plans import PlanFactory, TrainingPlan, single_stage

Builder = Callable[..., Detector]
# Accepted by every builder: the evaluation settings (score threshold, NMS) are the suite's, not the model's.
COMMON_OPTIONS = frozenset({"postprocess"})


class BuildOptionError(ValueError):
    """A build option the model does not declare: an error, never silently ignored."""


@dataclass(frozen=True)
class ModelSpec:
    name: str
    family: str
    input_size: int
    builder: Builder
    options: frozenset[str] = COMMON_OPTIONS  # keyword options the builder accepts (postprocess included)
    plan_factory: PlanFactory = single_stage

    def plan(self, settings: dict[str, Any] | None = None) -> TrainingPlan:
        """The model's training plan for the recipe's plan settings (defaults when ``None``)."""
        return self.plan_factory(settings or {})

    @property
    def info(self) -> dict[str, Any]:
        """What reports need to know about the entry without importing model code (written to manifests)."""
        return {"name": self.name, "family": self.family, "input_size": self.input_size,
                "options": sorted(self.options)}


_REGISTRY: dict[str, ModelSpec] = {}


def builder_options(builder: Builder) -> frozenset[str]:
    """The keyword-only parameters of ``builder``: its declared options (a ``**kwargs`` catch-all declares
    nothing, so ``build_model`` refuses what it would swallow)."""
    params = inspect.signature(builder).parameters.values()
    return frozenset(p.name for p in params if p.kind is inspect.Parameter.KEYWORD_ONLY)


def register(name: str, *, family: str, input_size: int, options: Iterable[str] | None = None,
             plan: PlanFactory | None = None) -> Callable[[Builder], Builder]:
    """Decorator: ``@register("ssd300", family="ssd", input_size=300)`` on ``builder(num_classes, *, ...)``.

    ``options`` are the builder's accepted keyword options (default: its keyword-only parameters);
    ``plan`` is the training plan factory (default: one training stage).
    """

    def wrap(builder: Builder) -> Builder:
        if name in _REGISTRY:
            raise KeyError(f"model {name!r} registered twice")
        accepted = builder_options(builder) if options is None else frozenset(options)
        _REGISTRY[name] = ModelSpec(name, family, input_size, builder, accepted | COMMON_OPTIONS,
                                    plan or single_stage)
        return builder

    return wrap


def _ensure_loaded() -> None:
    # Importing the model modules runs their @register decorators.
    import detectors.ssd.zoo
    import detectors.yolov5  # noqa: F401


def model_names() -> list[str]:
    _ensure_loaded()
    return list(_REGISTRY)


def model_spec(name: str) -> ModelSpec:
    _ensure_loaded()
    try:
        return _REGISTRY[name]
    except KeyError:
        raise KeyError(f"unknown model {name!r}; registered: {', '.join(_REGISTRY)}") from None


def check_options(spec: ModelSpec, options: Iterable[str]) -> None:
    unknown = sorted(set(options) - spec.options)
    if unknown:
        raise BuildOptionError(f"model {spec.name!r} has no build option {unknown[0]!r}; it accepts "
                               f"{', '.join(sorted(spec.options))}")


def build_model(name: str, num_classes: int, **options: Any) -> Detector:
    """Build the network a registered model's plan starts from (for one-stage plans: the model itself).

    ``options`` must be among the model's declared options (``BuildOptionError`` otherwise).
    """
    spec = model_spec(name)
    check_options(spec, options)
    model = spec.builder(num_classes=num_classes, **options)
    model.name = name
    return model


def build_preview(name: str, num_classes: int, **options: Any) -> Detector:
    """The architecture a model's plan ends in, untrained: ``build_model`` then the plan's ``preview``.

    What listings and the FLOPs of the untrained zoo describe; identical to ``build_model`` for models whose
    plan does not change the architecture.
    """
    model = build_model(name, num_classes, **options)
    preview = model_spec(name).plan().preview
    return model if preview is None else preview(model)


def build_without_weights(name: str, num_classes: int, *, preview: bool = False, **options: Any
                          ) -> Detector:
    """The untrained network on the meta device (no weights materialised: milliseconds), or on the CPU when
    its constructor needs real values; ``preview``: the architecture its plan ends in (``build_preview``).
    For what the architecture alone decides: parameter counts, priors, FLOPs."""
    build = build_preview if preview else build_model
    with builders_quiet():
        try:
            with torch.device("meta"):
                return build(name, num_classes, **options)
        except Exception:  # a constructor needing real tensors; the CPU build raises any genuine error
            return build(name, num_classes, **options)


__all__ = ["BuildOptionError", "ModelSpec", "build_model", "build_preview", "build_without_weights",
           "model_names", "model_spec", "register"]


@contextlib.contextmanager
def builders_quiet() -> Iterator[None]:
    """Keep builders' chatter out of stdout, so JSON output (``--plan``, ``detectors list --json``) parses:
    prints go to stderr and INFO logs are muted (ultralytics logs "Overriding model.yaml nc=..." through a
    handler bound to stdout)."""
    logging.disable(logging.INFO)
    try:
        with contextlib.redirect_stdout(sys.stderr):
            yield
    finally:
        logging.disable(logging.NOTSET)
