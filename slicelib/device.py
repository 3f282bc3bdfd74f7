"""Where and in which precision tensors live: device choice, autocast, gradient scaling.

Mixed precision is a CUDA-only affair here: on the CPU every model trains and
predicts in float32, whatever the requested precision, so that CPU runs are exact
and deterministic.
"""

from __future__ import annotations

import contextlib
import re
from typing import get_args

import torch
from torch import nn

from slicelib.config import Precision
from slicelib.errors import SlicelibError

PRECISIONS: tuple[str, ...] = get_args(Precision)
_AMP_DTYPES: dict[str, torch.dtype] = {"fp16": torch.float16, "bf16": torch.bfloat16}


def resolve_device(spec: str) -> torch.device:
    """The device named by ``spec``: ``"auto"`` (CUDA when available), ``"cpu"``,
    ``"cuda"`` or ``"cuda:N"``."""
    spec = spec.strip().lower()
    if spec == "auto":
        return torch.device("cuda" if torch.cuda.is_available() else "cpu")
    if spec == "cpu":
        return torch.device("cpu")
    match = re.fullmatch(r"cuda(?::(\d+))?", spec)
    if match is None:
        raise SlicelibError(f"unknown device {spec!r} (choose auto, cpu, cuda or cuda:N)")
    if not torch.cuda.is_available():
        raise SlicelibError(f"device {spec!r} requested but CUDA is not available here")
    if match.group(1) is not None and int(match.group(1)) >= torch.cuda.device_count():
        raise SlicelibError(
            f"device {spec!r} requested but only {torch.cuda.device_count()} GPU(s) are visible"
        )
    return torch.device(spec)


def check_precision(precision: str) -> None:
    """Raise a one-line error unless ``precision`` is one of fp16, bf16, fp32."""
    if precision not in PRECISIONS:
        raise SlicelibError(f"unknown precision {precision!r} (choose {', '.join(PRECISIONS)})")


def amp_dtype(device: torch.device, precision: str) -> torch.dtype | None:
    """The autocast dtype for ``precision`` on ``device``; None means plain float32. bf16
    becomes fp16 on GPUs without bfloat16 (the scaler then switches on)."""
    check_precision(precision)
    if device.type != "cuda":
        return None
    if precision == "bf16" and not torch.cuda.is_bf16_supported():
        return torch.float16  # GPUs before Ampere: fp16, with the gradient scaler
    return _AMP_DTYPES.get(precision)


def autocast(device: torch.device, precision: str) -> contextlib.AbstractContextManager[object]:
    """A context running the forward pass in fp16/bf16 on CUDA; a no-op elsewhere."""
    dtype = amp_dtype(device, precision)
    if dtype is None:
        return contextlib.nullcontext()
    return torch.autocast(device_type="cuda", dtype=dtype)


def grad_scaler(device: torch.device, precision: str) -> torch.amp.GradScaler:
    """A gradient scaler, enabled for fp16 on CUDA only (bf16 and fp32 need none).

    A disabled scaler passes ``scale``/``step``/``update`` straight through, so the
    training loop is the same in every precision.
    """
    enabled = amp_dtype(device, precision) == torch.float16
    return torch.amp.GradScaler(device.type, enabled=enabled)


def uses_channels_last(device: torch.device) -> bool:
    """Whether NHWC memory layout pays off: on CUDA (tensor cores), not on the CPU."""
    return device.type == "cuda"


def prepare_module(module: nn.Module, device: torch.device) -> nn.Module:
    """Move ``module`` to ``device``, channels_last on CUDA. Returns the same module."""
    module.to(device)
    if uses_channels_last(device):
        module.to(memory_format=torch.channels_last)  # type: ignore[call-overload]
    return module


def to_device(x: torch.Tensor, device: torch.device) -> torch.Tensor:
    """Copy a batch (N, C, H, W) to ``device``: non-blocking from pinned memory, channels_last
    on CUDA."""
    if uses_channels_last(device) and x.dim() == 4:
        return x.to(device, non_blocking=True, memory_format=torch.channels_last)
    return x.to(device, non_blocking=True)
