"""The one interface of a slice interpolator: two neighbours in, the middle slice out.

Every way of predicting a slice implements :class:`Interpolator`: a trained run
(:class:`Predictor`, below), the refiner (:class:`slicelib.refine.Refiner`),
the uncertainty estimators (:class:`slicelib.uncertainty.MCDropout`,
:class:`slicelib.uncertainty.DeepEnsemble`), a classical baseline
(:class:`slicelib.baselines.BaselineInterpolator`) and any plain function of the same
signature. Evaluation (:mod:`slicelib.evaluate`) and upsampling
(:mod:`slicelib.upsample.volume`) take one.

An interpolator that draws several predictions per slice (samples of a DDPM, passes
with dropout, members of an ensemble) is a :class:`SamplingInterpolator`: it also
returns them all (:meth:`~SamplingInterpolator.stack`), and :func:`with_std` gives
their mean and per-pixel standard deviation.
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Protocol, runtime_checkable

import torch

from slicelib import refine
from slicelib.data.motion import with_estimate
from slicelib.device import check_precision
from slicelib.diffusion import GaussianDiffusion
from slicelib.errors import SlicelibError
from slicelib.inference import inference_autocast, prepare_for_inference, use_cpu_bf16
from slicelib.methods import Sampler
from slicelib.models import takes_estimate

if TYPE_CHECKING:
    from slicelib.checkpoint import LoadedRun


@runtime_checkable
class Interpolator(Protocol):
    """``interpolator(inputs)``: tensor (N, 2, H, W), the neighbours S_{i-k} and S_{i+k}
    in [0, 1] -> the middle slices (N, 1, H, W) in [0, 1], on the inputs' device."""

    def __call__(self, inputs: torch.Tensor) -> torch.Tensor: ...


@runtime_checkable
class SamplingInterpolator(Interpolator, Protocol):
    """An interpolator whose prediction is the mean of several: ``stack(inputs)`` gives
    them all, tensor (M, N, 1, H, W) in [0, 1]; ``__call__`` gives their mean."""

    def stack(self, inputs: torch.Tensor) -> torch.Tensor: ...


def mean_std(samples: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    """(M, N, 1, H, W) samples -> per-pixel mean and population std, each (N, 1, H, W)."""
    return samples.mean(dim=0), samples.std(dim=0, correction=0)


def with_std(
    interpolator: Interpolator, inputs: torch.Tensor
) -> tuple[torch.Tensor, torch.Tensor | None]:
    """The prediction (N, 1, H, W) and, for a :class:`SamplingInterpolator`, the per-pixel
    standard deviation across its samples (N, 1, H, W); None for any other."""
    if isinstance(interpolator, SamplingInterpolator):
        return mean_std(interpolator.stack(inputs))
    return interpolator(inputs), None


def predict_std(interpolator: Interpolator, inputs: torch.Tensor) -> torch.Tensor:
    """The per-pixel standard deviation of ``interpolator`` on ``inputs`` (N, 1, H, W);
    an interpolator that draws no samples is an error."""
    std = with_std(interpolator, inputs)[1]
    if std is None:
        raise SlicelibError(
            f"{type(interpolator).__name__} predicts no standard deviation (it draws no samples)"
        )
    return std


class Predictor:
    """A trained run as a function: inputs (N, 2, H, W) in [0, 1] -> predictions
    (N, 1, H, W) clipped to [0, 1], on the inputs' device.

    For the DDPM and the refiner every call draws fresh noise from one generator seeded
    once, so a sequence of calls is reproducible; ``samples > 1`` returns the mean of that
    many samples and :meth:`stack` returns them all (for standard-deviation maps).
    Deterministic models ignore the sampler settings.
    """

    def __init__(
        self,
        run: LoadedRun,
        *,
        sampler: Sampler = "ancestral",
        steps: int | None = None,
        seed: int = 0,
        samples: int = 1,
        eta: float = 0.0,
        precision: str = "fp32",
        cpu_precision: str = "fp32",
    ) -> None:
        self.run = run
        # bfloat16 on the CPU only when asked (slicelib upsample): evaluation stays exact
        self.cpu_bf16 = use_cpu_bf16(run.device, cpu_precision)
        if self.cpu_bf16:
            prepare_for_inference(run.model, run.device, cpu_bf16=True)
        self.is_diffusion = run.samples_noise
        # the motion-compensated network reads the flow estimate too, computed here
        self.motion = run.config.model_cfg.flow if takes_estimate(run.config.model) else None
        if samples < 1:
            raise SlicelibError(f"samples must be >= 1 (got {samples})")
        if samples > 1 and not self.is_diffusion:
            raise SlicelibError(f"model {run.config.model!r} is deterministic: samples must be 1")
        if sampler not in ("ancestral", "ddim"):
            raise SlicelibError(f"unknown sampler {sampler!r} (choose ancestral or ddim)")
        timesteps = run.config.diffusion.timesteps
        if self.is_diffusion:
            if sampler == "ancestral" and steps not in (None, timesteps):
                raise SlicelibError(
                    f"ancestral sampling runs all T={timesteps} steps (got steps={steps}); "
                    "use sampler='ddim' for fewer"
                )
            if steps is not None and not 1 <= steps <= timesteps:
                raise SlicelibError(f"steps must be in 1..{timesteps} (got {steps})")
        self.sampler = sampler
        self.steps = steps or timesteps
        self.samples = samples
        self.eta = eta
        self.precision = precision
        self.seed = seed
        self.generator = torch.Generator(device=run.device).manual_seed(seed)
        check_precision(precision)
        self.diffusion = GaussianDiffusion(run.config.diffusion) if self.is_diffusion else None
        self.refiner: refine.Refiner | None = None
        if run.refine is not None:
            assert self.diffusion is not None and run.base is not None
            self.refiner = refine.Refiner(
                run.base, run.model, self.diffusion, float(run.residual_scale or 0.0),
                self.generator, sampler=sampler, steps=self.steps, eta=eta, samples=samples,
            )  # fmt: skip

    def _one(self, cond: torch.Tensor) -> torch.Tensor:
        model = self.run.model
        if not self.is_diffusion:
            return model(cond)
        assert self.diffusion is not None
        if self.sampler == "ancestral":
            return self.diffusion.sample(model, cond, generator=self.generator)
        return self.diffusion.ddim_sample(
            model, cond, self.steps, eta=self.eta, generator=self.generator
        )

    @torch.no_grad()
    def stack(self, inputs: torch.Tensor) -> torch.Tensor:
        """All samples, tensor (samples, N, 1, H, W) in [0, 1]."""
        if inputs.dim() != 4 or inputs.shape[1] != 2:
            raise SlicelibError(
                f"predictor inputs must have shape (N, 2, H, W), got {tuple(inputs.shape)}"
            )
        if self.motion is not None:
            inputs = with_estimate(inputs, self.motion)
        cond = inputs.to(self.run.device, dtype=torch.float32)
        if self.cpu_bf16:  # oneDNN's bfloat16 convolutions want NHWC
            cond = cond.contiguous(memory_format=torch.channels_last)
        outs = []
        with inference_autocast(self.run.device, self.precision, self.cpu_bf16):
            if self.refiner is not None:
                return self.refiner.stack(cond).to(inputs.device)
            for _ in range(self.samples):
                outs.append(self._one(cond).float().clamp(0.0, 1.0))
        return torch.stack(outs).to(inputs.device)

    def __call__(self, inputs: torch.Tensor) -> torch.Tensor:
        return self.stack(inputs).mean(dim=0)

    @torch.no_grad()
    def warm_up(self, inputs: torch.Tensor) -> None:
        """One forward pass of each network on ``inputs[:1]`` (N, 2, H, W) (first-call
        allocations, kernel selection); the sampler's seeded generator stays untouched,
        so results do not depend on warm-up."""
        if self.motion is not None:
            inputs = with_estimate(inputs[:1], self.motion)
        x = inputs[:1].to(self.run.device, dtype=torch.float32)
        with inference_autocast(self.run.device, self.precision, self.cpu_bf16):
            if self.refiner is not None:
                self.refiner.warm_up(x)
            elif self.is_diffusion:
                t = torch.zeros(1, dtype=torch.long, device=self.run.device)
                self.run.model(x[:, :1], t, x)
            else:
                self.run.model(x)
