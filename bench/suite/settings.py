"""A suite's ``[evaluation]`` (with its ``slicing`` table) and ``[speed]`` sections.

Each extends the config its consumer takes, so every shared field has one definition: ``EvaluationSettings``
is a ``detectors.base.PostprocessConfig`` (what every model is scored with) plus the evaluation's own keys,
``SpeedSettings`` a ``bench.speed.config.SpeedConfig`` plus the protocols to run.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Literal

from bench.speed.config import SpeedConfig
from detectors.base import PostprocessConfig


@dataclass(frozen=True)
class SlicingSettings:
    """Sliced (SAHI-style) inference beside full-image inference on the test split (``bench.slicing``)."""

    enabled: bool = False
    slice_size: int = 512
    overlap: float = 0.2
    full_image: bool = True  # also a full-image pass, merged with the tiles (large objects)
    merge: Literal["nms", "nmm"] = "nms"
    protocol: str = "aitod"  # the size protocol whose buckets the comparison reports
    images: int | None = None  # the first N test images only (None: all)


@dataclass(frozen=True)
class EvaluationSettings(PostprocessConfig):
    """The post-processing every model is scored with (``PostprocessConfig``'s fields, one definition) plus
    the evaluation's batch and metric settings."""

    max_detections: int = 100  # COCO's maxDets; the model-side default (200) is SSD's own
    batch_size: int = 8
    # Small-object metrics (bench.metrics.small_objects): size-bucket protocols, their maxDets overrides,
    # bootstrap resamples of the images (0: no intervals; one seed for every model, so pairs compare).
    size_protocols: list[str] = field(default_factory=lambda: ["coco", "aitod"])
    max_dets: dict[str, list[int]] = field(default_factory=dict)  # protocol -> maxDets, e.g. aitod = [1500]
    bootstrap: int = 100
    slicing: SlicingSettings = field(default_factory=SlicingSettings)

    def __post_init__(self) -> None:
        from bench.metrics.protocols import PROTOCOLS

        for name in [*self.size_protocols, *self.max_dets, *([self.slicing.protocol] if self.slicing.enabled
                                                               else [])]:
            if name not in PROTOCOLS:
                raise ValueError(f"unknown size protocol {name!r}; known: {', '.join(PROTOCOLS)}")
        if self.bootstrap < 0:
            raise ValueError("'bootstrap' must be >= 0")


@dataclass(frozen=True)
class SpeedSettings(SpeedConfig):
    """The harness's counts (``SpeedConfig``, one definition) plus which protocols to run and on how many
    images; CPU suites use small counts."""

    protocols: list[str] = field(default_factory=lambda: ["model", "e2e", "throughput"])
    sample_images: int = 8
