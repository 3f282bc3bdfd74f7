"""The real-anatomy arm's budget: baselines, headroom and CPU training budgets on IXI.

On the repository's IXI T1 subset (``data/ixi-t1-2mm``, 70 volumes) at 128 px:

1. prepare a cache with a seeded subject-level split of 55 / 15 / 30 %
   (39 / 10 / 21 subjects);
2. linear and cubic interpolation on the test subjects at k=1 and k=2: mean PSNR
   over subjects (each subject's mean over its slices), and cubic's gain over
   linear with a percentile-bootstrap 95 % interval over subjects;
3. headroom: the best 9 x 9 linear filter of the two neighbours fitted on the
   training subjects, and the per-pixel and per-8x8-tile oracle blends, as PSNR
   gain over linear on the test subjects;
4. training budgets: each run trains on the training subjects and reports its
   validation PSNR per epoch next to linear's on the same validation slices. Budgets
   are compared on validation subjects only; test subjects are never used to tune.

Environment variables: ``BENCH_REAL_DIR`` keeps the cache and runs there (default: a
temporary folder); ``BENCH_REAL_PARTS`` picks parts (``baselines,headroom,train``);
``BENCH_REAL_RUNS`` picks budgets by name (see :data:`BUDGETS`);
``BENCH_REAL_EPOCHS`` / ``BENCH_REAL_STEPS`` override every budget's epochs and
steps per epoch (a shorter exploration on a busy machine); ``BENCH_REAL_THREADS``
sets torch's CPU threads (default 2); ``BENCH_REAL_VAL_SLICES`` the validation slices
scored after each epoch (default: the real preset's).
"""

from __future__ import annotations

import dataclasses
import logging
import os
import subprocess
import tempfile
import time
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import torch

from slicelib.baselines import get_baseline, neighbours
from slicelib.config import REAL, Preset
from slicelib.data.cache import Cache, read_manifest
from slicelib.data.dataset import TripletDataset
from slicelib.data.prepare import prepare
from slicelib.data.triplets import evaluable_indices
from slicelib.headroom import apply_linear_filter, fit_linear_filter, oracle_blend, slice_psnr
from slicelib.train import train

ROOT = Path(__file__).resolve().parent.parent
DATA = ROOT / "data" / "ixi-t1-2mm"
KS = (1, 2)
BOOTSTRAP = 2000
ORACLE_BLOCKS = (1, 8)
THREADS = 2


@dataclass(frozen=True)
class Budget:
    name: str
    model: str
    k: int
    crop: int
    batch: int
    lr: float
    epochs: int
    steps_per_epoch: int
    residual: bool = True  # the U-Net adds its output to linear interpolation


# Validation slices scored after each epoch (evenly spaced over the validation subjects).
VAL_SLICES = int(os.environ.get("BENCH_REAL_VAL_SLICES", REAL.val_max_slices or 0)) or None


def _preset_budget(model: str, k: int) -> Budget:
    """The real preset's own budget for ``model`` at ``k``."""
    crop, steps = REAL.crop, REAL.steps_per_epoch
    assert crop is not None and steps is not None
    return Budget(
        f"real-{model}-k{k}", model, k, crop=crop, batch=REAL.batch[model], lr=REAL.lr,
        epochs=REAL.epochs[model], steps_per_epoch=steps,
    )  # fmt: skip


BUDGETS: tuple[Budget, ...] = (
    *(_preset_budget(model, k) for model in ("unet", "cnn") for k in KS),
    Budget("unet64", "unet", 1, crop=64, batch=8, lr=1e-3, epochs=10, steps_per_epoch=70),
    Budget("cnn64", "cnn", 1, crop=64, batch=8, lr=1e-3, epochs=10, steps_per_epoch=70),
    Budget("unet64-k2", "unet", 2, crop=64, batch=8, lr=1e-3, epochs=10, steps_per_epoch=70),
    Budget("unet64-lr3e-4", "unet", 1, crop=64, batch=8, lr=3e-4, epochs=10, steps_per_epoch=70),
    Budget("cnn64-k2", "cnn", 2, crop=64, batch=8, lr=1e-3, epochs=10, steps_per_epoch=70),
    Budget("demo-unet", "unet", 1, crop=40, batch=4, lr=1e-3, epochs=8, steps_per_epoch=50),
    Budget("unet96-lr3e-4", "unet", 1, crop=96, batch=4, lr=3e-4, epochs=10, steps_per_epoch=70),
)


def _bootstrap_ci(values: np.ndarray, seed: int = 0) -> tuple[float, float]:
    rng = np.random.default_rng(seed)
    means = values[rng.integers(0, len(values), (BOOTSTRAP, len(values)))].mean(axis=1)
    lo, hi = np.percentile(means, [2.5, 97.5])
    return float(lo), float(hi)


def _triplets(cache: Cache, split: str, k: int) -> tuple[np.ndarray, ...]:
    """(before, after, target, subject index) stacks of every evaluable slice of ``split``."""
    parts: list[list[np.ndarray]] = [[], [], [], []]
    for s, entry in enumerate(cache.entries(split)):
        vol = np.asarray(cache.volume(entry.patient_id), dtype=np.float32)
        idx = evaluable_indices(vol.shape[0], k)
        for part, arr in zip(parts, (vol[idx - k], vol[idx + k], vol[idx], np.full(len(idx), s))):
            part.append(arr)
    return tuple(np.concatenate(p) for p in parts)


def _per_subject(psnr: np.ndarray, subject: np.ndarray) -> np.ndarray:
    return np.array([psnr[subject == s].mean() for s in np.unique(subject)])


def _report_gain(label: str, gain: np.ndarray) -> None:
    lo, hi = _bootstrap_ci(gain)
    print(f"  {label:<34} {gain.mean():+.3f} dB  [{lo:+.3f}, {hi:+.3f}]  (n={len(gain)})")


def baselines(cache: Cache) -> None:
    print("test subjects: mean of per-subject PSNR; gain over linear with 95% bootstrap CI")
    cubic = get_baseline("cubic")
    for k in KS:
        per_method: dict[str, list[float]] = {"linear": [], "cubic": []}
        for entry in cache.entries("test"):
            vol = np.asarray(cache.volume(entry.patient_id), dtype=np.float32)
            idx = evaluable_indices(vol.shape[0], k)
            target = vol[idx]
            lin = 0.5 * (vol[idx - k] + vol[idx + k])
            cub = np.stack([cubic.predict(neighbours(vol, int(i), k)).prediction for i in idx])
            per_method["linear"].append(float(slice_psnr(lin, target).mean()))
            per_method["cubic"].append(float(slice_psnr(cub, target).mean()))
        lin_s, cub_s = np.array(per_method["linear"]), np.array(per_method["cubic"])
        print(f" k={k}: linear {lin_s.mean():.2f} dB, cubic {cub_s.mean():.2f} dB")
        _report_gain(f"cubic - linear, k={k}", cub_s - lin_s)


def headroom(cache: Cache) -> None:
    print("headroom on the test subjects (filter fitted on the training subjects)")
    for k in KS:
        started = time.perf_counter()
        tb, ta, tt, _ = _triplets(cache, "train", k)
        filt = fit_linear_filter(tb, ta, tt)
        del tb, ta, tt
        before, after, target, subject = _triplets(cache, "test", k)
        lin = _per_subject(slice_psnr(0.5 * (before + after), target), subject)
        fil = _per_subject(slice_psnr(apply_linear_filter(filt, before, after), target), subject)
        print(
            f" k={k}: linear {lin.mean():.2f} dB; filter fitted in "
            f"{time.perf_counter() - started:.0f} s (centre taps {filt.weights[0, 4, 4]:.3f}, "
            f"{filt.weights[1, 4, 4]:.3f}; bias {filt.bias:+.4f})"
        )
        _report_gain(f"best 9x9 linear filter, k={k}", fil - lin)
        for block in ORACLE_BLOCKS:
            orc = oracle_blend(before, after, target, block=block)
            gain = _per_subject(slice_psnr(orc, target), subject) - lin
            _report_gain(f"oracle blend {block}x{block} (bound), k={k}", gain)


def _val_linear(cache: Cache, k: int) -> float:
    data = TripletDataset(cache, "val", k, max_slices=VAL_SLICES)
    items = [data[i] for i in range(len(data))]
    pred = np.stack([it.inputs.mean(dim=0).numpy() for it in items])
    target = np.stack([it.target[0].numpy() for it in items])
    return float(slice_psnr(pred, target).mean())


def training(cache_dir: Path, work: Path, preset: Preset, wanted: set[str] | None) -> None:
    cache = Cache(cache_dir)
    linear_val = {k: _val_linear(cache, k) for k in KS}
    n_val = len(TripletDataset(cache, "val", 1, max_slices=VAL_SLICES))
    print(
        f"validation ({n_val} slices of {len(cache.entries('val'))} subjects): "
        + ", ".join(f"linear k={k} {v:.2f} dB" for k, v in linear_val.items())
    )
    for b in BUDGETS:
        if wanted is not None and b.name not in wanted:
            continue
        load = subprocess.run(["uptime"], capture_output=True, text=True).stdout.strip()
        b = dataclasses.replace(
            b,
            epochs=int(os.environ.get("BENCH_REAL_EPOCHS", b.epochs)),
            steps_per_epoch=int(os.environ.get("BENCH_REAL_STEPS", b.steps_per_epoch)),
        )
        model_cfg = dataclasses.replace(preset.model, unet_residual=b.residual)
        cfg = preset.train_config(
            b.model,  # type: ignore[arg-type]
            b.k,
            epochs=b.epochs,
            batch_size=b.batch,
            lr=b.lr,
            crop=b.crop,
            steps_per_epoch=b.steps_per_epoch,
            val_max_slices=VAL_SLICES,
            device="cpu",
            model_cfg=model_cfg,
        )
        started = time.perf_counter()
        result = train(cfg, cache_dir, work / "runs" / b.name, resume=False, progress=False)
        wall = time.perf_counter() - started
        gains = [row["val_psnr"] - linear_val[b.k] for row in result.history]
        steps = b.epochs * b.steps_per_epoch
        rate = float(np.mean([row["samples_per_s"] for row in result.history]))
        print(
            f" {b.name}: {b.model} k={b.k} crop {b.crop} batch {b.batch} lr {b.lr:g} "
            f"{steps} steps, {wall:.0f} s, {rate:.1f} training samples/s ({load})"
        )
        print("   val gain per epoch: " + " ".join(f"{g:+.2f}" for g in gains))
        last3 = gains[-3:]
        print(
            f"   best {max(gains):+.3f} dB, last {gains[-1]:+.3f} dB, "
            f"spread of the last 3 epochs {max(last3) - min(last3):.3f} dB"
        )


def main() -> None:
    logging.basicConfig(level=logging.WARNING)
    torch.set_num_threads(int(os.environ.get("BENCH_REAL_THREADS", THREADS)))
    parts = set(os.environ.get("BENCH_REAL_PARTS", "baselines,headroom,train").split(","))
    runs = os.environ.get("BENCH_REAL_RUNS")
    wanted = set(runs.split(",")) if runs else None
    keep = os.environ.get("BENCH_REAL_DIR")
    with tempfile.TemporaryDirectory() as tmp:
        work = Path(keep) if keep else Path(tmp)
        cache_dir = work / f"cache{REAL.prepare.size}"
        cache = prepare(DATA, cache_dir, REAL.prepare, REAL.scan, progress=False)
        counts = {s: len(cache.entries(s)) for s in ("train", "val", "test")}
        axes = sorted(
            {(p["slice_axis"], p["slice_axis_rule"]) for p in read_manifest(cache_dir)["patients"]}
        )
        print(
            f"IXI cache {cache_dir.name}: {len(cache)} subjects, split {counts} "
            f"(seed {REAL.prepare.seed}), {REAL.prepare.size} px, slice axis {axes}"
        )
        if "baselines" in parts:
            baselines(cache)
        if "headroom" in parts:
            headroom(cache)
        if "train" in parts:
            training(cache_dir, work, REAL, wanted)
