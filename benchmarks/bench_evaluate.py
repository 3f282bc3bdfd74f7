"""Evaluation throughput: slices per second of every method, and of the scoring.

Classical methods (numpy, one slice at a time, as the evaluation runs them) and
the scoring of one slice (PSNR, both SSIMs, MAE) on the CPU at 128 and 256 px.
The trained networks' inference does not depend on their weights, so freshly
built generators (paper widths) are timed in small batches in fp32; the DDPM
(demo width 16 on the CPU, also paper width 64 on CUDA) is timed per denoiser
call, and a sampler's cost per slice is that times its steps (DDIM 10,
ancestral T=100). On CUDA the networks are timed there as well.
Everything after one warm-up call.
"""

from __future__ import annotations

import time
from collections.abc import Callable

import numpy as np
import torch
from scipy.ndimage import gaussian_filter

from slicelib.baselines import BASELINE_NAMES, get_baseline, neighbours
from slicelib.config import ModelConfig
from slicelib.metrics import slice_metrics
from slicelib.models import build_generator

SIZES = (128, 256)
SECONDS_PER_CASE = 0.5  # measure at least this long (and at least MIN_CALLS calls)
MIN_CALLS = 1
BATCH = 2  # networks; the evaluation's default is 8, per-slice cost is nearly the same on CPU


def _volume(size: int, slices: int = 9, seed: int = 0) -> np.ndarray:
    """A smooth random volume (S, size, size) in [0, 1], moving in-plane with z."""
    rng = np.random.default_rng(seed)
    vol = gaussian_filter(rng.standard_normal((slices, size, size)), sigma=(1.0, 4.0, 4.0))
    vol = np.stack([np.roll(s, z, axis=1) for z, s in enumerate(vol)])
    vol -= vol.min()
    return (vol / vol.max()).astype(np.float32)


def _rate(fn: Callable[[], object], items: int, sync: Callable[[], None] = lambda: None) -> float:
    """Items per second of ``fn`` (which handles ``items`` items per call), after warm-up."""
    fn()
    sync()
    calls, start = 0, time.perf_counter()
    while calls < MIN_CALLS or time.perf_counter() - start < SECONDS_PER_CASE:
        fn()
        sync()
        calls += 1
    return items * calls / (time.perf_counter() - start)


def _classical(size: int) -> None:
    vol = _volume(size)
    nb = neighbours(vol, 4, 1)  # interior: the cubic has its four slices
    target = vol[4]
    for name in BASELINE_NAMES:
        method = get_baseline(name)
        rate = _rate(lambda m=method: m.predict(nb, "tvl1"), 1)
        print(f"  {name:<22} {size:>4} px  {rate:>9.1f} slices/s  {1000 / rate:>8.2f} ms/slice")
    rate = _rate(lambda: get_baseline("flow").predict(nb, "ilk"), 1)
    print(f"  {'flow (ilk)':<22} {size:>4} px  {rate:>9.1f} slices/s  {1000 / rate:>8.2f} ms/slice")
    pred = 0.5 * (vol[3] + vol[5])
    rate = _rate(lambda: slice_metrics(pred, target, 1.0), 1)
    label = "scoring (4 metrics)"
    print(f"  {label:<22} {size:>4} px  {rate:>9.1f} slices/s  {1000 / rate:>8.2f} ms/slice")


@torch.no_grad()
def _networks(size: int, device: torch.device) -> None:
    sync = torch.cuda.synchronize if device.type == "cuda" else (lambda: None)
    cfg = ModelConfig()
    x = torch.rand(BATCH, 2, size, size, device=device)
    for name in ("cnn", "unet", "gan_improved"):
        net = build_generator(name, cfg).to(device).eval()
        rate = _rate(lambda n=net: n(x), BATCH, sync)
        print(
            f"  {name:<22} {size:>4} px  {rate:>9.1f} slices/s  {1000 / rate:>8.2f} ms/slice"
            f"  ({device.type}, batch {BATCH})"
        )
    xt = torch.rand(BATCH, 1, size, size, device=device)
    t = torch.zeros(BATCH, dtype=torch.long, device=device)
    widths = (16, 64) if device.type == "cuda" else (16,)  # paper width: minutes on 2 cores
    for width in widths:
        label = f"ddpm (width {width})"
        net = build_generator("ddpm", ModelConfig(ddpm_channels=width)).to(device).eval()
        rate = _rate(lambda n=net: n(xt, t, x), BATCH, sync)
        ms = 1000 / rate
        print(
            f"  {label:<22} {size:>4} px  {ms:>8.2f} ms per slice and step -> "
            f"DDIM-10 {10 * ms:>8.1f} ms/slice, ancestral T=100 {100 * ms:>9.1f} ms/slice"
            f"  ({device.type}, batch {BATCH})"
        )


def main() -> None:
    print(f"torch threads: {torch.get_num_threads()}")
    print("classical methods and scoring (CPU, numpy, one slice per call):")
    for size in SIZES:
        _classical(size)
    print("networks (fp32, random weights: inference time does not depend on them):")
    for size in SIZES:
        _networks(size, torch.device("cpu"))
    if torch.cuda.is_available():
        for size in SIZES:
            _networks(size, torch.device("cuda"))


if __name__ == "__main__":
    main()
