"""The scan: grouping by series UID, every criterion's reason, selection, CSV, CLI."""

from __future__ import annotations

import dataclasses
from pathlib import Path

import pandas as pd
import pytest
from dicom_factory import SAGITTAL, oblique_axial, write_junk, write_series
from pydicom.uid import generate_uid

from slicelib.cli import main
from slicelib.config import ScanConfig
from slicelib.data.criteria import SeriesRow, axial_angle, field_strength_tesla
from slicelib.data.scan import ScanResult, scan
from slicelib.errors import SlicelibError

SMALL = {"rows": 8, "cols": 8}
CFG = ScanConfig(workers=1)

# description -> (options, criterion, words expected in the reason)
DISTRACTORS: dict[str, tuple[dict, str, str]] = {
    "sagittal": ({"orientation": SAGITTAL}, "orientation", "orientation sagittal"),
    "dwi": ({"description": "ep2d_diff_b50_800_tra"}, "sequence", "'diff'"),
    "adc": ({"description": "ep2d_diff_tra_ADC"}, "sequence", "want T2-weighted"),
    "t1": ({"description": "t1_vibe_tra"}, "sequence", "'t1'"),
    "localiser": ({"description": "localizer"}, "sequence", "'loc'"),
    "not-t2": ({"description": "pd_fs_tra", "protocol": "pd_fs_tra"}, "sequence", "not T2"),
    "1.5T": ({"field_strength": 1.5}, "field_strength", "field strength 1.5 T (want 3 T)"),
    "ge": ({"manufacturer": "GE MEDICAL SYSTEMS"}, "manufacturer", "GE MEDICAL SYSTEMS"),
    "ct": ({"modality": "CT"}, "modality", "modality CT (want MR)"),
    "3mm": ({"thickness": 3.0, "spacing": 3.0}, "thickness", "slice thickness 3 mm"),
    "few": ({"n_slices": 12}, "slices", "12 slices (want >= 20)"),
    "truncated": ({"truncate": True}, "truncated", "truncated file"),
    "duplicate": ({"duplicate_position": True}, "positions", "duplicate slice position"),
    "gap": ({"gap_at": 10}, "positions", "non-uniform slice spacing"),
    "no-spacing": ({"missing": ["PixelSpacing"]}, "metadata", "missing PixelSpacing"),
    "no-field": ({"missing": ["MagneticFieldStrength"]}, "field_strength", "missing"),
}


@pytest.fixture(scope="module")
def cohort(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """Passing patients in TCIA, UID and flat layouts, every distractor, junk files."""
    root = tmp_path_factory.mktemp("scan_cohort")
    tcia = root / "Prostate-MRI-US-Biopsy" / "PASS-1" / "06-28-2009-NA-MRI PROSTATE-12345"
    write_series(
        tcia / "5.000000-t2spcrstaxial oblProstate-1",
        patient_id="PASS-1",
        description="t2_spc_rst_axial obl_Prostate",
        orientation=oblique_axial(15),
        field_strength=2.89362,
        **SMALL,
    )
    # PASS-2: two passing series; the one with more slices must be chosen.
    write_series(
        root / generate_uid(),
        patient_id="PASS-2",
        n_slices=24,
        series_number=7,
        description="t2_tse_tra",
        **SMALL,
    )
    write_series(
        root / generate_uid(),
        patient_id="PASS-2",
        n_slices=30,
        series_number=9,
        description="T2W_TSE_ax",
        thickness=1.4,
        spacing=1.4,
        **SMALL,
    )
    # A flat folder holding two series of one patient (grouped by UID, not by folder).
    write_series(root / "flat", patient_id="PASS-3", prefix="a", **SMALL)
    write_series(root / "flat", patient_id="PASS-3", prefix="b", orientation=SAGITTAL, **SMALL)
    for number, (name, (options, _, _)) in enumerate(DISTRACTORS.items(), start=100):
        opts = {"description": "t2_tse_tra", **SMALL, **options}
        write_series(root / "DIST" / name, patient_id="DIST", series_number=number, **opts)
    write_junk(root)
    # A file with a DICOM preamble whose header is garbage, inside a series folder.
    broken = root / "broken"
    write_series(broken, patient_id="BROKEN", **SMALL)
    (broken / "1-99.dcm").write_bytes(b"\0" * 128 + b"DICM" + b"\x02\x00\x10\x00UI\xff\xff")
    return root


@pytest.fixture(scope="module")
def result(cohort: Path) -> ScanResult:
    return scan(cohort, CFG, progress=False)


def distractor_rows(result: ScanResult) -> dict[str, SeriesRow]:
    names = {number: name for number, name in enumerate(DISTRACTORS, start=100)}
    return {names[r.series_number]: r for r in result.series if r.patient_id == "DIST"}


@pytest.mark.parametrize("name", sorted(DISTRACTORS))
def test_each_distractor_is_excluded_with_its_reason(result: ScanResult, name: str) -> None:
    _, criterion, words = DISTRACTORS[name]
    row = distractor_rows(result)[name]
    assert not row.included and not row.selected
    assert row.criterion == criterion, row.reason
    assert words in row.reason


def test_passing_series_and_selection(result: ScanResult) -> None:
    chosen = {r.patient_id: r for r in result.selected()}
    assert sorted(chosen) == ["PASS-1", "PASS-2", "PASS-3"]
    assert chosen["PASS-1"].orientation == "axial"  # 15 deg oblique counts as axial
    assert chosen["PASS-1"].note == "the patient's only passing series"
    best = chosen["PASS-2"]
    assert best.n_slices == 30 and best.series_number == 9
    assert "more slices (30 vs 24)" in best.note
    other = next(r for r in result.series if r.patient_id == "PASS-2" and not r.selected)
    assert other.included and "series 9 chosen" in other.note
    assert [r.series_number for r in result.candidates("PASS-2")] == [9, 7]


def test_series_grouped_by_uid_not_folder(result: ScanResult) -> None:
    flat = [r for r in result.series if r.patient_id == "PASS-3"]
    assert len(flat) == 2
    assert {r.folders for r in flat} == {"flat"}
    assert {r.n_slices for r in flat} == {24}
    assert {r.orientation for r in flat} == {"axial", "sagittal"}


def test_file_counts_and_unreadable_file(result: ScanResult) -> None:
    assert result.n_not_dicom == 2  # README.txt, Thumbs.db
    assert result.n_other_dicom == 1  # DICOMDIR
    assert [Path(p).name for p, _ in result.unreadable] == ["1-99.dcm"]
    broken = next(r for r in result.series if r.patient_id == "BROKEN")
    assert broken.criterion == "unreadable" and "1-99.dcm" in broken.reason


def test_frame_columns_and_atomic_csv(result: ScanResult, tmp_path: Path) -> None:
    frame = result.to_frame()
    required = [
        *("patient_id", "study_uid", "series_uid", "series_description", "manufacturer"),
        *("field_strength", "orientation", "slice_thickness", "slice_spacing", "n_slices"),
        *("included", "reason", "selected", "note"),
    ]
    assert set(required) <= set(frame.columns)
    assert len(frame) == len(result.series)
    assert (frame["reason"] == "").equals(frame["included"])
    out = result.write_csv(tmp_path / "scan.csv")
    back = pd.read_csv(out, keep_default_na=False)
    assert len(back) == len(frame)
    assert [p.name for p in tmp_path.iterdir()] == ["scan.csv"]
    summary = result.summary()
    assert summary["patients"] == 3 and summary["volumes"] == 3
    assert summary["slices"] == 24 + 30 + 24


def test_parallel_scan_matches_serial(cohort: Path, result: ScanResult) -> None:
    parallel = scan(cohort, dataclasses.replace(CFG, workers=2), progress=False)
    assert parallel.to_frame().equals(result.to_frame())


def test_criteria_are_configurable(cohort: Path) -> None:
    at_15 = distractor_rows(
        scan(cohort, dataclasses.replace(CFG, field_strength_t=1.5), progress=False)
    )
    assert at_15["1.5T"].included and not at_15["3mm"].included
    short = distractor_rows(scan(cohort, dataclasses.replace(CFG, min_slices=10), progress=False))
    assert short["few"].included


def test_helpers() -> None:
    assert field_strength_tesla(30000.0) == 3.0
    assert field_strength_tesla(2.89362) == 2.89362
    assert axial_angle((1, 0, 0, 0, 1, 0)) == 0.0
    assert axial_angle(oblique_axial(25)) == pytest.approx(25.0)
    assert axial_angle(SAGITTAL) == pytest.approx(90.0)


def test_missing_root_and_root_without_dicom(tmp_path: Path) -> None:
    with pytest.raises(SlicelibError, match="does not exist"):
        scan(tmp_path / "nowhere", CFG)
    write_junk(tmp_path / "junk")
    with pytest.raises(SlicelibError, match="no DICOM images"):
        scan(tmp_path / "junk", CFG, progress=False)


def test_cli_scan_writes_csv(cohort: Path, tmp_path: Path) -> None:
    out = tmp_path / "series.csv"
    assert main(["scan", str(cohort), "--csv", str(out), "--workers", "1", "--no-progress"]) == 0
    assert pd.read_csv(out)["selected"].sum() == 3


def test_cli_scan_errors_exit_2_with_one_line(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    assert main(["scan", str(tmp_path / "nowhere")]) == 2
    err = capsys.readouterr().err.strip()
    assert err.startswith("slicelib scan: error: data root") and "\n" not in err
