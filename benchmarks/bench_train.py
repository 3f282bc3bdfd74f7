"""Training throughput (samples/s, batch 4) of every model: our loop against a bare one.

For each model and slice size the same network is trained twice in this process,
from the same initial weights:

- a bare PyTorch loop: fixed random tensors already on the device, forward,
  loss, backward, Adam step (for the GANs the discriminator and generator steps,
  for the DDPM the noising and noise MSE written out), the same autocast and
  gradient scaler on CUDA;
- :func:`slicelib.train.train` for one epoch of as many steps on a cache of the
  same size: data loading from the memory-mapped cache, augmentation, copies,
  the objective, loss checks and the progress bar included (its ``samples_per_s``
  counts the training steps only, not validation or checkpoints).

Overhead = bare samples/s / ours - 1. Untimed bare steps warm the kernels up first
(:data:`WARM_STEPS`); each side then runs for about :data:`SECONDS_PER_SIDE` (at
least :data:`MIN_STEPS` steps, at most what the cache holds). Our figure includes
the per-epoch start of the data loader (on CUDA two workers), which a real epoch of
thousands of steps spreads thin. The projected epoch is the supplement's 32,547
training triplets at our rate.

On the CPU, to stay near two minutes on two cores: 256 px for cnn and unet only,
and the DDPM at the demo preset's width (16; 1.3 M parameters instead of 20.5 M).
On CUDA (when present) every model at every size, paper widths, fp16 autocast.
"""

from __future__ import annotations

import dataclasses
import logging
import tempfile
import time
from collections.abc import Callable
from pathlib import Path

import numpy as np
import torch
import torch.nn.functional as F

from slicelib.config import DEMO, PAPER, ModelConfig, PrepareConfig, TrainConfig
from slicelib.data.cache import write_cache
from slicelib.device import autocast, grad_scaler, prepare_module
from slicelib.diffusion import GaussianDiffusion
from slicelib.models import build_discriminator, build_generator
from slicelib.train import train

BATCH = 4
SIZES = (64, 128, 256)
MODELS = ("cnn", "unet", "gan", "gan_improved", "ddpm")
CPU_256_MODELS = ("cnn", "unet")
SECONDS_PER_SIDE = {"cpu": 1.5, "cuda": 2.0}
MIN_STEPS = 2
MAX_STEPS = {"cpu": 40, "cuda": 250}  # the caches hold this many batches
WARM_STEPS = {"cpu": 1, "cuda": 3}  # cuDNN autotunes each shape in its first steps
PAPER_TRIPLETS = 32_547  # training triplets per epoch in the supplement
ORIGINAL_EPOCH_MIN = {"cnn": 18, "unet": 9, "gan": 24, "gan_improved": 48, "ddpm": 19}


def model_config(device: torch.device) -> ModelConfig:
    return PAPER.model if device.type == "cuda" else DEMO.model


def write_caches(root: Path, sizes: tuple[int, ...], max_steps: int) -> dict[int, Path]:
    """One cache per size: 2 training volumes of ``max_steps`` batches of triplets in all,
    1 small validation volume."""
    rng = np.random.default_rng(0)
    slices = max_steps * BATCH // 2 + 2
    caches = {}
    for size in sizes:
        volumes = {
            "train0": rng.random((slices, size, size), dtype=np.float32),
            "train1": rng.random((slices, size, size), dtype=np.float32),
            "val0": rng.random((3, size, size), dtype=np.float32),
        }
        splits = {"train0": "train", "train1": "train", "val0": "val"}
        write_cache(root / f"cache{size}", volumes, splits, PrepareConfig(size=size))
        caches[size] = root / f"cache{size}"
    return caches


def bare_step(cfg: TrainConfig, device: torch.device, size: int) -> Callable[[], None]:
    """One training step of ``cfg.model`` written out in plain PyTorch, on fixed tensors
    (N, C, size, size)."""
    torch.manual_seed(cfg.seed)
    gen = prepare_module(build_generator(cfg.model, cfg.model_cfg), device)
    disc_net = build_discriminator(cfg.model, cfg.model_cfg)
    opt_g = torch.optim.Adam(gen.parameters(), lr=cfg.lr)
    scaler_g = grad_scaler(device, cfg.precision)
    layout = torch.channels_last if device.type == "cuda" else torch.contiguous_format
    x = torch.rand(BATCH, 2, size, size, device=device)
    y = torch.rand(BATCH, 1, size, size, device=device)
    x, y = x.contiguous(memory_format=layout), y.contiguous(memory_format=layout)
    amp = autocast(device, cfg.precision)

    def update(
        loss: torch.Tensor, opt: torch.optim.Optimizer, scaler: torch.amp.GradScaler
    ) -> None:
        opt.zero_grad(set_to_none=True)
        scaler.scale(loss).backward()
        scaler.step(opt)
        scaler.update()

    if cfg.model == "ddpm":
        abar = GaussianDiffusion(cfg.diffusion).alphas_cumprod.float().to(device)

        def ddpm() -> None:
            t = torch.randint(0, cfg.diffusion.timesteps, (BATCH,), device=device)
            noise = torch.randn_like(y)
            a = abar[t].view(-1, 1, 1, 1)
            with amp:
                pred = gen(a.sqrt() * y + (1 - a).sqrt() * noise, t, x)
            update(F.mse_loss(pred.float(), noise), opt_g, scaler_g)

        return ddpm
    if disc_net is None:

        def l1() -> None:
            with amp:
                pred = gen(x)
            update(F.l1_loss(pred.float(), y), opt_g, scaler_g)

        return l1

    disc = prepare_module(disc_net, device)
    opt_d = torch.optim.Adam(disc.parameters(), lr=cfg.lr)
    scaler_d = grad_scaler(device, cfg.precision)
    fm_weight = cfg.fm_weight if cfg.model == "gan_improved" else 0.0

    def bce(logits: torch.Tensor, value: float) -> torch.Tensor:
        return F.binary_cross_entropy_with_logits(logits.float(), torch.full_like(logits, value))

    def gan() -> None:
        with amp:
            fake = gen(x)
            loss_d = 0.5 * (bce(disc(y), 1.0) + bce(disc(fake.detach()), 0.0))
        update(loss_d, opt_d, scaler_d)
        with amp:
            if fm_weight:
                with torch.no_grad():
                    _, real_feats = disc.features(y)
                logits, fake_feats = disc.features(fake)
                fm = sum(F.l1_loss(f.float(), r.float()) for f, r in zip(fake_feats, real_feats))
                fm = fm / len(fake_feats)
            else:
                logits, fm = disc(fake), 0.0
        loss_g = F.l1_loss(fake.float(), y) + cfg.adv_weight * bce(logits, 1.0) + fm_weight * fm
        update(loss_g, opt_g, scaler_g)

    return gan


def sync(device: torch.device) -> None:
    if device.type == "cuda":
        torch.cuda.synchronize(device)


def bare_rate(cfg: TrainConfig, device: torch.device, size: int, steps: int) -> float:
    step = bare_step(cfg, device, size)
    sync(device)
    start = time.perf_counter()
    for _ in range(steps):
        step()
    sync(device)
    return steps * BATCH / (time.perf_counter() - start)


def our_rate(cfg: TrainConfig, cache: Path, run_dir: Path, steps: int) -> float:
    cfg = dataclasses.replace(cfg, steps_per_epoch=steps)
    result = train(cfg, cache, run_dir, resume=False, progress=False)
    return result.history[0]["samples_per_s"]


def measure(device: torch.device, root: Path) -> None:
    kind = device.type
    (root / kind).mkdir()
    caches = write_caches(root / kind, SIZES, MAX_STEPS[kind])
    print(
        f"{'device':6} {'model':12} {'px':>4} {'steps':>5} {'bare /s':>9} {'ours /s':>9} "
        f"{'overhead':>8} {'epoch*':>8}"
    )
    for size, cache in caches.items():
        for model in MODELS:
            if device.type == "cpu" and size == 256 and model not in CPU_256_MODELS:
                continue
            cfg = dataclasses.replace(
                PAPER.train_config(model, 1),
                epochs=1, batch_size=BATCH, crop=None, augment=True, val_max_slices=1,
                val_ddim_steps=1, device=str(device), model_cfg=model_config(device),
            )  # fmt: skip
            warm = bare_step(cfg, device, size)
            for _ in range(WARM_STEPS[kind]):
                sync(device)
                start = time.perf_counter()
                warm()
                sync(device)
                seconds = time.perf_counter() - start
            del warm
            steps = int(SECONDS_PER_SIDE[kind] // max(seconds, 1e-6))
            steps = min(MAX_STEPS[kind], max(MIN_STEPS, steps))
            bare = bare_rate(cfg, device, size, steps)
            ours = our_rate(cfg, cache, root / kind / f"run_{model}_{size}", steps)
            epoch_s = PAPER_TRIPLETS / ours
            print(
                f"{device.type:6} {model:12} {size:>4} {steps:>5} {bare:>9.1f} {ours:>9.1f} "
                f"{100 * (bare / ours - 1):>7.1f}% {epoch_s / 60:>7.1f}m",
                flush=True,
            )


def loop_cost(device: torch.device, root: Path) -> None:
    """What our loop adds per step, in ms, measured where the model costs almost nothing
    (a 4-channel, 1-block cnn at 64 px): best of 3 alternating runs of each side."""
    kind = device.type
    cfg = dataclasses.replace(
        PAPER.train_config("cnn", 1),
        epochs=1, batch_size=BATCH, crop=None, augment=True, val_max_slices=1,
        device=str(device), model_cfg=ModelConfig(features=4, cnn_blocks=1),
    )  # fmt: skip
    steps = MAX_STEPS[kind]
    cache = root / kind / "cache64"
    threads = torch.get_num_threads()
    torch.set_num_threads(1)  # the loop's own work is serial; spare it thread hand-offs
    bare_step(cfg, device, 64)()  # warm-up
    bare = max(bare_rate(cfg, device, 64, steps) for _ in range(3))
    ours = max(our_rate(cfg, cache, root / kind / "run_loop", steps) for _ in range(3))
    torch.set_num_threads(threads)
    extra_ms = 1000 * BATCH * (1 / ours - 1 / bare)
    print(
        f"{kind}: our loop adds {extra_ms:.1f} ms per step of batch {BATCH} at 64 px (data "
        f"loading and augmentation, copies, loss checks; tiny cnn: bare {1000 * BATCH / bare:.1f} "
        f"ms/step, ours {1000 * BATCH / ours:.1f} ms/step, {steps} steps, best of 3, 1 thread)",
        flush=True,
    )


def main() -> None:
    logging.getLogger("slicelib").setLevel(logging.WARNING)
    devices = [torch.device("cpu")]
    if torch.cuda.is_available():
        devices.append(torch.device("cuda"))
    print(
        f"batch {BATCH}, Adam; per side about "
        + ", ".join(f"{s} s on {d}" for d, s in SECONDS_PER_SIDE.items())
        + f" after warm-up steps; "
        f"torch {torch.__version__}, {torch.get_num_threads()} CPU threads"
    )
    print(
        "CPU: 256 px for cnn and unet only; DDPM at the demo width "
        f"{DEMO.model.ddpm_channels} (paper {PAPER.model.ddpm_channels}); fp32"
    )
    if len(devices) > 1:
        print(f"CUDA: {torch.cuda.get_device_name()}, paper widths, fp16 autocast + GradScaler")
    print(
        f"epoch* = {PAPER_TRIPLETS:,} triplets at our rate (the original: "
        + ", ".join(f"{m} {v} min" for m, v in ORIGINAL_EPOCH_MIN.items())
        + ")"
    )
    torch.backends.cudnn.benchmark = True  # as train() sets it on CUDA, for the bare loop too
    with tempfile.TemporaryDirectory(prefix="bench_train_") as tmp:
        for device in devices:
            measure(device, Path(tmp))
            loop_cost(device, Path(tmp))


if __name__ == "__main__":
    main()
