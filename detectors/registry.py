"""Name -> builder registry, so suites and the CLI refer to models by the names the papers use."""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass

from detectors.base import Detector

Builder = Callable[..., Detector]


@dataclass(frozen=True)
class ModelSpec:
    name: str
    family: str
    input_size: int
    builder: Builder


_REGISTRY: dict[str, ModelSpec] = {}


def register(name: str, *, family: str, input_size: int) -> Callable[[Builder], Builder]:
    """Decorator: ``@register("ssd300", family="ssd", input_size=300)`` on ``builder(num_classes, **kw)``."""

    def wrap(builder: Builder) -> Builder:
        if name in _REGISTRY:
            raise KeyError(f"model {name!r} registered twice")
        _REGISTRY[name] = ModelSpec(name, family, input_size, builder)
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


def build_model(name: str, num_classes: int, **kwargs) -> Detector:
    """Build a registered model for ``num_classes`` object classes (background excluded)."""
    spec = model_spec(name)
    model = spec.builder(num_classes=num_classes, **kwargs)
    model.name = name
    return model
