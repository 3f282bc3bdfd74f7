"""The GPU data path against the hardware limit: ``python -m benchmarks gpu [options]``.

Prints a table and writes JSON (``--out``) with:

- per model, training samples/s at the paper batch size (random batches already on the
  device, the real objectives' train step, autocast), beside the limit set by the FLOPs
  of one step (``torch.utils.flop_counter``, forward + backward, counted on the real
  architectures) and the device's peak (:data:`PEAKS`; on the CPU a measured matmul);
- the data path: triplets/s from the device-resident cache against DataLoader workers;
- a paper-preset U-Net epoch through :func:`slicelib.train.train` over a synthetic
  cohort of :data:`PAPER_TRIPLETS` training triplets (validation cut to a few slices);
- DDPM sampling, ancestral (all T steps) and DDIM, in ms per slice;
- one DDP step in a one-process group (NCCL on CUDA, gloo on the CPU) against the
  same step without DDP.

On CUDA the defaults are the paper's (256 px, paper widths, 32,547 triplets; about 5
minutes on an H100). On the CPU the defaults are tiny (8-feature networks, 32 px, a
few batches) so that it runs as a smoke test; pass sizes to measure more.
"""

from __future__ import annotations

import argparse
import contextlib
import functools
import json
import logging
import os
import socket
import tempfile
import time
from collections.abc import Callable, Iterator, Mapping
from dataclasses import dataclass, replace
from pathlib import Path
from typing import Any, cast

import numpy as np
import torch
import torch.distributed as dist
import torch.nn.functional as F
from torch.nn.parallel import DistributedDataParallel
from torch.utils.data import DataLoader, DistributedSampler
from torch.utils.flop_counter import FlopCounterMode

from slicelib.config import (
    CUDA_LOADER_WORKERS,
    MODEL_NAMES,
    PAPER,
    SMOKE,
    DiffusionConfig,
    ModelConfig,
    ModelName,
    PrepareConfig,
    TrainConfig,
)
from slicelib.data.cache import write_cache
from slicelib.data.dataset import TripletDataset
from slicelib.data.resident import ResidentTriplets
from slicelib.device import autocast, grad_scaler, prepare_module, to_device
from slicelib.diffusion import GaussianDiffusion
from slicelib.models import build_generator
from slicelib.objectives import Learner, Objective, build_networks, objective_class
from slicelib.train import train

# Narrow networks for the CPU smoke run: the measurement code, not the figures, is tested.
TINY_MODELS = ModelConfig(
    features=8, cnn_blocks=2, improved_blocks=2, ddpm_channels=8, ddpm_time_dim=32
)
PAPER_TRIPLETS = 32_547  # training triplets of the supplement's cohort
SLICES_PER_VOLUME = 40  # synthetic volumes: 38 triplets at k=1 each
# Dense tensor-core peaks in FLOP/s (bf16 = fp16) by a substring of the device name.
PEAKS: dict[str, float] = {"H100": 989e12, "H200": 989e12, "A100": 312e12, "L40S": 362e12}


@dataclass(frozen=True)
class Settings:
    device: torch.device
    size: int
    model_cfg: ModelConfig
    diffusion: DiffusionConfig
    triplets: int  # synthetic training triplets
    steps: int  # timed steps per measurement
    warm: int  # untimed steps first (cuDNN autotuning, torch.compile)
    precision: str
    compile: bool
    models: tuple[ModelName, ...]
    sample_batch: int
    out: Path


def parse(argv: list[str]) -> Settings:
    cuda = torch.cuda.is_available()
    parser = argparse.ArgumentParser(prog="python -m benchmarks gpu", description=__doc__)
    parser.add_argument("--device", choices=("cuda", "cpu"), default="cuda" if cuda else "cpu")
    parser.add_argument("--size", type=int, help="slice size (cuda 256, cpu 32)")
    parser.add_argument("--triplets", type=int, help=f"cohort (cuda {PAPER_TRIPLETS}, cpu 96)")
    parser.add_argument("--steps", type=int, help="timed steps per figure (cuda 30, cpu 2)")
    parser.add_argument("--widths", choices=("paper", "tiny"), help="cuda paper, cpu tiny")
    parser.add_argument("--precision", choices=("bf16", "fp16", "fp32"), help="cuda: bf16")
    parser.add_argument("--compile", action="store_true", help="torch.compile the networks")
    parser.add_argument("--models", default=",".join(MODEL_NAMES))
    parser.add_argument("--out", type=Path, help="JSON file (default bench_gpu_DEVICE.json)")
    args = parser.parse_args(argv)
    if args.device == "cuda" and not cuda:
        parser.error("--device cuda: CUDA is not available here")
    gpu = args.device == "cuda"
    models = tuple(cast(ModelName, m) for m in args.models.split(",") if m)
    if unknown := sorted(set(models) - set(MODEL_NAMES)):
        parser.error(f"--models: unknown {', '.join(unknown)}")
    paper = (args.widths or ("paper" if gpu else "tiny")) == "paper"
    settings = Settings(
        device=torch.device(args.device),
        size=args.size or (256 if gpu else 32),
        model_cfg=PAPER.model if paper else TINY_MODELS,
        diffusion=PAPER.diffusion if paper else SMOKE.diffusion,
        triplets=args.triplets or (PAPER_TRIPLETS if gpu else 96),
        steps=args.steps or (30 if gpu else 2),
        warm=3 if gpu else 1,
        precision=args.precision or ("bf16" if gpu else "fp32"),
        compile=args.compile,
        models=models,
        sample_batch=8 if gpu else 2,
        out=args.out or Path(f"bench_gpu_{args.device}.json"),
    )
    return settings


def sync(device: torch.device) -> None:
    if device.type == "cuda":
        torch.cuda.synchronize(device)


def timed(fn: Callable[[], object], device: torch.device, repeats: int) -> float:
    """Seconds for ``repeats`` calls of ``fn``, the device's queue drained on both sides."""
    sync(device)
    start = time.perf_counter()
    for _ in range(repeats):
        fn()
    sync(device)
    return time.perf_counter() - start


def device_name(device: torch.device) -> str:
    if device.type == "cuda":
        return torch.cuda.get_device_name(device)
    return f"cpu ({torch.get_num_threads()} threads)"


def peak_flops(device: torch.device, precision: str) -> tuple[float, str]:
    """FLOP/s the device can reach at best, and where the figure comes from."""
    if device.type == "cuda":
        name = torch.cuda.get_device_name(device)
        for key, peak in PEAKS.items():
            if key in name:
                return (peak if precision != "fp32" else peak / 2, f"datasheet ({key})")
        return float("nan"), "unknown device"
    a, b = torch.randn(1024, 1024), torch.randn(1024, 1024)
    a @ b
    seconds = timed(lambda: a @ b, device, 5)
    return 5 * 2 * 1024**3 / seconds, "measured fp32 matmul"


def learners_for(cfg: TrainConfig, device: torch.device) -> dict[str, Learner]:
    """The networks of ``cfg.model`` ready to train, as :func:`slicelib.train.train` builds them."""
    out = {}
    for role, net in build_networks(cfg).items():
        raw = prepare_module(net, device)
        module = torch.compile(raw) if cfg.compile else raw
        optimizer = torch.optim.Adam(raw.parameters(), lr=cfg.lr, fused=device.type == "cuda")
        out[role] = Learner(raw, module, optimizer, grad_scaler(device, cfg.precision))  # type: ignore[arg-type]
    return out


def train_config(s: Settings, model: ModelName, **overrides: Any) -> TrainConfig:
    return PAPER.train_config(
        model, 1, model_cfg=s.model_cfg, diffusion=s.diffusion, precision=s.precision,
        device=s.device.type, compile=s.compile, **overrides,
    )  # fmt: skip


def model_throughput(s: Settings, model: ModelName, peak: float) -> dict[str, Any]:
    """Samples/s of the objective's train step on random batches, and the FLOP limit."""
    cfg = train_config(s, model)
    batch = cfg.batch_size
    inputs = to_device(torch.rand(batch, 2, s.size, s.size), s.device)
    target = to_device(torch.rand(batch, 1, s.size, s.size), s.device)

    def objective_of(cfg: TrainConfig) -> Objective:
        torch.manual_seed(0)
        learners = learners_for(cfg, s.device)
        return objective_class(model)(cfg, learners, lambda: autocast(s.device, s.precision))

    with FlopCounterMode(display=False) as counter:  # on the eager networks
        objective_of(replace(cfg, compile=False)).train_step(inputs, target)
    flops = counter.get_total_flops() / batch
    objective = objective_of(cfg)
    timed(lambda: objective.train_step(inputs, target), s.device, s.warm)
    seconds = timed(lambda: objective.train_step(inputs, target), s.device, s.steps)
    rate = s.steps * batch / seconds
    limit = peak / flops
    return {
        "model": model,
        "batch": batch,
        "gflop_per_sample": flops / 1e9,
        "samples_per_s": rate,
        "limit_samples_per_s": limit,
        "of_peak": rate / limit,
    }


def synthetic_cache(root: Path, s: Settings) -> Path:
    """A cache of ``s.triplets`` training triplets at k=1 (and a small val split)."""
    per = SLICES_PER_VOLUME - 2
    n_train = max(1, -(-s.triplets // per))
    ids = [f"P{p:05d}" for p in range(n_train + 1)]
    splits = {pid: "train" for pid in ids[:-1]} | {ids[-1]: "val"}
    target = root / "cache"
    # volumes made one at a time as the writer asks (the paper cohort is 4.5 GB in float16)
    volumes = SyntheticVolumes(ids, s.size)
    write_cache(target, volumes, splits, PrepareConfig(size=s.size), fingerprint="synthetic")
    return target


class SyntheticVolumes(Mapping[str, np.ndarray]):
    """{patient: (SLICES_PER_VOLUME, size, size) float16 in [0, 1]}, each made on demand:
    a shared random volume rolled by the patient's number (the cost is in bytes, not in
    content)."""

    def __init__(self, ids: list[str], size: int) -> None:
        self.ids = ids
        rng = np.random.default_rng(0)
        self.base = rng.random((SLICES_PER_VOLUME, size, size), dtype=np.float32)
        self.base = self.base.astype(np.float16)

    def __getitem__(self, pid: str) -> np.ndarray:
        return np.roll(self.base, self.ids.index(pid), axis=0)

    def __iter__(self) -> Iterator[str]:
        return iter(self.ids)

    def __len__(self) -> int:
        return len(self.ids)


def data_path(s: Settings, cache_dir: Path) -> list[dict[str, Any]]:
    """Triplets/s handed to the training loop: device-resident against DataLoader workers."""
    data = TripletDataset(cache_dir, "train", 1, augment=True, seed=0)
    sampler: DistributedSampler[int] = DistributedSampler(data, 1, 0, shuffle=True, seed=0)
    batch = 64 if s.device.type == "cuda" else 4
    n_batches = max(2, min(len(data) // batch, 4 * s.steps))
    rows = []
    workers = CUDA_LOADER_WORKERS if s.device.type == "cuda" else 0
    loader = DataLoader(
        data, batch_size=batch, sampler=sampler, num_workers=workers,
        pin_memory=s.device.type == "cuda", persistent_workers=workers > 0,
    )  # fmt: skip
    started = time.perf_counter()
    resident = ResidentTriplets(data, sampler, batch, s.device)
    load_seconds = time.perf_counter() - started
    for name, source in ((f"DataLoader, {workers} workers", loader), ("device-resident", resident)):
        for epoch in (1, 2):  # the first pass starts the workers
            sampler.set_epoch(epoch)
            data.set_epoch(epoch)
            batches = iter(source)
            sync(s.device)
            start = time.perf_counter()
            for _ in range(n_batches):
                b = next(batches)
                x = to_device(b.inputs, s.device)
            sync(s.device)
            seconds = time.perf_counter() - start
            del batches, x
        rows.append({"source": name, "batch": batch, "triplets_per_s": n_batches * batch / seconds})
    rows[-1]["load_seconds"] = load_seconds
    return rows


def paper_epoch(s: Settings, cache_dir: Path, run_dir: Path) -> dict[str, Any]:
    """One U-Net epoch of the whole synthetic cohort through :func:`train` (CPU: a few steps)."""
    steps = None if s.device.type == "cuda" else s.steps
    cfg = train_config(s, "unet", epochs=1, val_max_slices=8, steps_per_epoch=steps)
    result = train(cfg, cache_dir, run_dir, resume=False, progress=False)
    row = result.history[0]
    triplets = len(TripletDataset(cache_dir, "train", 1))
    return {
        "triplets": triplets,
        "steps": steps,
        "samples_per_s": row["samples_per_s"],
        "epoch_seconds": triplets / row["samples_per_s"],
        "seconds_with_validation": row["seconds"],
        "data_on_device": cfg.data_on_device,
    }


def sampling(s: Settings) -> list[dict[str, Any]]:
    """DDPM sampling, ms per slice, at the evaluation batch size."""
    torch.manual_seed(0)
    net = prepare_module(build_generator("ddpm", s.model_cfg), s.device).eval()
    diffusion = GaussianDiffusion(s.diffusion)
    cond = to_device(torch.rand(s.sample_batch, 2, s.size, s.size), s.device)
    rows = []
    runs: dict[str, Callable[[], object]] = {
        f"ancestral, T={s.diffusion.timesteps}": lambda: diffusion.sample(net, cond),
        "DDIM, 10 steps": lambda: diffusion.ddim_sample(net, cond, 10),
    }
    for name, fn in runs.items():
        with torch.inference_mode(), autocast(s.device, s.precision):
            fn()  # warm-up
            seconds = timed(fn, s.device, 1)
        rows.append({"sampler": name, "ms_per_slice": 1000 * seconds / s.sample_batch})
    return rows


@contextlib.contextmanager
def one_process_group(device: torch.device) -> Iterator[str]:
    """A process group of this process alone (NCCL on CUDA, gloo on the CPU)."""
    backend = "nccl" if device.type == "cuda" else "gloo"
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        port = sock.getsockname()[1]
    os.environ.setdefault("MASTER_ADDR", "127.0.0.1")
    os.environ["MASTER_PORT"] = str(port)
    dist.init_process_group(backend, rank=0, world_size=1)
    try:
        yield backend
    finally:
        dist.destroy_process_group()


def ddp_step(s: Settings) -> dict[str, Any]:
    """U-Net steps/s with and without DistributedDataParallel in a one-process group."""
    cfg = train_config(s, "unet")
    torch.manual_seed(0)
    net = prepare_module(build_generator("unet", s.model_cfg), s.device)
    inputs = to_device(torch.rand(cfg.batch_size, 2, s.size, s.size), s.device)
    target = to_device(torch.rand(cfg.batch_size, 1, s.size, s.size), s.device)
    optimizer = torch.optim.Adam(net.parameters(), lr=cfg.lr, fused=s.device.type == "cuda")
    scaler = grad_scaler(s.device, s.precision)

    def step(module: torch.nn.Module) -> None:
        optimizer.zero_grad(set_to_none=True)
        with autocast(s.device, s.precision):
            loss = F.l1_loss(module(inputs).float(), target)
        scaler.scale(loss).backward()
        scaler.step(optimizer)
        scaler.update()

    with one_process_group(s.device) as backend:
        ids = [s.device.index or 0] if s.device.type == "cuda" else None
        wrapped = DistributedDataParallel(net, device_ids=ids)
        out: dict[str, Any] = {"backend": backend}
        for name, module in (("plain", net), ("ddp", wrapped)):
            run = functools.partial(step, module)
            timed(run, s.device, s.warm)
            out[f"{name}_steps_per_s"] = s.steps / timed(run, s.device, s.steps)
    out["ddp_overhead"] = out["plain_steps_per_s"] / out["ddp_steps_per_s"] - 1
    return out


def report(results: dict[str, Any]) -> None:
    print(
        f"{results['device']}, {results['size']} px, {results['precision']}; peak "
        f"{1000 * results['peak_tflops']:.0f} GFLOP/s ({results['peak_source']})"
    )
    head = ("model", "batch", "GFLOP/sample", "samples/s", "limit", "of peak")
    print(f"{head[0]:<13}{head[1]:>6}{head[2]:>14}{head[3]:>11}{head[4]:>9}{head[5]:>9}")
    for r in results["models"]:
        print(
            f"{r['model']:<13}{r['batch']:>6}{r['gflop_per_sample']:>14.1f}"
            f"{r['samples_per_s']:>11.1f}{r['limit_samples_per_s']:>9.1f}{r['of_peak']:>9.1%}"
        )
    for r in results["data_path"]:
        rate, batch = r["triplets_per_s"], r["batch"]
        print(f"data: {r['source']:<24} {rate:>9.0f} triplets/s (batch {batch})")
    e = results["paper_epoch"]
    print(
        f"unet epoch over {e['triplets']} triplets: {e['samples_per_s']:.1f} samples/s, "
        f"{e['epoch_seconds']:.1f} s"
        + (f" (projected from {e['steps']} steps)" if e["steps"] else "")
    )
    for r in results["sampling"]:
        print(f"ddpm sampling, {r['sampler']}: {r['ms_per_slice']:.1f} ms/slice")
    d = results["ddp"]
    print(
        f"DDP ({d['backend']}, 1 process): {d['ddp_steps_per_s']:.2f} steps/s, "
        f"plain {d['plain_steps_per_s']:.2f}, overhead {d['ddp_overhead']:+.1%}"
    )


def main(argv: list[str] | None = None) -> dict[str, Any]:
    s = parse(argv or [])
    logging.getLogger("slicelib").setLevel(logging.WARNING)
    if s.device.type == "cuda":
        torch.backends.cudnn.benchmark = True
    peak, source = peak_flops(s.device, s.precision)
    results: dict[str, Any] = {
        "device": device_name(s.device), "size": s.size, "precision": s.precision,
        "compile": s.compile, "peak_tflops": peak / 1e12, "peak_source": source,
        "torch": torch.__version__,
    }  # fmt: skip
    results["models"] = [model_throughput(s, m, peak) for m in s.models]
    with tempfile.TemporaryDirectory() as tmp:
        cache_dir = synthetic_cache(Path(tmp), s)
        results["data_path"] = data_path(s, cache_dir)
        if s.device.type == "cuda":
            torch.cuda.empty_cache()  # the resident check counts cached blocks as taken
        results["paper_epoch"] = paper_epoch(s, cache_dir, Path(tmp) / "run")
    results["sampling"] = sampling(s)
    results["ddp"] = ddp_step(s)
    report(results)
    out = s.out
    out.write_text(json.dumps(results, indent=2) + "\n", encoding="utf-8")
    print(f"wrote {out}")
    return results


if __name__ == "__main__":
    import sys

    main(sys.argv[1:])
