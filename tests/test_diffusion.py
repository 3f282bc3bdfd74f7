"""The Gaussian diffusion process: schedule, forward process, loss and both samplers."""

from __future__ import annotations

import math

import numpy as np
import pytest
import torch
from torch import nn

from slicelib.config import DiffusionConfig, ModelConfig
from slicelib.diffusion import (
    GaussianDiffusion,
    cosine_beta_schedule,
    ddim_timesteps,
    linear_beta_schedule,
)
from slicelib.errors import SlicelibError
from slicelib.models import build_generator

SMALL = DiffusionConfig(timesteps=10)


pytestmark = pytest.mark.usefixtures("one_thread")


@pytest.fixture(autouse=True)
def _seed() -> None:
    torch.manual_seed(0)


class Oracle(nn.Module):
    """Predicts the exact noise that turns ``x0`` (process space) into x_t."""

    def __init__(self, diffusion: GaussianDiffusion, x0: torch.Tensor) -> None:
        super().__init__()
        self.diffusion = diffusion
        self.x0 = x0

    def forward(self, x_t: torch.Tensor, t: torch.Tensor, cond: torch.Tensor) -> torch.Tensor:
        abar = self.diffusion.alphas_cumprod[t].float().reshape(-1, 1, 1, 1)
        return (x_t - abar.sqrt() * self.x0) / (1 - abar).sqrt()


class CondConv(nn.Module):
    """A small denoiser that uses x_t, t and cond."""

    def __init__(self) -> None:
        super().__init__()
        self.conv = nn.Conv2d(3, 1, 3, padding=1)

    def forward(self, x_t: torch.Tensor, t: torch.Tensor, cond: torch.Tensor) -> torch.Tensor:
        scale = 1.0 + t.float().reshape(-1, 1, 1, 1) / 10.0
        return self.conv(torch.cat([x_t, cond], dim=1)) * scale


# schedules


def test_linear_betas_are_the_supplements() -> None:
    diffusion = GaussianDiffusion(DiffusionConfig())
    betas = diffusion.betas.numpy()
    assert betas.shape == (100,)
    np.testing.assert_allclose(betas, np.linspace(1e-4, 0.02, 100))
    assert betas[0] == pytest.approx(1e-4) and betas[-1] == pytest.approx(0.02)
    assert np.all(np.diff(betas) > 0)
    # T=100 keeps a third of the signal at the last step (see the module docstring)
    assert diffusion.alphas_cumprod[-1].item() == pytest.approx(np.prod(1 - betas))
    assert 0.36 < diffusion.alphas_cumprod[-1].item() < 0.37


def test_schedule_functions_are_pure_and_bounded() -> None:
    torch.testing.assert_close(linear_beta_schedule(5, 0.1, 0.5), linear_beta_schedule(5, 0.1, 0.5))
    cosine = cosine_beta_schedule(100)
    assert cosine.shape == (100,)
    assert (cosine > 0).all() and (cosine <= 0.999).all()
    abar = GaussianDiffusion(DiffusionConfig(schedule="cosine")).alphas_cumprod
    assert abar[-1].item() < 1e-3  # unlike the linear schedule at T=100


def test_posterior_coefficients() -> None:
    d = GaussianDiffusion(DiffusionConfig())
    abar, abar_prev, betas = d.alphas_cumprod, d.alphas_cumprod_prev, d.betas
    assert d.posterior_variance[0].item() == 0.0
    assert d.posterior_mean_coef1[0].item() == pytest.approx(1.0)
    assert d.posterior_mean_coef2[0].item() == pytest.approx(0.0)
    t = 40
    expected = betas[t] * (1 - abar_prev[t]) / (1 - abar[t])
    assert d.posterior_variance[t].item() == pytest.approx(expected.item())
    assert (d.posterior_variance[1:] < betas[1:]).all()


@pytest.mark.parametrize(
    "cfg",
    [
        DiffusionConfig(timesteps=0),
        DiffusionConfig(beta_start=0.03, beta_end=0.02),
        DiffusionConfig(beta_end=1.0),
    ],
)
def test_invalid_schedule_is_a_one_line_error(cfg: DiffusionConfig) -> None:
    with pytest.raises(SlicelibError, match="DiffusionConfig"):
        GaussianDiffusion(cfg)


def test_ddim_timesteps_are_evenly_spaced_and_include_both_ends() -> None:
    assert ddim_timesteps(100, 10) == [99, 88, 77, 66, 55, 44, 33, 22, 11, 0]
    assert ddim_timesteps(100, 1) == [99]
    assert ddim_timesteps(10, 10) == list(range(9, -1, -1))
    for steps in (3, 7, 33, 50, 100):
        seq = ddim_timesteps(100, steps)
        assert len(set(seq)) == steps and seq[0] == 99 and seq[-1] == 0
    for bad in (0, 101):
        with pytest.raises(SlicelibError, match="DDIM steps"):
            ddim_timesteps(100, bad)


# forward process and loss


def test_q_sample_statistics() -> None:
    d = GaussianDiffusion(DiffusionConfig())
    x0 = torch.full((4, 1, 128, 128), 0.5)
    t = torch.full((4,), 60, dtype=torch.long)
    x_t = d.q_sample(x0, t)
    abar = d.alphas_cumprod[60].item()
    assert x_t.mean().item() == pytest.approx(math.sqrt(abar) * 0.5, abs=0.01)
    assert x_t.std().item() == pytest.approx(math.sqrt(1 - abar), rel=0.02)
    # per-sample timesteps, explicit noise
    t = torch.tensor([0, 99])
    x_t = d.q_sample(x0[:2], t, torch.zeros_like(x0[:2]))
    assert x_t[0].mean().item() == pytest.approx(math.sqrt(d.alphas_cumprod[0].item()) * 0.5)
    assert x_t[1].mean().item() == pytest.approx(math.sqrt(d.alphas_cumprod[99].item()) * 0.5)


@pytest.mark.parametrize("rescale", [False, True])
def test_training_loss_is_zero_for_the_exact_noise_and_one_for_zero(rescale: bool) -> None:
    d = GaussianDiffusion(DiffusionConfig(rescale=rescale))
    x0, cond = torch.rand(3, 1, 32, 32), torch.rand(3, 2, 32, 32)
    t = torch.tensor([5, 50, 99])
    oracle = Oracle(d, d.normalize(x0))
    assert d.training_losses(oracle, x0, t, cond).item() < 1e-8
    per_sample = d.training_losses(
        lambda x_t, t, c: torch.zeros_like(x_t), x0, t, cond, reduction="none"
    )
    assert per_sample.shape == (3,)
    torch.testing.assert_close(per_sample, torch.ones(3), atol=0.1, rtol=0)


def test_training_losses_passes_normalised_condition_and_timesteps() -> None:
    seen: dict[str, torch.Tensor] = {}

    def spy(x_t: torch.Tensor, t: torch.Tensor, cond: torch.Tensor) -> torch.Tensor:
        seen.update(t=t, cond=cond)
        return torch.zeros_like(x_t)

    d = GaussianDiffusion(DiffusionConfig(rescale=True))
    cond = torch.rand(2, 2, 8, 8)
    d.training_losses(spy, torch.rand(2, 1, 8, 8), torch.tensor([3, 7]), cond)
    torch.testing.assert_close(seen["cond"], cond * 2 - 1)
    assert seen["t"].tolist() == [3, 7]


def test_predict_x0_inverts_q_sample() -> None:
    d = GaussianDiffusion(DiffusionConfig())
    x0 = torch.rand(2, 1, 8, 8)
    t = torch.tensor([10, 80])
    x_t = d.q_sample(x0, t)
    torch.testing.assert_close(d.predict_x0(Oracle(d, x0), x_t, t, x0), x0, atol=1e-5, rtol=0)


def test_a_few_steps_lower_the_diffusion_loss_of_the_denoiser() -> None:
    d = GaussianDiffusion(SMALL)
    model = build_generator("ddpm", ModelConfig(ddpm_channels=8))
    x0, cond = torch.rand(4, 1, 16, 16), torch.rand(4, 2, 16, 16)
    t, noise = torch.tensor([1, 3, 6, 9]), torch.randn(4, 1, 16, 16)
    optimiser = torch.optim.Adam(model.parameters(), lr=1e-3)
    before = d.training_losses(model, x0, t, cond, noise=noise).item()
    for _ in range(8):
        optimiser.zero_grad()
        d.training_losses(model, x0, t, cond, noise=noise).backward()
        optimiser.step()
    assert d.training_losses(model, x0, t, cond, noise=noise).item() < 0.9 * before


# samplers


def test_samplers_give_one_slice_per_condition_with_the_denoiser() -> None:
    d = GaussianDiffusion(SMALL)
    model = build_generator("ddpm", ModelConfig(ddpm_channels=8)).eval()
    cond = torch.rand(2, 2, 9, 11)
    assert d.sample(model, cond).shape == (2, 1, 9, 11)
    assert d.ddim_sample(model, cond, 3).shape == (2, 1, 9, 11)


@pytest.mark.parametrize("rescale", [False, True])
def test_samplers_recover_x0_from_an_exact_denoiser(rescale: bool) -> None:
    d = GaussianDiffusion(DiffusionConfig(rescale=rescale))
    x0, cond = torch.rand(2, 1, 8, 8), torch.rand(2, 2, 8, 8)
    oracle = Oracle(d, d.normalize(x0))
    generator = torch.Generator().manual_seed(1)
    torch.testing.assert_close(d.sample(oracle, cond, generator=generator), x0)
    for steps, eta in ((100, 0.0), (10, 0.0), (1, 0.0), (7, 1.0)):
        out = d.ddim_sample(oracle, cond, steps, eta=eta, generator=generator)
        torch.testing.assert_close(out, x0, atol=1e-5, rtol=0)


def test_samplers_clip_x0_to_the_data_range() -> None:
    d = GaussianDiffusion(SMALL)
    cond = torch.rand(1, 2, 8, 8)
    wild = Oracle(d, torch.full((1, 1, 8, 8), 5.0))  # points at x0 = 5, outside [0, 1]
    assert d.sample(wild, cond).max().item() <= 1.0 + 1e-6
    assert d.ddim_sample(wild, cond, 4).max().item() <= 1.0 + 1e-6


def test_ancestral_sampling_is_seeded_by_the_generator() -> None:
    d = GaussianDiffusion(SMALL)
    model, cond = CondConv(), torch.rand(2, 2, 8, 8)
    first = d.sample(model, cond, generator=torch.Generator().manual_seed(3))
    again = d.sample(model, cond, generator=torch.Generator().manual_seed(3))
    other = d.sample(model, cond, generator=torch.Generator().manual_seed(4))
    torch.testing.assert_close(first, again, atol=0, rtol=0)
    assert not torch.allclose(first, other)
    # x_T fixed: the per-step noise still depends on the generator
    x_T = torch.randn(2, 1, 8, 8)
    a = d.sample(model, cond, noise=x_T, generator=torch.Generator().manual_seed(3))
    b = d.sample(model, cond, noise=x_T, generator=torch.Generator().manual_seed(4))
    assert not torch.allclose(a, b)


def test_ddim_with_eta_zero_is_deterministic_given_x_T() -> None:
    d = GaussianDiffusion(SMALL)
    model, cond = CondConv(), torch.rand(2, 2, 8, 8)
    x_T = torch.randn(2, 1, 8, 8)
    a = d.ddim_sample(model, cond, 5, noise=x_T, generator=torch.Generator().manual_seed(3))
    b = d.ddim_sample(model, cond, 5, noise=x_T, generator=torch.Generator().manual_seed(4))
    torch.testing.assert_close(a, b, atol=0, rtol=0)
    seeded = [
        d.ddim_sample(model, cond, 5, generator=torch.Generator().manual_seed(9)) for _ in range(2)
    ]
    torch.testing.assert_close(seeded[0], seeded[1], atol=0, rtol=0)
    # eta > 0 draws fresh noise at every step
    c = d.ddim_sample(
        model, cond, 5, eta=1.0, noise=x_T, generator=torch.Generator().manual_seed(3)
    )
    e = d.ddim_sample(
        model, cond, 5, eta=1.0, noise=x_T, generator=torch.Generator().manual_seed(4)
    )
    assert not torch.allclose(c, e)


def test_sampler_arguments_are_checked() -> None:
    d = GaussianDiffusion(SMALL)
    cond = torch.rand(1, 2, 8, 8)
    with pytest.raises(SlicelibError, match="eta"):
        d.ddim_sample(CondConv(), cond, 2, eta=-0.5)
    with pytest.raises(SlicelibError, match="DDIM steps"):
        d.ddim_sample(CondConv(), cond, 11)
    with pytest.raises(SlicelibError, match="initial noise"):
        d.sample(CondConv(), cond, noise=torch.randn(1, 1, 4, 4))


def test_both_samplers_return_x0_given_the_true_noise() -> None:
    """An oracle denoiser that knows x0: ancestral sampling and DDIM must return it."""
    process = GaussianDiffusion(DiffusionConfig())
    x0 = torch.rand(2, 1, 12, 12) * 0.8 + 0.1
    abar = process.alphas_cumprod

    class Oracle(torch.nn.Module):
        def forward(self, x_t: torch.Tensor, t: torch.Tensor, cond: torch.Tensor) -> torch.Tensor:
            a = abar[t].view(-1, 1, 1, 1).float()
            return (x_t - a.sqrt() * x0) / (1 - a).sqrt()

    cond = torch.rand(2, 2, 12, 12)
    generator = torch.Generator().manual_seed(0)
    ancestral = process.sample(Oracle(), cond, generator=generator)
    ddim = process.ddim_sample(Oracle(), cond, 25, generator=generator)
    torch.testing.assert_close(ancestral, x0, atol=1e-4, rtol=0)
    torch.testing.assert_close(ddim, x0, atol=1e-4, rtol=0)
