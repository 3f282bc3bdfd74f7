"""Patient-level inference on per-slice results: paired comparisons, intervals, summary.

Slices of one patient share anatomy, contrast and noise: they are not independent
samples. So the unit of inference here is the patient. Comparing method A with
method B takes the slices both scored, averages each method per patient, and works on
the per-patient paired differences ``d_p = mean_A(p) - mean_B(p)``:

- the gain is the mean of ``d_p`` over patients, with a bootstrap interval over
  patients (:func:`scipy.stats.bootstrap`, BCa where it can be computed, percentile
  otherwise; the method used is recorded);
- the p-value is a two-sided sign-flip permutation test of ``mean(d_p) = 0``
  (:func:`scipy.stats.permutation_test`, exact up to :data:`EXACT_MAX_PATIENTS`
  patients, Monte Carlo above).

Below :data:`MIN_TEST_PATIENTS` paired patients a comparison still reports its gain,
but no interval and no p-value: its ``test`` reads :data:`TOO_FEW`. Slice-level means
and standard deviations stay in the summary as description only.
"""

from __future__ import annotations

import logging
import math
import warnings
from collections.abc import Sequence
from dataclasses import asdict, dataclass
from typing import Any

import numpy as np
import pandas as pd
from scipy.stats import bootstrap, permutation_test

from slicelib.config import EvalConfig
from slicelib.errors import SlicelibError

__all__ = [
    "CONFIDENCE",
    "EXACT_MAX_PATIENTS",
    "KEY",
    "METRICS",
    "MIN_TEST_PATIENTS",
    "TOO_FEW",
    "Comparison",
    "Inference",
    "bootstrap_mean_ci",
    "compare",
    "improvement",
    "infer_mean",
    "paired_patient_means",
    "patient_means",
    "sign_flip_test",
    "summarize",
]

log = logging.getLogger(__name__)

# What identifies one scored slice, and the per-slice metrics summarised.
KEY: tuple[str, ...] = ("patient_id", "slice_index")
METRICS: tuple[str, ...] = ("psnr", "ssim", "ssim_gauss", "mae")
# Metrics where larger is better (MAE is the exception).
HIGHER_IS_BETTER: dict[str, bool] = {"psnr": True, "ssim": True, "ssim_gauss": True, "mae": False}

# Fewest paired patients a comparison is tested on. With n patients the smallest
# two-sided p an exact sign-flip (or exact Wilcoxon) test can give is 2 / 2^n:
# 0.0625 at n = 5, which can never fall below 0.05; n = 6 gives 0.031. Below this the
# interval would rest on a handful of points and the test could not reject anything.
MIN_TEST_PATIENTS = 6
TOO_FEW = "too few patients to test"
# Up to this many patients every one of the 2^n sign patterns is enumerated (65,536).
EXACT_MAX_PATIENTS = 16
# Monte Carlo sign patterns above EXACT_MAX_PATIENTS (p resolution about 1e-4).
MONTE_CARLO_PERMUTATIONS = 9999
CONFIDENCE = 0.95


class _Tested:
    """Shared reading of an interval and a p-value (nan when not tested)."""

    ci_low: float
    ci_high: float
    p_value: float

    @property
    def tested(self) -> bool:
        """True when there were enough patients for an interval and a p-value."""
        return not math.isnan(self.p_value)

    @property
    def above_zero(self) -> bool:
        """Tested, and the whole interval lies above 0."""
        return self.tested and self.ci_low > 0

    @property
    def below_zero(self) -> bool:
        """Tested, and the whole interval lies below 0."""
        return self.tested and self.ci_high < 0


@dataclass(frozen=True)
class Comparison(_Tested):
    """``method`` against ``other`` on ``metric``, over the slices both scored.

    ``mean_method`` / ``mean_other``: means over patients of the per-patient means;
    ``gain``: mean over patients of the paired difference (method - other), in the
    metric's unit (dB for PSNR); ``gain_pct``: 100 * gain / mean_other; ``ci_low`` /
    ``ci_high``: bootstrap interval of the gain over patients (nan when not tested);
    ``ci_method``: "BCa", "percentile" or why there is none; ``p_value``: two-sided,
    nan when not tested; ``test``: the test used, or why there was none.
    """

    method: str
    other: str
    metric: str
    n_patients: int
    n_slices: int
    mean_method: float
    mean_other: float
    gain: float
    gain_pct: float
    ci_low: float
    ci_high: float
    ci_method: str
    p_value: float
    test: str
    confidence: float

    def as_dict(self) -> dict[str, Any]:
        return asdict(self)


def patient_means(rows: pd.DataFrame, metric: str) -> pd.Series:
    """Mean of ``metric`` per patient (index patient_id) of one method's rows."""
    return rows.groupby("patient_id", sort=True)[metric].mean()


def paired_patient_means(rows: pd.DataFrame, method: str, other: str, metric: str) -> pd.DataFrame:
    """Per-patient means of two methods over the slices both scored.

    Index ``patient_id`` (sorted); columns ``method`` and ``other`` (the two means)
    and ``slices`` (shared slices of that patient). Patients that only one method
    scored are left out.
    """
    a = rows.loc[rows["method"] == method, [*KEY, metric]]
    b = rows.loc[rows["method"] == other, [*KEY, metric]]
    both = a.merge(b, on=list(KEY), suffixes=("_a", "_b"))
    grouped = both.groupby("patient_id", sort=True)
    return pd.DataFrame(
        {
            "method": grouped[f"{metric}_a"].mean(),
            "other": grouped[f"{metric}_b"].mean(),
            "slices": grouped.size(),
        }
    )


def bootstrap_mean_ci(
    values: Sequence[float] | np.ndarray,
    *,
    confidence: float = CONFIDENCE,
    n_resamples: int = EvalConfig.bootstrap,
    seed: int = EvalConfig.seed,
) -> tuple[float, float, str]:
    """Bootstrap interval of the mean of ``values`` (one value per patient).

    Returns ``(low, high, method)``: BCa when it can be computed, else the percentile
    interval; ``method`` says which. Fewer than two values give ``(nan, nan, reason)``;
    identical values give the value itself as a zero-width interval.
    """
    x = np.asarray(values, dtype=np.float64)
    if x.ndim != 1:
        raise SlicelibError(f"bootstrap needs one value per patient (got shape {x.shape})")
    if not 0 < confidence < 1:
        raise SlicelibError(f"confidence must be in (0, 1) (got {confidence})")
    if n_resamples < 1:
        raise SlicelibError(f"bootstrap resamples must be >= 1 (got {n_resamples})")
    if x.size < 2:
        return (math.nan, math.nan, "none (fewer than 2 patients)")
    if not np.all(np.isfinite(x)):
        return (math.nan, math.nan, "none (non-finite values)")
    if np.all(x == x[0]):
        return (float(x[0]), float(x[0]), "none (all values equal)")
    for method in ("BCa", "percentile"):
        with warnings.catch_warnings():
            # BCa on few or lumpy values may be undefined: scipy warns and returns nan,
            # and the percentile interval is used instead.
            warnings.simplefilter("ignore")
            res = bootstrap(
                (x,),
                np.mean,
                confidence_level=confidence,
                n_resamples=n_resamples,
                method=method,
                rng=np.random.default_rng(seed),
                vectorized=True,
            )
        low, high = float(res.confidence_interval.low), float(res.confidence_interval.high)
        if math.isfinite(low) and math.isfinite(high):
            return (low, high, method)
        log.debug("%s bootstrap interval undefined for %d values", method, x.size)
    return (math.nan, math.nan, "none (bootstrap undefined)")


def _mean_statistic(x: np.ndarray, axis: int = -1) -> np.ndarray:
    return np.mean(x, axis=axis)


def sign_flip_test(
    differences: Sequence[float] | np.ndarray, *, seed: int = EvalConfig.seed
) -> tuple[float, str]:
    """Two-sided sign-flip permutation test of mean(differences) = 0.

    ``differences``: one paired difference per patient. Under the null each
    difference is as likely positive as negative; the p-value is the share of sign
    patterns whose mean is at least as extreme as the observed one. Exact (all 2^n
    patterns) up to :data:`EXACT_MAX_PATIENTS`, Monte Carlo above. Returns
    ``(p, name of the test)``; no values or non-finite ones give ``(nan, reason)``.
    """
    d = np.asarray(differences, dtype=np.float64)
    if d.ndim != 1:
        raise SlicelibError(f"sign-flip test needs one difference per patient (shape {d.shape})")
    if d.size == 0:
        return (math.nan, "none (no paired patients)")
    if not np.all(np.isfinite(d)):
        return (math.nan, "none (non-finite values)")
    if np.all(d == 0):
        return (1.0, "exact sign-flip permutation")
    exact = d.size <= EXACT_MAX_PATIENTS
    res = permutation_test(
        (d,),
        _mean_statistic,
        permutation_type="samples",
        alternative="two-sided",
        n_resamples=math.inf if exact else MONTE_CARLO_PERMUTATIONS,
        vectorized=True,
        rng=np.random.default_rng(seed),
    )
    name = "exact sign-flip permutation" if exact else "Monte Carlo sign-flip permutation"
    return (float(min(1.0, res.pvalue)), name)


@dataclass(frozen=True)
class Inference(_Tested):
    """The mean of per-patient values with its interval and a test of mean = 0."""

    n_patients: int
    mean: float
    ci_low: float
    ci_high: float
    ci_method: str
    p_value: float
    test: str


def infer_mean(
    values: Sequence[float] | np.ndarray,
    *,
    min_patients: int = MIN_TEST_PATIENTS,
    confidence: float = CONFIDENCE,
    n_boot: int = EvalConfig.bootstrap,
    seed: int = EvalConfig.seed,
) -> Inference:
    """Mean of ``values`` (one per patient, e.g. paired differences) with a bootstrap
    interval and a sign-flip p-value; below ``min_patients`` values, only the mean
    (interval and p nan, ``test`` = :data:`TOO_FEW`)."""
    if min_patients < 2:
        raise SlicelibError(f"min_patients must be >= 2 (got {min_patients})")
    x = np.asarray(values, dtype=np.float64)
    n = int(x.size)
    mean = float(x.mean()) if n else math.nan
    if n < min_patients:
        return Inference(n, mean, math.nan, math.nan, TOO_FEW, math.nan, TOO_FEW)
    low, high, ci_method = bootstrap_mean_ci(
        x, confidence=confidence, n_resamples=n_boot, seed=seed
    )
    p, test = sign_flip_test(x, seed=seed)
    return Inference(n, mean, low, high, ci_method, p, test)


def improvement(value: float, reference: float) -> tuple[float, float]:
    """Gain of ``value`` over ``reference``: (difference, percentage of the reference).

    For PSNR the difference is in dB and the percentage is the original study's
    "10.1 % over linear" (30.08 / 27.31 - 1).
    """
    diff = value - reference
    pct = 100.0 * diff / reference if reference != 0 else math.nan
    return (float(diff), float(pct))


def compare(
    rows: pd.DataFrame,
    method: str,
    other: str,
    metric: str,
    *,
    min_patients: int = MIN_TEST_PATIENTS,
    confidence: float = CONFIDENCE,
    n_boot: int = EvalConfig.bootstrap,
    seed: int = EvalConfig.seed,
) -> Comparison:
    """``method`` against ``other`` on ``metric`` (a column of ``rows``), paired by patient.

    ``rows``: per-slice results with columns ``method, patient_id, slice_index`` and
    ``metric``. Only slices both methods scored count. With fewer than
    ``min_patients`` paired patients the gain is reported with ``test`` =
    :data:`TOO_FEW` and no interval or p-value.
    """
    if metric not in rows.columns:
        raise SlicelibError(f"results lack column {metric!r}")
    pairs = paired_patient_means(rows, method, other, metric)
    n = len(pairs)
    mean_a = float(pairs["method"].mean()) if n else math.nan
    mean_b = float(pairs["other"].mean()) if n else math.nan
    inference = infer_mean(
        (pairs["method"] - pairs["other"]).to_numpy(dtype=np.float64),
        min_patients=min_patients,
        confidence=confidence,
        n_boot=n_boot,
        seed=seed,
    )
    gain = inference.mean
    gain_pct = 100.0 * gain / mean_b if n and mean_b != 0 else math.nan
    low, high, ci_method = inference.ci_low, inference.ci_high, inference.ci_method
    p, test = inference.p_value, inference.test
    return Comparison(
        method=method,
        other=other,
        metric=metric,
        n_patients=n,
        n_slices=int(pairs["slices"].sum()) if n else 0,
        mean_method=mean_a,
        mean_other=mean_b,
        gain=gain,
        gain_pct=gain_pct,
        ci_low=low,
        ci_high=high,
        ci_method=ci_method,
        p_value=p,
        test=test,
        confidence=confidence,
    )


def _best(means: pd.Series, metric: str) -> str:
    ranked = means.sort_values(ascending=not HIGHER_IS_BETTER[metric], kind="stable")
    return str(ranked.index[0])


# Name of the gain column per metric (PSNR's is in dB).
_GAIN_COLUMN = {"psnr": "psnr_gain_db", "ssim": "ssim_gain"}
_GAIN_PCT_COLUMN = {"psnr": "psnr_gain_pct", "ssim": "ssim_gain_pct"}


def summarize(
    rows: pd.DataFrame,
    *,
    reference: str = "linear",
    n_boot: int = EvalConfig.bootstrap,
    seed: int = EvalConfig.seed,
    confidence: float = CONFIDENCE,
    min_patients: int = MIN_TEST_PATIENTS,
) -> pd.DataFrame:
    """One row per method of per-slice results (``method, patient_id, slice_index,
    psnr, ssim, ssim_gauss, mae, ms_per_slice`` [+ ``fallback``]).

    Description (slices): ``n_slices, n_patients``; ``<metric>_mean`` and ``_std``
    over slices and ``<metric>_patient_mean`` (mean of per-patient means).

    Inference (patients): ``psnr_ci_low/high``, ``ssim_ci_low/high``: bootstrap
    interval over patients of the mean of per-patient means (``ci_method``); against
    ``reference`` on the slices both scored (:func:`compare`): ``psnr_gain_db``,
    ``psnr_gain_pct``, ``psnr_gain_ci_low/high``, ``ssim_gain``, ``ssim_gain_pct``,
    ``ssim_gain_ci_low/high``, ``gain_ci_method``, ``p_psnr_vs_<reference>``,
    ``p_ssim_vs_<reference>``, ``n_patients_vs_<reference>``, ``test_vs_<reference>``;
    against the best method (highest mean of per-patient means, named in
    ``best_psnr`` / ``best_ssim``): ``p_psnr_vs_best``, ``p_ssim_vs_best``,
    ``test_vs_best``. P-values are nan where there were fewer than ``min_patients``
    paired patients (the test column then reads :data:`TOO_FEW`).

    Also ``ms_per_slice`` and ``fallback`` (slices that fell back to linear).
    Methods keep their order of first appearance.
    """
    missing = [c for c in ("method", *KEY, *METRICS) if c not in rows.columns]
    if missing:
        raise SlicelibError(f"results lack column(s) {', '.join(missing)}")
    if rows.empty:
        raise SlicelibError("no results to summarise")
    methods = list(dict.fromkeys(rows["method"]))
    by_method = {m: rows[rows["method"] == m] for m in methods}
    per_patient = {
        metric: {m: patient_means(by_method[m], metric) for m in methods} for metric in METRICS
    }
    best = {
        metric: _best(pd.Series({m: per_patient[metric][m].mean() for m in methods}), metric)
        for metric in ("psnr", "ssim")
    }
    has_reference = reference in by_method
    if not has_reference:
        log.warning("reference method %r not evaluated: no gain or p-value", reference)
    options: dict[str, Any] = {
        "min_patients": min_patients,
        "confidence": confidence,
        "n_boot": n_boot,
        "seed": seed,
    }

    out: list[dict[str, object]] = []
    for m in methods:
        r = by_method[m]
        row: dict[str, object] = {
            "method": m,
            "n_slices": len(r),
            "n_patients": r["patient_id"].nunique(),
        }
        for metric in METRICS:
            row[f"{metric}_mean"] = float(r[metric].mean())
            row[f"{metric}_std"] = float(r[metric].std(ddof=1)) if len(r) > 1 else math.nan
            row[f"{metric}_patient_mean"] = float(per_patient[metric][m].mean())
        for metric in ("psnr", "ssim"):
            low, high, how = bootstrap_mean_ci(
                per_patient[metric][m].to_numpy(),
                confidence=confidence,
                n_resamples=n_boot,
                seed=seed,
            )
            row[f"{metric}_ci_low"], row[f"{metric}_ci_high"] = low, high
            row["ci_method"] = how
        if has_reference:
            for metric in ("psnr", "ssim"):
                c = compare(rows, m, reference, metric, **options)
                row[_GAIN_COLUMN[metric]] = c.gain
                row[_GAIN_PCT_COLUMN[metric]] = c.gain_pct
                row[f"{metric}_gain_ci_low"], row[f"{metric}_gain_ci_high"] = c.ci_low, c.ci_high
                row[f"p_{metric}_vs_{reference}"] = c.p_value
                if metric == "psnr":
                    row["gain_ci_method"] = c.ci_method
                    row[f"n_patients_vs_{reference}"] = c.n_patients
                    row[f"test_vs_{reference}"] = c.test
        for metric in ("psnr", "ssim"):
            c = compare(rows, m, best[metric], metric, **options)
            row[f"p_{metric}_vs_best"] = c.p_value
            row[f"best_{metric}"] = best[metric]
            if metric == "psnr":
                row["test_vs_best"] = c.test
        if "ms_per_slice" in r.columns:
            row["ms_per_slice"] = float(r["ms_per_slice"].mean())
        if "fallback" in r.columns:
            row["fallback"] = int(r["fallback"].astype(bool).sum())
        out.append(row)
    return pd.DataFrame(out)
