"""The synthetic demo cohort: determinism, TCIA layout, headers, geometry, distractors,
calibration of the linear-interpolation difficulty, and the ``demo-data`` command."""

from __future__ import annotations

import csv
import dataclasses
import math
import re
from pathlib import Path

import numpy as np
import pydicom
import pytest
from pydicom.uid import ExplicitVRLittleEndian, MRImageStorage

from slicelib.cli import main
from slicelib.config import CohortConfig, PrepareConfig, ScanConfig
from slicelib.data.dicom import load_series
from slicelib.data.phantom import (
    FIELD_SPECS,
    Acquisition,
    LatticeField,
    render_chunk,
    sample_subject,
    subject_rngs,
)
from slicelib.data.synthetic import (
    COLLECTION,
    DISTRACTORS,
    METADATA_COLUMNS,
    T2_DESCRIPTION,
    cohort_difficulty,
    write_demo_cohort,
)
from slicelib.errors import SlicelibError
from slicelib.io import OUTPUT_MARKER

SMALL = CohortConfig(patients=3, seed=7, matrix=48, slices=22, distractors=True)


def _write(root: Path, cfg: CohortConfig) -> list[Path]:
    return write_demo_cohort(root, cfg)


@pytest.fixture(scope="module")
def cohort(tmp_path_factory: pytest.TempPathFactory) -> tuple[Path, list[Path]]:
    root = tmp_path_factory.mktemp("small_cohort")
    return root, _write(root, SMALL)


def _files(root: Path) -> dict[str, bytes]:
    """Every file under ``root`` by relative path, with its bytes."""
    return {
        p.relative_to(root).as_posix(): p.read_bytes()
        for p in sorted(root.rglob("*"))
        if p.is_file()
    }


def _by_description(root: Path) -> dict[str, list[pydicom.Dataset]]:
    out: dict[str, list[pydicom.Dataset]] = {}
    for p in sorted(root.rglob("*.dcm")):
        ds = pydicom.dcmread(p, stop_before_pixels=True)
        out.setdefault(str(ds.SeriesDescription), []).append(ds)
    return out


# --------------------------------------------------------------------------- determinism


def test_same_seed_same_pixels_and_uids(cohort: tuple[Path, list[Path]], tmp_path: Path) -> None:
    root, _ = cohort
    again = tmp_path / "again"
    _write(again, SMALL)
    first, second = _files(root), _files(again)
    assert len(first) > SMALL.patients * SMALL.slices
    assert first.keys() == second.keys()
    assert all(first[name] == second[name] for name in first)  # pixel data, UIDs, everything


def test_other_seed_other_cohort(cohort: tuple[Path, list[Path]], tmp_path: Path) -> None:
    root, t2 = cohort
    other_root = tmp_path / "other"
    other_t2 = _write(other_root, dataclasses.replace(SMALL, seed=8, distractors=False))
    a = pydicom.dcmread(sorted(t2[0].glob("*.dcm"))[0])
    b = pydicom.dcmread(sorted(other_t2[0].glob("*.dcm"))[0])
    assert a.StudyInstanceUID != b.StudyInstanceUID
    assert a.SOPInstanceUID != b.SOPInstanceUID
    assert a.PixelData != b.PixelData


def _shapes(seed: int, matrix: int) -> np.ndarray:
    """The subject's untextured anatomy at three z, as 32x32 block means."""
    subject = sample_subject(subject_rngs(seed, 0)[0], (160.0, 224.0))
    acq = Acquisition(matrix=matrix, n_slices=1, fov_mm=subject.fov_mm)
    flat = {name: np.zeros((3, matrix, matrix), np.float32) for name in FIELD_SPECS}
    zs = np.array([-6.0, 0.0, 6.0])
    image = render_chunk(subject, acq.in_plane(), acq.in_plane(), zs, flat, acq.pixel_mm)
    block = matrix // 32
    return image.reshape(3, 32, block, 32, block).mean(axis=(2, 4))


def test_anatomy_is_a_continuous_function_of_position() -> None:
    """Sampled at two matrices, the same subject's shapes agree; another subject's do not."""
    coarse, fine, other = _shapes(3, 64), _shapes(3, 256), _shapes(4, 64)
    assert np.corrcoef(coarse.ravel(), fine.ravel())[0, 1] > 0.97
    assert float(np.abs(coarse - fine).mean()) < 0.02
    assert np.corrcoef(coarse.ravel(), other.ravel())[0, 1] < 0.85


def test_lattice_field_has_unit_variance() -> None:
    rng = np.random.default_rng(0)
    xs = np.arange(128) * 0.5
    field = LatticeField(rng, FIELD_SPECS["medium"], xs, xs, (0.0, 20.0), psf_mm=0.0)
    values = field.sample(np.linspace(0.0, 20.0, 9))
    assert values.shape == (9, 128, 128)
    assert 0.6 < float(values.std()) < 1.4
    assert abs(float(values.mean())) < 0.3


# --------------------------------------------------------------------------- layout, headers


def test_tcia_layout_and_metadata(cohort: tuple[Path, list[Path]]) -> None:
    root, t2 = cohort
    assert len(t2) == SMALL.patients
    study_re = re.compile(r"\d{2}-\d{2}-\d{4}-NA-MRI PROSTATE-\d{5}")
    series_re = re.compile(r"\d+\.000000-[A-Za-z0-9 \-]+-\d{5}")
    for folder in t2:
        assert folder.parent.parent.parent.name == COLLECTION
        assert study_re.fullmatch(folder.parent.name)
        assert series_re.fullmatch(folder.name)
        names = sorted(p.name for p in folder.glob("*.dcm"))
        assert names == [f"1-{i:02d}.dcm" for i in range(1, SMALL.slices + 1)]
    with open(root / "metadata.csv", newline="", encoding="utf-8") as fp:
        rows = list(csv.DictReader(fp))
    assert tuple(rows[0]) == METADATA_COLUMNS
    assert len(rows) == SMALL.patients + len(DISTRACTORS)
    for row in rows:
        folder = root / row["File Location"]
        assert folder.is_dir()
        assert int(row["Number of Images"]) == len(list(folder.glob("*.dcm")))
    assert (root / COLLECTION / "README.txt").is_file()
    assert (t2[0] / "Thumbs.db").is_file()


def test_t2_headers_are_a_siemens_3t_t2_axial(cohort: tuple[Path, list[Path]]) -> None:
    _, t2 = cohort
    series_uids = set()
    for folder in t2:
        datasets = [pydicom.dcmread(p) for p in sorted(folder.glob("*.dcm"))]
        first = datasets[0]
        assert first.file_meta.TransferSyntaxUID == ExplicitVRLittleEndian
        assert first.SOPClassUID == MRImageStorage
        assert first.Modality == "MR"
        assert first.Manufacturer == "SIEMENS"
        assert first.ManufacturerModelName in ("Skyra", "Verio", "TrioTim")
        assert abs(float(first.MagneticFieldStrength) - 3.0) < 0.25
        assert first.SeriesDescription == T2_DESCRIPTION
        assert float(first.SliceThickness) == 1.5
        assert float(first.SpacingBetweenSlices) == 1.5
        assert 60 < float(first.EchoTime) < 200 and float(first.RepetitionTime) > 1000
        assert (first.Rows, first.Columns) == (SMALL.matrix, SMALL.matrix)
        assert (first.BitsAllocated, first.PixelRepresentation) == (16, 0)
        assert {ds.SeriesInstanceUID for ds in datasets} == {first.SeriesInstanceUID}
        assert {ds.FrameOfReferenceUID for ds in datasets} == {first.FrameOfReferenceUID}
        assert len({ds.SOPInstanceUID for ds in datasets}) == len(datasets)
        assert sorted(int(ds.InstanceNumber) for ds in datasets) == list(range(1, SMALL.slices + 1))
        pixels = first.pixel_array
        assert pixels.shape == (SMALL.matrix, SMALL.matrix) and pixels.dtype == np.uint16
        assert 0 < int(pixels.max()) <= 4095
        series_uids.add(first.SeriesInstanceUID)
    assert len(series_uids) == len(t2)


def test_geometry_positions_along_the_normal(cohort: tuple[Path, list[Path]]) -> None:
    _, t2 = cohort
    for folder in t2:
        datasets = [pydicom.dcmread(p, stop_before_pixels=True) for p in folder.glob("*.dcm")]
        iop = np.array(datasets[0].ImageOrientationPatient, dtype=float)
        row, col = iop[:3], iop[3:]
        assert abs(row @ col) < 1e-6
        assert np.allclose([np.linalg.norm(row), np.linalg.norm(col)], 1.0, atol=1e-6)
        normal = np.cross(row, col)
        assert math.degrees(math.acos(abs(normal[2]))) < 30  # axial or mildly oblique
        pos = np.array([ds.ImagePositionPatient for ds in datasets], dtype=float)
        along = pos @ normal
        order = np.argsort(along)
        assert np.allclose(np.diff(along[order]), 1.5, atol=1e-3)
        # All slices share the in-plane origin: positions differ only along the normal.
        in_plane = pos - along[:, None] * normal[None, :]
        assert np.allclose(in_plane, in_plane[0], atol=1e-3)
        locations = np.array([float(ds.SliceLocation) for ds in datasets])
        assert np.allclose(locations, along, atol=1e-3)


def test_load_series_reads_the_t2_volumes(cohort: tuple[Path, list[Path]]) -> None:
    """The loader sorts by position and applies the rescale the writer chose."""
    _, t2 = cohort
    for folder in t2:
        vol = load_series(folder)
        assert vol.pixels.shape == (SMALL.slices, SMALL.matrix, SMALL.matrix)
        assert vol.slice_spacing == pytest.approx(1.5, abs=1e-3)
        assert vol.patient_id == folder.parent.parent.name
        assert float(vol.pixels.std()) > 0


def test_sorting_by_instance_number_alone_would_fail_somewhere(tmp_path: Path) -> None:
    """Some series number or name their files out of position order, as real ones do."""
    cfg = CohortConfig(patients=8, seed=1, matrix=16, slices=12, distractors=False)
    scrambled = 0
    for folder in write_demo_cohort(tmp_path, cfg):
        files = sorted(folder.glob("*.dcm"))
        datasets = [pydicom.dcmread(p, stop_before_pixels=True) for p in files]
        iop = np.array(datasets[0].ImageOrientationPatient, dtype=float)
        along = np.array([ds.ImagePositionPatient for ds in datasets], dtype=float) @ np.cross(
            iop[:3], iop[3:]
        )
        by_name = np.diff(along)
        by_instance = np.diff(along[np.argsort([int(ds.InstanceNumber) for ds in datasets])])
        monotonic = (np.all(by_name > 0) or np.all(by_name < 0)) and (
            np.all(by_instance > 0) or np.all(by_instance < 0)
        )
        scrambled += not monotonic
    assert 0 < scrambled < cfg.patients


# --------------------------------------------------------------------------- distractors


def test_distractors_have_the_properties_that_exclude_them(
    cohort: tuple[Path, list[Path]],
) -> None:
    root, _ = cohort
    series = _by_description(root)
    assert set(DISTRACTORS) <= set(series)
    sag = series["t2_spc_sag_Prostate"][0]
    normal = np.cross(*np.array(sag.ImageOrientationPatient, dtype=float).reshape(2, 3))
    assert abs(normal[0]) > 0.99
    assert float(series["t2_tse_tra_Prostate_1.5T"][0].MagneticFieldStrength) == 1.5
    assert series["Ax T2 FSE"][0].Manufacturer.startswith("GE")
    assert float(series["t2_tse_tra_3mm"][0].SliceThickness) == 3.0
    assert len(series["t2_tse_tra_apex"]) < 20
    assert "diff" in series["ep2d_diff_b50_400_800_tra_ADC"][0].SeriesDescription
    (folder,) = [p for p in root.rglob("*-t2tsetraProstate-*") if p.is_dir()]
    sizes = {p: p.stat().st_size for p in folder.glob("*.dcm")}
    full = max(sizes.values())
    short = [p for p, size in sizes.items() if size < full - 1000]
    assert len(short) == 1  # one file lost half its pixel data
    with pytest.raises(Exception):  # noqa: B017 - pydicom raises various types
        pydicom.dcmread(short[0]).pixel_array  # noqa: B018


def test_scan_rejects_each_distractor_for_its_reason(cohort: tuple[Path, list[Path]]) -> None:
    from slicelib.data.scan import scan

    root, t2 = cohort
    result = scan(root, dataclasses.replace(ScanConfig(), workers=1), progress=False)
    frame = result.to_frame()
    for description, criterion in DISTRACTORS.items():
        rows = frame[frame.series_description == description]
        assert len(rows) == 1, description
        assert not bool(rows.included.iloc[0]), description
        assert rows.criterion.iloc[0] == criterion, (description, rows.reason.iloc[0])
    included = frame[frame.included]
    assert sorted(included.patient_id) == sorted(p.parent.parent.name for p in t2)
    assert set(included.series_description) == {T2_DESCRIPTION}


# --------------------------------------------------------------------------- calibration


def test_calibration_measures_linear_interpolation() -> None:
    """Slices alternate by +-d around a linear ramp: the mean of the neighbours is off by 2d."""
    d = 0.05
    ramp = np.linspace(0.2, 0.6, 12)[:, None, None] * np.ones((12, 24, 24))
    ramp[:, :, 12:] += 0.2  # some structure for SSIM
    vol = ramp + d * (-1.0) ** np.arange(12)[:, None, None]
    result = cohort_difficulty([vol], ks=(1,))
    assert result["slices"] == 10
    assert result["k1_psnr"] == pytest.approx(-20 * math.log10(2 * d), abs=1e-6)
    assert result["k1_ssim"] < 0.99
    with pytest.raises(SlicelibError):
        cohort_difficulty([vol[:4]], ks=(2,))


def test_prepared_cohort_matches_the_original_difficulty(tmp_path: Path) -> None:
    """Linear interpolation at 256: k=1 SSIM 0.78-0.88 and PSNR 25-30 dB, k=2 SSIM 0.50-0.70
    (the original's test set: 0.838 / 27.31 dB at k=1)."""
    from slicelib.data.prepare import prepare

    cfg = CohortConfig(patients=3, seed=0, distractors=False)  # 320x320, 40 slices
    write_demo_cohort(tmp_path / "cohort", cfg)
    cache = prepare(
        tmp_path / "cohort",
        tmp_path / "cache",
        PrepareConfig(size=256, dtype="float32"),
        dataclasses.replace(ScanConfig(), workers=1),
        progress=False,
    )
    volumes = [np.asarray(cache.volume(e.patient_id)) for e in cache.entries()]
    assert len(volumes) == cfg.patients
    result = cohort_difficulty(volumes)
    assert 0.78 <= result["k1_ssim"] <= 0.88, result
    assert 25.0 <= result["k1_psnr"] <= 30.0, result
    assert 0.50 <= result["k2_ssim"] <= 0.70, result
    assert result["k2_ssim"] < result["k1_ssim"] - 0.15


# --------------------------------------------------------------------------- command line


def test_cli_writes_a_cohort(tmp_path: Path, caplog: pytest.LogCaptureFixture) -> None:
    out = tmp_path / "demo"
    caplog.set_level("INFO")
    code = main(["demo-data", str(out), "--preset", "smoke", "--patients", "1", "--no-progress"])
    assert code == 0
    assert (out / "metadata.csv").is_file()
    assert len(list((out / COLLECTION).iterdir())) == 2  # one patient and README.txt
    assert any((out / COLLECTION).rglob("*.dcm"))
    assert not any(p.name.startswith(".demo") for p in tmp_path.iterdir())


@pytest.mark.parametrize("patients", ["0", "-3"])
def test_cli_rejects_bad_patient_count(
    tmp_path: Path, capsys: pytest.CaptureFixture[str], patients: str
) -> None:
    with pytest.raises(SystemExit) as exit_:  # argparse: the option's type is bounded
        main(["demo-data", str(tmp_path / "out"), "--patients", patients])
    err = capsys.readouterr().err.strip().splitlines()[-1]
    assert exit_.value.code == 2
    assert err.count("\n") == 0 and "--patients" in err and patients in err
    assert not (tmp_path / "out").exists()


def test_cli_force_replaces_only_a_cohort_it_wrote(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    out = tmp_path / "busy"
    out.mkdir()
    (out / "keep.txt").write_text("mine")
    args = ["demo-data", str(out), "--preset", "smoke", "--patients", "1", "--no-progress"]
    assert main(args) == 2
    err = capsys.readouterr().err.strip()
    assert err.startswith("slicelib demo-data: error:") and "already exists" in err
    assert err.count("\n") == 0
    assert main([*args, "--force"]) == 2  # not a folder slicelib wrote: never deleted
    assert "not written by slicelib" in capsys.readouterr().err
    assert (out / "keep.txt").read_text() == "mine"
    (out / "keep.txt").unlink()
    assert main(args) == 0  # an empty folder may be filled
    assert main([*args, "--force"]) == 0  # and a cohort it wrote replaced
    assert (out / "metadata.csv").is_file() and (out / OUTPUT_MARKER).is_file()


def test_write_refuses_an_existing_cohort(cohort: tuple[Path, list[Path]]) -> None:
    root, _ = cohort
    with pytest.raises(SlicelibError, match="already holds a cohort"):
        write_demo_cohort(root, SMALL)
    with pytest.raises(SlicelibError, match="patients"):
        write_demo_cohort(root / "new", dataclasses.replace(SMALL, patients=0))
