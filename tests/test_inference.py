"""CPU prediction settings: bfloat16 only where asked, within the stated tolerance."""

from __future__ import annotations

from pathlib import Path

import pytest
import torch
from scipy.ndimage import gaussian_filter

from slicelib.checkpoint import LoadedRun
from slicelib.config import ModelConfig, TrainConfig
from slicelib.errors import SlicelibError
from slicelib.inference import BF16_TOLERANCE, cpu_has_fast_bf16, use_cpu_bf16
from slicelib.interpolator import Predictor
from slicelib.models import build_generator

CPU = torch.device("cpu")


def unet_run() -> LoadedRun:
    torch.manual_seed(0)
    net = build_generator("unet", ModelConfig()).eval()  # the paper's widths
    last = [m for m in net.modules() if isinstance(m, torch.nn.Conv2d)][-1]
    with torch.no_grad():  # untrained outputs sit near 0: move them inside (0, 1), unclipped
        assert last.bias is not None
        last.bias += 0.5
    return LoadedRun(
        config=TrainConfig(model="unet"), image_size=64, model=net, epoch=1, history=[],
        path=Path("unet.pt"), device=CPU, best_epoch=1,
    )  # fmt: skip


def test_modes() -> None:
    assert use_cpu_bf16(CPU, "bf16") and not use_cpu_bf16(CPU, "fp32")
    assert use_cpu_bf16(CPU, "auto") == cpu_has_fast_bf16()
    with pytest.raises(SlicelibError, match="unknown CPU precision 'fp8'"):
        use_cpu_bf16(CPU, "fp8")


def test_bf16_predictions_stay_within_the_tolerance() -> None:
    rng = torch.Generator().manual_seed(0)
    noise = torch.rand(3, 64, 64, generator=rng).numpy()
    smooth = torch.from_numpy(gaussian_filter(noise, sigma=(0.8, 3.0, 3.0)))
    smooth = (smooth - smooth.min()) / (smooth.max() - smooth.min())
    inputs = torch.stack([smooth[:2], smooth[1:]], dim=1).float()  # (2, 2, 64, 64)
    run = unet_run()
    exact = Predictor(run)  # evaluation's default: float32 on the CPU
    assert not exact.cpu_bf16
    reference = exact(inputs)
    assert float(reference.min()) > 0 and float(reference.max()) < 1
    fast = Predictor(run, cpu_precision="bf16")
    assert fast.cpu_bf16
    pred = fast(inputs)
    assert pred.dtype == torch.float32
    difference = float((pred - reference).abs().max())
    assert 0 < difference <= BF16_TOLERANCE  # it did run in bfloat16, and stayed close
    # float32 prediction of the channels_last model matches the first one to rounding
    torch.testing.assert_close(exact(inputs), reference, rtol=0, atol=1e-5)
