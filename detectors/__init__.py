"""Detector adapters behind one interface (``detectors.base.Detector``) and a registry of names."""

from detectors.base import (
    Detections,
    Detector,
    ImageMeta,
    InputSpec,
    ModelInfo,
    PostprocessConfig,
    Target,
)
from detectors.registry import build_model, model_names, model_spec, register

__all__ = [
    "Detections",
    "Detector",
    "ImageMeta",
    "InputSpec",
    "ModelInfo",
    "PostprocessConfig",
    "Target",
    "build_model",
    "model_names",
    "model_spec",
    "register",
]
