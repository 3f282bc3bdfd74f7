"""Patient-level comparisons, intervals and the summary table on cases with known answers."""

from __future__ import annotations

import math

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


def test_bootstrap_ci_contains_true_mean_in_simulation() -> None:
    # 200 simulated cohorts of 12 patients: a 95 % interval should cover the true mean
    # gain in most of them (BCa on 12 points is a little narrow: allow 85 %).
    rng = np.random.default_rng(0)
    covered = 0
    for i in range(200):
        low, high, how = stats.bootstrap_mean_ci(
            0.5 + rng.normal(0, 1.0, 12), n_resamples=400, seed=i
        )
        assert how in ("BCa", "percentile")
        covered += low < 0.5 < high
    assert covered >= 170


def test_bootstrap_small_and_degenerate() -> None:
    assert stats.bootstrap_mean_ci([2.0, 2.0, 2.0])[:2] == (2.0, 2.0)
    low, high, how = stats.bootstrap_mean_ci([1.0])
    assert math.isnan(low) and math.isnan(high) and "fewer than 2" in how
    low, high, _ = stats.bootstrap_mean_ci([1.0, 2.0, 4.0, 8.0, 3.0, 5.0], seed=1)
    assert 1.0 <= low < 23 / 6 < high <= 8.0
    assert stats.bootstrap_mean_ci([1.0, 2.0, 4.0, 8.0], seed=1) == stats.bootstrap_mean_ci(
        [1.0, 2.0, 4.0, 8.0], seed=1
    )
    with pytest.raises(SlicelibError, match="one value per patient"):
        stats.bootstrap_mean_ci(np.zeros((2, 2)))


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
    c = stats.compare(rows, "flow", "linear", "psnr", n_boot=200)
    assert c.n_patients == 6 and c.n_slices == 60
    assert c.gain == pytest.approx(1.0, abs=0.05)
    assert c.ci_low < c.gain < c.ci_high and c.ci_low > 0.8
    # Every patient gains: the exact sign-flip p is 2/64, however large the gain.
    assert c.p_value == pytest.approx(2 / 64)
    assert c.tested
    # A method scored on a subset (as the DDPM): the comparison is on its slices only.
    sub = rows[(rows["method"] == "flow") & (rows["slice_index"] == 5)].assign(method="ddpm")
    sub = sub.assign(psnr=sub["psnr"] - 1.5)
    c = stats.compare(pd.concat([rows, sub]), "ddpm", "linear", "psnr", n_boot=200)
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
    table = stats.summarize(rows, n_boot=200).set_index("method")
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
    table = stats.summarize(_rows(patients=2), n_boot=50).set_index("method")
    assert table["p_psnr_vs_linear"].isna().all()
    assert (table["test_vs_linear"] == stats.TOO_FEW).all()
    assert table.loc["flow", "psnr_gain_db"] == pytest.approx(1.0, abs=0.1)


def test_summarize_rejects_bad_input() -> None:
    with pytest.raises(SlicelibError, match="lack column"):
        stats.summarize(pd.DataFrame({"method": ["a"]}))
