"""The book's tables read as a reader expects: p-values as bounds or two digits,
field strengths as scanners are named, counts as integers, no bare row numbers."""

from __future__ import annotations

import numpy as np
import pandas as pd
import pytest

from slicelib.study import present as tables
from slicelib.study.present import fmt_int, fmt_p, fmt_tesla, p_text


@pytest.mark.parametrize(
    ("p", "cell", "sentence"),
    [
        (2e-12, "< 0.001", "p < 0.001"),
        (0.0004, "< 0.001", "p < 0.001"),
        (0.0012, "0.0012", "p = 0.0012"),
        (0.031, "0.031", "p = 0.031"),
        (0.5, "0.5", "p = 0.5"),
        (float("nan"), "-", "p = -"),
    ],
)
def test_p_values(p: float, cell: str, sentence: str) -> None:
    assert fmt_p(p) == cell
    assert p_text(p) == sentence


@pytest.mark.parametrize(
    ("value", "text"),
    [(2.89362, "3 T"), (3.0, "3 T"), (1.494, "1.5 T"), (15000.0, "1.5 T"), (None, "-")],
)
def test_field_strength_reads_as_scanners_are_named(value: float | None, text: str) -> None:
    assert fmt_tesla(value) == text


def test_counts_are_integers() -> None:
    assert fmt_int(700416.0) == "700,416"
    assert fmt_int(np.float64(12)) == "12"
    assert fmt_int(float("nan")) == "-"


def scan_frame() -> pd.DataFrame:
    return pd.DataFrame(
        {
            "patient_id": ["P1", "P1", "P2"],
            "series_description": ["t2_tse_tra", "localizer", "t2_tse_tra"],
            "manufacturer": ["SIEMENS"] * 3,
            "field_strength": [2.89362, 15000.0, np.nan],
            "orientation": ["axial", "sagittal", "axial"],
            "slice_thickness": [1.5, np.nan, 3.0],
            "n_slices": [30.0, 3.0, 24.0],
            "included": [True, False, True],
            "selected": [True, False, False],
            "reason": [np.nan, "orientation sagittal", np.nan],
        }
    )


def test_scan_table_formats_every_cell() -> None:
    out = tables.scan_table(scan_frame())
    assert out.index.name == "patient"
    text = out.to_string()
    assert "2.89362" not in text and "15000" not in text and "NaN" not in text and ".0" not in text
    assert list(out["field strength"]) == ["3 T", "1.5 T", "-"]
    assert list(out["slice thickness"]) == ["1.5 mm", "-", "3 mm"]
    assert list(out["slices"]) == ["30", "3", "24"]
    assert list(out["selected"]) == ["yes", "no", "no"]


def test_scan_table_limit_keeps_the_selected_series_first() -> None:
    frame = scan_frame().iloc[[1, 2, 0]]
    out = tables.scan_table(frame, limit=1)
    assert list(out["selected"]) == ["yes"] and list(out.index) == ["P1"]


def test_p_values_say_their_floor() -> None:
    assert p_text(2 / 64, 6) == "p = 0.031, the floor for 6 patients"
    assert p_text(0.5, 6) == "p = 0.5, floor 0.031 with 6 patients"
    note = tables.p_floor_note(6)
    assert "2/2^6 = 0.031" in note and "unadjusted" in note
    assert "no comparison is tested" in tables.p_floor_note(5)
    assert "0.0002" in tables.p_floor_note(21)


def test_code_checks_are_the_stated_counts_of_the_architecture_table() -> None:
    from slicelib.config import DEMO

    architecture = tables.architecture_table(DEMO.model, DEMO.model.cnn_convs_per_block)
    checks = tables.code_checks_table(architecture)
    assert set(checks["verdict"]) <= {tables.MATCHES, tables.DIFFERS}
    assert checks.loc["U-Net", "verdict"] == tables.MATCHES
    # The supplement's text describes two convolutions per CNN block; its count fits one.
    two_convs = next(i for i in checks.index if "conv-ReLU-conv" in i)
    assert checks.loc[two_convs, "verdict"] == tables.DIFFERS
    assert "GAN discriminator (PatchGAN)" not in checks.index  # no count stated
