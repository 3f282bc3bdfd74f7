"""Uncertainty: MC dropout and deep ensembles give std maps; calibration is computed right."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
import torch
from scipy import stats
from torch import nn

from slicelib.errors import SlicelibError
from slicelib.interpolator import SamplingInterpolator, with_std
from slicelib.models.unet import UNet
from slicelib.uncertainty import (
    DeepEnsemble,
    MCDropout,
    calibration,
    dropout_active,
    evaluate_uncertainty,
    has_dropout,
)


def test_correlations_on_a_known_case() -> None:
    # Pearson of (1, 2, 3, 4) and (1, 3, 2, 4) is 0.8; their ranks are the same: Spearman 0.8.
    cal = calibration(np.array([1.0, 2.0, 3.0, 4.0]), np.array([-1.0, 3.0, -2.0, 4.0]), bins=2)
    assert cal.pearson == pytest.approx(0.8)
    assert cal.spearman == pytest.approx(0.8)
    assert list(cal.bin_count) == [2, 2]
    assert cal.bin_std == pytest.approx([1.5, 3.5])
    assert cal.bin_mae == pytest.approx([2.0, 3.0])
    assert cal.bin_rmse == pytest.approx([np.sqrt(5.0), np.sqrt(10.0)])
    assert cal.bin_rmv == pytest.approx([np.sqrt(2.5), np.sqrt(12.5)])


def test_correlations_match_scipy_and_rank_invariance() -> None:
    rng = np.random.default_rng(0)
    std = rng.random(5000)
    err = std * rng.standard_normal(5000)
    cal = calibration(std, err)
    assert cal.pearson == pytest.approx(stats.pearsonr(std, np.abs(err))[0])
    assert cal.spearman == pytest.approx(stats.spearmanr(std, np.abs(err))[0])
    # A monotone transform of std keeps Spearman and changes Pearson.
    warped = calibration(std**4, err)
    assert warped.spearman == pytest.approx(cal.spearman)
    assert warped.pearson != pytest.approx(cal.pearson, abs=1e-3)


def test_a_calibrated_std_lies_on_the_diagonal_and_a_scaled_one_does_not() -> None:
    rng = np.random.default_rng(1)
    std = rng.uniform(0.01, 0.2, size=200_000)
    err = std * rng.standard_normal(std.size)  # errors drawn with exactly the predicted std
    good = calibration(std, err, bins=10)
    assert good.ence < 0.03
    assert np.allclose(good.bin_rmse, good.bin_rmv, rtol=0.05)
    assert good.pearson > 0.3
    over = calibration(2 * std, err, bins=10)  # twice too uncertain
    assert over.ence == pytest.approx(0.5, abs=0.03)
    assert calibration(std, err, max_pixels=1000).n_pixels == 1000


def test_calibration_refuses_bad_input() -> None:
    with pytest.raises(SlicelibError, match="differ in size"):
        calibration(np.ones(10), np.ones(9))
    with pytest.raises(SlicelibError, match="negative"):
        calibration(-np.ones(10), np.ones(10))
    with pytest.raises(SlicelibError, match="at least"):
        calibration(np.ones(3), np.ones(3), bins=10)


def test_mc_dropout_gives_non_negative_std_maps_reproducibly() -> None:
    torch.manual_seed(0)
    net = UNet(features=4, dropout=0.3, from_linear=False)
    net.final.bias.data.fill_(0.5)  # predictions inside [0, 1], where clipping keeps variance
    net.eval()
    x = torch.rand(3, 2, 13, 18)
    mean, std = with_std(MCDropout(net, 5, seed=3), x)
    assert std is not None and mean.shape == std.shape == (3, 1, 13, 18)
    assert float(std.min()) >= 0 and float(std.max()) > 0
    again_mean, again_std = with_std(MCDropout(net, 5, seed=3), x)
    assert torch.equal(mean, again_mean) and again_std is not None and torch.equal(std, again_std)
    assert torch.equal(MCDropout(net, 5, seed=3)(x), mean)  # the call is the samples' mean
    assert not net.training  # MC dropout leaves the model as it found it
    with dropout_active(net):
        assert net.dropout.training and not net.enc1.training


def test_mc_dropout_needs_dropout() -> None:
    net = UNet(features=4, dropout=0.0, from_linear=False)
    assert not has_dropout(net) and has_dropout(UNet(features=4, dropout=0.1, from_linear=False))
    with pytest.raises(SlicelibError, match="dropout"):
        MCDropout(net, 4)


def test_ensemble_mean_and_population_std() -> None:
    def constant(value: float) -> nn.Module:
        class Constant(nn.Module):
            def forward(self, x: torch.Tensor) -> torch.Tensor:
                return torch.full((x.shape[0], 1, *x.shape[2:]), value)

        return Constant()

    ensemble = DeepEnsemble([constant(0.2), constant(0.6), constant(1.5)])
    mean, std = with_std(ensemble, torch.rand(2, 2, 4, 4))
    assert std is not None and isinstance(ensemble, SamplingInterpolator)
    # 1.5 is clipped to 1.0 first: values 0.2, 0.6, 1.0.
    assert torch.allclose(mean, torch.full((2, 1, 4, 4), 0.6))
    assert torch.allclose(std, torch.full((2, 1, 4, 4), float(np.std([0.2, 0.6, 1.0]))))
    with pytest.raises(SlicelibError, match="at least 2"):
        DeepEnsemble([constant(0.2)])


def test_evaluation_on_a_cache_gives_maps_and_curves(tiny_cache: Path) -> None:
    torch.manual_seed(0)
    nets = [UNet(features=4, dropout=0.2, from_linear=False) for _ in range(2)]
    for net in nets:
        net.final.bias.data.fill_(0.5)
        net.eval()
    methods = {
        "ensemble": DeepEnsemble(nets),
        "mc_dropout": MCDropout(nets[0], 4, seed=0),
    }
    result = evaluate_uncertainty(tiny_cache, methods, k=1, bins=5, max_slices=6, examples=2)
    assert set(result.calibration) == {"ensemble", "mc_dropout"}
    rows = result.results.rows  # one scoring pass: the evaluation's rows, linear's too
    assert (rows["method"].isin(list(methods)).sum(), set(rows["method"])) == (
        12,
        {"linear", *methods},
    )
    for name in methods:
        assert result.results.std[f"{name}/example_std"].shape == (2, 32, 32)
        maps = result.example(name, 1)
        assert maps["std"].shape == (32, 32) and maps["std"].min() >= 0
        np.testing.assert_allclose(maps["error"], np.abs(maps["mean"] - maps["target"]))
        assert len(result.calibration[name].curve()) == 5
        assert result.calibration[name].n_pixels == 6 * 32 * 32
    summary = result.summary().set_index("method")
    assert np.isfinite(summary.loc["ensemble", "spearman"])
    assert (summary["std_mean"] > 0).all()
