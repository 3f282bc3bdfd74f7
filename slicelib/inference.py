"""Prediction speed on the CPU: bfloat16 where the CPU computes it natively, threads.

A 256-pixel U-Net forward pass costs about 51 GFLOP per slice; in float32 a
two-core laptop-class CPU reaches a few tens of GFLOP/s on it, a second or more
per slice. CPUs with AMX or AVX512-BF16 multiply bfloat16 several times faster, and
oneDNN uses those units for convolutions in the channels_last layout only. So
upsampling on such a CPU runs the network under bfloat16 autocast with the model
and inputs in channels_last (:func:`prepare_for_inference`,
:func:`inference_autocast`); predictions then differ from float32 by at most
:data:`BF16_TOLERANCE` of the [0, 1] intensity range (checked in the tests).
Evaluation keeps float32 on the CPU (exact, reproducible figures): only callers that
ask for it (``slicelib upsample``) get bfloat16.
"""

from __future__ import annotations

import contextlib
import functools
import logging
from pathlib import Path
from typing import Literal

import psutil
import torch
from torch import nn

from slicelib.device import autocast
from slicelib.errors import SlicelibError

log = logging.getLogger(__name__)

CpuPrecision = Literal["auto", "bf16", "fp32"]
CPU_PRECISIONS: tuple[str, ...] = ("auto", "bf16", "fp32")
FAST_BF16_FLAGS: tuple[str, ...] = ("amx_bf16", "avx512_bf16")  # /proc/cpuinfo flags
# Largest |bf16 - fp32| prediction difference accepted, in units of the [0, 1] model range
# (the U-Net at 256 px differs by about 3e-4: a 12-bit series' unit or so).
BF16_TOLERANCE = 4e-3


@functools.cache
def cpu_has_fast_bf16() -> bool:
    """Whether this CPU multiplies bfloat16 natively (AMX or AVX512-BF16; Linux only)."""
    try:
        text = Path("/proc/cpuinfo").read_text(encoding="utf-8", errors="replace")
    except OSError:
        return False
    flags = {f for line in text.splitlines() if line.startswith("flags") for f in line.split()}
    return torch.backends.mkldnn.is_available() and any(f in flags for f in FAST_BF16_FLAGS)


def use_cpu_bf16(device: torch.device, precision: str) -> bool:
    """Whether to predict in bfloat16 on ``device``: ``precision`` "bf16" forces it on the
    CPU, "fp32" never, "auto" where :func:`cpu_has_fast_bf16`. False on CUDA (there the
    run's own precision applies)."""
    if precision not in CPU_PRECISIONS:
        raise SlicelibError(
            f"unknown CPU precision {precision!r} (choose {', '.join(CPU_PRECISIONS)})"
        )
    if device.type != "cpu":
        return False
    return precision == "bf16" or (precision == "auto" and cpu_has_fast_bf16())


def prepare_for_inference(model: nn.Module, device: torch.device, cpu_bf16: bool) -> nn.Module:
    """``model`` in eval mode, in channels_last where that layout is the fast one (CUDA, and
    the CPU's bfloat16 kernels). Returns the same module."""
    model.eval()
    if device.type == "cuda" or cpu_bf16:
        model.to(memory_format=torch.channels_last)  # type: ignore[call-overload]
    return model


def inference_autocast(
    device: torch.device, precision: str, cpu_bf16: bool
) -> contextlib.AbstractContextManager[object]:
    """The autocast of a prediction: ``precision`` on CUDA (see
    :func:`slicelib.device.autocast`), bfloat16 on the CPU when ``cpu_bf16``, else none."""
    if device.type == "cpu" and cpu_bf16:
        return torch.autocast(device_type="cpu", dtype=torch.bfloat16)
    return autocast(device, precision)


def as_model_input(x: torch.Tensor, device: torch.device, cpu_bf16: bool) -> torch.Tensor:
    """A batch (N, C, H, W) on ``device`` in the layout :func:`prepare_for_inference` chose."""
    x = x.to(device)
    if device.type == "cuda" or cpu_bf16:
        return x.contiguous(memory_format=torch.channels_last)
    return x


def set_inference_threads() -> int:
    """One intra-op thread per physical core (hyperthreads slow convolutions down);
    returns the count. Changes the whole process: call it from a command, not a library."""
    cores = psutil.cpu_count(logical=False) or torch.get_num_threads()
    if cores != torch.get_num_threads():
        torch.set_num_threads(cores)
        log.info("using %d threads (physical cores)", cores)
    return cores
