"""What a training step optimises: one strategy per family of models.

- :class:`L1Objective` (cnn, unet): mean absolute error between prediction and
  target slice.
- :class:`AdversarialObjective` (gan, gan_improved): one discriminator step, then
  one generator step on the same batch (alternating 1:1).
  ``L_D = 0.5 (BCE(D(y), 1) + BCE(D(G(x)), 0))``;
  ``L_G = L1 + adv_weight * BCE(D(G(x)), 1) + fm_weight * L_FM`` where ``L_FM`` is
  the L1 distance between the discriminator's intermediate features of the real and
  the generated slice, averaged over layers (gan_improved only; the basic GAN has no
  feature-matching term).
- :class:`DiffusionObjective` (ddpm): the diffusion process's noise-prediction MSE
  at timesteps drawn uniformly.

All tensors are (N, C, H, W); inputs are the two neighbours (N, 2, H, W) and the
target the middle slice (N, 1, H, W), values in [0, 1].
"""

from __future__ import annotations

from abc import ABC, abstractmethod
from collections.abc import Callable, Mapping
from contextlib import AbstractContextManager
from dataclasses import dataclass
from typing import Any

import torch
import torch.nn.functional as F
from torch import nn

from slicelib.config import TrainConfig
from slicelib.diffusion import GaussianDiffusion
from slicelib.errors import SlicelibError

Amp = Callable[[], AbstractContextManager[Any]]


@dataclass
class Learner:
    """A network being trained with its optimiser and gradient scaler.

    ``module`` is what the training step calls (possibly compiled and wrapped in
    DistributedDataParallel); ``raw`` is the plain network, whose state is saved and
    which validation and the discriminator's feature extraction use directly.
    """

    raw: nn.Module
    module: nn.Module
    optimizer: torch.optim.Optimizer
    scaler: torch.amp.GradScaler

    def step(self, loss: torch.Tensor) -> None:
        """Back-propagate ``loss`` (scaled when fp16) and update this network only."""
        self.optimizer.zero_grad(set_to_none=True)
        self.scaler.scale(loss).backward()
        self.scaler.step(self.optimizer)
        self.scaler.update()


class Objective(ABC):
    """One training step and the validation quantities of a model family."""

    roles: tuple[str, ...]  # the networks it trains, by checkpoint role
    higher_is_better: bool = True  # best checkpoint: max val SSIM, or min val loss

    def __init__(self, cfg: TrainConfig, learners: Mapping[str, Learner], amp: Amp) -> None:
        missing = [role for role in self.roles if role not in learners]
        if missing:
            raise SlicelibError(f"objective for {cfg.model!r} needs a {missing[0]} network")
        self.cfg = cfg
        self.learners = learners
        self.amp = amp

    @abstractmethod
    def train_step(self, inputs: torch.Tensor, target: torch.Tensor) -> dict[str, torch.Tensor]:
        """Update the networks on one batch; returns detached scalars, ``loss`` first."""

    @abstractmethod
    def val_loss(
        self, inputs: torch.Tensor, target: torch.Tensor, generator: torch.Generator
    ) -> torch.Tensor:
        """Validation loss of one batch (a scalar, mean over the batch); any randomness
        comes from ``generator``."""

    @abstractmethod
    def predict(self, inputs: torch.Tensor, generator: torch.Generator) -> torch.Tensor:
        """Predicted middle slices (N, 1, H, W), unclipped, for validation PSNR/SSIM."""


class L1Objective(Objective):
    """cnn, unet: mean absolute error."""

    roles: tuple[str, ...] = ("generator",)

    @property
    def generator(self) -> Learner:
        return self.learners["generator"]

    def train_step(self, inputs: torch.Tensor, target: torch.Tensor) -> dict[str, torch.Tensor]:
        with self.amp():
            pred = self.generator.module(inputs)
        loss = F.l1_loss(pred.float(), target)
        self.generator.step(loss)
        return {"loss": loss.detach()}

    def val_loss(
        self, inputs: torch.Tensor, target: torch.Tensor, generator: torch.Generator
    ) -> torch.Tensor:
        return F.l1_loss(self.generator.raw(inputs).float(), target)

    def predict(self, inputs: torch.Tensor, generator: torch.Generator) -> torch.Tensor:
        return self.generator.raw(inputs)


class AdversarialObjective(L1Objective):
    """gan, gan_improved: L1 plus a PatchGAN adversarial term (and feature matching)."""

    roles: tuple[str, ...] = ("generator", "discriminator")

    def __init__(self, cfg: TrainConfig, learners: Mapping[str, Learner], amp: Amp) -> None:
        super().__init__(cfg, learners, amp)
        self.adv_weight = cfg.adv_weight
        self.fm_weight = cfg.fm_weight if cfg.model == "gan_improved" else 0.0

    @property
    def discriminator(self) -> Learner:
        return self.learners["discriminator"]

    @staticmethod
    def _bce(logits: torch.Tensor, real: bool) -> torch.Tensor:
        labels = torch.ones_like(logits) if real else torch.zeros_like(logits)
        return F.binary_cross_entropy_with_logits(logits.float(), labels.float())

    def train_step(self, inputs: torch.Tensor, target: torch.Tensor) -> dict[str, torch.Tensor]:
        with self.amp():
            fake = self.generator.module(inputs)
            loss_d = 0.5 * (
                self._bce(self.discriminator.module(target), real=True)
                + self._bce(self.discriminator.module(fake.detach()), real=False)
            )
        self.discriminator.step(loss_d)

        # The generator step reads the updated discriminator directly: its gradients
        # here only serve the generator and are cleared before its own next step.
        disc: Any = self.discriminator.raw  # a PatchDiscriminator: forward and features
        with self.amp():
            if self.fm_weight > 0:
                with torch.no_grad():
                    _, real_feats = disc.features(target)
                logits, fake_feats = disc.features(fake)
                fm = torch.stack(
                    [F.l1_loss(f.float(), r.float()) for f, r in zip(fake_feats, real_feats)]
                ).mean()
            else:
                logits = disc(fake)
                fm = torch.zeros((), device=fake.device)
        l1 = F.l1_loss(fake.float(), target)
        adv = self._bce(logits, real=True)
        loss_g = l1 + self.adv_weight * adv + self.fm_weight * fm
        self.generator.step(loss_g)
        parts = {"loss": loss_g, "l1": l1, "adv": adv}
        if self.fm_weight > 0:
            parts["fm"] = fm
        parts["d"] = loss_d
        return {name: value.detach() for name, value in parts.items()}


class DiffusionObjective(Objective):
    """ddpm: epsilon-prediction MSE at uniformly drawn timesteps; validation samples
    with a few deterministic DDIM steps."""

    roles: tuple[str, ...] = ("denoiser",)
    higher_is_better = False  # the study kept the checkpoint of lowest validation loss

    def __init__(self, cfg: TrainConfig, learners: Mapping[str, Learner], amp: Amp) -> None:
        super().__init__(cfg, learners, amp)
        self.diffusion = GaussianDiffusion(cfg.diffusion)
        self.ddim_steps = min(cfg.val_ddim_steps, cfg.diffusion.timesteps)

    @property
    def denoiser(self) -> Learner:
        return self.learners["denoiser"]

    def train_step(self, inputs: torch.Tensor, target: torch.Tensor) -> dict[str, torch.Tensor]:
        t = self.diffusion.sample_timesteps(len(target), device=target.device)
        with self.amp():
            loss = self.diffusion.training_losses(self.denoiser.module, target, t, inputs)
        loss = loss.float()
        self.denoiser.step(loss)
        return {"loss": loss.detach()}

    def val_loss(
        self, inputs: torch.Tensor, target: torch.Tensor, generator: torch.Generator
    ) -> torch.Tensor:
        t = self.diffusion.sample_timesteps(len(target), device=target.device, generator=generator)
        noise = torch.randn(target.shape, generator=generator, device=generator.device)
        return self.diffusion.training_losses(
            self.denoiser.raw, target, t, inputs, noise=noise.to(target.device)
        ).float()

    def predict(self, inputs: torch.Tensor, generator: torch.Generator) -> torch.Tensor:
        return self.diffusion.ddim_sample(
            self.denoiser.raw, inputs, self.ddim_steps, eta=0.0, generator=generator
        )


OBJECTIVES: dict[str, type[Objective]] = {
    "cnn": L1Objective,
    "unet": L1Objective,
    "gan": AdversarialObjective,
    "gan_improved": AdversarialObjective,
    "ddpm": DiffusionObjective,
}


def objective_class(model: str) -> type[Objective]:
    """The objective that trains ``model``."""
    try:
        return OBJECTIVES[model]
    except KeyError:
        raise SlicelibError(
            f"unknown model {model!r} (choose from {', '.join(OBJECTIVES)})"
        ) from None
