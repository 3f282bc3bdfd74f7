"""The through-plane axis of NIfTI volumes: header rules, the option, bad headers."""

from __future__ import annotations

import json
import shutil
from pathlib import Path

import nibabel as nib
import numpy as np
import pytest

from slicelib.cli import main
from slicelib.config import PrepareConfig, ScanConfig
from slicelib.data.dicom import normal
from slicelib.data.nifti import SliceAxis, load_nifti, slice_axis
from slicelib.data.prepare import prepare
from slicelib.errors import SlicelibError

IXI = Path(__file__).resolve().parent.parent / "data" / "ixi-t1-2mm"
CFG = PrepareConfig(size=16, dtype="float32")
SCAN = ScanConfig(min_slices=3, workers=1)


def _save(
    path: Path,
    shape: tuple[int, ...] = (10, 12, 14),
    zooms: tuple[float, float, float] = (1.0, 1.0, 1.0),
    dim_info_slice: int | None = None,
    seed: int = 0,
) -> np.ndarray:
    data = np.random.default_rng(seed).random(shape).astype(np.float32)
    img = nib.Nifti1Image(data, np.diag([*zooms, 1.0]))
    if dim_info_slice is not None:
        img.header.set_dim_info(slice=dim_info_slice)
    nib.save(img, path)
    return data


PIXDIM_OFFSET = 76  # bytes: pixdim[0..7] as float32 in the NIfTI-1 header


def _save_with_pixdim(path: Path, data: np.ndarray, zooms: tuple[float, float, float]) -> None:
    """A ``.nii`` without an affine (spacing from pixdim alone) with these pixdim values
    written into the file: nibabel would repair a zero or NaN spacing on saving."""
    nib.save(nib.Nifti1Image(data, None), path)
    with open(path, "r+b") as f:
        f.seek(PIXDIM_OFFSET + 4)
        f.write(np.asarray(zooms, dtype="<f4").tobytes())


def test_dim_info_slice_dimension_wins_over_spacing(tmp_path: Path) -> None:
    _save(tmp_path / "a.nii.gz", zooms=(1.0, 1.0, 3.0), dim_info_slice=1)
    assert slice_axis(tmp_path / "a.nii.gz") == SliceAxis(1, "dim_info")


def test_largest_spacing_without_dim_info(tmp_path: Path) -> None:
    data = _save(tmp_path / "a.nii", zooms=(3.0, 0.5, 0.6))
    assert slice_axis(tmp_path / "a.nii") == SliceAxis(0, "largest spacing")
    vol = load_nifti(tmp_path / "a.nii")
    # slices along the first voxel axis; rows along the third, columns along the second
    assert vol.pixels.shape == (10, 14, 12)
    np.testing.assert_allclose(vol.pixels[3], data[3].T)
    assert vol.slice_spacing == pytest.approx(3.0)
    assert vol.pixel_spacing == pytest.approx((0.6, 0.5))
    # the slice normal is the first voxel axis (x in RAS, x in LPS)
    assert abs(normal(vol.orientation)[0]) == pytest.approx(1.0)


def test_isotropic_or_tied_spacing_takes_the_documented_default(tmp_path: Path) -> None:
    _save(tmp_path / "iso.nii", zooms=(2.0, 2.0, 2.0))
    _save(tmp_path / "tie.nii", zooms=(2.0, 2.0, 1.0))
    assert slice_axis(tmp_path / "iso.nii") == SliceAxis(2, "default")
    assert slice_axis(tmp_path / "tie.nii") == SliceAxis(2, "default")


def test_the_option_overrides_the_header(tmp_path: Path) -> None:
    data = _save(tmp_path / "a.nii", zooms=(1.0, 1.0, 3.0), dim_info_slice=2)
    assert slice_axis(tmp_path / "a.nii", 1) == SliceAxis(1, "option")
    vol = load_nifti(tmp_path / "a.nii", slice_axis=1)
    assert vol.pixels.shape == (12, 14, 10)
    # LPS flips y, so the slices along the second axis come out in reverse voxel order
    np.testing.assert_allclose(vol.pixels[12 - 1 - 5], data[:, 5, :].T)
    assert vol.slice_spacing == pytest.approx(1.0)
    with pytest.raises(SlicelibError, match="slice_axis must be 0, 1, 2"):
        load_nifti(tmp_path / "a.nii", slice_axis=3)


@pytest.mark.parametrize(
    ("shape", "zooms", "message"),
    [
        ((10, 12, 14), (1.0, 0.0, 1.0), "zero or NaN along axis 1"),
        ((10, 12), (1.0, 1.0, 1.0), "a 2-D image"),
        ((10, 12, 1), (1.0, 1.0, 1.0), "a 2-D image"),
        ((10, 12, 14, 3), (1.0, 1.0, 1.0), "4-D data"),
    ],
)
def test_degenerate_headers_give_one_line_errors_naming_the_file(
    tmp_path: Path, shape: tuple[int, ...], zooms: tuple[float, float, float], message: str
) -> None:
    path = tmp_path / "bad.nii"
    _save_with_pixdim(path, np.zeros(shape, dtype=np.float32), zooms)
    for read in (slice_axis, load_nifti):
        with pytest.raises(SlicelibError, match=message) as err:
            read(path)
        assert str(path) in str(err.value) and "\n" not in str(err.value)


def test_nan_spacing_is_named(tmp_path: Path) -> None:
    path = tmp_path / "nan.nii"
    _save_with_pixdim(path, np.zeros((6, 6, 6), np.float32), (1.0, np.nan, 1.0))
    with pytest.raises(SlicelibError, match="zero or NaN along axis 1") as err:
        load_nifti(path)
    assert str(path) in str(err.value)


def test_prepare_records_the_slice_axis_and_the_cli_option(tmp_path: Path) -> None:
    root = tmp_path / "nifti"
    root.mkdir()
    for i in range(3):
        _save(root / f"case{i}.nii.gz", shape=(22, 18, 20), zooms=(0.5, 0.5, 2.0), seed=i)
    cache = prepare(root, tmp_path / "cache", CFG, SCAN, progress=False)
    rows = cache.manifest["patients"]
    assert {(r["slice_axis"], r["slice_axis_rule"]) for r in rows} == {(2, "largest spacing")}
    assert cache.volume("case0").shape[0] == 20

    target = tmp_path / "cache-axis0"
    args = ["prepare", str(root), str(target), "--size", "16", "--slice-axis", "0"]
    assert main([*args, "--preset", "smoke", "--no-progress"]) == 0
    manifest = json.loads((target / "manifest.json").read_text())
    assert manifest["config"]["slice_axis"] == 0
    assert {(r["slice_axis"], r["slice_axis_rule"]) for r in manifest["patients"]} == {
        (0, "option")
    }
    assert {r["n_slices"] for r in manifest["patients"]} == {22}


def test_prepare_stops_on_a_broken_header_naming_the_file(tmp_path: Path) -> None:
    root = tmp_path / "nifti"
    root.mkdir()
    _save(root / "good.nii.gz", zooms=(1.0, 1.0, 2.0))
    nib.save(nib.Nifti1Image(np.zeros((8, 8, 8, 2), np.float32), np.eye(4)), root / "t.nii")
    with pytest.raises(SlicelibError, match=r"t\.nii: 4-D data"):
        prepare(root, tmp_path / "cache", CFG, SCAN, progress=False)
    assert not (tmp_path / "cache").exists()


def test_ixi_slices_run_left_right(tmp_path: Path) -> None:
    root = tmp_path / "ixi"
    root.mkdir()
    for f in sorted(IXI.glob("*.nii.gz"))[:2]:
        shutil.copy(f, root / f.name)
    cache = prepare(root, tmp_path / "cache", CFG, SCAN, progress=False)
    for row in cache.manifest["patients"]:
        assert (row["slice_axis"], row["slice_axis_rule"]) == (2, "default")
        assert row["n_slices"] == 90 and row["spacing_mm"] == pytest.approx(2.0)
    vol = load_nifti(root / sorted(p.name for p in root.iterdir())[0])
    # the slice normal is the patient's left-right axis (x in LPS)
    np.testing.assert_allclose(np.abs(normal(vol.orientation)), [1.0, 0.0, 0.0], atol=1e-6)
