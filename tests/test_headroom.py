"""The headroom references: least-squares filter and oracle blends, on tiny arrays."""

from __future__ import annotations

import numpy as np
import pytest

from slicelib.errors import SlicelibError
from slicelib.headroom import (
    LinearFilter,
    apply_linear_filter,
    fit_linear_filter,
    oracle_blend,
)
from slicelib.metrics import psnr


def _stacks(n: int = 6, size: int = 20, seed: int = 0) -> tuple[np.ndarray, np.ndarray]:
    rng = np.random.default_rng(seed)
    return rng.random((n, size, size)), rng.random((n, size, size))


def test_least_squares_recovers_a_known_filter_exactly() -> None:
    before, after = _stacks()
    rng = np.random.default_rng(1)
    truth = LinearFilter(weights=rng.normal(size=(2, 5, 5)), bias=0.125)
    target = apply_linear_filter(truth, before, after).astype(np.float64)
    fitted = fit_linear_filter(before, after, target, taps=5, pixels_per_slice=None)
    # float32 targets: agreement to float32 precision, far below any fitting error
    np.testing.assert_allclose(fitted.weights, truth.weights, atol=1e-4)
    assert fitted.bias == pytest.approx(truth.bias, abs=1e-4)


def test_subsampled_fit_also_recovers_the_filter() -> None:
    before, after = _stacks(n=8, size=24)
    truth = LinearFilter(weights=np.zeros((2, 3, 3)), bias=0.0)
    truth.weights[0, 1, 1] = truth.weights[1, 1, 1] = 0.5  # linear interpolation
    target = apply_linear_filter(truth, before, after)
    fitted = fit_linear_filter(before, after, target, taps=3, pixels_per_slice=100, seed=3)
    np.testing.assert_allclose(fitted.weights, truth.weights, atol=1e-4)


def test_linear_interpolation_as_a_filter_equals_the_mean() -> None:
    before, after = _stacks(n=2, size=9)
    weights = np.zeros((2, 3, 3))
    weights[:, 1, 1] = 0.5
    out = apply_linear_filter(LinearFilter(weights, 0.0), before, after)
    np.testing.assert_allclose(out, 0.5 * (before + after), atol=1e-6)


def test_pixel_oracle_clips_the_target_between_the_neighbours() -> None:
    before = np.array([[[0.2, 0.8, 0.5]]])
    after = np.array([[[0.6, 0.4, 0.5]]])
    target = np.array([[[0.1, 0.5, 0.9]]])
    out = oracle_blend(before, after, target, block=1)
    np.testing.assert_allclose(out, [[[0.2, 0.5, 0.5]]], atol=1e-7)


def test_block_oracle_finds_the_blend_weight_and_beats_linear() -> None:
    before, after = _stacks(n=3, size=8)
    target = 0.3 * before + 0.7 * after
    out = oracle_blend(before, after, target, block=4)
    np.testing.assert_allclose(out, target, atol=1e-6)
    linear = 0.5 * (before + after)
    for o, lin, t in zip(out, linear, target):
        assert psnr(np.clip(o, 0, 1), t, 1.0) > psnr(lin, t, 1.0)


def test_bad_shapes_and_parameters_are_named() -> None:
    before, after = _stacks(n=2, size=8)
    with pytest.raises(SlicelibError, match="differ in shape"):
        fit_linear_filter(before, after[:, :4], before)
    with pytest.raises(SlicelibError, match="taps must be odd"):
        fit_linear_filter(before, after, before, taps=4)
    with pytest.raises(SlicelibError, match="block must be"):
        oracle_blend(before, after, before, block=0)


def test_filter_and_oracle_are_scored_as_methods() -> None:
    """A fitted filter is an interpolator and an oracle blend a bound: the evaluation's
    Method predicts with either, clipped to [0, 1] as every method is scored."""
    import torch

    from slicelib.evaluate import Batch, Method
    from slicelib.headroom import OracleBlend

    before, after = _stacks(n=2, size=12)
    target = 0.25 * before + 0.75 * after
    identity = LinearFilter(weights=np.zeros((2, 3, 3)), bias=0.0)
    identity.weights[1, 1, 1] = 1.0  # copies S_{i+k}
    x = torch.from_numpy(np.stack([before, after], axis=1).astype(np.float32))
    np.testing.assert_allclose(identity(x)[:, 0].numpy(), after, atol=1e-6)
    items = [type("NB", (), {"before": b, "after": a})() for b, a in zip(before, after)]
    batch = Batch(refs=[], items=items, targets=target.astype(np.float32))  # type: ignore[arg-type]
    pred = Method("oracle_tile", OracleBlend(4)).predict(batch)  # type: ignore[arg-type]
    np.testing.assert_allclose(pred.images, target, atol=1e-6)
