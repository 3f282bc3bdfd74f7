"""Per-pixel uncertainty of the interpolated slice (supplement 6.3) and its calibration.

Two estimators, each a :class:`~slicelib.interpolator.SamplingInterpolator`
(N, 2, H, W) -> mean (N, 1, H, W) in [0, 1], whose samples give the per-pixel std
(:func:`~slicelib.interpolator.with_std`):

- :class:`DeepEnsemble`: U-Nets trained with different seeds; mean and standard
  deviation across their predictions.
- :class:`MCDropout`: one U-Net trained with ``ModelConfig.dropout > 0``, its
  dropout layers kept active at inference; mean and standard deviation across
  ``samples`` stochastic passes (seeded).

Standard deviations are population ones (``ddof=0``) of predictions clipped to
[0, 1], as the metrics see them.

:func:`calibration` tells whether a predicted std means anything: the Pearson and
Spearman correlations between per-pixel std and absolute error, and a calibration
curve over equal-count bins of std (per bin: root mean predicted variance against
root mean squared error; a calibrated std lies on the diagonal), summarised by
the expected normalised calibration error (ENCE, Levi et al. 2022).
"""

from __future__ import annotations

import contextlib
import logging
from collections.abc import Iterator, Mapping, Sequence
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any, cast

import numpy as np
import pandas as pd
import torch
from scipy import stats
from torch import nn

from slicelib.config import EvalConfig, EvalSplit
from slicelib.errors import SlicelibError
from slicelib.interpolator import Interpolator, SamplingInterpolator
from slicelib.metrics import clip01

if TYPE_CHECKING:
    from slicelib.checkpoint import LoadedRun
    from slicelib.results import Results

log = logging.getLogger(__name__)

CALIBRATION_BINS = 10  # equal-count bins of predicted std of the calibration curve
DROPOUT_TYPES: tuple[type[nn.Module], ...] = (nn.Dropout, nn.Dropout1d, nn.Dropout2d, nn.Dropout3d)


def has_dropout(model: nn.Module) -> bool:
    """True when ``model`` holds a dropout layer with a rate above 0."""
    return any(isinstance(m, DROPOUT_TYPES) and float(cast(Any, m).p) > 0 for m in model.modules())


@contextlib.contextmanager
def dropout_active(model: nn.Module) -> Iterator[nn.Module]:
    """``model`` in eval mode except its dropout layers (Monte Carlo dropout)."""
    modes = [(module, module.training) for module in model.modules()]
    model.eval()
    for module in model.modules():
        if isinstance(module, DROPOUT_TYPES):
            module.train()
    try:
        yield model
    finally:
        for module, training in modes:
            module.training = training


class MCDropout:
    """Monte Carlo dropout: ``samples`` passes with dropout on, seeded per call.

    ``model``: a generator (N, 2, H, W) -> (N, 1, H, W) with dropout layers.
    Call ``i`` uses seed ``seed + i``, so a sequence of calls is reproducible.
    """

    def __init__(self, model: nn.Module, samples: int, *, seed: int = 0) -> None:
        if samples < 2:
            raise SlicelibError(f"MC dropout needs at least 2 samples (got {samples})")
        if not has_dropout(model):
            raise SlicelibError(
                "MC dropout needs a model trained with dropout (ModelConfig.dropout > 0)"
            )
        self.model = model
        self.samples = samples
        self.seed = seed
        self.calls = 0
        self.device = next(model.parameters()).device

    @torch.no_grad()
    def stack(self, inputs: torch.Tensor) -> torch.Tensor:
        """The ``samples`` passes, tensor (samples, N, 1, H, W) in [0, 1]."""
        x = inputs.to(self.device, dtype=torch.float32)
        devices = [self.device] if self.device.type == "cuda" else []
        with torch.random.fork_rng(devices=devices), dropout_active(self.model):
            torch.manual_seed(self.seed + self.calls)
            outs = torch.stack([self.model(x).float().clamp(0, 1) for _ in range(self.samples)])
        self.calls += 1
        return outs.to(inputs.device)

    def __call__(self, inputs: torch.Tensor) -> torch.Tensor:
        return self.stack(inputs).mean(dim=0)

    @torch.no_grad()
    def warm_up(self, inputs: torch.Tensor) -> None:
        """One pass with dropout off: the call count, and so the seeds, stay as they are."""
        self.model.eval()(inputs[:1].to(self.device, dtype=torch.float32))


class DeepEnsemble:
    """A deep ensemble of ``members``, each an :class:`~slicelib.interpolator.Interpolator`."""

    def __init__(self, members: Sequence[Interpolator]) -> None:
        if len(members) < 2:
            raise SlicelibError(f"a deep ensemble needs at least 2 members (got {len(members)})")
        self.members = list(members)

    @torch.no_grad()
    def stack(self, inputs: torch.Tensor) -> torch.Tensor:
        """Every member's prediction, tensor (members, N, 1, H, W) in [0, 1]."""
        return torch.stack([m(inputs).float().clamp(0, 1).to(inputs.device) for m in self.members])

    def __call__(self, inputs: torch.Tensor) -> torch.Tensor:
        return self.stack(inputs).mean(dim=0)

    def warm_up(self, inputs: torch.Tensor) -> None:
        """Each member's own warm-up, or one prediction."""
        for member in self.members:
            warm = getattr(member, "warm_up", None)
            (warm or member)(inputs[:1])


def check_ensemble(runs: Sequence[LoadedRun]) -> None:
    """Raise unless all runs predict the same task: same k, image size and normalisation."""
    first = runs[0]
    for run in runs[1:]:
        for what, a, b in (
            ("k", first.config.k, run.config.k),
            ("image size", first.image_size, run.image_size),
            (
                "intensity clipping",
                getattr(first.cache_config, "clip_percentiles", None),
                getattr(run.cache_config, "clip_percentiles", None),
            ),
        ):
            if a != b:
                raise SlicelibError(
                    f"ensemble member {run.path} was trained with {what} {b}, "
                    f"but {first.path} with {a}"
                )
        if run.samples_noise:
            raise SlicelibError(
                f"ensemble member {run.path} is a sampling model ({run.name}); "
                "use deterministic models"
            )


@dataclass(frozen=True)
class Calibration:
    """How well a predicted std tracks the actual error (per pixel).

    ``pearson``/``spearman``: correlation of std with |error|. Per bin of std
    (equal counts): ``bin_std`` mean std, ``bin_rmv`` root mean variance,
    ``bin_rmse`` root mean squared error, ``bin_mae`` mean |error|, ``bin_count``.
    ``ence``: mean over bins of |RMV - RMSE| / RMV (0: calibrated).
    """

    pearson: float
    spearman: float
    ence: float
    n_pixels: int
    bin_std: np.ndarray
    bin_rmv: np.ndarray
    bin_rmse: np.ndarray
    bin_mae: np.ndarray
    bin_count: np.ndarray

    def curve(self) -> pd.DataFrame:
        """The calibration curve, one row per bin."""
        return pd.DataFrame(
            {
                "std_mean": self.bin_std,
                "rmv": self.bin_rmv,
                "rmse": self.bin_rmse,
                "mae": self.bin_mae,
                "pixels": self.bin_count,
            }
        )

    def summary(self) -> dict[str, float]:
        return {
            "pearson": self.pearson,
            "spearman": self.spearman,
            "ence": self.ence,
            "pixels": float(self.n_pixels),
        }


def calibration(
    std: np.ndarray,
    error: np.ndarray,
    *,
    bins: int = CALIBRATION_BINS,
    max_pixels: int | None = None,
    seed: int = 0,
) -> Calibration:
    """Calibration of predicted ``std`` against signed or absolute ``error``, any shape.

    ``max_pixels``: correlate a seeded random subset of at most this many pixels
    (bins use every pixel). Raises :class:`SlicelibError` on mismatched shapes,
    fewer pixels than bins, negative or non-finite values.
    """
    s = np.asarray(std, dtype=np.float64).ravel()
    e = np.abs(np.asarray(error, dtype=np.float64).ravel())
    if s.shape != e.shape:
        raise SlicelibError(f"std and error differ in size ({s.size} vs {e.size})")
    if bins < 1 or s.size < max(bins, 2):
        raise SlicelibError(f"calibration needs at least {max(bins, 2)} pixels and bins >= 1")
    if not (np.all(np.isfinite(s)) and np.all(np.isfinite(e))):
        raise SlicelibError("calibration: non-finite std or error")
    if np.any(s < 0):
        raise SlicelibError("calibration: negative standard deviation")
    pick = np.arange(s.size)
    if max_pixels is not None and s.size > max_pixels:
        pick = np.random.default_rng(seed).choice(s.size, size=max_pixels, replace=False)
    constant = np.ptp(s[pick]) == 0 or np.ptp(e[pick]) == 0
    pearson = float("nan") if constant else float(stats.pearsonr(s[pick], e[pick])[0])
    spearman = float("nan") if constant else float(stats.spearmanr(s[pick], e[pick])[0])

    groups = np.array_split(np.argsort(s, kind="stable"), bins)
    bin_rmv = np.array([np.sqrt(np.mean(s[g] ** 2)) for g in groups])
    bin_rmse = np.array([np.sqrt(np.mean(e[g] ** 2)) for g in groups])
    valid = bin_rmv > 0
    gaps = np.abs(bin_rmv[valid] - bin_rmse[valid]) / bin_rmv[valid]
    return Calibration(
        pearson=pearson,
        spearman=spearman,
        ence=float(np.mean(gaps)) if valid.any() else float("nan"),
        n_pixels=int(pick.size),
        bin_std=np.array([s[g].mean() for g in groups]),
        bin_rmv=bin_rmv,
        bin_rmse=bin_rmse,
        bin_mae=np.array([e[g].mean() for g in groups]),
        bin_count=np.array([len(g) for g in groups]),
    )


@dataclass
class UncertaintyResult:
    """What :func:`evaluate_uncertainty` measured: ``calibration[method]`` and the
    evaluation (:class:`~slicelib.results.Results`: one row per method and test slice,
    linear interpolation's included, and each method's std arrays)."""

    calibration: dict[str, Calibration]
    results: Results

    def better_calibrated(self) -> str | None:
        """The method with the lowest ENCE (None when no method has a finite one)."""
        finite = {n: c.ence for n, c in self.calibration.items() if np.isfinite(c.ence)}
        return min(finite, key=lambda n: finite[n]) if finite else None

    def better_ranked(self) -> str | None:
        """The method whose std ranks the errors best (highest Spearman), or None."""
        finite = {n: c.spearman for n, c in self.calibration.items() if np.isfinite(c.spearman)}
        return max(finite, key=lambda n: finite[n]) if finite else None

    def summary(self) -> pd.DataFrame:
        """One row per method: correlations, ENCE, PSNR and MAE of the mean, mean std."""
        rows = []
        for name, cal in self.calibration.items():
            part = self.results.rows[self.results.rows["method"] == name]
            std = self.results.std[f"{name}/std_mean"]
            rows.append(
                {
                    "method": name,
                    **cal.summary(),
                    "psnr_mean": float(part["psnr"].mean()),
                    "mae_mean": float(part["mae"].mean()),
                    "std_mean": float(np.mean(std)),
                }
            )
        return pd.DataFrame(rows)

    def example(self, name: str, index: int = 0) -> dict[str, np.ndarray]:
        """Maps (H, W) of one example slice of method ``name``: ``mean`` (clipped to
        [0, 1]), its ``error`` (absolute), the predicted ``std`` and the ``target``."""
        arrays = self.results.std
        mean = clip01(arrays[f"{name}/example_mean"][index])
        target = arrays[f"{name}/example_target"][index]
        std = arrays[f"{name}/example_std"][index]
        return {"mean": mean, "error": np.abs(mean - target), "std": std, "target": target}


def evaluate_uncertainty(
    cache: Any,
    methods: Mapping[str, Interpolator],
    *,
    k: int = 1,
    bins: int = CALIBRATION_BINS,
    max_slices: int | None = None,
    batch_size: int = 8,
    examples: int = 3,
    split: EvalSplit = "test",
    progress: bool = False,
) -> UncertaintyResult:
    """Score each method on the ``split`` slices of ``cache`` at ``k`` with
    :func:`slicelib.evaluate.evaluate` and calibrate its std.

    Every method sees the same slices (``max_slices``: an evenly spaced subset) and
    must draw samples (a :class:`~slicelib.interpolator.SamplingInterpolator`). Errors
    are those of the mean prediction clipped to [0, 1].
    """
    from slicelib.evaluate import Method, evaluate

    for name, method in methods.items():
        if not isinstance(method, SamplingInterpolator):
            raise SlicelibError(f"uncertainty method {name!r} predicts no std")
    cfg = EvalConfig(split=split, batch_size=batch_size, std_examples=examples)
    named = {
        name: Method(name, method, keep_std=True, max_slices=max_slices)
        for name, method in methods.items()
    }
    results = evaluate(
        cache, k, cfg, methods=[], interpolators=named, keep_pixels=True, progress=progress
    )
    result = {name: calibration(*results.pixels[name], bins=bins) for name in methods}
    for name, cal in result.items():
        log.info(
            "%s: Pearson %.3f, Spearman %.3f, ENCE %.3f", name, cal.pearson, cal.spearman, cal.ence
        )
    return UncertaintyResult(calibration=result, results=results)
