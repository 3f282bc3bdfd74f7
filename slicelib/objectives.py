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
- :class:`RefinementObjective` (a :class:`~slicelib.config.RefineConfig`): a diffusion
  model of the residual of a frozen, trained U-Net; noise MSE plus ``recon_weight``
  times the L1 error of the refined slice (:func:`slicelib.refine.hybrid_loss`).

:func:`build_networks` gives the networks a run trains, :func:`build_objective` its
objective; :func:`slicelib.train.train` trains every one of them.

All tensors are (N, C, H, W); inputs are the two neighbours (N, 2, H, W) and the
target the middle slice (N, 1, H, W), values in [0, 1].
"""

from __future__ import annotations

import logging
from abc import ABC, abstractmethod
from collections.abc import Callable, Iterable, Mapping
from contextlib import AbstractContextManager
from dataclasses import dataclass
from typing import Any

import torch
import torch.nn.functional as F
from torch import nn

from slicelib import refine
from slicelib.checkpoint import generator_role, load_run
from slicelib.config import RefineConfig, RunConfig, TrainConfig, to_dict
from slicelib.diffusion import GaussianDiffusion
from slicelib.errors import SlicelibError, lookup
from slicelib.models import build_discriminator, build_generator

log = logging.getLogger(__name__)

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
    clip: float | None = None  # gradient norm limit (None: no clipping)

    def step(self, loss: torch.Tensor) -> None:
        """Back-propagate ``loss`` (scaled when fp16), clip the gradient norm when asked,
        and update this network only."""
        self.optimizer.zero_grad(set_to_none=True)
        self.scaler.scale(loss).backward()
        if self.clip is not None:
            self.scaler.unscale_(self.optimizer)
            nn.utils.clip_grad_norm_(self.raw.parameters(), self.clip)
        self.scaler.step(self.optimizer)
        self.scaler.update()


class Objective(ABC):
    """One training step and the validation quantities of a model family."""

    roles: tuple[str, ...]  # the networks it trains, by checkpoint role
    higher_is_better: bool = True  # best checkpoint: max val SSIM, or min val loss
    # A prediction validated beside the model's (history column ``val_<name>_psnr``).
    reference_name: str | None = None

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

    @property
    def frozen(self) -> dict[str, nn.Module]:
        """Networks saved with the run that it does not train, by checkpoint role."""
        return {}

    def prepare(self, batches: Iterable[Any]) -> None:
        """Measure what the objective needs from training batches, once, before the first
        epoch of a new run (a resumed run restores it with :meth:`load_extra_state`)."""
        return None

    def extra_state(self) -> dict[str, Any]:
        """Plain values the checkpoint keeps beside the networks."""
        return {}

    def load_extra_state(self, state: Mapping[str, Any]) -> None:
        """Restore :meth:`extra_state`."""
        return None

    def reference(self, inputs: torch.Tensor) -> torch.Tensor | None:
        """The prediction named :attr:`reference_name` (N, 1, H, W), or None."""
        return None


LOSSES: dict[str, Callable[[torch.Tensor, torch.Tensor], torch.Tensor]] = {
    "l1": F.l1_loss,
    "mse": F.mse_loss,
}


class L1Objective(Objective):
    """cnn, unet, mcnet, filter: mean absolute error (or, with ``loss="mse"``, squared)."""

    roles: tuple[str, ...] = ("generator",)

    def __init__(self, cfg: TrainConfig, learners: Mapping[str, Learner], amp: Amp) -> None:
        super().__init__(cfg, learners, amp)
        self.higher_is_better = not selects_on_loss(cfg)

    @property
    def generator(self) -> Learner:
        return self.learners["generator"]

    def error(self, pred: torch.Tensor, target: torch.Tensor) -> torch.Tensor:
        return lookup(LOSSES, self.cfg.loss, "loss")(pred.float(), target)

    def train_step(self, inputs: torch.Tensor, target: torch.Tensor) -> dict[str, torch.Tensor]:
        with self.amp():
            pred = self.generator.module(inputs)
        loss = self.error(pred, target)
        self.generator.step(loss)
        return {"loss": loss.detach()}

    def val_loss(
        self, inputs: torch.Tensor, target: torch.Tensor, generator: torch.Generator
    ) -> torch.Tensor:
        return self.error(self.generator.raw(inputs), target)

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


class RefinementObjective(Objective):
    """Residual diffusion on top of a frozen U-Net: the hybrid loss at uniformly drawn
    timesteps; validation refines with ``val_ddim_steps`` deterministic DDIM steps.

    The residual's scale is measured on training batches before the first epoch
    (:meth:`prepare`) and kept in the checkpoint; the U-Net's weights are kept too.
    """

    roles: tuple[str, ...] = ("denoiser",)
    reference_name = "unet"

    def __init__(
        self,
        cfg: RefineConfig,
        learners: Mapping[str, Learner],
        amp: Amp,
        unet: nn.Module,
        unet_config: TrainConfig,
    ) -> None:
        super().__init__(cfg.train, learners, amp)
        self.refine_cfg = cfg
        self.unet = unet.eval()
        for p in self.unet.parameters():
            p.requires_grad_(False)
        self.unet_config = unet_config
        self.diffusion = GaussianDiffusion(cfg.train.diffusion)
        self.ddim_steps = min(cfg.train.val_ddim_steps, cfg.train.diffusion.timesteps)
        self.scale: float | None = None

    @property
    def denoiser(self) -> Learner:
        return self.learners["denoiser"]

    @property
    def frozen(self) -> dict[str, nn.Module]:
        return {"generator": self.unet}

    def prepare(self, batches: Iterable[Any]) -> None:
        device = next(self.unet.parameters()).device
        quantile = self.refine_cfg.residual_quantile
        self.scale = refine.residual_scale(self.unet, batches, device, quantile)
        log.info("residual scale (quantile %.3f of |target - unet|): %.4f", quantile, self.scale)

    def extra_state(self) -> dict[str, Any]:
        return {"residual_scale": self._scale(), "unet_config": to_dict(self.unet_config)}

    def load_extra_state(self, state: Mapping[str, Any]) -> None:
        self.scale = float(state["residual_scale"])

    def _scale(self) -> float:
        if self.scale is None:
            raise SlicelibError("the residual scale is measured before the first epoch")
        return self.scale

    def _base(self, inputs: torch.Tensor) -> torch.Tensor:
        with torch.no_grad():
            return self.unet(inputs).float().clamp(0.0, 1.0)

    def _loss(
        self, module: nn.Module, inputs: torch.Tensor, target: torch.Tensor, t: torch.Tensor,
        noise: torch.Tensor,
    ) -> dict[str, torch.Tensor]:  # fmt: skip
        base = self._base(inputs)
        return refine.hybrid_loss(
            self.diffusion, module, inputs, base, target, self._scale(),
            self.refine_cfg.recon_weight, t=t, noise=noise,
        )  # fmt: skip

    def train_step(self, inputs: torch.Tensor, target: torch.Tensor) -> dict[str, torch.Tensor]:
        t = self.diffusion.sample_timesteps(len(target), device=target.device)
        with self.amp():
            parts = self._loss(self.denoiser.module, inputs, target, t, torch.randn_like(target))
        self.denoiser.step(parts["loss"])
        return {name: value.detach().float() for name, value in parts.items()}

    def val_loss(
        self, inputs: torch.Tensor, target: torch.Tensor, generator: torch.Generator
    ) -> torch.Tensor:
        t = self.diffusion.sample_timesteps(len(target), device=target.device, generator=generator)
        noise = torch.randn(target.shape, generator=generator, device=generator.device)
        return self._loss(self.denoiser.raw, inputs, target, t, noise.to(target.device))["loss"]

    def refiner(self, generator: torch.Generator) -> refine.Refiner:
        """The refiner as validation samples it: DDIM, ``val_ddim_steps`` steps."""
        return refine.Refiner(
            self.unet, self.denoiser.raw, self.diffusion, self._scale(), generator,
            steps=self.ddim_steps,
        )  # fmt: skip

    def predict(self, inputs: torch.Tensor, generator: torch.Generator) -> torch.Tensor:
        return self.refiner(generator)(inputs)

    def reference(self, inputs: torch.Tensor) -> torch.Tensor | None:
        return self._base(inputs)


OBJECTIVES: dict[str, type[Objective]] = {
    "cnn": L1Objective,
    "unet": L1Objective,
    "gan": AdversarialObjective,
    "gan_improved": AdversarialObjective,
    "ddpm": DiffusionObjective,
    "mcnet": L1Objective,
    "filter": L1Objective,
}


def objective_class(model: str) -> type[Objective]:
    """The objective that trains ``model``."""
    return lookup(OBJECTIVES, model, "model")


def keeps_last(cfg: TrainConfig) -> bool:
    """Whether a run keeps its last epoch as ``best.pt``: a run whose learning rate decays
    (``schedule`` other than constant) ends where its schedule brings it, and a handful of
    validation slices is too noisy to pick an earlier epoch over that one; validation is
    then reported, not used to choose."""
    return cfg.schedule != "constant"


def selects_on_loss(cfg: TrainConfig) -> bool:
    """Whether a run keeps the checkpoint of lowest validation loss rather than highest
    validation SSIM (the original's rule for its L1 networks): the DDPM, as the original
    did, and a network trained on squared error, whose validation loss is what PSNR
    measures."""
    cls = objective_class(cfg.model)
    return cls is DiffusionObjective or (cls is L1Objective and cfg.loss == "mse")


def build_networks(cfg: RunConfig) -> dict[str, nn.Module]:
    """The networks a run trains, by checkpoint role, freshly initialised."""
    if isinstance(cfg, RefineConfig):
        return {"denoiser": refine.build_denoiser(cfg.train.model_cfg)}
    nets = {generator_role(cfg.model): build_generator(cfg.model, cfg.model_cfg)}
    disc = build_discriminator(cfg.model, cfg.model_cfg)
    if disc is not None:
        nets["discriminator"] = disc
    return nets


def build_objective(
    cfg: RunConfig,
    learners: Mapping[str, Learner],
    amp: Amp,
    *,
    device: torch.device,
    image_size: int,
) -> Objective:
    """The objective of ``cfg``; a refinement loads its U-Net run (which must be a
    deterministic model trained at the same k on images of ``image_size``)."""
    if not isinstance(cfg, RefineConfig):
        return objective_class(cfg.model)(cfg, learners, amp)
    if not cfg.unet_run:
        raise SlicelibError("a refinement run needs the U-Net run it refines (unet_run)")
    base = load_run(cfg.unet_run, device=device, k=cfg.k, image_size=image_size)
    if base.samples_noise:
        raise SlicelibError(
            f"run {cfg.unet_run}: the refined model must be deterministic, not {base.name!r}"
        )
    return RefinementObjective(cfg, learners, amp, base.model, base.config)
