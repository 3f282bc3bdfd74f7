"""Sentences of the book that compare numbers agree with the numbers they cite.

The comparison sentences are written by :mod:`slicelib.study.present` from the
numbers; these tests check each writer in both directions, and that no chapter
states a comparison by hand beside glued numbers.
"""

from __future__ import annotations

import re
from pathlib import Path

import numpy as np
import pandas as pd
import pytest

from slicelib.study import present as prose

ROOT = Path(__file__).resolve().parents[1]
LABELS = {"ensemble": "deep ensemble", "mc_dropout": "MC dropout"}


def test_uncertainty_sentence_separates_calibration_from_ranking() -> None:
    # ENCE favours the ensemble, Spearman favours dropout (the case the book once got
    # wrong), and both predicted stds are far below the error.
    summary = pd.DataFrame(
        {
            "ence": [0.40, 0.90],
            "spearman": [0.10, 0.30],
            "std_mean": [0.0026, 0.0009],
            "mae_mean": [0.0236, 0.0236],
        },
        index=["ensemble", "mc_dropout"],
    )
    text = prose.uncertainty_sentence(summary, LABELS)
    assert "better calibrated estimator by ENCE (lower is better) is the deep ensemble" in text
    assert "ranks the errors better (higher Spearman correlation) is the MC dropout" in text
    assert "(0.0026) is 9 times smaller than the mean absolute error (0.0236)" in text
    assert "(0.0009) is 26 times smaller than" in text
    agreeing = prose.uncertainty_sentence(summary.assign(spearman=[0.5, 0.3]), LABELS)
    assert "is the same estimator (0.500" in agreeing


def test_uncertainty_sentence_without_finite_values() -> None:
    summary = pd.DataFrame(
        {"ence": [np.nan, np.nan], "spearman": [np.nan, np.nan]}, index=list(LABELS)
    )
    assert prose.uncertainty_sentence(summary, LABELS).startswith("Neither")


@pytest.mark.parametrize(
    ("values", "where"),
    [([30.0, 29.0, 25.0, 28.0, 31.0], "middle part"), ([24.0, 29.0, 30.0, 28.0, 29.5], "end")],
)
def test_hardest_position_names_the_minimum(values: list[float], where: str) -> None:
    table = pd.DataFrame({"unet": values}, index=[0.1, 0.3, 0.5, 0.7, 0.9])
    text = prose.hardest_position_sentence(table, "unet", 2)
    assert where in text
    assert f"{min(values):.2f} dB" in text
    centre = float(table["unet"].idxmin())
    assert f"relative position {centre:.2f}" in text


@pytest.mark.parametrize(("gain", "word"), [(12.34, "more"), (-3.21, "less"), (0.0, "more")])
def test_relative_gain_sentence_signs(gain: float, word: str) -> None:
    text = prose.relative_gain_sentence(gain, "k=1", "k=2", "SSIM")
    assert text == f"{abs(gain):.1f} % {word} SSIM at k=1 than at k=2"


def test_subset_note_names_the_methods_on_fewer_slices() -> None:
    summary = pd.DataFrame(
        {"method": ["linear", "unet", "ddpm_ancestral"], "n_slices": [40, 40, 6]}
    )
    text = prose.subset_note(summary)
    assert "all 40 test slices" in text and "DDPM, ancestral (6)" in text
    same = prose.subset_note(summary.assign(n_slices=40))
    assert same == "Every method is scored on the same 40 test slices."


# Words that state a comparison. A chapter sentence holding one of them beside two or
# more glued numbers compares them by hand; such sentences are glued whole instead.
COMPARATIVE = re.compile(
    r"\b(better|worse|higher|lower|more|less|hardest|easiest|falls|rises|beats|exceeds|"
    r"outperforms|below|above|closes)\b",
    re.IGNORECASE,
)
NUMBER_GLUE = re.compile(r"\{glue:text\}`[^`]*`")


def _sentences(text: str) -> list[str]:
    text = re.sub(r"```.*?```", " ", text, flags=re.S)  # figures and code blocks
    text = re.sub(r"^#.*$", ".", text, flags=re.M)  # a heading ends a sentence
    text = re.sub(r"\s+", " ", text)
    return re.split(r"(?<=[.])\s+(?=[A-Z{])", text)


def test_no_chapter_compares_glued_numbers_by_hand() -> None:
    offenders = []
    for page in sorted((ROOT / "book").glob("*.md")):
        for sentence in _sentences(page.read_text()):
            glued = NUMBER_GLUE.findall(sentence)
            # Words outside the glued values only: "{glue:text}" keys may hold "better".
            words = NUMBER_GLUE.sub(" ", sentence)
            words = re.sub(r"\{glue:text\}`[^`]*`", " ", words)
            if len(glued) >= 2 and COMPARATIVE.search(words):
                offenders.append(f"{page.name}: {COMPARATIVE.search(words).group(0)}: "
                                 f"{sentence[:120]}")  # fmt: skip
    assert not offenders, "\n".join(offenders)


def _paired_rows(gains: list[float], base: float = 20.0) -> pd.DataFrame:
    """Two methods, one slice per patient, ``b`` - ``a`` = gain per patient."""
    rows = []
    for i, gain in enumerate(gains):
        rows.append({"method": "a", "patient_id": f"P{i}", "slice_index": 3, "psnr": base + i})
        rows.append(
            {"method": "b", "patient_id": f"P{i}", "slice_index": 3, "psnr": base + i + gain}
        )
    return pd.DataFrame(rows)


@pytest.mark.parametrize(
    ("gains", "verdict"),
    [
        ([1.0, 1.2, 0.8, 1.1, 0.9, 1.3], "higher"),
        ([-1.0, -1.2, -0.8, -1.1, -0.9, -1.3], "lower"),
        ([1.0, -1.2, 0.8, -1.1, 0.9, -0.7], "no difference this run resolves"),
        ([1.0, 1.2, 0.8], "too few patients to test"),
    ],
)
def test_comparison_sentence_follows_the_interval(gains: list[float], verdict: str) -> None:
    from slicelib.stats import compare

    c = compare(_paired_rows(gains), "b", "a", "psnr")
    text = prose.comparison_sentence(c, "B", "A", " dB")
    assert text.endswith(f"{verdict}.") or f"({len(gains)} patients: {verdict})" in text
    assert f"{np.mean(gains):+.2f} dB" in text
    if c.tested:
        assert "p = " in text or "p < 0.001" in text
