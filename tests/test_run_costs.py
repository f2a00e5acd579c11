"""The runner's cheaper non-training steps give the same numbers as the expensive ones they replace."""

from __future__ import annotations

import copy

import pytest

from detectors import build_model
from detectors.complexity import _count_flops, count_flops


@pytest.mark.parametrize(("name", "options"), [("yolov5n", {"input_size": 64}), ("mdssd300", {})])
def test_flops_on_a_meta_copy_equal_a_real_forward_count(name: str, options: dict) -> None:
    """GFLOPs come from a meta-device copy (no real forward): the same thop count as a forward on real
    tensors, deconvolutions (MDSSD's Fusion Blocks) included, and the model itself is left on its device."""
    model = build_model(name, 8, **options)
    real = _count_flops(copy.deepcopy(model), model.input_size)
    assert _count_flops(copy.deepcopy(model).to("meta"), model.input_size) == real  # no fallback needed
    assert count_flops(model, model.input_size) == real
    assert next(model.parameters()).device.type == "cpu"
