"""Statistics of per-slice results: patient-level bootstrap, paired tests, summary table.

Slices of one patient are not independent, so confidence intervals resample
patients (a cluster bootstrap) rather than slices. Paired tests compare two
methods on the slices both were scored on.
"""

from __future__ import annotations

import logging
import math
from collections.abc import Sequence

import numpy as np
import pandas as pd
from scipy.stats import wilcoxon

from slicelib.errors import SlicelibError

__all__ = [
    "KEY",
    "METRICS",
    "bootstrap_ci",
    "improvement",
    "paired_values",
    "paired_wilcoxon",
    "patient_means",
    "summarize",
]

log = logging.getLogger(__name__)

# What identifies one scored slice, and the per-slice metrics summarised.
KEY: tuple[str, ...] = ("patient_id", "slice_index")
METRICS: tuple[str, ...] = ("psnr", "ssim", "ssim_gauss", "mae")
# Metrics where larger is better (MAE is the exception).
HIGHER_IS_BETTER: dict[str, bool] = {"psnr": True, "ssim": True, "ssim_gauss": True, "mae": False}


def bootstrap_ci(
    values: Sequence[float] | np.ndarray,
    groups: Sequence[str] | np.ndarray,
    *,
    n_boot: int = 2000,
    confidence: float = 0.95,
    seed: int = 0,
) -> tuple[float, float]:
    """Percentile confidence interval of the mean over slices, resampling groups (patients).

    Each replicate draws as many patients as there are, with replacement, and
    takes the mean over all their slices. ``values`` and ``groups`` have one
    entry per slice. One patient gives a zero-width interval at the mean.
    """
    vals = np.asarray(values, dtype=np.float64)
    grp = np.asarray(groups)
    if vals.shape != grp.shape or vals.ndim != 1:
        raise SlicelibError(
            f"bootstrap needs one group per value (got {vals.shape} and {grp.shape})"
        )
    if vals.size == 0:
        return (math.nan, math.nan)
    if not 0 < confidence < 1:
        raise SlicelibError(f"confidence must be in (0, 1) (got {confidence})")
    if n_boot < 1:
        raise SlicelibError(f"bootstrap replicates must be >= 1 (got {n_boot})")
    _, inverse = np.unique(grp, return_inverse=True)
    sums = np.bincount(inverse, weights=vals)
    counts = np.bincount(inverse).astype(np.float64)
    rng = np.random.default_rng(seed)
    picks = rng.integers(0, sums.size, size=(n_boot, sums.size))
    means = sums[picks].sum(axis=1) / counts[picks].sum(axis=1)
    alpha = (1.0 - confidence) / 2.0
    low, high = np.quantile(means, [alpha, 1.0 - alpha])
    return (float(low), float(high))


def paired_wilcoxon(a: Sequence[float] | np.ndarray, b: Sequence[float] | np.ndarray) -> float:
    """Two-sided Wilcoxon signed-rank p-value of paired samples ``a`` and ``b``.

    Identical samples (every difference zero) give 1.0: no evidence of a
    difference. Fewer than one non-zero pair or non-finite differences give nan.
    """
    x = np.asarray(a, dtype=np.float64)
    y = np.asarray(b, dtype=np.float64)
    if x.shape != y.shape or x.ndim != 1:
        raise SlicelibError(f"paired test needs two samples of one length ({x.shape}, {y.shape})")
    with np.errstate(invalid="ignore"):  # inf - inf is nan, reported as such below
        diff = x - y
    if diff.size == 0 or not np.all(np.isfinite(diff)):
        return math.nan
    if np.all(diff == 0):
        return 1.0
    result = wilcoxon(x, y, zero_method="wilcox", alternative="two-sided")
    return float(result.pvalue)


def improvement(value: float, reference: float) -> tuple[float, float]:
    """Gain of ``value`` over ``reference``: (difference, percentage of the reference).

    For PSNR the difference is in dB and the percentage is the original study's
    "10.1 % over linear" (30.08 / 27.31 - 1).
    """
    diff = value - reference
    pct = 100.0 * diff / reference if reference != 0 else math.nan
    return (float(diff), float(pct))


def patient_means(rows: pd.DataFrame, metric: str) -> pd.Series:
    """Mean of ``metric`` per patient (index patient_id) of one method's rows."""
    return rows.groupby("patient_id", sort=True)[metric].mean()


def paired_values(
    rows: pd.DataFrame, method: str, other: str, metric: str
) -> tuple[np.ndarray, np.ndarray]:
    """``metric`` of two methods on the slices both were scored on, aligned by slice."""
    a = rows.loc[rows["method"] == method, [*KEY, metric]]
    b = rows.loc[rows["method"] == other, [*KEY, metric]]
    both = a.merge(b, on=list(KEY), suffixes=("_a", "_b"))
    return both[f"{metric}_a"].to_numpy(), both[f"{metric}_b"].to_numpy()


def _best(means: pd.Series, metric: str) -> str:
    ranked = means.sort_values(ascending=not HIGHER_IS_BETTER[metric])
    return str(ranked.index[0])


def summarize(
    rows: pd.DataFrame,
    *,
    reference: str = "linear",
    n_boot: int = 2000,
    seed: int = 0,
    confidence: float = 0.95,
) -> pd.DataFrame:
    """One row per method of per-slice results (``method, patient_id, slice_index,
    psnr, ssim, ssim_gauss, mae, ms_per_slice`` [+ ``fallback``]).

    Columns: ``n_slices, n_patients``; ``<metric>_mean`` and ``_std`` over
    slices and ``<metric>_patient_mean`` (mean of per-patient means) for every
    metric; ``psnr_ci_low/high`` and ``ssim_ci_low/high`` (bootstrap over
    patients); ``psnr_gain_db``, ``psnr_gain_pct``, ``ssim_gain``,
    ``ssim_gain_pct`` over ``reference`` on the slices both share;
    ``p_psnr_vs_<reference>``, ``p_ssim_vs_<reference>``, ``p_psnr_vs_best``,
    ``p_ssim_vs_best`` (paired Wilcoxon; the best is the method with the
    highest mean, named in ``best_psnr`` / ``best_ssim``); ``ms_per_slice``;
    ``fallback`` (slices that fell back to linear). Methods keep their order
    of first appearance.
    """
    missing = [c for c in ("method", *KEY, *METRICS) if c not in rows.columns]
    if missing:
        raise SlicelibError(f"results lack column(s) {', '.join(missing)}")
    if rows.empty:
        raise SlicelibError("no results to summarise")
    methods = list(dict.fromkeys(rows["method"]))
    by_method = {m: rows[rows["method"] == m] for m in methods}
    means = {
        metric: pd.Series({m: by_method[m][metric].mean() for m in methods}) for metric in METRICS
    }
    best = {metric: _best(means[metric], metric) for metric in ("psnr", "ssim")}
    has_reference = reference in by_method
    if not has_reference:
        log.warning("reference method %r not evaluated: no improvement or p-value", reference)

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
            row[f"{metric}_patient_mean"] = float(patient_means(r, metric).mean())
        for metric in ("psnr", "ssim"):
            low, high = bootstrap_ci(
                r[metric].to_numpy(),
                r["patient_id"].to_numpy(),
                n_boot=n_boot,
                confidence=confidence,
                seed=seed,
            )
            row[f"{metric}_ci_low"], row[f"{metric}_ci_high"] = low, high
        if has_reference:
            a, b = paired_values(rows, m, reference, "psnr")
            row["psnr_gain_db"], row["psnr_gain_pct"] = improvement(
                float(a.mean()) if a.size else math.nan,
                float(b.mean()) if b.size else math.nan,
            )
            row[f"p_psnr_vs_{reference}"] = paired_wilcoxon(a, b)
            a, b = paired_values(rows, m, reference, "ssim")
            row["ssim_gain"], row["ssim_gain_pct"] = improvement(
                float(a.mean()) if a.size else math.nan,
                float(b.mean()) if b.size else math.nan,
            )
            row[f"p_ssim_vs_{reference}"] = paired_wilcoxon(a, b)
        for metric in ("psnr", "ssim"):
            row[f"p_{metric}_vs_best"] = paired_wilcoxon(
                *paired_values(rows, m, best[metric], metric)
            )
            row[f"best_{metric}"] = best[metric]
        if "ms_per_slice" in r.columns:
            row["ms_per_slice"] = float(r["ms_per_slice"].mean())
        if "fallback" in r.columns:
            row["fallback"] = int(r["fallback"].astype(bool).sum())
        out.append(row)
    return pd.DataFrame(out)
