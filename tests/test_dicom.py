"""Loading one series: slice order, geometry, rescale, compressed data, bad input."""

from __future__ import annotations

from pathlib import Path

import nibabel as nib
import numpy as np
import pytest
from dicom_factory import SAGITTAL, oblique_axial, stored_pattern, write_series
from pydicom.uid import (
    ExplicitVRLittleEndian,
    ImplicitVRLittleEndian,
    JPEG2000Lossless,
    JPEGBaseline8Bit,
    JPEGLSLossless,
    RLELossless,
)

from slicelib.data.dicom import load_series, normal
from slicelib.data.nifti import load_nifti
from slicelib.errors import SlicelibError


def ascending_along_normal(positions: np.ndarray, orientation: np.ndarray) -> bool:
    along = positions @ normal(orientation)
    return bool(np.all(np.diff(along) > 0))


def test_normal_of_axial_sagittal_oblique() -> None:
    assert np.allclose(normal([1, 0, 0, 0, 1, 0]), [0, 0, 1])
    assert np.allclose(normal(SAGITTAL), [-1, 0, 0])
    n = normal(oblique_axial(30))
    assert np.isclose(np.degrees(np.arccos(n[2])), 30.0)
    with pytest.raises(SlicelibError, match="degenerate"):
        normal([1, 0, 0, 1, 0, 0])


@pytest.mark.parametrize(
    "options",
    [
        {"scramble": True},
        {"descending": True},
        {"orientation": oblique_axial(20), "scramble": True},
        {"orientation": SAGITTAL, "descending": True},
    ],
    ids=["scrambled", "descending", "oblique", "sagittal"],
)
def test_slices_sorted_along_normal_not_by_instance(tmp_path: Path, options: dict) -> None:
    spec = write_series(tmp_path / "s", n_slices=9, rows=8, cols=12, spacing=1.25, **options)
    vol = load_series(tmp_path / "s")
    assert vol.pixels.dtype == np.float32
    assert vol.pixels.shape == (9, 8, 12)
    np.testing.assert_array_equal(vol.pixels, spec.expected)
    np.testing.assert_allclose(vol.positions, spec.positions, atol=1e-4)
    assert ascending_along_normal(vol.positions, vol.orientation)
    assert vol.slice_spacing == pytest.approx(1.25, abs=1e-4)
    assert vol.files == spec.files
    assert vol.pixel_spacing == (0.6, 0.6)
    assert vol.slice_thickness == 1.5
    assert vol.series_uid == spec.series_uid and vol.patient_id == "P001"


def test_list_of_files_in_any_order(tmp_path: Path) -> None:
    spec = write_series(tmp_path / "s", n_slices=6, rows=8, cols=8)
    vol = load_series(list(reversed(spec.files)))
    np.testing.assert_array_equal(vol.pixels, spec.expected)


def test_rescale_slope_and_intercept(tmp_path: Path) -> None:
    spec = write_series(tmp_path / "s", n_slices=4, rows=8, cols=8, slope=2.5, intercept=-1024)
    vol = load_series(tmp_path / "s")
    expected = stored_pattern(4, 8, 8).astype(np.float32) * 2.5 - 1024
    np.testing.assert_allclose(vol.pixels, expected)
    np.testing.assert_allclose(vol.pixels, spec.expected)


@pytest.mark.parametrize(
    "syntax",
    [ImplicitVRLittleEndian, ExplicitVRLittleEndian, RLELossless, JPEG2000Lossless, JPEGLSLossless],
    ids=lambda s: s.name,
)
def test_lossless_transfer_syntaxes_decode_exactly(tmp_path: Path, syntax: str) -> None:
    spec = write_series(tmp_path / "s", n_slices=4, transfer_syntax=syntax, scramble=True)
    vol = load_series(tmp_path / "s")
    np.testing.assert_array_equal(vol.pixels, spec.expected)


def test_jpeg_baseline_decodes_close(tmp_path: Path) -> None:
    pixels = stored_pattern(3, 32, 32) // 2
    spec = write_series(tmp_path / "s", n_slices=3, transfer_syntax=JPEGBaseline8Bit, pixels=pixels)
    vol = load_series(tmp_path / "s")
    assert np.abs(vol.pixels - spec.expected).max() <= 4.0


def test_non_dicom_files_in_the_folder_are_skipped(tmp_path: Path) -> None:
    write_series(tmp_path / "s", n_slices=5, rows=8, cols=8)
    (tmp_path / "s" / "README.txt").write_text("notes")
    assert load_series(tmp_path / "s").n_slices == 5


@pytest.mark.parametrize(
    ("options", "message"),
    [
        ({"duplicate_position": True}, "duplicate slice position"),
        ({"gap_at": 3}, "non-uniform slice spacing"),
        ({"missing": ["ImagePositionPatient"]}, "missing ImagePositionPatient"),
        ({"missing": ["ImageOrientationPatient"]}, "missing ImageOrientationPatient"),
        ({"missing": ["PixelSpacing"]}, "missing PixelSpacing"),
        ({"truncate": True}, "pixel data unreadable"),
    ],
    ids=["duplicate", "gap", "no-position", "no-orientation", "no-spacing", "truncated"],
)
def test_bad_series_raise_one_line_errors(tmp_path: Path, options: dict, message: str) -> None:
    write_series(tmp_path / "s", n_slices=7, rows=8, cols=8, **options)
    with pytest.raises(SlicelibError, match=message) as info:
        load_series(tmp_path / "s")
    assert "\n" not in str(info.value)


def test_mixed_series_in_one_folder(tmp_path: Path) -> None:
    write_series(tmp_path / "flat", n_slices=4, rows=8, cols=8, prefix="a")
    write_series(tmp_path / "flat", n_slices=4, rows=8, cols=8, prefix="b")
    with pytest.raises(SlicelibError, match="2 series mixed"):
        load_series(tmp_path / "flat")


def test_missing_folder_empty_folder_and_unreadable_file(tmp_path: Path) -> None:
    with pytest.raises(SlicelibError, match="does not exist"):
        load_series(tmp_path / "nowhere")
    (tmp_path / "empty").mkdir()
    (tmp_path / "empty" / "notes.txt").write_text("x")
    with pytest.raises(SlicelibError, match="no DICOM files"):
        load_series(tmp_path / "empty")
    bad = tmp_path / "bad.dcm"
    bad.write_bytes(b"\0" * 128 + b"DICM" + b"\xff" * 20)
    with pytest.raises(SlicelibError, match="bad.dcm"):
        load_series([bad])


def _write_nifti(path: Path, data: np.ndarray, affine: np.ndarray) -> None:
    nib.save(nib.Nifti1Image(data, affine), path)


def test_nifti_volume_slices_along_third_axis(tmp_path: Path) -> None:
    data = np.random.default_rng(0).random((10, 12, 6)).astype(np.float32)
    affine = np.diag([0.5, 0.7, 2.0, 1.0])
    _write_nifti(tmp_path / "case-07.nii.gz", data, affine)
    vol = load_nifti(tmp_path / "case-07.nii.gz")
    assert vol.pixels.shape == (6, 12, 10)
    np.testing.assert_allclose(vol.pixels[2], data[:, :, 2].T)
    assert vol.pixel_spacing == pytest.approx((0.7, 0.5))
    assert vol.slice_spacing == pytest.approx(2.0)
    assert vol.patient_id == "case-07" and vol.files == []
    assert ascending_along_normal(vol.positions, vol.orientation)


def test_nifti_reversed_slice_axis_is_sorted(tmp_path: Path) -> None:
    data = np.random.default_rng(1).random((8, 8, 5)).astype(np.float32)
    affine = np.diag([-1.0, -1.0, -1.5, 1.0])  # z runs against the slice normal
    _write_nifti(tmp_path / "flip.nii", data, affine)
    vol = load_nifti(tmp_path / "flip.nii")
    assert ascending_along_normal(vol.positions, vol.orientation)
    np.testing.assert_allclose(vol.pixels[0], data[:, :, 4].T)
    with pytest.raises(SlicelibError, match="does not exist"):
        load_nifti(tmp_path / "missing.nii")
