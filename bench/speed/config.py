"""The speed harness's iteration counts, torch-free so that a suite's ``[speed]`` section can extend it."""

from __future__ import annotations

from dataclasses import dataclass


@dataclass(frozen=True)
class SpeedConfig:
    """Iteration counts of every measurement; the defaults are the full protocol (meant for CUDA)."""

    warmup: int = 50
    iterations: int = 500
    max_seconds: float = 30.0  # timed seconds after which a measurement stops early
    throughput_batch: int = 32
    fp16: bool = True  # also time in fp16 (CUDA only; ignored on CPU)
    fuse: bool = True  # fold conv+BN before timing
    progress: bool = True  # tqdm bar per measurement

    def __post_init__(self) -> None:
        if self.warmup < 0 or self.iterations < 1 or self.throughput_batch < 1 or not self.max_seconds > 0:
            raise ValueError(f"invalid speed counts: {self}")

    @classmethod
    def for_device(cls, device: object) -> SpeedConfig:
        """The full protocol on CUDA; on CPU the same code with counts a 2-core machine can afford."""
        if str(device).startswith("cuda"):  # a torch.device or its string: no torch import here
            return cls()
        return cls(warmup=2, iterations=10, max_seconds=5.0, throughput_batch=4)
