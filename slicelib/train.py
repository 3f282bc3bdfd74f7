"""The training loop: one function for every model, the objective as a strategy.

:func:`train` reads triplets from a prepared cache, optimises with Adam, validates
once per epoch (loss, PSNR and Gaussian-window SSIM on full-size validation
slices) and keeps ``best.pt`` (best validation SSIM; lowest validation loss for the
DDPM and for networks trained on squared error; the last epoch when the learning rate
decays), ``last.pt``, ``history.csv`` and
``config.json`` in the run directory (a new or empty folder, or a run slicelib
wrote: :mod:`slicelib.outputs`). Runs resume from ``last.pt``; every epoch reseeds
from ``(seed, epoch, rank)``, so on the CPU an interrupted and resumed run ends with the same
weights as an uninterrupted one.

The same loop trains the refinement of a trained U-Net (a
:class:`~slicelib.config.RefineConfig`, :class:`~slicelib.objectives.RefinementObjective`);
its history adds the loss terms and the U-Net's validation PSNR (``val_unet_psnr``).

Under ``torchrun`` the same function trains with DistributedDataParallel (see
:mod:`slicelib.distributed`): ``batch_size`` is the effective batch, split over the
processes (:data:`~slicelib.config.BATCH_RULE`), and rank 0 writes. A run folder has one
writer at a time (:func:`slicelib.locking.hold_lock`).

Every epoch logs one line (rank 0): the losses, validation PSNR and SSIM, the
throughput, the epoch's time and the time left at that pace.
"""

from __future__ import annotations

import csv
import io
import logging
import math
import tempfile
import time
from collections.abc import Callable, Iterator, Mapping
from contextlib import ExitStack, contextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import Any, get_args

import numpy as np
import torch
from torch.utils.data import DataLoader, DistributedSampler
from tqdm import tqdm

from slicelib import __version__, distributed
from slicelib.checkpoint import (
    check_compatible,
    checkpoint_header,
    load_state,
    read_checkpoint,
    save_checkpoint,
)
from slicelib.config import (
    CUDA_LOADER_WORKERS,
    TRAINABLE,
    CpuPrecision,
    DataOnDevice,
    Loss,
    Precision,
    RefineConfig,
    RunConfig,
    Schedule,
    TrainConfig,
    process_batch,
    recorded_run_defining,
    run_defining,
    run_kind,
    to_dict,
    train_part,
)
from slicelib.data.cache import Cache
from slicelib.data.dataset import TripletDataset
from slicelib.data.resident import ResidentTriplets, use_resident
from slicelib.device import grad_scaler, prepare_module, to_device
from slicelib.distributed import DistInfo
from slicelib.errors import SlicelibError, unknown_choice
from slicelib.inference import inference_autocast, use_cpu_bf16
from slicelib.io import write_json, write_text
from slicelib.locking import hold_lock
from slicelib.metrics import batch_psnr, batch_ssim
from slicelib.model_card import MODEL_CARD, training_domain, write_model_card
from slicelib.models import takes_estimate
from slicelib.objectives import Learner, Objective, build_networks, build_objective, keeps_last
from slicelib.outputs import check_output, claim, remove_stale_files, require_path

log = logging.getLogger(__name__)

HISTORY_COLUMNS: tuple[str, ...] = (
    "epoch", "train_loss", "val_loss", "val_psnr", "val_ssim", "seconds", "samples_per_s",
)  # fmt: skip
_SYNC_EVERY_CUDA = 16  # steps between host syncs (loss check) on CUDA; every step on the CPU

EpochCallback = Callable[[dict[str, float]], bool | None]


@dataclass
class TrainResult:
    """What a run produced. ``history``: one dict per epoch (:data:`HISTORY_COLUMNS`, plus
    ``train_<part>`` loss terms for the GANs); ``best_epoch`` is 1-based."""

    history: list[dict[str, float]]
    best_epoch: int
    best_value: float  # val SSIM of the best epoch, or its val loss (objectives.selects_on_loss)
    run_dir: Path


def check_config(run_cfg: RunConfig) -> None:
    """One-line errors for settings no run can use."""
    if isinstance(run_cfg, RefineConfig):
        refine_checks = {
            "recon_weight": run_cfg.recon_weight >= 0,
            "residual_quantile": 0.5 < run_cfg.residual_quantile <= 1.0,
        }
        for name, ok in refine_checks.items():
            if not ok:
                raise SlicelibError(
                    f"invalid refinement parameter {name}={getattr(run_cfg, name)!r}"
                )
        if not run_cfg.train.diffusion.rescale:
            raise SlicelibError(
                "a refinement diffuses its residual in [-1, 1]: set train.diffusion.rescale=True"
            )
    cfg = train_part(run_cfg)
    if cfg.model not in TRAINABLE:
        raise unknown_choice("model", cfg.model, TRAINABLE)
    checks = {
        "k": (cfg.k >= 1, ">= 1"),
        "epochs": (cfg.epochs >= 1, ">= 1"),
        "batch_size": (cfg.batch_size >= 1, ">= 1"),
        "lr": (cfg.lr > 0, "> 0"),
        "crop": (cfg.crop is None or cfg.crop >= 1, "None or >= 1"),
        "steps_per_epoch": (
            cfg.steps_per_epoch is None or cfg.steps_per_epoch >= 1,
            "None or >= 1",
        ),
        "val_max_slices": (cfg.val_max_slices is None or cfg.val_max_slices >= 1, "None or >= 1"),
        "slices_per_patient": (
            cfg.slices_per_patient is None or cfg.slices_per_patient >= 1,
            "None or >= 1",
        ),
        "schedule": (cfg.schedule in get_args(Schedule), f"one of {get_args(Schedule)}"),
        "warmup": (0.0 <= cfg.warmup < 1.0, "in [0, 1)"),
        "loss": (cfg.loss in get_args(Loss), f"one of {get_args(Loss)}"),
        "grad_clip": (cfg.grad_clip is None or cfg.grad_clip > 0, "None or > 0"),
        "cpu_precision": (
            cfg.cpu_precision in get_args(CpuPrecision),
            f"one of {get_args(CpuPrecision)}",
        ),
        "val_ddim_steps": (cfg.val_ddim_steps >= 1, ">= 1"),
        "num_workers": (cfg.num_workers is None or cfg.num_workers >= 0, "None or >= 0"),
        "precision": (cfg.precision in get_args(Precision), f"one of {get_args(Precision)}"),
        "data_on_device": (
            cfg.data_on_device in get_args(DataOnDevice),
            f"one of {get_args(DataOnDevice)}",
        ),
    }
    for name, (ok, requirement) in checks.items():
        if not ok:
            value = getattr(cfg, name)
            raise SlicelibError(
                f"training parameter {name}={value!r} is invalid (must be {requirement})"
            )


# Warm-up starts the learning rate at this fraction of its peak.
WARMUP_START = 0.04


def lr_factor(step: int, total: int, schedule: str, warmup: float) -> float:
    """The learning rate of optimisation step ``step`` (0-based, of ``total``) as a fraction
    of the peak: a linear warm-up from :data:`WARMUP_START` over the first ``warmup``
    fraction of the steps, then constant or a cosine decay to 0."""
    ramp = int(round(warmup * total))
    if step < ramp:
        return WARMUP_START + (1.0 - WARMUP_START) * step / ramp
    if schedule == "constant":
        return 1.0
    return 0.5 * (1.0 + math.cos(math.pi * (step - ramp) / max(1, total - ramp)))


def epoch_seed(seed: int, epoch: int, rank: int = 0) -> int:
    """The seed of one epoch on one process (independent streams per epoch and rank)."""
    return int(np.random.SeedSequence([seed, epoch, rank]).generate_state(1)[0])


def train(
    run_cfg: RunConfig,
    cache_dir: str | Path,
    run_dir: str | Path,
    *,
    resume: bool = True,
    progress: bool = True,
    on_epoch_end: EpochCallback | None = None,
) -> TrainResult:
    """Train ``cfg.model`` at ``cfg.k`` (or a refinement) on the cache in ``cache_dir``;
    write ``run_dir``.

    ``resume``: continue from ``run_dir/last.pt`` when it exists (a finished run
    returns its result at once). ``on_epoch_end(row)`` is called after each epoch's
    checkpoint is written; returning True stops the run there. A second process training
    into the same ``run_dir`` meanwhile is refused with a one-line error naming this one.
    """
    check_config(run_cfg)
    cfg = train_part(run_cfg)
    kind = run_kind(run_cfg)
    run_dir = require_path(run_dir, "run directory")
    cache = Cache(require_path(cache_dir, "cache"))
    size = cache.config.size
    with (
        distributed.session(cfg.device) as (info, device),
        _deterministic(device),
        ExitStack() as lock,
    ):
        motion = cfg.model_cfg.flow if takes_estimate(cfg.model) else None
        train_set = TripletDataset(
            cache, "train", cfg.k, crop=cfg.crop, augment=cfg.augment, seed=cfg.seed,
            slices_per_patient=cfg.slices_per_patient, motion=motion,
        )  # fmt: skip
        val_set = TripletDataset(cache, "val", cfg.k, max_slices=cfg.val_max_slices, motion=motion)
        for split, data in (("train", train_set), ("val", val_set)):
            if len(data) == 0:
                most = max((e.n_slices for e in cache.entries(split)), default=0)
                raise SlicelibError(
                    f"cache {cache_dir}: no {split} triplets at k={cfg.k} (a volume needs "
                    f"at least {2 * cfg.k + 1} slices; its {split} volumes have at most {most})"
                )
        per_process = process_batch(cfg.batch_size, info.world_size)
        problem = _make_run_dir(run_dir, lock) if info.is_main else None
        problem = distributed.from_main(problem, info)  # every rank stops, none waits
        if problem:
            raise SlicelibError(problem)
        torch.manual_seed(cfg.seed)  # same initial weights on every rank
        cpu_bf16 = use_cpu_bf16(device, cfg.cpu_precision)
        learners = _build_learners(run_cfg, device, info, cpu_bf16)
        objective = build_objective(
            run_cfg, learners, lambda: inference_autocast(device, cfg.precision, cpu_bf16),
            device=device, image_size=int(size),
        )  # fmt: skip
        meta: dict[str, Any] = {
            "size": size,
            "autocast": autocast_used(device, cfg, cpu_bf16),
            "cache_config": to_dict(cache.config),
            "world_size": info.world_size,
            "process_batch": per_process,
            "training_domain": training_domain(cache.manifest),  # what the model card states
        }
        start, history, best = (
            _resume(run_cfg, run_dir, objective, meta, device, info) if resume else (0, [], None)
        )
        sampler: DistributedSampler[Any] = DistributedSampler(
            train_set, num_replicas=info.world_size, rank=info.rank, shuffle=True, seed=cfg.seed
        )
        loader_gen = torch.Generator()
        workers = cfg.num_workers
        if workers is None:
            workers = CUDA_LOADER_WORKERS if device.type == "cuda" else 0
        loader: DataLoader[Any] | ResidentTriplets = DataLoader(
            train_set, batch_size=per_process, sampler=sampler, num_workers=workers,
            pin_memory=device.type == "cuda", generator=loader_gen,
        )  # fmt: skip
        if use_resident(train_set, device, cfg.data_on_device):  # same batches, built on device
            loader = ResidentTriplets(train_set, sampler, per_process, device)
        val_loader = DataLoader(val_set, batch_size=cfg.batch_size, shuffle=False)
        steps = min(cfg.steps_per_epoch or len(loader), len(loader))
        if start == 0:  # e.g. the refinement's residual scale, the same on every rank
            objective.prepare(loader)
            objective.load_extra_state(distributed.from_main(objective.extra_state(), info))
        if info.is_main:
            write_json(
                run_dir / "config.json",
                _run_config(run_cfg, cache_dir, meta, device, objective),
            )

        epoch_seconds: list[float] = []  # this process's epochs: the pace of the time left
        for epoch in range(start + 1, cfg.epochs + 1):
            started = time.perf_counter()
            seed = epoch_seed(cfg.seed, epoch, info.rank)
            torch.manual_seed(seed)  # dropout, timesteps, noise, augmentation
            loader_gen.manual_seed(seed)  # worker seeds
            sampler.set_epoch(epoch)  # the same shuffle on every rank, a new one per epoch
            train_set.set_epoch(epoch)  # new crops and flips, the same on every rank
            bar = tqdm(
                total=steps, desc=f"{kind} k={cfg.k} epoch {epoch}/{cfg.epochs}",
                disable=not (progress and info.is_main), leave=False,
            )  # fmt: skip
            with bar:
                means, samples = _train_epoch(
                    objective, loader, steps, device, cfg, epoch, info, bar, cpu_bf16
                )
            train_seconds = time.perf_counter() - started

            val = _validate(objective, val_loader, device, cfg, cpu_bf16) if info.is_main else None
            val = distributed.from_main(val, info)
            row: dict[str, float] = {
                "epoch": epoch,
                "train_loss": means.pop("loss"),
                **val,
                "seconds": time.perf_counter() - started,
                "samples_per_s": samples * info.world_size / train_seconds,
            }
            row.update({f"train_{name}": value for name, value in means.items()})
            history.append(row)
            value = row["val_ssim"] if objective.higher_is_better else row["val_loss"]
            improved = (
                keeps_last(cfg)
                or best is None
                or (value > best[1] if objective.higher_is_better else value < best[1])
            )
            if improved:
                best = (epoch, value)
            assert best is not None
            if info.is_main:
                state = _state(run_cfg, objective, meta, epoch, history, best)
                if improved:  # best before last: a crash in between redoes this epoch
                    save_checkpoint(run_dir / "best.pt", state)
                save_checkpoint(run_dir / "last.pt", state)
                _write_history(run_dir / "history.csv", history)
            epoch_seconds.append(time.perf_counter() - started)
            if info.is_main:
                left = float(np.mean(epoch_seconds)) * (cfg.epochs - epoch)
                log.info(
                    "%s k=%d epoch %d/%d: train loss %.4f, val loss %.4f, PSNR %.2f dB, "
                    "SSIM %.4f, %.1f samples/s, %s this epoch, %s left%s", kind, cfg.k,
                    epoch, cfg.epochs, row["train_loss"], row["val_loss"], row["val_psnr"],
                    row["val_ssim"], row["samples_per_s"], duration(epoch_seconds[-1]),
                    duration(left), " (best)" if improved else "",
                )  # fmt: skip
            distributed.barrier(info)
            if on_epoch_end is not None and on_epoch_end(dict(row)):
                break
        if best is None:
            raise SlicelibError(f"run {run_dir}: no epoch was trained")
        if info.is_main:
            write_model_card(
                run_dir, to_dict(cfg), cache_dir, meta["training_domain"], history, best[0]
            )
        return TrainResult(history=history, best_epoch=best[0], best_value=best[1], run_dir=run_dir)


def duration(seconds: float) -> str:
    """A wall-clock span for a log line: ``"8.2 s"``, ``"4 min 36 s"``, ``"2 h 05 min"``."""
    if round(seconds, 1) < 60:
        return f"{seconds:.1f} s"
    minutes, secs = divmod(round(seconds), 60)
    if minutes < 60:
        return f"{minutes} min {secs:02d} s"
    hours, minutes = divmod(minutes, 60)
    return f"{hours} h {minutes:02d} min"


def _train_epoch(
    objective: Objective,
    loader: DataLoader[Any] | ResidentTriplets,
    steps: int,
    device: torch.device,
    cfg: TrainConfig,
    epoch: int,
    info: DistInfo,
    bar: tqdm[Any],
    cpu_bf16: bool,
) -> tuple[dict[str, float], int]:
    """``steps`` training steps at the schedule's learning rates: the mean of each loss
    term over steps and processes, and the number of samples this process trained on."""
    for learner in objective.learners.values():
        learner.raw.train()
    totals: torch.Tensor | None = None
    names: list[str] = []
    pending: list[torch.Tensor] = []
    samples = 0
    batches = iter(loader)
    for step in range(1, steps + 1):
        batch = next(batches)
        samples += len(batch.target)
        factor = lr_factor(
            (epoch - 1) * steps + step - 1, cfg.epochs * steps, cfg.schedule, cfg.warmup
        )
        for learner in objective.learners.values():
            for group in learner.optimizer.param_groups:
                group["lr"] = cfg.lr * factor
        parts = objective.train_step(
            _batch_input(batch.inputs, device, cpu_bf16), to_device(batch.target, device)
        )
        names = list(parts)
        pending.append(torch.stack(list(parts.values())))
        # reading losses back waits for the GPU: do it every few steps only
        if step == steps or device.type != "cuda" or len(pending) == _SYNC_EVERY_CUDA:
            block = torch.stack(pending).float()  # (steps since last check, parts)
            _check_finite(block, names, cfg, epoch, step - len(pending) + 1, info)
            totals = block.sum(0) if totals is None else totals + block.sum(0)
            pending.clear()
            bar.set_postfix(loss=f"{float(block[-1, 0]):.4f}")
        bar.update()
    assert totals is not None
    means = distributed.mean_over_ranks(totals / steps, info).cpu()
    return {name: float(value) for name, value in zip(names, means)}, samples


@contextmanager
def _deterministic(device: torch.device) -> Iterator[None]:
    """Deterministic kernels on the CPU; on CUDA the fastest ones for the fixed batch shape
    (deterministic CUDA would need cuBLAS settings and slower kernels)."""
    deterministic = torch.are_deterministic_algorithms_enabled()
    warn_only = torch.is_deterministic_algorithms_warn_only_enabled()
    benchmark = torch.backends.cudnn.benchmark
    if device.type == "cpu":
        torch.use_deterministic_algorithms(True, warn_only=True)
    else:
        torch.backends.cudnn.benchmark = True
    try:
        yield
    finally:
        torch.use_deterministic_algorithms(deterministic, warn_only=warn_only)
        torch.backends.cudnn.benchmark = benchmark


# What a run folder holds (the marker aside): the only names training writes there.
RUN_FILES: tuple[str, ...] = (
    "best.pt", "last.pt", "history.csv", "config.json", MODEL_CARD,
)  # fmt: skip


def _make_run_dir(run_dir: Path, lock: ExitStack) -> str | None:
    """Check that ``run_dir`` is new, empty or a run slicelib wrote
    (:func:`slicelib.outputs.check_output`), create it, take its lock for as long as
    ``lock`` lasts (one training process per run folder), mark it as a run and remove
    the temporary files of a killed save; the problem in one line, or None."""
    try:
        check_output(run_dir, "run", mode="continue", what="run directory")
        run_dir.mkdir(parents=True, exist_ok=True)
        with tempfile.TemporaryFile(dir=run_dir):
            pass
        lock.enter_context(hold_lock(run_dir, f"training run {run_dir}"))
        claim(run_dir, "run")
        remove_stale_files(run_dir, RUN_FILES)
    except OSError as exc:
        return f"cannot write to run directory {run_dir} ({exc.strerror or exc})"
    except SlicelibError as exc:
        return str(exc)
    return None


def autocast_used(device: torch.device, cfg: TrainConfig, cpu_bf16: bool) -> str:
    """The precision a run computes in, as its records state it."""
    from slicelib.device import amp_dtype

    if device.type == "cpu":
        return "bf16 autocast (CPU)" if cpu_bf16 else "fp32"
    dtype = amp_dtype(device, cfg.precision)
    return "fp32" if dtype is None else f"{str(dtype).removeprefix('torch.')} autocast (CUDA)"


def _batch_input(x: torch.Tensor, device: torch.device, cpu_bf16: bool) -> torch.Tensor:
    """A batch on ``device``, channels_last where the convolutions want it (CUDA, and the
    CPU's bfloat16 kernels)."""
    x = to_device(x, device)
    return x.contiguous(memory_format=torch.channels_last) if cpu_bf16 else x


def _build_learners(
    run_cfg: RunConfig, device: torch.device, info: DistInfo, cpu_bf16: bool
) -> dict[str, Learner]:
    cfg = train_part(run_cfg)
    learners = {}
    for role, net in build_networks(run_cfg).items():
        net = prepare_module(net, device)
        if cpu_bf16:  # oneDNN's bfloat16 convolutions want NHWC
            net.to(memory_format=torch.channels_last)  # type: ignore[call-overload]
        raw = distributed.sync_batchnorm(net, info, device)
        module = distributed.wrap(raw, info, device)
        if cfg.compile:
            module = torch.compile(module)  # type: ignore[assignment]
        # fused: one kernel for all parameters on CUDA (the CPU keeps the reference loop)
        optimizer = torch.optim.Adam(raw.parameters(), lr=cfg.lr, fused=device.type == "cuda")
        scaler = grad_scaler(device, cfg.precision)
        learners[role] = Learner(raw, module, optimizer, scaler, clip=cfg.grad_clip)
    return learners


def _state(
    run_cfg: RunConfig,
    objective: Objective,
    meta: Mapping[str, Any],
    epoch: int,
    history: list[dict[str, float]],
    best: tuple[int, float],
) -> dict[str, Any]:
    """The checkpoint: tensors and plain values only (see :mod:`slicelib.checkpoint`)."""
    cfg = train_part(run_cfg)
    learners = objective.learners
    state = {
        **checkpoint_header(run_kind(run_cfg), cfg.k, meta["size"], epoch, history, best),
        "train_config": to_dict(cfg),
        "cache_config": meta["cache_config"],
        "world_size": meta["world_size"],
        "process_batch": meta["process_batch"],
        "training_domain": meta["training_domain"],
        "models": {
            **{role: ln.raw.state_dict() for role, ln in learners.items()},
            **{role: net.state_dict() for role, net in objective.frozen.items()},
        },
        "optimizers": {role: ln.optimizer.state_dict() for role, ln in learners.items()},
        "scalers": {role: ln.scaler.state_dict() for role, ln in learners.items()},
        "objective": objective.extra_state(),
    }
    if isinstance(run_cfg, RefineConfig):
        state["refine_config"] = to_dict(run_cfg)
    return state


def _resume(
    run_cfg: RunConfig,
    run_dir: Path,
    objective: Objective,
    meta: Mapping[str, Any],
    device: torch.device,
    info: DistInfo,
) -> tuple[int, list[dict[str, float]], tuple[int, float] | None]:
    """Restore networks, optimisers, scalers and the objective's state from ``last.pt``;
    (epochs done, history, best)."""
    path = run_dir / "last.pt"
    if not path.exists():
        return 0, [], None
    cfg = train_part(run_cfg)
    state = read_checkpoint(path, device)
    check_compatible(state, path, model=run_kind(run_cfg), k=cfg.k, image_size=meta["size"])
    saved = recorded_run_defining(
        state["train_config"], int(state.get("world_size", 1)), state.get("process_batch")
    )
    defining = run_defining(cfg)
    if isinstance(run_cfg, RefineConfig):
        saved = {**saved, **state.get("refine_config", {})}
        defining.update(
            (name, getattr(run_cfg, name))
            for name in ("recon_weight", "residual_quantile", "unet_run")
        )
    # A resumed run may change only what does not define it; else it is another experiment.
    for name, value in defining.items():
        if saved.get(name) != value:
            raise SlicelibError(
                f"run {run_dir} was trained with {name}={saved.get(name)!r}, not "
                f"{value!r}; choose another run directory or do not resume"
            )
    learners = objective.learners
    for role, net in objective.frozen.items():  # the networks it was trained with
        load_state(net, state["models"][role], path=path, role=role)
    objective.load_extra_state(state.get("objective", {}))
    for role, learner in learners.items():
        load_state(learner.raw, state["models"][role], path=path, role=role)
        learner.optimizer.load_state_dict(state["optimizers"][role])
        scaler_state = state["scalers"].get(role)
        if scaler_state and learner.scaler.is_enabled():
            learner.scaler.load_state_dict(scaler_state)
    epoch = int(state["epoch"])
    if info.is_main:
        log.info("resuming %s from %s after epoch %d", run_kind(run_cfg), path, epoch)
    return epoch, list(state["history"]), (int(state["best_epoch"]), float(state["best_value"]))


def _check_finite(
    block: torch.Tensor, names: list[str], cfg: TrainConfig, epoch: int, first_step: int,
    info: DistInfo,
) -> None:  # fmt: skip
    """Stop every process when a loss in ``block`` (steps, parts) is NaN or infinite."""
    bad = ~torch.isfinite(block)
    flag = distributed.mean_over_ranks(bad.any().float().reshape(1), info)
    if float(flag) == 0.0:
        return
    if not bad.any():
        raise SlicelibError(
            f"non-finite training loss on another process (model {cfg.model!r}, epoch {epoch})"
        )
    row, col = (int(i) for i in bad.nonzero()[0])
    value = float(block[row, col].cpu())
    mixed = block.device.type == "cuda" and cfg.precision != "fp32"
    raise SlicelibError(
        f"{names[col]} loss is {value} for model {cfg.model!r} at epoch {epoch}, "
        f"step {first_step + row}; lower the learning rate (lr={cfg.lr})"
        + (" or train in fp32" if mixed else "")
    )


@torch.no_grad()
def _validate(
    objective: Objective,
    loader: DataLoader[Any],
    device: torch.device,
    cfg: TrainConfig,
    cpu_bf16: bool,
) -> dict[str, float]:
    """Mean validation loss, PSNR and Gaussian-window SSIM over full-size slices (data
    range 1), and the PSNR of the objective's reference prediction when it has one
    (``val_<name>_psnr``).

    Timesteps, noise and samples are seeded, so every epoch sees the same ones.
    """
    for learner in objective.learners.values():
        learner.raw.eval()
    generator = torch.Generator(device=device).manual_seed(cfg.seed)
    loss_sum, psnrs, ssims, reference_psnrs = 0.0, [], [], []
    for batch in loader:
        inputs = _batch_input(batch.inputs, device, cpu_bf16)
        target = to_device(batch.target, device)
        with inference_autocast(device, cfg.precision, cpu_bf16):
            loss = objective.val_loss(inputs, target, generator)
            pred = objective.predict(inputs, generator)
            reference = objective.reference(inputs)
        loss_sum += float(loss) * len(inputs)
        psnrs += batch_psnr(pred.float(), target, data_range=1.0)
        ssims += batch_ssim(pred.float(), target, data_range=1.0, gaussian=True)
        if reference is not None:
            reference_psnrs += batch_psnr(reference.float(), target, data_range=1.0)
    row = {
        "val_loss": loss_sum / len(psnrs),
        "val_psnr": float(np.mean(psnrs)),
        "val_ssim": float(np.mean(ssims)),
    }
    if objective.reference_name is not None:
        row[f"val_{objective.reference_name}_psnr"] = float(np.mean(reference_psnrs))
    return row


def _run_config(
    run_cfg: RunConfig,
    cache_dir: str | Path,
    meta: Mapping[str, Any],
    device: torch.device,
    objective: Objective,
) -> dict[str, Any]:
    config = {
        "slicelib_version": __version__,
        "train": to_dict(train_part(run_cfg)),
        "cache": {"dir": str(Path(cache_dir).resolve()), "config": meta["cache_config"]},
        "image_size": meta["size"],
        "world_size": meta["world_size"],
        "process_batch": meta["process_batch"],
        "device": str(device),
        "autocast": meta["autocast"],
    }
    if isinstance(run_cfg, RefineConfig):
        config["refine"] = to_dict(run_cfg)
        config["objective"] = objective.extra_state()
    return config


def _write_history(path: Path, history: list[dict[str, float]]) -> None:
    columns = list(HISTORY_COLUMNS) + [c for c in history[0] if c not in HISTORY_COLUMNS]
    buffer = io.StringIO()
    writer = csv.DictWriter(buffer, fieldnames=columns, extrasaction="ignore")
    writer.writeheader()
    for row in history:
        writer.writerow({c: _fmt(row.get(c, math.nan)) for c in columns})
    write_text(path, buffer.getvalue())


def _fmt(value: float) -> str:
    return str(int(value)) if isinstance(value, int) else repr(float(value))
