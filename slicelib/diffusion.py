"""Gaussian diffusion (DDPM, Ho et al. 2020) and DDIM sampling (Song et al. 2021).

The process is a plain object that knows nothing of the network: it takes any
``model(x_t, t, cond) -> predicted noise`` and a :class:`~slicelib.config.DiffusionConfig`.

Conventions:

- Timesteps are indices ``t`` in ``0 .. T-1`` (the papers' 1 .. T); ``betas[t]`` is
  the noise added at step t, ``alphas_cumprod[t]`` the signal kept up to it.
- Data (targets, conditions, samples) are in [0, 1]. The process works in its own
  space: [0, 1] itself by default, as the original did, or [-1, 1] with
  ``DiffusionConfig.rescale``; :meth:`GaussianDiffusion.normalize` /
  :meth:`~GaussianDiffusion.unnormalize` convert. ``q_sample`` and ``predict_x0`` work
  in the process space; ``training_losses`` and the samplers take and return data.
- Samplers clip every x0 prediction to the process's data range.

With T=100 and linear betas 1e-4..0.02 (the supplement), ``alphas_cumprod[T-1]`` is
about 0.364: x_T still carries sqrt(0.364) = 0.60 of the signal, so sampling from
pure noise starts away from anything seen in training. The schedule is reproduced as
published; ``schedule="cosine"`` or larger betas remove the gap.
"""

from __future__ import annotations

import math
from typing import Literal, Protocol

import numpy as np
import torch
import torch.nn.functional as F
from tqdm import tqdm

from slicelib.config import DiffusionConfig
from slicelib.errors import SlicelibError


class Denoiser(Protocol):
    def __call__(self, x_t: torch.Tensor, t: torch.Tensor, cond: torch.Tensor) -> torch.Tensor:
        """x_t (N, 1, H, W), t (N,) long, cond (N, 2, H, W) -> predicted noise (N, 1, H, W)."""
        ...


def linear_beta_schedule(timesteps: int, beta_start: float, beta_end: float) -> torch.Tensor:
    """Betas evenly spaced from ``beta_start`` to ``beta_end``: tensor (T,) float64."""
    return torch.linspace(beta_start, beta_end, timesteps, dtype=torch.float64)


def cosine_beta_schedule(timesteps: int, s: float = 0.008) -> torch.Tensor:
    """Nichol & Dhariwal (2021) cosine schedule: tensor (T,) float64, betas <= 0.999."""
    steps = torch.arange(timesteps + 1, dtype=torch.float64) / timesteps
    alphas_cumprod = torch.cos((steps + s) / (1 + s) * math.pi / 2) ** 2
    betas = 1 - alphas_cumprod[1:] / alphas_cumprod[:-1]
    return betas.clamp(max=0.999)


def beta_schedule(cfg: DiffusionConfig) -> torch.Tensor:
    """The betas of ``cfg``: tensor (T,) float64 in (0, 1)."""
    if cfg.timesteps < 1:
        raise SlicelibError(f"DiffusionConfig.timesteps must be >= 1 (got {cfg.timesteps})")
    if cfg.schedule == "linear":
        if not 0.0 < cfg.beta_start <= cfg.beta_end < 1.0:
            raise SlicelibError(
                "DiffusionConfig needs 0 < beta_start <= beta_end < 1 "
                f"(got {cfg.beta_start}, {cfg.beta_end})"
            )
        return linear_beta_schedule(cfg.timesteps, cfg.beta_start, cfg.beta_end)
    if cfg.schedule == "cosine":
        return cosine_beta_schedule(cfg.timesteps)
    raise SlicelibError(f"unknown DiffusionConfig.schedule {cfg.schedule!r} (linear or cosine)")


def ddim_timesteps(timesteps: int, steps: int) -> list[int]:
    """``steps`` timesteps evenly spaced over 0 .. T-1, the last (T-1) included, descending."""
    if not 1 <= steps <= timesteps:
        raise SlicelibError(f"DDIM steps must be in 1..{timesteps} (got {steps})")
    return [int(i) for i in np.round(np.linspace(timesteps - 1, 0, steps))]


def _noise(
    shape: tuple[int, ...], like: torch.Tensor, generator: torch.Generator | None
) -> torch.Tensor:
    """Standard normal noise on ``like``'s device, drawn from ``generator`` (on any device)."""
    device = generator.device if generator is not None else like.device
    noise = torch.randn(shape, generator=generator, device=device, dtype=torch.float32)
    return noise.to(like.device)


class GaussianDiffusion:
    """Forward process, epsilon-prediction loss, ancestral and DDIM samplers."""

    def __init__(self, cfg: DiffusionConfig) -> None:
        self.cfg = cfg
        self.timesteps = cfg.timesteps
        self.betas = beta_schedule(cfg)
        alphas = 1.0 - self.betas
        self.alphas_cumprod = torch.cumprod(alphas, dim=0)
        self.alphas_cumprod_prev = torch.cat(
            [torch.ones(1, dtype=torch.float64), self.alphas_cumprod[:-1]]
        )
        # q(x_{t-1} | x_t, x_0) = N(coef1 x_0 + coef2 x_t, beta_tilde)
        self.posterior_variance = (
            self.betas * (1.0 - self.alphas_cumprod_prev) / (1.0 - self.alphas_cumprod)
        )
        self.posterior_mean_coef1 = (
            self.betas * self.alphas_cumprod_prev.sqrt() / (1.0 - self.alphas_cumprod)
        )
        self.posterior_mean_coef2 = (
            (1.0 - self.alphas_cumprod_prev) * alphas.sqrt() / (1.0 - self.alphas_cumprod)
        )
        self.data_range: tuple[float, float] = (-1.0, 1.0) if cfg.rescale else (0.0, 1.0)

    # data <-> process space

    def normalize(self, x: torch.Tensor) -> torch.Tensor:
        """Data in [0, 1] -> the process space ([0, 1] or [-1, 1])."""
        return x * 2.0 - 1.0 if self.cfg.rescale else x

    def unnormalize(self, x: torch.Tensor) -> torch.Tensor:
        """The process space -> data in [0, 1] (not clamped)."""
        return (x + 1.0) / 2.0 if self.cfg.rescale else x

    # forward process and loss

    def _at(self, values: torch.Tensor, t: torch.Tensor, x: torch.Tensor) -> torch.Tensor:
        """values[t] as (N, 1, 1, 1) in x's dtype and device."""
        picked = values.to(t.device)[t]
        return picked.to(dtype=torch.float32, device=x.device).reshape(-1, *([1] * (x.dim() - 1)))

    def sample_timesteps(
        self,
        n: int,
        *,
        device: torch.device | str = "cpu",
        generator: torch.Generator | None = None,
    ) -> torch.Tensor:
        """Uniform timesteps: tensor (n,) long in [0, T)."""
        gen_device = generator.device if generator is not None else device
        t = torch.randint(0, self.timesteps, (n,), generator=generator, device=gen_device)
        return t.to(device)

    def q_sample(
        self, x0: torch.Tensor, t: torch.Tensor, noise: torch.Tensor | None = None
    ) -> torch.Tensor:
        """x_t = sqrt(abar_t) x0 + sqrt(1 - abar_t) noise, in the process space.

        x0 (N, C, H, W), t (N,) long, noise like x0 (standard normal; drawn if None).
        """
        if noise is None:
            noise = torch.randn_like(x0)
        abar = self._at(self.alphas_cumprod, t, x0)
        return abar.sqrt() * x0 + (1.0 - abar).sqrt() * noise

    def training_losses(
        self,
        model: Denoiser,
        x0: torch.Tensor,
        t: torch.Tensor,
        cond: torch.Tensor,
        *,
        noise: torch.Tensor | None = None,
        reduction: Literal["mean", "none"] = "mean",
    ) -> torch.Tensor:
        """MSE between the noise and its prediction at timesteps ``t``.

        x0 (N, 1, H, W) target and cond (N, 2, H, W) neighbours, data in [0, 1]; t (N,)
        long. ``reduction="mean"``: a scalar; ``"none"``: tensor (N,), one per sample.
        """
        x0 = self.normalize(x0)
        if noise is None:
            noise = torch.randn_like(x0)
        x_t = self.q_sample(x0, t, noise)
        predicted = model(x_t, t, self.normalize(cond))
        per_pixel = F.mse_loss(predicted.float(), noise.float(), reduction="none")
        per_sample = per_pixel.flatten(1).mean(dim=1)
        if reduction == "none":
            return per_sample
        if reduction == "mean":
            return per_sample.mean()
        raise SlicelibError(f"unknown reduction {reduction!r} (mean or none)")

    # reverse process

    def _predict(
        self, model: Denoiser, x_t: torch.Tensor, t: int, cond: torch.Tensor
    ) -> tuple[torch.Tensor, torch.Tensor]:
        """(noise, clipped x0) predicted at the single timestep t; cond in process space."""
        t_batch = torch.full((x_t.shape[0],), t, device=x_t.device, dtype=torch.long)
        eps = model(x_t, t_batch, cond).float()
        abar = float(self.alphas_cumprod[t])
        x0 = ((x_t - math.sqrt(1.0 - abar) * eps) / math.sqrt(abar)).clamp(*self.data_range)
        eps = (x_t - math.sqrt(abar) * x0) / math.sqrt(1.0 - abar)  # consistent with the clip
        return eps, x0

    def predict_x0(
        self,
        model: Denoiser,
        x_t: torch.Tensor,
        t: torch.Tensor,
        cond: torch.Tensor,
        *,
        clip: bool = True,
    ) -> torch.Tensor:
        """The model's estimate of x0 from x_t, in the process space.

        x_t (N, 1, H, W) in the process space, t (N,) long, cond (N, 2, H, W) data in
        [0, 1]. ``clip`` limits the estimate to the data range.
        """
        eps = model(x_t, t, self.normalize(cond)).float()
        abar = self._at(self.alphas_cumprod, t, x_t)
        x0 = (x_t - (1.0 - abar).sqrt() * eps) / abar.sqrt()
        return x0.clamp(*self.data_range) if clip else x0

    def _start(
        self,
        cond: torch.Tensor,
        generator: torch.Generator | None,
        noise: torch.Tensor | None,
    ) -> torch.Tensor:
        shape = (cond.shape[0], 1, *cond.shape[2:])
        if noise is None:
            return _noise(shape, cond, generator)
        if tuple(noise.shape) != shape:
            raise SlicelibError(f"initial noise must have shape {shape}, got {tuple(noise.shape)}")
        return noise.to(device=cond.device, dtype=torch.float32)

    @torch.no_grad()
    def sample(
        self,
        model: Denoiser,
        cond: torch.Tensor,
        *,
        generator: torch.Generator | None = None,
        noise: torch.Tensor | None = None,
        progress: bool = False,
    ) -> torch.Tensor:
        """Ancestral sampling over all T steps: cond (N, 2, H, W) in [0, 1] -> (N, 1, H, W).

        x_{t-1} = posterior mean + sqrt(beta_tilde_t) z, no noise at the last step.
        ``noise`` (N, 1, H, W) fixes x_T; otherwise it is drawn from ``generator``.
        """
        cond = self.normalize(cond.float())
        x = self._start(cond, generator, noise)
        for t in tqdm(range(self.timesteps - 1, -1, -1), disable=not progress, desc="DDPM"):
            _, x0 = self._predict(model, x, t, cond)
            mean = (
                float(self.posterior_mean_coef1[t]) * x0 + float(self.posterior_mean_coef2[t]) * x
            )
            if t > 0:
                std = math.sqrt(float(self.posterior_variance[t]))
                x = mean + std * _noise(tuple(x.shape), x, generator)
            else:
                x = mean
        return self.unnormalize(x)

    @torch.no_grad()
    def ddim_sample(
        self,
        model: Denoiser,
        cond: torch.Tensor,
        steps: int,
        eta: float = 0.0,
        *,
        generator: torch.Generator | None = None,
        noise: torch.Tensor | None = None,
        progress: bool = False,
    ) -> torch.Tensor:
        """DDIM sampling over ``steps`` evenly spaced timesteps: cond -> (N, 1, H, W).

        ``eta=0``: deterministic given x_T (no noise after the start); ``eta=1``: the
        DDPM posterior's variance. ``noise`` (N, 1, H, W) fixes x_T.
        """
        if eta < 0:
            raise SlicelibError(f"DDIM eta must be >= 0 (got {eta})")
        sequence = ddim_timesteps(self.timesteps, steps)
        cond = self.normalize(cond.float())
        x = self._start(cond, generator, noise)
        for i, t in enumerate(tqdm(sequence, disable=not progress, desc="DDIM")):
            eps, x0 = self._predict(model, x, t, cond)
            abar = float(self.alphas_cumprod[t])
            abar_prev = float(self.alphas_cumprod[sequence[i + 1]]) if i + 1 < steps else 1.0
            sigma = eta * math.sqrt((1 - abar_prev) / (1 - abar) * (1 - abar / abar_prev))
            x = math.sqrt(abar_prev) * x0 + math.sqrt(max(1 - abar_prev - sigma**2, 0.0)) * eps
            if sigma > 0:
                x = x + sigma * _noise(tuple(x.shape), x, generator)
        return self.unnormalize(x)
