"""The one interface of a slice interpolator: two neighbours in, the middle slice out.

Every way of predicting a slice implements :class:`Interpolator`: a trained run
(:class:`slicelib.checkpoint.Predictor`), the refiner (:class:`slicelib.refine.Refiner`),
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

from typing import Protocol, runtime_checkable

import torch

from slicelib.errors import SlicelibError


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
