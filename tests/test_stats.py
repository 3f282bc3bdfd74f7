"""Patient-level comparisons, intervals and the summary table on cases with known answers."""

from __future__ import annotations

import math
from collections.abc import Callable

import numpy as np
import pandas as pd
import pytest

from slicelib import stats
from slicelib.errors import SlicelibError


def test_sign_flip_exact_p_for_all_positive_differences() -> None:
    # Six patients all favouring A: only the observed pattern and its mirror are as
    # extreme among 2^6 sign patterns, so the exact two-sided p is 2/64.
    p, test = stats.sign_flip_test([0.3, 0.1, 0.5, 0.2, 0.4, 0.6])
    assert p == pytest.approx(2 / 64)
    assert test == "exact sign-flip permutation"
    # Five patients can never reach 0.05: the reason MIN_TEST_PATIENTS is 6.
    assert stats.sign_flip_test([1.0, 2.0, 3.0, 4.0, 5.0])[0] == pytest.approx(2 / 32)
    assert stats.MIN_TEST_PATIENTS == 6


def test_sign_flip_null_and_degenerate() -> None:
    assert stats.sign_flip_test(np.zeros(8))[0] == 1.0
    # Symmetric differences: the observed mean is 0, every pattern is as extreme.
    assert stats.sign_flip_test([1.0, -1.0, 2.0, -2.0, 3.0, -3.0])[0] == pytest.approx(1.0)
    assert math.isnan(stats.sign_flip_test([])[0])
    assert math.isnan(stats.sign_flip_test([math.inf, 1.0])[0])
    p, test = stats.sign_flip_test(np.linspace(0.1, 1.0, 30))
    assert test.startswith("Monte Carlo") and p < 0.001


def _coverage(draw: Callable[[np.random.Generator, int], np.ndarray], n: int) -> float:
    """Share of 2,000 simulated cohorts of ``n`` patients (true mean 0) whose 95 %
    interval covers 0."""
    rng = np.random.default_rng(n)
    covered = 0
    for _ in range(2000):
        low, high, how = stats.mean_ci(draw(rng, n))
        assert how == stats.T_INTERVAL
        covered += low < 0.0 < high
    return covered / 2000


def _normal(rng: np.random.Generator, n: int) -> np.ndarray:
    return rng.normal(0.0, 1.0, n)


def _patient_means(rng: np.random.Generator, n: int) -> np.ndarray:
    """Per-patient means of 12 skewed slice values (exponential, mean 0) around a
    normal patient effect: what a per-patient paired difference looks like."""
    return rng.normal(0.0, 0.3, n) + (rng.exponential(1.0, (n, 12)) - 1.0).mean(axis=1)


@pytest.mark.parametrize("n", [6, 21])
@pytest.mark.parametrize("draw", [_normal, _patient_means])
def test_interval_covers_a_known_mean_at_6_and_21_patients(
    draw: Callable[[np.random.Generator, int], np.ndarray], n: int
) -> None:
    # A 95 % interval should cover the true mean about 95 % of the time; BCa covered
    # 87 % at n = 6 (stats.mean_ci says why the t-interval replaced it).
    assert _coverage(draw, n) >= 0.90


def test_interval_small_and_degenerate() -> None:
    assert stats.mean_ci([2.0, 2.0, 2.0])[:2] == (2.0, 2.0)
    low, high, how = stats.mean_ci([1.0])
    assert math.isnan(low) and math.isnan(high) and "fewer than 2" in how
    low, high, _ = stats.mean_ci([1.0, 2.0, 4.0, 8.0, 3.0, 5.0])
    # mean 23/6, sd 2.483, t(0.975, 5) = 2.5706
    assert (low + high) / 2 == pytest.approx(23 / 6)
    assert high - low == pytest.approx(2 * 2.5706 * 2.4833 / math.sqrt(6), rel=1e-3)
    with pytest.raises(SlicelibError, match="one value per patient"):
        stats.mean_ci(np.zeros((2, 2)))


def test_region_tests_agree_with_the_interval() -> None:
    # p < 0.05 exactly when the 95 % interval lies inside (or wholly outside) the range.
    rng = np.random.default_rng(1)
    for _ in range(300):
        x = rng.normal(rng.uniform(-1, 1), rng.uniform(0.05, 1.0), 6)
        inf = stats.infer_mean(x)
        a, b = sorted(rng.uniform(-1.5, 1.5, 2))
        for low, high in ((a, b), (a, math.inf), (-math.inf, b)):
            p_in, p_out = stats.region_tests(inf.mean, inf.se, 5, low, high)
            assert (p_in < 0.05) == (low < inf.ci_low and inf.ci_high < high)
            assert (p_out < 0.05) == (inf.ci_high < low or inf.ci_low > high)
    # A single measurement (se 0) is inside or outside, with certainty.
    assert stats.region_tests(3.0, 0.0, 1, 1.0, math.inf) == (0.0, 1.0)
    assert stats.region_tests(0.5, 0.0, 1, 1.0, math.inf) == (1.0, 0.0)


def test_holm_adjusts_a_family() -> None:
    assert stats.holm([0.01, 0.04, 0.03, 0.5]) == pytest.approx([0.04, 0.09, 0.09, 0.5])
    assert stats.holm([0.02]) == [0.02]
    assert stats.holm([0.6, 0.6]) == [1.0, 1.0]


def test_p_floor_is_the_smallest_p_the_test_gives() -> None:
    for n in (6, 7, 10):
        assert stats.p_floor(n) == pytest.approx(2 / 2**n)
        assert stats.sign_flip_test(np.linspace(0.1, 1.0, n))[0] == pytest.approx(stats.p_floor(n))
    assert stats.sign_flip_test(np.linspace(0.1, 1.0, 30))[0] == pytest.approx(stats.p_floor(30))


def test_improvement_matches_the_papers_percentage() -> None:
    db, pct = stats.improvement(30.08, 27.31)
    assert db == pytest.approx(2.77)
    assert pct == pytest.approx(10.14, abs=0.01)


def _rows(patients: int = 6, slices: int = 10) -> pd.DataFrame:
    rng = np.random.default_rng(3)
    records = []
    for p in range(patients):
        for i in range(2, 2 + slices):
            base = 25 + p + rng.normal(0, 0.5)
            for method, shift in (("linear", 0.0), ("flow", 1.0), ("nearest", -3.0)):
                records.append(
                    {
                        "method": method,
                        "patient_id": f"P{p}",
                        "slice_index": i,
                        "psnr": base + shift + rng.normal(0, 0.1),
                        "ssim": 0.8 + shift / 100 + rng.normal(0, 0.002),
                        "ssim_gauss": 0.82 + shift / 100,
                        "mae": 0.03 - shift / 200,
                        "ms_per_slice": 1.0 + shift,
                        "fallback": method == "nearest" and i < 4,
                    }
                )
    return pd.DataFrame(records)


def test_compare_pairs_patients_on_shared_slices() -> None:
    rows = _rows()
    c = stats.compare(rows, "flow", "linear", "psnr")
    assert c.n_patients == 6 and c.n_slices == 60
    assert c.gain == pytest.approx(1.0, abs=0.05)
    assert c.ci_low < c.gain < c.ci_high and c.ci_low > 0.8
    # Every patient gains: the exact sign-flip p is 2/64, however large the gain.
    assert c.p_value == pytest.approx(2 / 64)
    assert c.tested
    # A method scored on a subset (as the DDPM): the comparison is on its slices only.
    sub = rows[(rows["method"] == "flow") & (rows["slice_index"] == 5)].assign(method="ddpm")
    sub = sub.assign(psnr=sub["psnr"] - 1.5)
    c = stats.compare(pd.concat([rows, sub]), "ddpm", "linear", "psnr")
    assert c.n_slices == 6 and c.n_patients == 6
    assert c.gain == pytest.approx(-0.5, abs=0.1)


def test_compare_too_few_patients_reports_numbers_without_a_test() -> None:
    rows = _rows(patients=3)
    c = stats.compare(rows, "flow", "linear", "psnr")
    assert c.n_patients == 3
    assert c.gain == pytest.approx(1.0, abs=0.05)
    assert c.test == stats.TOO_FEW and c.ci_method == stats.TOO_FEW
    assert math.isnan(c.p_value) and math.isnan(c.ci_low) and not c.tested
    # The threshold is a parameter: the same rows are tested with a lower minimum.
    assert stats.compare(rows, "flow", "linear", "psnr", min_patients=3).tested


def test_summarize_known_structure() -> None:
    rows = _rows()
    table = stats.summarize(rows).set_index("method")
    assert list(table.index) == ["linear", "flow", "nearest"]
    assert (table["n_slices"] == 60).all() and (table["n_patients"] == 6).all()
    lin = rows[rows["method"] == "linear"]
    assert table.loc["linear", "psnr_mean"] == pytest.approx(lin["psnr"].mean())
    assert table.loc["linear", "psnr_std"] == pytest.approx(lin["psnr"].std())
    assert table.loc["linear", "psnr_patient_mean"] == pytest.approx(
        lin.groupby("patient_id")["psnr"].mean().mean()
    )
    assert table.loc["flow", "psnr_gain_db"] == pytest.approx(1.0, abs=0.05)
    assert table.loc["flow", "psnr_gain_ci_low"] > 0.8
    assert table.loc["nearest", "psnr_gain_db"] == pytest.approx(-3.0, abs=0.05)
    assert table.loc["nearest", "psnr_gain_ci_high"] < -2.8
    assert table.loc["linear", "psnr_gain_db"] == 0.0
    assert table.loc["linear", "p_psnr_vs_linear"] == 1.0
    assert table.loc["flow", "p_psnr_vs_linear"] == pytest.approx(2 / 64)
    assert (table["test_vs_linear"] == "exact sign-flip permutation").all()
    assert (table["n_patients_vs_linear"] == 6).all()
    assert (table["best_psnr"] == "flow").all()
    assert table.loc["flow", "p_psnr_vs_best"] == 1.0
    assert table.loc["nearest", "p_ssim_vs_best"] == pytest.approx(2 / 64)
    assert table.loc["nearest", "fallback"] == 12
    for m in table.index:
        assert (
            table.loc[m, "psnr_ci_low"]
            <= table.loc[m, "psnr_patient_mean"]
            <= table.loc[m, "psnr_ci_high"]
        )


def test_summarize_too_few_patients() -> None:
    table = stats.summarize(_rows(patients=2)).set_index("method")
    assert table["p_psnr_vs_linear"].isna().all()
    assert (table["test_vs_linear"] == stats.TOO_FEW).all()
    assert table.loc["flow", "psnr_gain_db"] == pytest.approx(1.0, abs=0.1)


def test_summarize_rejects_bad_input() -> None:
    with pytest.raises(SlicelibError, match="lack column"):
        stats.summarize(pd.DataFrame({"method": ["a"]}))
