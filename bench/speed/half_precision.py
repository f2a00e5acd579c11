"""The fp16 rows of the speed harness: the model in half precision, except what fp16 cannot represent.

``model.half()`` would also halve buffers such as SSD's prior boxes (box decoding loses pixels) and make an
``eps`` below fp16's smallest subnormal (6e-8, e.g. L2Norm's 1e-10) round to zero. Here only parameters and
floating buffers are cast, except the buffers a detector names in ``Detector.fp32_buffers``; a module whose
``eps`` fp16 cannot hold stays in fp32 entirely, its inputs cast to fp32 and its outputs back to fp16.
"""

from __future__ import annotations

from typing import Any

import torch
from torch import nn


def _cast(value: Any, dtype: torch.dtype) -> Any:
    if isinstance(value, torch.Tensor) and value.is_floating_point():
        return value.to(dtype)
    if isinstance(value, tuple | list):
        return type(value)(_cast(v, dtype) for v in value)
    return value


def needs_fp32(module: nn.Module) -> bool:
    """Whether ``module`` has a positive float ``eps`` that rounds to zero in fp16."""
    eps = getattr(module, "eps", None)
    return isinstance(eps, float) and eps > 0 and float(torch.tensor(eps, dtype=torch.float16)) == 0.0


def to_half(model: nn.Module) -> nn.Module:
    """Cast ``model`` in place to fp16 as the module doc says; returns it."""
    keep = set(getattr(model, "fp32_buffers", ()))
    fp32_modules = [m for m in model.modules() if needs_fp32(m)]
    inside_fp32 = {id(sub) for m in fp32_modules for sub in m.modules()}
    for module in model.modules():
        if id(module) in inside_fp32:
            continue
        for param in module.parameters(recurse=False):
            if param.is_floating_point():
                param.data = param.data.half()
        for name, buffer in module.named_buffers(recurse=False):
            if buffer.is_floating_point() and name not in keep:
                module._buffers[name] = buffer.half()
    for module in fp32_modules:
        module.register_forward_pre_hook(lambda _m, args: _cast(args, torch.float32))
        module.register_forward_hook(lambda _m, _args, out: _cast(out, torch.float16))
    return model
