"""The derived DICOM series: pixel data, headers, geometry, UIDs, atomic writes, validation."""

from __future__ import annotations

import shutil
import subprocess
from pathlib import Path

import numpy as np
import pydicom
import pytest
import torch
from pydicom.dataset import Dataset, FileMetaDataset
from pydicom.uid import ExplicitVRLittleEndian, MRImageStorage, RLELossless, generate_uid

import slicelib
from slicelib.data.dicom import load_series, normal
from slicelib.environment import code_label, code_version
from slicelib.errors import SlicelibError
from slicelib.io import OUTPUT_MARKER, atomic_directory
from slicelib.upsample.dicom_writer import (
    ACQUIRED_COMMENT,
    ACQUISITION_ATTRIBUTES,
    MM_DECIMALS,
    SYNTHESIZED_COMMENT,
    Derivation,
    write_dicom_series,
)
from slicelib.upsample.volume import Upsampled, upsample_volume

DCIODVFY_PACKAGE = "dicom3tools"  # Debian package that provides dciodvfy


def oblique_orientation(tilt_deg: float = 20.0, yaw_deg: float = 10.0) -> np.ndarray:
    """An oblique-axial ImageOrientationPatient (6,): orthonormal row and column directions."""
    t, y = np.deg2rad(tilt_deg), np.deg2rad(yaw_deg)
    row = np.array([np.cos(y), np.sin(y), 0.0])
    col = np.array([-np.sin(y) * np.cos(t), np.cos(y) * np.cos(t), -np.sin(t)])
    return np.concatenate([row, col])


def write_test_series(
    folder: Path,
    *,
    slices: int = 5,
    rows: int = 12,
    cols: int = 16,
    spacing: float = 1.5,
    orientation: np.ndarray | None = None,
    signed_rescaled: bool = False,
    gaps: list[float] | None = None,
    seed: int = 0,
    transfer_syntax: str = ExplicitVRLittleEndian,
    position_decimals: int = 4,
) -> list[Path]:
    """A small MR series that passes an IOD validator (the data tests' minimal series in
    ``dicom_factory`` would not), written with pydicom; files named out of slice order.

    Unsigned 12-bit without rescale, or (``signed_rescaled``) signed 16-bit with
    RescaleSlope 2 and RescaleIntercept -100. ``gaps`` (mm, one fewer than
    ``slices``) overrides the uniform ``spacing``.
    """
    folder.mkdir(parents=True, exist_ok=True)
    iop = oblique_orientation() if orientation is None else orientation
    n = normal(iop)
    gaps = [spacing] * (slices - 1) if gaps is None else gaps
    along = np.concatenate([[0.0], np.cumsum(gaps)])
    origin = np.array([-40.0, -30.0, 12.5])
    rng = np.random.default_rng(seed)
    yy, xx = np.mgrid[0:rows, 0:cols]
    series_uid, study_uid, frame_uid = generate_uid(), generate_uid(), generate_uid()
    files = []
    for s in range(slices):
        base = 400 + 30 * s + 10 * yy + 5 * xx + rng.integers(0, 50, size=(rows, cols))
        meta = FileMetaDataset()
        meta.MediaStorageSOPClassUID = MRImageStorage
        meta.MediaStorageSOPInstanceUID = generate_uid()
        meta.TransferSyntaxUID = ExplicitVRLittleEndian
        ds = Dataset()
        ds.file_meta = meta
        ds.SOPClassUID = MRImageStorage
        ds.SOPInstanceUID = meta.MediaStorageSOPInstanceUID
        ds.SpecificCharacterSet = "ISO_IR 100"
        ds.PatientName, ds.PatientID = "Test^Patient", "TEST-001"
        ds.PatientBirthDate, ds.PatientSex = "19600101", "M"
        ds.StudyInstanceUID, ds.StudyDate, ds.StudyTime = study_uid, "20200101", "120000"
        ds.ReferringPhysicianName, ds.StudyID, ds.AccessionNumber = "", "1", ""
        ds.Modality, ds.Manufacturer = "MR", "SIEMENS"
        ds.SeriesInstanceUID, ds.SeriesNumber = series_uid, 7
        ds.SeriesDescription = "t2_tse_tra"
        ds.FrameOfReferenceUID, ds.PositionReferenceIndicator = frame_uid, ""
        ds.ImageType = ["ORIGINAL", "PRIMARY", "OTHER"]
        ds.PatientPosition, ds.BodyPartExamined = "HFS", "PROSTATE"
        ds.InstanceNumber = slices - s  # reversed: the loader must sort by position
        ds.ImagePositionPatient = [f"{v:.{position_decimals}f}" for v in origin + along[s] * n]
        ds.ImageOrientationPatient = [f"{v:.6f}" for v in iop]
        ds.SliceLocation = f"{along[s] + 12.5:.4f}"
        ds.PixelSpacing = ["0.7", "0.7"]
        ds.SliceThickness = "1.5"
        ds.ScanningSequence, ds.SequenceVariant = "SE", "SK"
        ds.ScanOptions, ds.MRAcquisitionType = "", "2D"
        ds.RepetitionTime, ds.EchoTime, ds.EchoTrainLength = "4000", "100", 16
        ds.MagneticFieldStrength = "3"
        ds.SamplesPerPixel, ds.PhotometricInterpretation = 1, "MONOCHROME2"
        ds.Rows, ds.Columns = rows, cols
        if signed_rescaled:
            stored = (base - 600).astype(np.int16)
            ds.BitsAllocated, ds.BitsStored, ds.HighBit, ds.PixelRepresentation = 16, 16, 15, 1
            ds.RescaleSlope, ds.RescaleIntercept, ds.RescaleType = "2", "-100", "US"
        else:
            stored = base.astype(np.uint16)
            ds.BitsAllocated, ds.BitsStored, ds.HighBit, ds.PixelRepresentation = 16, 12, 11, 0
        ds.PixelData = stored.tobytes()
        if transfer_syntax != ExplicitVRLittleEndian:
            ds.compress(transfer_syntax)
        path = folder / f"slice_{(s * 3) % slices:03d}.dcm"  # names out of order
        ds.save_as(path, enforce_file_format=True)
        files.append(path)
    return files


def linear_predict(inputs: torch.Tensor) -> torch.Tensor:
    """The mean of the two neighbours: (N, 2, H, W) -> (N, 1, H, W)."""
    return inputs.mean(dim=1, keepdim=True)


class NeighbourSamples:
    """The two neighbours as two samples: their mean is linear interpolation, their std
    half their difference (grows with the neighbours' difference)."""

    def stack(self, inputs: torch.Tensor) -> torch.Tensor:
        return inputs.transpose(0, 1).unsqueeze(2)  # (2, N, 1, H, W)

    def __call__(self, inputs: torch.Tensor) -> torch.Tensor:
        return self.stack(inputs).mean(dim=0)


std_predict = NeighbourSamples()


DERIVATION = Derivation(
    method="linear (test)", checkpoint="sha256:0123456789abcdef", detail="epoch 1"
)


@pytest.fixture
def series(tmp_path: Path) -> Path:
    folder = tmp_path / "input" / "series"
    write_test_series(folder)
    return folder


def upsampled(folder: Path, *, with_std: bool = False) -> Upsampled:
    volume = load_series(folder)
    return upsample_volume(
        volume, linear_predict, 16, uncertainty=std_predict if with_std else None
    )


def read_all(folder: Path) -> list[Dataset]:
    datasets = [pydicom.dcmread(p) for p in sorted(folder.iterdir())]
    return sorted(datasets, key=lambda ds: int(ds.InstanceNumber))


@pytest.mark.parametrize("signed_rescaled", [False, True])
def test_acquired_slices_keep_their_stored_values(tmp_path: Path, signed_rescaled: bool) -> None:
    folder = tmp_path / "in"
    write_test_series(folder, signed_rescaled=signed_rescaled)
    up = upsampled(folder)
    out = tmp_path / "out"
    write_dicom_series(up, out, DERIVATION)
    written = read_all(out)
    source = [pydicom.dcmread(f) for f in up.source.files]
    assert len(written) == 2 * len(source) - 1
    for i, src in enumerate(source):
        assert written[2 * i].PixelData == src.PixelData
        assert np.array_equal(written[2 * i].pixel_array, src.pixel_array)
        assert written[2 * i].get("RescaleSlope") == src.get("RescaleSlope")
    # Synthesized slices decode to the predicted values (integer rounding of the encoding).
    back = load_series(out)
    step = float(source[0].get("RescaleSlope", 1))
    assert np.max(np.abs(back.pixels - up.pixels)) <= step / 2 + 1e-3


def test_compressed_source_keeps_its_encapsulated_pixel_data(tmp_path: Path) -> None:
    folder = tmp_path / "in"
    write_test_series(folder, transfer_syntax=RLELossless)
    up = upsampled(folder)
    write_dicom_series(up, tmp_path / "out", DERIVATION)
    written = read_all(tmp_path / "out")
    source = [pydicom.dcmread(f) for f in up.source.files]
    for i, src in enumerate(source):
        assert written[2 * i].file_meta.TransferSyntaxUID == RLELossless
        assert written[2 * i].PixelData == src.PixelData
    assert written[1].file_meta.TransferSyntaxUID == ExplicitVRLittleEndian
    assert np.allclose(load_series(tmp_path / "out").pixels, up.pixels, atol=0.51)


def test_headers_mark_derived_and_synthesized_slices(series: Path, tmp_path: Path) -> None:
    up = upsampled(series)
    out = tmp_path / "out"
    write_dicom_series(up, out, DERIVATION)
    written = read_all(out)
    source = [pydicom.dcmread(f) for f in up.source.files]
    assert [int(ds.InstanceNumber) for ds in written] == list(range(1, 10))
    for j, ds in enumerate(written):
        assert list(ds.ImageType)[:2] == ["DERIVED", "SECONDARY"]
        assert "linear (test)" in ds.DerivationDescription
        assert "checkpoint sha256:0123456789abcdef" in ds.DerivationDescription
        assert f"slicelib {code_label()}" in ds.DerivationDescription
        derivation = ds.DerivationCodeSequence
        assert [(c.CodeValue, c.CodingSchemeDesignator) for c in derivation] == [
            ("113085", "DCM")  # Spatial resampling, CID 7203
        ]
        assert ds.SeriesDescription == "t2_tse_tra [x2 interpolated]"
        refs = [item.ReferencedSOPInstanceUID for item in ds.SourceImageSequence]
        if j % 2 == 0:
            assert ds.ImageComments == ACQUIRED_COMMENT
            assert refs == [source[j // 2].SOPInstanceUID]
        else:
            assert ds.ImageComments == SYNTHESIZED_COMMENT
            assert refs == [source[j // 2].SOPInstanceUID, source[j // 2 + 1].SOPInstanceUID]
        assert ds.StudyInstanceUID == source[0].StudyInstanceUID
        assert ds.FrameOfReferenceUID == source[0].FrameOfReferenceUID
        assert ds.PatientID == source[0].PatientID
        # The new series has its own date and time and names slicelib as the equipment
        # that processed the source (DCM 109102, CID 7005).
        assert (ds.SeriesDate, ds.SeriesTime) == (ds.ContentDate, ds.ContentTime)
        assert ds.SeriesTime != source[0].get("SeriesTime")
        equipment = ds.ContributingEquipmentSequence[-1]
        assert equipment.Manufacturer == "slicelib"
        versions = equipment.SoftwareVersions
        versions = [versions] if isinstance(versions, str) else list(versions)
        code = code_version()
        assert versions[0] == slicelib.__version__
        if code["commit"] is not None:  # run from a git checkout: the commit too
            assert versions[1].startswith(f"commit {code['commit']}")
        purpose = equipment.PurposeOfReferenceCodeSequence[0]
        assert (purpose.CodeValue, purpose.CodingSchemeDesignator) == ("109102", "DCM")


def test_uids_are_new_and_unique(series: Path, tmp_path: Path) -> None:
    up = upsampled(series)
    write_dicom_series(up, tmp_path / "a", DERIVATION)
    write_dicom_series(up, tmp_path / "b", DERIVATION)
    source = [pydicom.dcmread(f) for f in up.source.files]
    a, b = read_all(tmp_path / "a"), read_all(tmp_path / "b")
    old = {ds.SOPInstanceUID for ds in source}
    sops = [ds.SOPInstanceUID for ds in a + b]
    assert len(set(sops)) == len(sops) and not old & set(sops)
    for ds in a + b:
        assert ds.file_meta.MediaStorageSOPInstanceUID == ds.SOPInstanceUID
    series_uids = {ds.SeriesInstanceUID for ds in a} | {ds.SeriesInstanceUID for ds in b}
    assert len(series_uids) == 2 and source[0].SeriesInstanceUID not in series_uids


def test_oblique_geometry_on_the_new_grid(series: Path, tmp_path: Path) -> None:
    up = upsampled(series)
    write_dicom_series(up, tmp_path / "out", DERIVATION)
    written = read_all(tmp_path / "out")
    n = normal(up.source.orientation)
    positions = np.array([[float(v) for v in ds.ImagePositionPatient] for ds in written])
    steps = np.diff(positions, axis=0)
    # Every step is half the acquired spacing, along the (oblique) normal.
    assert np.allclose(steps, 0.75 * n[None, :], atol=2e-4)
    locations = np.array([float(ds.SliceLocation) for ds in written])
    assert np.allclose(np.diff(locations), 0.75, atol=2e-4)
    assert np.allclose(locations - positions @ n, locations[0] - positions[0] @ n, atol=2e-4)
    for ds in written:
        assert float(ds.SpacingBetweenSlices) == pytest.approx(0.75, abs=1e-4)
        assert float(ds.SliceThickness) == pytest.approx(1.5)
        assert [float(v) for v in ds.ImageOrientationPatient] == pytest.approx(
            list(up.source.orientation)
        )
    back = load_series(tmp_path / "out")
    assert back.n_slices == 9
    assert back.slice_spacing == pytest.approx(0.75, abs=1e-3)
    assert np.allclose(back.positions, up.positions, atol=2e-4)


def test_std_series_is_separate_and_non_negative(series: Path, tmp_path: Path) -> None:
    up = upsampled(series, with_std=True)
    assert up.std is not None
    write_dicom_series(up, tmp_path / "img", DERIVATION)
    write_dicom_series(up, tmp_path / "std", DERIVATION, kind="std")
    img, std = read_all(tmp_path / "img"), read_all(tmp_path / "std")
    assert img[0].SeriesInstanceUID != std[0].SeriesInstanceUID
    assert "uncertainty" in std[0].SeriesDescription
    # A typed derived image: real values through the RealWorldValueMappingSequence only.
    values = []
    for ds in std:
        assert list(ds.ImageType) == ["DERIVED", "SECONDARY", "OTHER"]
        assert "RescaleSlope" not in ds
        rwvm = ds.RealWorldValueMappingSequence[0]
        assert rwvm.MeasurementUnitsCodeSequence[0].CodingSchemeDesignator == "UCUM"
        assert "standard deviation" in rwvm.LUTExplanation
        values.append(
            ds.pixel_array * float(rwvm.RealWorldValueSlope) + float(rwvm.RealWorldValueIntercept)
        )
    back = np.stack(values)
    assert back.min() >= 0
    assert np.allclose(back[0::2], 0)
    assert np.allclose(back, up.std, atol=float(up.std.max()) / 65535 + 1e-4)
    assert all(SYNTHESIZED_COMMENT in ds.ImageComments for ds in std[1::2])


def test_force_replaces_only_a_folder_slicelib_wrote(series: Path, tmp_path: Path) -> None:
    up = upsampled(series)
    out = tmp_path / "out"
    out.mkdir()
    (out / "keep.txt").write_text("x")
    with pytest.raises(SlicelibError, match="already exists"):
        write_dicom_series(up, out, DERIVATION)
    with pytest.raises(SlicelibError, match="not written by slicelib"):
        write_dicom_series(up, out, DERIVATION, force=True)
    assert sorted(p.name for p in out.iterdir()) == ["keep.txt"]
    (out / OUTPUT_MARKER).write_text("{}")
    write_dicom_series(up, out, DERIVATION, force=True)
    assert not (out / "keep.txt").exists()
    assert len(list(out.iterdir())) == 9  # the series only: no marker among its files
    assert [p.name for p in tmp_path.iterdir() if p.name.startswith(".")] == []


def test_refuses_to_write_into_the_input(series: Path) -> None:
    up = upsampled(series)
    for target in (series, series / "x2", series.parent):
        with pytest.raises(SlicelibError, match="input"):
            write_dicom_series(up, target, DERIVATION, force=True)
    assert len(list(series.iterdir())) == 5


def test_failed_write_leaves_nothing_behind(tmp_path: Path) -> None:
    out = tmp_path / "out"
    with pytest.raises(RuntimeError), atomic_directory(out) as tmp:
        (tmp / "partial.dcm").write_bytes(b"x")
        raise RuntimeError("interrupted")
    assert list(tmp_path.iterdir()) == []


def _dciodvfy(path: Path) -> list[str]:
    """dciodvfy's error and warning lines for one file."""
    tool = shutil.which("dciodvfy")
    if tool is None:
        pytest.fail(
            f"dciodvfy not found: install the Debian package {DCIODVFY_PACKAGE} "
            f"(apt-get install -y {DCIODVFY_PACKAGE})"
        )
    proc = subprocess.run([tool, str(path)], capture_output=True, text=True, check=False)
    lines = (proc.stdout + proc.stderr).splitlines()
    return [line for line in lines if line.startswith(("Error", "Warning"))]


def test_output_passes_an_independent_iod_validator(series: Path, tmp_path: Path) -> None:
    up = upsampled(series, with_std=True)
    write_dicom_series(up, tmp_path / "img", DERIVATION)
    write_dicom_series(up, tmp_path / "std", DERIVATION, kind="std")
    # The input is valid; so must be every output instance, acquired and synthesized.
    assert _dciodvfy(up.source.files[0]) == []
    for path in sorted((tmp_path / "img").iterdir())[:2]:
        assert _dciodvfy(path) == [], path
    # So must the std map, its real values in a RealWorldValueMappingSequence (no rescale).
    for path in sorted((tmp_path / "std").iterdir())[:2]:
        assert _dciodvfy(path) == [], path


ACQUISITION_VALUES = {
    "AcquisitionDate": "20200101",
    "AcquisitionTime": "120102.500000",
    "AcquisitionDateTime": "20200101120102.5",
    "AcquisitionNumber": 3,
    "ImagesInAcquisition": 5,
}


def test_computed_slices_carry_no_acquisition_they_did_not_have(tmp_path: Path) -> None:
    folder = tmp_path / "in"
    for path in write_test_series(folder):
        ds = pydicom.dcmread(path)
        for keyword, value in ACQUISITION_VALUES.items():
            setattr(ds, keyword, value)
        ds.ScanOptions, ds.TriggerTime = "CG", "250"  # cardiac gating: TriggerTime required
        ds.save_as(path)
    up = upsampled(folder, with_std=True)
    write_dicom_series(up, tmp_path / "img", DERIVATION)
    write_dicom_series(up, tmp_path / "std", DERIVATION, kind="std")
    image, std = read_all(tmp_path / "img"), read_all(tmp_path / "std")
    for j, ds in enumerate(image):
        if j % 2 == 0:  # acquired: its own acquisition, as the scanner wrote it
            assert {k: ds.get(k) for k in ACQUISITION_VALUES} == ACQUISITION_VALUES
            assert ds.TriggerTime == "250"
        else:
            assert not any(k in ds for k in ACQUISITION_ATTRIBUTES), j
            assert "TriggerTime" in ds and ds.TriggerTime in (None, "")  # Type 2C: empty
    for ds in std:  # a computed map: acquired nowhere
        assert not any(k in ds for k in ACQUISITION_ATTRIBUTES)
        derivation = [(c.CodeValue, c.CodingSchemeDesignator) for c in ds.DerivationCodeSequence]
        assert derivation == [("113085", "DCM"), ("113061", "DCM")]  # + Standard Deviation
    assert _dciodvfy(up.source.files[0]) == []
    for path in (sorted((tmp_path / "img").iterdir())[1], sorted((tmp_path / "std").iterdir())[1]):
        assert _dciodvfy(path) == [], path


def test_geometry_is_written_without_float_noise(tmp_path: Path) -> None:
    # Positions written with 10 decimals, 3.6000000433 mm apart: the spacing estimated
    # from them halves to 1.80000002165, which float arithmetic would write out in full.
    folder = tmp_path / "in"
    write_test_series(folder, gaps=[3.6000000433] * 4, position_decimals=10)
    up = upsampled(folder)
    assert repr(up.slice_spacing) != "1.8"  # the noise is there to be hidden
    write_dicom_series(up, tmp_path / "out", DERIVATION)
    written = read_all(tmp_path / "out")
    source = sorted((pydicom.dcmread(f) for f in up.source.files), key=lambda d: d.SliceLocation)
    if float(written[0].SliceLocation) != float(source[0].SliceLocation):
        source.reverse()
    for j, ds in enumerate(written):
        assert ds["SpacingBetweenSlices"].repval.strip("'") == "1.8"
        if j % 2 == 0:  # acquired: the values as the source wrote them
            src = source[j // 2]
            assert list(ds.ImagePositionPatient) == list(src.ImagePositionPatient)
            assert ds.SliceLocation == src.SliceLocation
        else:
            texts = [str(v.original_string) for v in ds.ImagePositionPatient]
            texts.append(str(ds.SliceLocation.original_string))
            assert all(len(t.partition(".")[2]) <= MM_DECIMALS for t in texts), texts
