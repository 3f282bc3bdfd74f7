"""Sentences of the book that compare numbers, written from the numbers.

A chapter that says "A is better than B" next to two glued numbers can contradict
them when a run changes; these functions choose the words from the numbers
themselves, and the notebooks glue the sentence whole.
"""

from __future__ import annotations

import math
from collections.abc import Mapping

import pandas as pd

from slicelib.methods import method_label
from slicelib.stats import Comparison
from slicelib.study.labels import p_text


def plural(n: int, noun: str) -> str:
    """ "1 patient", "6 patients"."""
    return f"{n:,} {noun}" if n == 1 else f"{n:,} {noun}s"


def patients(n: int) -> str:
    return plural(n, "patient")


def _finite(value: float) -> bool:
    return isinstance(value, (int, float)) and math.isfinite(float(value))


def uncertainty_sentence(summary: pd.DataFrame, labels: Mapping[str, str]) -> str:
    """Which estimator is better calibrated (lower ENCE), which ranks errors better
    (higher Spearman correlation), and how the predicted std compares with the error.

    ``summary`` is indexed by estimator with columns ``ence``, ``spearman``,
    ``std_mean`` and ``mae_mean`` (or ``abs_err_mean``); ``labels`` names each.
    """
    names = list(summary.index)
    parts: list[str] = []
    ence = {n: float(summary.loc[n, "ence"]) for n in names if _finite(summary.loc[n, "ence"])}
    if len(ence) >= 2:
        best = min(ence, key=lambda n: ence[n])
        others = ", ".join(f"{labels[n]} {ence[n]:.3f}" for n in names if n != best and n in ence)
        parts.append(
            f"The better calibrated estimator by ENCE (lower is better) is the {labels[best]} "
            f"({ence[best]:.3f}, against {others})."
        )
    rho = {
        n: float(summary.loc[n, "spearman"]) for n in names if _finite(summary.loc[n, "spearman"])
    }
    if len(rho) >= 2:
        best_rank = max(rho, key=lambda n: rho[n])
        others = ", ".join(f"{labels[n]} {rho[n]:.3f}" for n in names if n != best_rank)
        agree = (
            "the same estimator"
            if len(ence) >= 2 and best_rank == min(ence, key=lambda n: ence[n])
            else f"the {labels[best_rank]}"
        )
        parts.append(
            f"The one whose predicted standard deviation ranks the errors better (higher "
            f"Spearman correlation) is {agree} ({rho[best_rank]:.3f}, against {others})."
        )
    error_column = "mae_mean" if "mae_mean" in summary.columns else "abs_err_mean"
    if "std_mean" in summary.columns and error_column in summary.columns:
        for n in names:
            std, err = float(summary.loc[n, "std_mean"]), float(summary.loc[n, error_column])
            if not (_finite(std) and _finite(err)) or err <= 0:
                continue
            if std < err:
                relation = f"{err / std:.0f} times smaller than" if std > 0 else "zero against"
            else:
                relation = "at least as large as"
            parts.append(
                f"For the {labels[n]}, the mean predicted standard deviation ({std:.4f}) is "
                f"{relation} the mean absolute error ({err:.4f})."
            )
    return " ".join(parts) if parts else "Neither estimator gives a finite calibration."


def hardest_position_sentence(table: pd.DataFrame, method: str, k: int) -> str:
    """Where in the volume ``method`` scores lowest: ``table`` has one row per bin of
    relative position (index: bin centre in [0, 1]) and a PSNR column per method."""
    column = table[method].dropna() if method in table.columns else pd.Series(dtype=float)
    if column.empty:
        return f"No position bin has a score for {method_label(method)} at k={k}."
    centre = float(column.idxmin())  # type: ignore[arg-type]  # bin centres are floats
    if centre < 0.25 or centre > 0.75:
        where = "near an end of the volume (apex or base)"
    else:
        where = "in the middle part of the volume, not at its ends"
    return (
        f"In this run the {method_label(method)}'s lowest mean PSNR at k={k} "
        f"({float(column.min()):.2f} dB) is in the bin centred at relative position "
        f"{centre:.2f}, {where}."
    )


def change_sentence(value: float, reference: float, what: str, unit: str = "") -> str:
    """``what`` went from ``reference`` to ``value``: "rises", "falls" or "is unchanged",
    with both numbers (two decimals)."""
    if value > reference:
        verb = "rises"
    elif value < reference:
        verb = "falls"
    else:
        verb = "is unchanged"
    return f"{what} {verb} from {reference:.2f}{unit} to {value:.2f}{unit}"


def relative_gain_sentence(gain_pct: float, better: str, worse: str, metric: str) -> str:
    """ "x % more SSIM at k=1 than at k=2", or "x % less" when the gain is negative."""
    word = "more" if gain_pct >= 0 else "less"
    return f"{abs(gain_pct):.1f} % {word} {metric} at {better} than at {worse}"


def subset_note(summary: pd.DataFrame) -> str:
    """A footnote for the methods scored on fewer slices than the others: their gain
    over linear interpolation and their p-values are on the slices they share.

    ``summary`` has ``method`` and ``n_slices`` columns (``stats.summarize``)."""
    counts = summary.set_index("method")["n_slices"].astype(int)
    full = int(counts.max())
    fewer = counts[counts < full]
    if fewer.empty:
        return f"Every method is scored on the same {full:,} test slices."
    names = ", ".join(f"{method_label(str(m))} ({int(n):,})" for m, n in fewer.items())
    return (
        f"Not every method is scored on all {full:,} test slices: {names}. Their "
        "gain over linear interpolation and their p-values compare them on those "
        "shared slices only, so their rows are not comparable number for number with "
        "the others."
    )


def comparison_sentence(
    c: Comparison, what: str, other: str, unit: str = "", digits: int = 2
) -> str:
    """``what`` against ``other`` paired over patients (:func:`slicelib.stats.compare`),
    with the words chosen by the interval: "higher" or "lower" only when the whole
    interval lies on one side of 0, "no difference this run resolves" when it holds 0,
    and the reason when there are too few patients to test.

    ``"the cosine schedule scores +1.23 dB against the original schedule (95 % CI
    [+0.50, +2.00], p = 0.031, 6 patients): higher."``
    """
    gain = f"{c.gain:+.{digits}f}{unit}"
    if not _finite(c.gain):
        return f"{what} and {other} share no scored slice."
    if not c.tested:
        return f"{what} scores {gain} against {other} ({patients(c.n_patients)}: {c.test})."
    if c.above_zero:
        verdict = "higher"
    elif c.below_zero:
        verdict = "lower"
    else:
        verdict = "no difference this run resolves"
    interval = f"[{c.ci_low:+.{digits}f}, {c.ci_high:+.{digits}f}]"
    return (
        f"{what} scores {gain} against {other} ({100 * c.confidence:.0f} % CI {interval}, "
        f"{p_text(c.p_value)}, {patients(c.n_patients)}): {verdict}."
    )
