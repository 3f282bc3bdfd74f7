"""Residual diffusion that refines the U-Net's prediction (supplement 4.3).

The U-Net gives a deterministic estimate ``base`` of the middle slice; a DDPM
learns what it misses, the residual ``target - base``. The residual is encoded
into the diffusion's [0, 1] data range as ``0.5 + r / (2 c)`` (clipped), where
``c`` is a quantile of |r| on the training set, so that the unchanged
:class:`~slicelib.diffusion.GaussianDiffusion` (and its x0 clipping) applies. The
refiner always diffuses in [-1, 1] (``DiffusionConfig.rescale``), where a zero
residual is the origin and sampling from N(0, I) starts at the mean; in [0, 1]
the start would be half the range away from it (with T=100 and the study's betas
x_T still carries 60 % of the signal).
The denoiser is the study's conditional U-Net with three conditioning channels:
the two neighbours and ``base``.

Training minimises the noise-prediction MSE plus ``recon_weight`` times the L1
error of the reconstruction ``base + r_hat``, where ``r_hat`` is the residual
implied by the predicted noise (a hybrid objective, supplement 4.3). Sampling
uses DDIM (deterministic at eta = 0) or ancestral steps; the refined slice is
``clip(base + r_hat, 0, 1)``.

A refinement run folder holds ``best.pt`` (best validation SSIM of the refined
slices, Gaussian window as the other models validate), ``last.pt``,
``history.csv`` and ``config.json``. Checkpoints carry the U-Net's weights too,
so a refiner never meets another U-Net than the one it was trained on. Runs do
not resume: an interrupted run starts again.
"""

from __future__ import annotations

import csv
import dataclasses
import json
import logging
import math
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Literal

import numpy as np
import pandas as pd
import torch
import torch.nn.functional as F
from torch import nn
from tqdm import tqdm

from slicelib import __version__
from slicelib.checkpoint import (
    checkpoint_header,
    load_run,
    load_state,
    read_checkpoint,
    save_checkpoint,
)
from slicelib.config import (
    EvalConfig,
    ModelConfig,
    PrepareConfig,
    RefineConfig,
    TrainConfig,
    from_dict,
    to_dict,
)
from slicelib.device import resolve_device
from slicelib.diffusion import GaussianDiffusion
from slicelib.errors import SlicelibError
from slicelib.evaluate import Batch, Method, Prediction
from slicelib.io import atomic_write
from slicelib.methods import MethodSpec, family_of
from slicelib.metrics import batch_psnr, batch_ssim
from slicelib.models.ddpm_unet import ConditionalUNet
from slicelib.results import Results

log = logging.getLogger(__name__)

KIND = "refine"
COND_CHANNELS = 3  # S_{i-k}, S_{i+k}, the U-Net's prediction
SCALE_BATCHES = 16  # training batches used to measure the residual's scale
Sampler = Literal["ddim", "ancestral"]


def encode_residual(residual: torch.Tensor, scale: float) -> torch.Tensor:
    """Residual (any range) -> diffusion data in [0, 1]: ``0.5 + r / (2 scale)``, clipped."""
    return (0.5 + residual / (2.0 * scale)).clamp(0.0, 1.0)


def decode_residual(data: torch.Tensor, scale: float) -> torch.Tensor:
    """Inverse of :func:`encode_residual` (for data in [0, 1])."""
    return (data - 0.5) * (2.0 * scale)


def build_denoiser(model_cfg: ModelConfig) -> ConditionalUNet:
    """The DDPM's conditional U-Net with three conditioning channels."""
    return ConditionalUNet(
        channels=model_cfg.ddpm_channels,
        time_dim=model_cfg.ddpm_time_dim,
        cond_channels=COND_CHANNELS,
    )


def conditioning(inputs: torch.Tensor, base: torch.Tensor) -> torch.Tensor:
    """(N, 2, H, W) neighbours and (N, 1, H, W) U-Net prediction -> (N, 3, H, W)."""
    return torch.cat([inputs, base], dim=1)


class Refiner:
    """A U-Net and the diffusion model refining its output; both in eval mode.

    ``__call__``/:meth:`refine`: inputs (N, 2, H, W) in [0, 1] -> refined (N, 1, H, W)
    in [0, 1]; with ``samples > 1`` the mean of that many refined samples (an estimate
    of the posterior mean, which a single sample's PSNR cannot reach).
    """

    def __init__(
        self,
        unet: nn.Module,
        denoiser: nn.Module,
        diffusion: GaussianDiffusion,
        scale: float,
        *,
        sampler: Sampler = "ddim",
        steps: int | None = None,
        eta: float = 0.0,
        seed: int = 0,
        samples: int = 1,
    ) -> None:
        if sampler not in ("ddim", "ancestral"):
            raise SlicelibError(f"unknown sampler {sampler!r} (choose ddim or ancestral)")
        if samples < 1:
            raise SlicelibError(f"samples must be >= 1 (got {samples})")
        self.samples = samples
        self.unet = unet.eval()
        self.denoiser = denoiser.eval()
        self.diffusion = diffusion
        self.scale = float(scale)
        self.sampler = sampler
        self.steps = steps or diffusion.timesteps
        self.eta = eta
        self.device = next(denoiser.parameters()).device
        self.generator = torch.Generator(device=self.device).manual_seed(seed)

    @torch.no_grad()
    def base(self, inputs: torch.Tensor) -> torch.Tensor:
        """The U-Net's prediction clipped to [0, 1], (N, 1, H, W)."""
        return self.unet(inputs.to(self.device, dtype=torch.float32)).float().clamp(0.0, 1.0)

    @torch.no_grad()
    def refine(self, inputs: torch.Tensor) -> torch.Tensor:
        x = inputs.to(self.device, dtype=torch.float32)
        base = self.base(x)
        cond = conditioning(x, base)
        total = torch.zeros_like(base)
        for _ in range(self.samples):
            if self.sampler == "ddim":
                data = self.diffusion.ddim_sample(
                    self.denoiser, cond, self.steps, eta=self.eta, generator=self.generator
                )
            else:
                data = self.diffusion.sample(self.denoiser, cond, generator=self.generator)
            total += (base + decode_residual(data.float(), self.scale)).clamp(0.0, 1.0)
        return (total / self.samples).to(inputs.device)

    __call__ = refine


def hybrid_loss(
    diffusion: GaussianDiffusion,
    denoiser: nn.Module,
    inputs: torch.Tensor,
    base: torch.Tensor,
    target: torch.Tensor,
    scale: float,
    recon_weight: float,
    *,
    t: torch.Tensor,
    noise: torch.Tensor,
) -> dict[str, torch.Tensor]:
    """Noise MSE + ``recon_weight`` * L1(base + implied residual, target), one forward pass.

    inputs (N, 2, H, W), base/target (N, 1, H, W) in [0, 1]; t (N,) long; noise like
    target. Returns ``loss``, ``noise`` and ``recon`` scalars.
    """
    x0 = diffusion.normalize(encode_residual(target - base, scale))
    x_t = diffusion.q_sample(x0, t, noise)
    cond = diffusion.normalize(conditioning(inputs, base))
    eps = denoiser(x_t, t, cond).float()
    noise_loss = F.mse_loss(eps, noise)
    abar = diffusion.alphas_cumprod.to(device=t.device)[t].to(x_t).reshape(-1, 1, 1, 1)
    x0_hat = (x_t - (1.0 - abar).sqrt() * eps) / abar.sqrt()
    refined = base + decode_residual(diffusion.unnormalize(x0_hat), scale)
    recon = F.l1_loss(refined, target)
    return {"loss": noise_loss + recon_weight * recon, "noise": noise_loss, "recon": recon}


@dataclass
class RefineResult:
    """``history``: one dict per epoch; ``best_epoch`` is 1-based."""

    history: list[dict[str, float]]
    best_epoch: int
    residual_scale: float
    run_dir: Path


def check_refine_config(cfg: RefineConfig) -> None:
    checks = {
        "k": cfg.k >= 1,
        "epochs": cfg.epochs >= 1,
        "batch_size": cfg.batch_size >= 1,
        "lr": cfg.lr > 0,
        "crop": cfg.crop is None or cfg.crop >= 8,
        "steps_per_epoch": cfg.steps_per_epoch is None or cfg.steps_per_epoch >= 1,
        "val_max_slices": cfg.val_max_slices is None or cfg.val_max_slices >= 1,
        "val_ddim_steps": cfg.val_ddim_steps >= 1,
        "recon_weight": cfg.recon_weight >= 0,
        "residual_quantile": 0.5 < cfg.residual_quantile <= 1.0,
    }
    for name, ok in checks.items():
        if not ok:
            raise SlicelibError(f"invalid refinement parameter {name}={getattr(cfg, name)!r}")


@torch.no_grad()
def residual_scale(
    unet: nn.Module, loader: Any, device: torch.device, quantile: float, batches: int
) -> float:
    """The ``quantile`` of |target - U-Net| over the first ``batches`` training batches."""
    values = []
    for i, batch in enumerate(loader):
        if i == batches:
            break
        base = unet(batch.inputs.to(device)).float().clamp(0, 1)
        values.append((batch.target.to(device) - base).abs().flatten().cpu())
    scale = float(torch.quantile(torch.cat(values)[:1_000_000], quantile))
    return max(scale, 1e-3)


def _state(
    cfg: RefineConfig,
    denoiser: nn.Module,
    unet_run: Any,
    cache_config: PrepareConfig,
    scale: float,
    epoch: int,
    history: list[dict[str, float]],
    best: tuple[int, float],
) -> dict[str, Any]:
    return {
        **checkpoint_header(KIND, cfg.k, cache_config.size, epoch, history, best),
        "kind": KIND,
        "refine_config": to_dict(cfg),
        "cache_config": to_dict(cache_config),
        "unet_checkpoint": str(unet_run.path),
        "unet_config": to_dict(unet_run.config),
        "residual_scale": scale,
        "models": {"denoiser": denoiser.state_dict(), "generator": unet_run.model.state_dict()},
    }


def train_refiner(
    cfg: RefineConfig,
    cache_dir: str | Path,
    unet_run: str | Path,
    run_dir: str | Path,
    *,
    progress: bool = True,
) -> RefineResult:
    """Train the residual diffusion model on top of the U-Net in ``unet_run`` (frozen).

    The U-Net must be trained at ``cfg.k`` on images of the cache's size. Writes
    ``run_dir/{best.pt,last.pt,history.csv,config.json}``.
    """
    from torch.utils.data import DataLoader

    from slicelib.data.cache import Cache
    from slicelib.data.dataset import TripletDataset

    check_refine_config(cfg)
    if not cfg.diffusion.rescale:
        log.info("refinement diffuses in [-1, 1]: DiffusionConfig.rescale set to True")
        cfg = dataclasses.replace(cfg, diffusion=dataclasses.replace(cfg.diffusion, rescale=True))
    device = resolve_device(cfg.device)
    cache = Cache(cache_dir)
    base_run = load_run(unet_run, device=device, k=cfg.k, image_size=int(cache.config.size))
    if base_run.config.model == "ddpm":
        raise SlicelibError(f"run {unet_run}: the refined model must be deterministic, not a DDPM")
    unet = base_run.model.eval()
    for p in unet.parameters():
        p.requires_grad_(False)
    run_dir = Path(run_dir)
    run_dir.mkdir(parents=True, exist_ok=True)

    torch.manual_seed(cfg.seed)
    train_set = TripletDataset(
        cache, "train", cfg.k, crop=cfg.crop, augment=cfg.augment, seed=cfg.seed
    )
    val_set = TripletDataset(cache, "val", cfg.k, max_slices=cfg.val_max_slices)
    if len(train_set) == 0 or len(val_set) == 0:
        raise SlicelibError(f"cache {cache_dir}: no train or val triplets at k={cfg.k}")
    gen = torch.Generator().manual_seed(cfg.seed)
    loader = DataLoader(train_set, batch_size=cfg.batch_size, shuffle=True, generator=gen)
    val_loader = DataLoader(val_set, batch_size=cfg.batch_size, shuffle=False)
    scale = residual_scale(unet, loader, device, cfg.residual_quantile, SCALE_BATCHES)
    log.info(
        "residual scale (quantile %.3f of |target - unet|): %.4f", cfg.residual_quantile, scale
    )

    diffusion = GaussianDiffusion(cfg.diffusion)
    denoiser = build_denoiser(cfg.model_cfg).to(device)
    optimizer = torch.optim.Adam(denoiser.parameters(), lr=cfg.lr)
    steps = min(cfg.steps_per_epoch or len(loader), len(loader))
    history: list[dict[str, float]] = []
    best: tuple[int, float] | None = None
    (run_dir / "config.json").write_text(
        json.dumps(
            {
                "slicelib_version": __version__,
                "refine": to_dict(cfg),
                "unet_run": str(base_run.path),
                "cache": str(Path(cache_dir).resolve()),
                "residual_scale": scale,
                "device": str(device),
            },
            indent=2,
        )
        + "\n"
    )
    for epoch in range(1, cfg.epochs + 1):
        started = time.perf_counter()
        denoiser.train()
        sums = {"loss": 0.0, "noise": 0.0, "recon": 0.0}
        batches = iter(loader)
        for step in tqdm(range(steps), desc=f"refine epoch {epoch}", disable=not progress):
            batch = next(batches)
            inputs, target = batch.inputs.to(device), batch.target.to(device)
            with torch.no_grad():
                base = unet(inputs).float().clamp(0, 1)
            t = diffusion.sample_timesteps(len(target), device=device)
            parts = hybrid_loss(
                diffusion, denoiser, inputs, base, target, scale, cfg.recon_weight,
                t=t, noise=torch.randn_like(target),
            )  # fmt: skip
            optimizer.zero_grad(set_to_none=True)
            parts["loss"].backward()
            optimizer.step()
            values = {name: float(v.detach()) for name, v in parts.items()}
            if not all(math.isfinite(v) for v in values.values()):
                raise SlicelibError(
                    f"refinement loss is not finite at epoch {epoch}, step {step + 1}: {values}"
                )
            for name, value in values.items():
                sums[name] += value
        train_seconds = time.perf_counter() - started
        val = _validate(unet, denoiser, diffusion, scale, val_loader, device, cfg)
        row: dict[str, float] = {
            "epoch": epoch,
            "train_loss": sums["loss"] / steps,
            "train_noise": sums["noise"] / steps,
            "train_recon": sums["recon"] / steps,
            **val,
            "seconds": time.perf_counter() - started,
            "samples_per_s": steps * cfg.batch_size / train_seconds,
        }
        history.append(row)
        improved = best is None or row["val_ssim"] > best[1]
        if improved:
            best = (epoch, row["val_ssim"])
        assert best is not None
        state = _state(cfg, denoiser, base_run, cache.config, scale, epoch, history, best)
        if improved:
            save_checkpoint(run_dir / "best.pt", state)
        save_checkpoint(run_dir / "last.pt", state)
        _write_history(run_dir / "history.csv", history)
        log.info(
            "refine epoch %d/%d: loss %.4f, val PSNR %.2f dB (U-Net %.2f dB), SSIM %.4f%s",
            epoch, cfg.epochs, row["train_loss"], row["val_psnr"], row["val_unet_psnr"],
            row["val_ssim"], " (best)" if improved else "",
        )  # fmt: skip
    assert best is not None
    return RefineResult(history=history, best_epoch=best[0], residual_scale=scale, run_dir=run_dir)


@torch.no_grad()
def _validate(
    unet: nn.Module,
    denoiser: nn.Module,
    diffusion: GaussianDiffusion,
    scale: float,
    loader: Any,
    device: torch.device,
    cfg: RefineConfig,
) -> dict[str, float]:
    """Seeded validation: hybrid loss, PSNR/SSIM (Gaussian) of refined and U-Net slices."""
    denoiser.eval()
    steps = min(cfg.val_ddim_steps, diffusion.timesteps)
    refiner = Refiner(unet, denoiser, diffusion, scale, steps=steps, seed=cfg.seed)
    gen = torch.Generator(device=device).manual_seed(cfg.seed)
    loss, psnrs, ssims, unet_psnrs = 0.0, [], [], []
    for batch in loader:
        inputs, target = batch.inputs.to(device), batch.target.to(device)
        base = refiner.base(inputs)
        t = diffusion.sample_timesteps(len(target), device=device, generator=gen)
        noise = torch.randn(target.shape, generator=gen, device=device)
        parts = hybrid_loss(
            diffusion, denoiser, inputs, base, target, scale, cfg.recon_weight, t=t, noise=noise
        )
        loss += float(parts["loss"]) * len(target)
        refined = refiner(inputs)
        psnrs += batch_psnr(refined, target, data_range=1.0)
        ssims += batch_ssim(refined, target, data_range=1.0, gaussian=True)
        unet_psnrs += batch_psnr(base, target, data_range=1.0)
    return {
        "val_loss": loss / len(psnrs),
        "val_psnr": float(np.mean(psnrs)),
        "val_ssim": float(np.mean(ssims)),
        "val_unet_psnr": float(np.mean(unet_psnrs)),
    }


def _write_history(path: Path, history: list[dict[str, float]]) -> None:
    def write(tmp: Path) -> None:
        with tmp.open("w", newline="") as handle:
            writer = csv.DictWriter(handle, fieldnames=list(history[0]))
            writer.writeheader()
            writer.writerows(history)

    atomic_write(path, write)


@dataclass
class LoadedRefiner:
    """A refinement run's checkpoint: its networks and what it was trained with."""

    config: RefineConfig
    unet_config: TrainConfig
    image_size: int
    residual_scale: float
    unet: nn.Module
    denoiser: nn.Module
    diffusion: GaussianDiffusion
    epoch: int
    history: list[dict[str, float]]
    path: Path
    device: torch.device

    def refiner(
        self,
        *,
        sampler: Sampler = "ddim",
        steps: int | None = None,
        eta: float = 0.0,
        seed: int = 0,
        samples: int = 1,
    ) -> Refiner:
        if steps is not None and not 1 <= steps <= self.diffusion.timesteps:
            raise SlicelibError(f"steps must be in 1..{self.diffusion.timesteps} (got {steps})")
        return Refiner(
            self.unet, self.denoiser, self.diffusion, self.residual_scale,
            sampler=sampler, steps=steps, eta=eta, seed=seed, samples=samples,
        )  # fmt: skip


def load_refiner(
    run_dir: str | Path, *, which: str = "best", device: str | torch.device = "cpu"
) -> LoadedRefiner:
    """Rebuild a refinement run from ``run_dir/{which}.pt`` (strict, ``weights_only``)."""
    from slicelib.checkpoint import checkpoint_path
    from slicelib.models import build_generator

    path = checkpoint_path(run_dir, which)
    torch_device = resolve_device(device) if isinstance(device, str) else device
    state = read_checkpoint(path, torch_device)
    if state.get("kind") != KIND:
        raise SlicelibError(f"checkpoint {path} is not a refinement checkpoint")
    try:
        cfg = from_dict(RefineConfig, state["refine_config"])
        unet_cfg = from_dict(TrainConfig, state["unet_config"])
        weights = state["models"]
        scale = float(state["residual_scale"])
    except (KeyError, TypeError) as exc:
        raise SlicelibError(f"checkpoint {path} lacks its {exc} entry") from None
    unet = build_generator(unet_cfg.model, unet_cfg.model_cfg)
    load_state(unet, weights["generator"], path=path, role="generator")
    denoiser = build_denoiser(cfg.model_cfg)
    load_state(denoiser, weights["denoiser"], path=path, role="denoiser")
    return LoadedRefiner(
        config=cfg,
        unet_config=unet_cfg,
        image_size=int(state["image_size"]),
        residual_scale=scale,
        unet=unet.to(torch_device).eval(),
        denoiser=denoiser.to(torch_device).eval(),
        diffusion=GaussianDiffusion(cfg.diffusion),
        epoch=int(state["epoch"]),
        history=list(state.get("history", [])),
        path=path,
        device=torch_device,
    )


# Evaluation through the evaluation's method interface ---------------------------------


class RefineMethod(Method):
    """A :class:`Refiner` as an evaluation method (``refine_ddim<steps>`` or
    ``refine_ancestral``)."""

    def __init__(self, name: str, refiner: Refiner, *, max_slices: int | None = None) -> None:
        from slicelib.environment import device_label

        self.name = name
        self.refiner = refiner
        self.max_slices = max_slices
        self.torch_device = refiner.device
        self.device = device_label(refiner.device)

    def predict(self, batch: Batch) -> Prediction:
        refined = self.refiner(torch.from_numpy(batch.inputs()))
        return Prediction(
            images=refined[:, 0].float().cpu().numpy().astype(np.float32),
            fallback=np.zeros(len(batch), dtype=bool),
        )

    @torch.no_grad()
    def warm_up(self, batch: Batch) -> None:
        # Network passes only: the sampler's seeded generator stays untouched.
        x = torch.from_numpy(batch.inputs()[:1]).to(self.torch_device)
        base = self.refiner.base(x)
        t = torch.zeros(1, dtype=torch.long, device=self.torch_device)
        self.refiner.denoiser(base, t, conditioning(x, base))
        self.synchronize()


def refiner_for(loaded: LoadedRefiner, spec: MethodSpec, seed: int = 0) -> Refiner:
    """The refiner sampling as ``spec`` says: DDIM (steps capped at T), ancestral, or
    the mean of ``spec.samples`` ancestral samples."""
    if spec.sampler == "ddim":
        steps = min(int(spec.steps or 0), loaded.diffusion.timesteps)
        return loaded.refiner(sampler="ddim", steps=steps, seed=seed)
    return loaded.refiner(sampler="ancestral", samples=spec.samples, seed=seed)


def refine_specs(cfg: EvalConfig) -> list[MethodSpec]:
    """The refiner's methods, sampled as the DDPM is evaluated: DDIM at each of
    ``cfg.ddim_steps``, ancestral, and the mean of ``cfg.ddpm_samples`` samples."""
    specs = [MethodSpec("refine", "ddim", steps=s) for s in cfg.ddim_steps]
    return [
        *specs,
        MethodSpec("refine", "ancestral"),
        MethodSpec("refine", "ancestral", samples=cfg.ddpm_samples),
    ]


def refine_methods(loaded: LoadedRefiner, cfg: EvalConfig) -> list[Method]:
    """The refiner's methods (:func:`refine_specs`) for the evaluation; seeded."""
    return [
        RefineMethod(spec.name, refiner_for(loaded, spec, cfg.seed), max_slices=cfg.ddpm_max_slices)
        for spec in refine_specs(cfg)
    ]


def ddpm_slices(rows: pd.DataFrame) -> list[tuple[str, int]]:
    """The (patient_id, slice_index) pairs the first DDPM method of ``rows`` was scored on."""
    ddpm = rows[[family_of(str(m)) == "ddpm" for m in rows["method"]]]
    if not len(ddpm):
        raise SlicelibError("the evaluation has no DDPM method to take the slices from")
    chosen = ddpm[ddpm["method"] == ddpm["method"].iloc[0]]
    return [(str(p), int(i)) for p, i in zip(chosen["patient_id"], chosen["slice_index"])]


def score_refinement(
    cache: str | Path,
    k: int,
    refine_run: str | Path,
    slices: list[tuple[str, int]],
    cfg: EvalConfig | None = None,
    *,
    progress: bool = False,
) -> pd.DataFrame:
    """Score the refiner's methods (:func:`refine_methods`) on ``slices`` of ``cache``:
    rows in the evaluation's format (:data:`slicelib.evaluate.ROW_COLUMNS`), timed per
    batch after a warm-up, as :func:`slicelib.evaluate.evaluate` times its methods."""
    from slicelib.baselines import neighbours
    from slicelib.data.cache import Cache
    from slicelib.evaluate import ROW_COLUMNS, SliceRef, score_batch

    cfg = cfg or EvalConfig()
    if not slices:
        raise SlicelibError("no slices to score the refinement on")
    cache_obj = Cache(cache)
    loaded = load_refiner(refine_run, device=cfg.device)
    if loaded.config.k != k or loaded.image_size != int(cache_obj.config.size):
        raise SlicelibError(
            f"refinement run {refine_run} was trained at k={loaded.config.k} on "
            f"{loaded.image_size} px images; the evaluation is at k={k} on "
            f"{cache_obj.config.size} px"
        )
    methods = refine_methods(loaded, cfg)
    by_patient: dict[str, list[int]] = {}
    for pid, index in slices:
        by_patient.setdefault(str(pid), []).append(int(index))
    first = next(iter(by_patient))
    warm_volume = np.asarray(cache_obj.volume(first), dtype=np.float32)
    warm = Batch([], [neighbours(warm_volume, by_patient[first][0], k)])
    for method in methods:
        method.warm_up(warm)
    records: list[dict[str, Any]] = []
    for pid, indices in tqdm(by_patient.items(), desc="refine", disable=not progress):
        volume = np.asarray(cache_obj.volume(pid), dtype=np.float32)
        n = volume.shape[0]
        for method in methods:
            for start in range(0, len(indices), cfg.batch_size):
                chunk = indices[start : start + cfg.batch_size]
                refs = [SliceRef(pid, i, i / (n - 1)) for i in chunk]
                batch = Batch(refs, [neighbours(volume, i, k) for i in chunk])
                records.extend(score_batch(method, batch, volume, k)[0])
    frame = pd.DataFrame.from_records(records, columns=list(ROW_COLUMNS))
    frame.attrs["devices"] = {m.name: m.device for m in methods}
    frame.attrs["checkpoint"] = str(loaded.path)
    return frame


def combine(
    rows: pd.DataFrame, refined: pd.DataFrame, cfg: EvalConfig | None = None
) -> pd.DataFrame:
    """The summary (:func:`slicelib.stats.summarize`) of an evaluation's rows and the
    refinement's, restricted to the slices the refinement was scored on, so that every
    method is compared on the same slices; gains and tests are against linear."""
    from slicelib.stats import summarize

    cfg = cfg or EvalConfig()
    keys = set(zip(refined["patient_id"].astype(str), refined["slice_index"].astype(int)))
    mine = [(str(p), int(i)) in keys for p, i in zip(rows["patient_id"], rows["slice_index"])]
    both = pd.concat([rows[mine], refined], ignore_index=True)
    return summarize(both, reference="linear", n_boot=cfg.bootstrap, seed=cfg.seed)


def evaluate_refinement(
    cache: str | Path,
    k: int,
    refine_run: str | Path,
    cfg: EvalConfig | None = None,
    runs: list[str | Path] | tuple[str | Path, ...] = (),
    *,
    progress: bool = False,
) -> Results:
    """Evaluate linear and every run in ``runs`` (which must include a DDPM) with
    :func:`slicelib.evaluate.evaluate`, then the refiner on the slices the DDPM methods
    were scored on: rows and summary of all of them."""
    from slicelib.evaluate import evaluate

    cfg = cfg or EvalConfig()
    ev = evaluate(cache, k, cfg, runs, methods=["linear"], progress=progress)
    refined = score_refinement(cache, k, refine_run, ddpm_slices(ev.rows), cfg, progress=progress)
    summary = combine(ev.rows, refined, cfg)
    devices = dict(zip(ev.summary["method"], ev.summary["device"]))
    devices.update(refined.attrs["devices"])
    summary["device"] = summary["method"].map(devices)
    info = dict(ev.info)
    info["refine"] = {
        "run": str(refine_run),
        "checkpoint": refined.attrs["checkpoint"],
        "methods": list(refined.attrs["devices"]),
    }
    rows = pd.concat([ev.rows, refined], ignore_index=True)
    return Results(rows=rows, summary=summary, info=info, ddpm_std=ev.ddpm_std, k=k)
