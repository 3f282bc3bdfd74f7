"""Training throughput on the CPU in float32 and under bfloat16 autocast, side by side.

    python -m benchmarks precision [--steps N] [--repeats N] [--size PX] [--batch N]

Every model of the study (and the learned-filter check) trains with
:func:`slicelib.train.train` on a synthetic cache of smooth volumes, at the real arm's
crop and batch: one epoch of ``--steps`` steps per run, fp32 and bf16 alternating
``--repeats`` times so that both see the same machine state. Prints the median training
samples/s of each (the history's ``samples_per_s``: training steps only) and the ratio.
bfloat16 runs where the CPU has AMX or AVX512-BF16 (``cpu_precision="bf16"`` forces it
elsewhere, slowly); the models are the real arm's widths (the DDPM at the demo's 16).
"""

from __future__ import annotations

import argparse
import dataclasses
import logging
import statistics
import tempfile
from pathlib import Path

import numpy as np

from slicelib.config import MODEL_NAMES, REAL, PrepareConfig
from slicelib.data.cache import write_cache
from slicelib.inference import cpu_has_fast_bf16
from slicelib.train import train

MODELS = (*MODEL_NAMES, "filter")


def smooth_cache(root: Path, size: int) -> Path:
    from scipy.ndimage import gaussian_filter

    rng = np.random.default_rng(0)
    volumes = {}
    for i in range(4):
        vol = gaussian_filter(rng.standard_normal((24, size, size)), sigma=(2, 3, 3))
        volumes[f"B{i}"] = ((vol - vol.min()) / np.ptp(vol)).astype(np.float32)
    splits = {"B0": "train", "B1": "train", "B2": "val", "B3": "test"}
    write_cache(root / "cache", volumes, splits, PrepareConfig(size=size))
    return root / "cache"


def rate(model: str, precision: str, cache: Path, out: Path, args: argparse.Namespace) -> float:
    cfg = REAL.train_config(
        "unet" if model == "filter" else model, 1, epochs=1, steps_per_epoch=args.steps,
        batch_size=args.batch, crop=args.size // 2, val_max_slices=2, device="cpu",
        cpu_precision=precision, schedule="constant", warmup=0.0,
    )  # fmt: skip
    if model == "filter":
        cfg = dataclasses.replace(cfg, model="filter")
    result = train(cfg, cache, out, resume=False, progress=False)
    return float(result.history[-1]["samples_per_s"])


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(prog="python -m benchmarks precision")
    parser.add_argument("--steps", type=int, default=12)
    parser.add_argument("--repeats", type=int, default=2)
    parser.add_argument("--size", type=int, default=128, help="cache slices (px); crop: half")
    parser.add_argument("--batch", type=int, default=8)
    args = parser.parse_args(argv or [])
    logging.disable(logging.INFO)
    print(f"CPU bfloat16 units (AMX/AVX512-BF16): {'yes' if cpu_has_fast_bf16() else 'no'}")
    print(f"batch {args.batch}, crop {args.size // 2} px, {args.steps} steps per run, "
          f"median of {args.repeats}")  # fmt: skip
    print(f"{'model':<13} {'fp32 /s':>9} {'bf16 /s':>9} {'bf16 / fp32':>12}")
    with tempfile.TemporaryDirectory() as tmp:
        cache = smooth_cache(Path(tmp), args.size)
        for model in MODELS:
            rates: dict[str, list[float]] = {"fp32": [], "bf16": []}
            for r in range(args.repeats):
                for precision in rates:
                    out = Path(tmp) / f"{model}-{precision}-{r}"
                    rates[precision].append(rate(model, precision, cache, out, args))
            fp32, bf16 = (statistics.median(rates[p]) for p in ("fp32", "bf16"))
            print(f"{model:<13} {fp32:>9.1f} {bf16:>9.1f} {bf16 / fp32:>11.2f}x", flush=True)
