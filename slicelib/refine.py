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

Training is :func:`slicelib.train.train` with
:class:`slicelib.objectives.RefinementObjective` (a :class:`~slicelib.config.RefineConfig`
names the U-Net run); the run folder is any run's, and
:func:`slicelib.checkpoint.load_run` loads it into a predictor like any other run.
Checkpoints carry the U-Net's weights too, so a refiner never meets another U-Net than
the one it was trained on.
"""

from __future__ import annotations

from collections.abc import Iterable
from typing import Any

import torch
import torch.nn.functional as F
from torch import nn

from slicelib.config import ModelConfig
from slicelib.diffusion import GaussianDiffusion
from slicelib.errors import SlicelibError
from slicelib.methods import Sampler
from slicelib.models.ddpm_unet import ConditionalUNet

KIND = "refine"  # the ``model`` of a refinement checkpoint
COND_CHANNELS = 3  # S_{i-k}, S_{i+k}, the U-Net's prediction
SCALE_BATCHES = 16  # training batches used to measure the residual's scale


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

    ``__call__``: inputs (N, 2, H, W) in [0, 1] -> refined (N, 1, H, W) in [0, 1]; with
    ``samples > 1`` the mean of that many refined samples (an estimate of the posterior
    mean, which a single sample's PSNR cannot reach). Every call draws from
    ``generator`` (on the denoiser's device), seeded once by its owner
    (:class:`slicelib.interpolator.Predictor`, the training's validation).
    """

    def __init__(
        self,
        unet: nn.Module,
        denoiser: nn.Module,
        diffusion: GaussianDiffusion,
        scale: float,
        generator: torch.Generator,
        *,
        sampler: Sampler = "ddim",
        steps: int | None = None,
        eta: float = 0.0,
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
        self.generator = generator

    @torch.no_grad()
    def base(self, inputs: torch.Tensor) -> torch.Tensor:
        """The U-Net's prediction clipped to [0, 1], (N, 1, H, W)."""
        return self.unet(inputs.to(self.device, dtype=torch.float32)).float().clamp(0.0, 1.0)

    @torch.no_grad()
    def stack(self, inputs: torch.Tensor) -> torch.Tensor:
        """All refined samples, tensor (samples, N, 1, H, W) in [0, 1]."""
        x = inputs.to(self.device, dtype=torch.float32)
        base = self.base(x)
        cond = conditioning(x, base)
        outs = []
        for _ in range(self.samples):
            if self.sampler == "ddim":
                data = self.diffusion.ddim_sample(
                    self.denoiser, cond, self.steps, eta=self.eta, generator=self.generator
                )
            else:
                data = self.diffusion.sample(self.denoiser, cond, generator=self.generator)
            outs.append((base + decode_residual(data.float(), self.scale)).clamp(0.0, 1.0))
        return torch.stack(outs).to(inputs.device)

    def __call__(self, inputs: torch.Tensor) -> torch.Tensor:
        return self.stack(inputs).mean(dim=0)

    @torch.no_grad()
    def warm_up(self, inputs: torch.Tensor) -> None:
        """One pass of each network on ``inputs[:1]``; the sampler's generator stays
        untouched, so results do not depend on warm-up."""
        x = inputs[:1].to(self.device, dtype=torch.float32)
        base = self.base(x)
        t = torch.zeros(1, dtype=torch.long, device=self.device)
        self.denoiser(base, t, conditioning(x, base))


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


@torch.no_grad()
def residual_scale(
    unet: nn.Module,
    loader: Iterable[Any],
    device: torch.device,
    quantile: float,
    batches: int = SCALE_BATCHES,
) -> float:
    """The ``quantile`` of |target - U-Net| over the first ``batches`` training batches
    (triplet batches with ``inputs`` (N, 2, H, W) and ``target`` (N, 1, H, W))."""
    values = []
    for i, batch in enumerate(loader):
        if i == batches:
            break
        base = unet(batch.inputs.to(device)).float().clamp(0, 1)
        values.append((batch.target.to(device) - base).abs().flatten().cpu())
    scale = float(torch.quantile(torch.cat(values)[:1_000_000], quantile))
    return max(scale, 1e-3)
