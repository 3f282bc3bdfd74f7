"""Bootstrap, paired tests and the summary table on cases with known answers."""

from __future__ import annotations

import math

import numpy as np
import pandas as pd
import pytest

from slicelib import stats
from slicelib.errors import SlicelibError


def test_bootstrap_ci_contains_true_mean_of_large_sample() -> None:
    rng = np.random.default_rng(0)
    patients = np.repeat([f"P{i}" for i in range(200)], 10)
    values = 30.0 + rng.normal(0, 1.0, 200).repeat(10) + rng.normal(0, 0.5, 2000)
    low, high = stats.bootstrap_ci(values, patients, n_boot=1000, seed=1)
    assert low < 30.0 < high
    assert high - low < 0.6
    # Seeded: the same interval again; another seed moves it a little.
    assert stats.bootstrap_ci(values, patients, n_boot=1000, seed=1) == (low, high)
    assert stats.bootstrap_ci(values, patients, n_boot=1000, seed=2) != (low, high)


def test_bootstrap_resamples_patients_not_slices() -> None:
    # Two patients with very different means: resampling patients gives a wide interval
    # that reaches both patients' means, which resampling slices never would.
    values = np.r_[np.full(50, 10.0), np.full(50, 20.0)]
    patients = np.r_[["A"] * 50, ["B"] * 50]
    low, high = stats.bootstrap_ci(values, patients, n_boot=500, seed=0)
    assert low == pytest.approx(10.0)
    assert high == pytest.approx(20.0)


def test_bootstrap_one_patient_and_bad_input() -> None:
    low, high = stats.bootstrap_ci([1.0, 2.0, 3.0], ["A", "A", "A"], n_boot=50)
    assert low == pytest.approx(2.0) and high == pytest.approx(2.0)
    assert all(math.isnan(v) for v in stats.bootstrap_ci([], []))
    with pytest.raises(SlicelibError, match="one group per value"):
        stats.bootstrap_ci([1.0, 2.0], ["A"])


def test_wilcoxon_detects_constant_shift() -> None:
    rng = np.random.default_rng(0)
    a = rng.normal(25, 2, 40)
    b = a + 0.3 + rng.normal(0, 0.05, 40)
    assert stats.paired_wilcoxon(b, a) < 0.05
    # Pure noise around the same values: no evidence.
    c = a + rng.normal(0, 0.05, 40)
    assert stats.paired_wilcoxon(c, a) > 0.01


def test_wilcoxon_identical_and_degenerate() -> None:
    a = np.linspace(0, 1, 20)
    assert stats.paired_wilcoxon(a, a.copy()) == 1.0
    assert math.isnan(stats.paired_wilcoxon([], []))
    assert math.isnan(stats.paired_wilcoxon([math.inf, 1.0], [math.inf, 2.0]))


def test_improvement_matches_the_papers_percentage() -> None:
    db, pct = stats.improvement(30.08, 27.31)
    assert db == pytest.approx(2.77)
    assert pct == pytest.approx(10.14, abs=0.01)


def _rows() -> pd.DataFrame:
    rng = np.random.default_rng(3)
    records = []
    for p in range(4):
        for i in range(2, 12):
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


def test_summarize_known_structure() -> None:
    rows = _rows()
    table = stats.summarize(rows, n_boot=200).set_index("method")
    assert list(table.index) == ["linear", "flow", "nearest"]
    assert (table["n_slices"] == 40).all() and (table["n_patients"] == 4).all()
    lin = rows[rows["method"] == "linear"]
    assert table.loc["linear", "psnr_mean"] == pytest.approx(lin["psnr"].mean())
    assert table.loc["linear", "psnr_std"] == pytest.approx(lin["psnr"].std())
    assert table.loc["linear", "psnr_patient_mean"] == pytest.approx(
        lin.groupby("patient_id")["psnr"].mean().mean()
    )
    assert table.loc["flow", "psnr_gain_db"] == pytest.approx(1.0, abs=0.05)
    assert table.loc["nearest", "psnr_gain_db"] == pytest.approx(-3.0, abs=0.05)
    assert table.loc["linear", "psnr_gain_db"] == 0.0
    assert table.loc["linear", "p_psnr_vs_linear"] == 1.0
    assert table.loc["flow", "p_psnr_vs_linear"] < 1e-6
    assert (table["best_psnr"] == "flow").all()
    assert table.loc["flow", "p_psnr_vs_best"] == 1.0
    assert table.loc["nearest", "p_ssim_vs_best"] < 1e-6
    assert table.loc["nearest", "fallback"] == 8
    for m in table.index:
        assert (
            table.loc[m, "psnr_ci_low"] <= table.loc[m, "psnr_mean"] <= table.loc[m, "psnr_ci_high"]
        )


def test_summarize_pairs_on_shared_slices_only() -> None:
    rows = _rows()
    # A method scored on a subset (as the DDPM with ddpm_max_slices): gains are paired.
    sub = rows[(rows["method"] == "flow") & (rows["slice_index"] == 5)].assign(method="ddpm")
    sub = sub.assign(psnr=sub["psnr"] - 1.5)
    table = stats.summarize(pd.concat([rows, sub]), n_boot=50).set_index("method")
    assert table.loc["ddpm", "n_slices"] == 4
    assert table.loc["ddpm", "psnr_gain_db"] == pytest.approx(-0.5, abs=0.1)


def test_summarize_rejects_bad_input() -> None:
    with pytest.raises(SlicelibError, match="lack column"):
        stats.summarize(pd.DataFrame({"method": ["a"]}))
