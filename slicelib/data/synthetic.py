"""The synthetic demo cohort: T2 axial prostate MRI written as DICOM in the TCIA layout.

:func:`write_demo_cohort` images each patient of :mod:`slicelib.data.phantom` as
a Siemens 3 T T2-weighted axial series (``t2_spc_rst_axial obl_Prostate``: 1.5 mm
slices at 1.5 mm spacing, 0.5-0.7 mm pixels at the 320 matrix) and writes it as
the NBIA Data Retriever lays out a TCIA download::

    OUT/metadata.csv
    OUT/Prostate-MRI-US-Biopsy/<SubjectID>/<MM-DD-YYYY>-NA-MRI PROSTATE-<5 digits>/
        <SeriesNumber>.000000-<SeriesDescription>-<5 digits>/1-NN.dcm

Subject IDs are ``Synthetic-Prostate-0001`` and so on. Everything is a function
of ``CohortConfig.seed``: pixel data, UIDs, dates and names (nothing comes from
the clock), so the same seed writes the same bytes. Headers are those of a real
acquisition (12 bits stored in 16, explicit VR little endian, MR Image Storage):
ImageOrientationPatient is mildly oblique for some patients and
ImagePositionPatient follows the slice normal; some series number their slices
from the top, some have file names out of position order, one in six has
InstanceNumbers out of position order, and a third carry RescaleSlope /
RescaleIntercept.

Distractors (``CohortConfig.distractors``): series the scan must reject, spread
over the patients, each failing exactly one criterion of
:class:`~slicelib.config.ScanConfig` (the ``criterion`` the scan reports is in
:data:`DISTRACTORS`, keyed by SeriesDescription):

- ``t2_spc_sag_Prostate``: a sagittal T2 (ImageOrientationPatient 90 degrees
  from axial) -> ``orientation``;
- ``ep2d_diff_b50_400_800_tra_TRACEW`` and ``..._ADC``: diffusion and its ADC
  map (not T2-weighted: "diff") -> ``sequence``;
- ``localizer``: a three-plane scout -> ``sequence``;
- ``t2_tse_tra_Prostate_1.5T``: a T2 axial from an earlier study on a 1.5 T
  Siemens Avanto -> ``field_strength``;
- ``Ax T2 FSE``: a T2 axial from an earlier study on a GE 3 T system ->
  ``manufacturer``;
- ``t2_tse_tra_3mm``: 3 mm slices -> ``thickness``;
- ``t2_tse_tra_apex``: 12 slices (fewer than 20) -> ``slices``;
- ``t2_tse_tra_Prostate``: a passing T2 axial with one file cut short in its
  pixel data -> ``truncated``.

Distractors are 64x64 images of the same patient (the sagittal series and the
scout are cut from a 1.5 mm cube), so they cost little. Non-DICOM files are
dropped too: ``README.txt`` in the collection folder and ``Thumbs.db`` in the
first patient's T2 series folder.

:func:`cohort_difficulty` measures the difficulty the cohort is tuned to: linear
interpolation (mean of the two neighbours) scored with scikit-image PSNR and
SSIM (defaults, ``data_range=1``) on prepared volumes. The original's test set
gave 27.31 dB / 0.838 at k=1; the demo preset's cohort prepared at 256 gives
about 27.3 dB / 0.84 at k=1 and SSIM 0.58 at k=2 (``python -m benchmarks
synthetic`` prints the figures).
"""

from __future__ import annotations

import csv
import datetime as dt
import logging
import math
import re
from collections.abc import Iterable, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
from pydicom.dataset import Dataset, FileMetaDataset
from pydicom.uid import UID, ExplicitVRLittleEndian, MRImageStorage, generate_uid
from skimage.metrics import peak_signal_noise_ratio, structural_similarity
from tqdm import tqdm

from slicelib import __version__
from slicelib.config import CohortConfig
from slicelib.data.phantom import Acquisition, Subject, acquire, sample_subject, subject_rngs
from slicelib.errors import SlicelibError

log = logging.getLogger(__name__)

COLLECTION = "Prostate-MRI-US-Biopsy"
T2_DESCRIPTION = "t2_spc_rst_axial obl_Prostate"
STUDY_DESCRIPTION = "MRI PROSTATE"
SLICE_MM = 1.5  # thickness and spacing of the T2 axial series
MAX_STORED = 4095  # 12 bits stored in 16 allocated, as Siemens writes MR images

# SeriesDescription of each distractor -> the scan criterion that rejects it.
DISTRACTORS: dict[str, str] = {
    "t2_spc_sag_Prostate": "orientation",
    "ep2d_diff_b50_400_800_tra_TRACEW": "sequence",
    "ep2d_diff_b50_400_800_tra_ADC": "sequence",
    "localizer": "sequence",
    "t2_tse_tra_Prostate_1.5T": "field_strength",
    "Ax T2 FSE": "manufacturer",
    "t2_tse_tra_3mm": "thickness",
    "t2_tse_tra_apex": "slices",
    "t2_tse_tra_Prostate": "truncated",
}
NON_DICOM_FILES: tuple[str, ...] = ("README.txt", "Thumbs.db")
METADATA_COLUMNS: tuple[str, ...] = (
    "Series UID",
    "Collection",
    "3rd Party Analysis",
    "Data Description URI",
    "Subject ID",
    "Study UID",
    "Study Description",
    "Study Date",
    "Series Description",
    "Manufacturer",
    "Modality",
    "SOP Class Name",
    "SOP Class UID",
    "Number of Images",
    "File Size",
    "File Location",
    "Download Timestamp",
)


@dataclass(frozen=True)
class Scanner:
    manufacturer: str
    model: str
    field_strength: float
    software: str
    frequency_mhz: float


SIEMENS_3T: tuple[Scanner, ...] = (
    Scanner("SIEMENS", "Skyra", 3.0, "syngo MR D13", 123.2),
    Scanner("SIEMENS", "Verio", 3.0, "syngo MR B17", 123.2),
    Scanner("SIEMENS", "TrioTim", 2.89362, "syngo MR B17", 123.2),
)
SIEMENS_15T = Scanner("SIEMENS", "Avanto", 1.5, "syngo MR B17", 63.6)
GE_3T = Scanner("GE MEDICAL SYSTEMS", "DISCOVERY MR750", 3.0, "DV24.0_R01", 127.7)


@dataclass
class DicomStudy:
    """One imaging visit of a patient (one StudyInstanceUID, one study folder)."""

    patient_id: str
    patient_age: int
    uid: str
    frame_uid: str
    date: dt.date
    time: str
    scanner: Scanner
    digits: int  # the 5 digits that end the TCIA study folder name

    @property
    def folder(self) -> str:
        return f"{self.date:%m-%d-%Y}-NA-{STUDY_DESCRIPTION}-{self.digits:05d}"


@dataclass
class Series:
    """One series to write. ``pixels`` (S, H, W) relative signal >= 0, slice s at
    ``positions[s]`` with ``orientations[s]``; files are written in ``file_order``
    (file f holds slice ``file_order[f]``)."""

    description: str
    number: int
    pixels: np.ndarray
    orientations: np.ndarray  # (S, 6)
    positions: np.ndarray  # (S, 3) mm
    pixel_spacing: tuple[float, float]
    thickness: float
    spacing: float | None
    instance_numbers: np.ndarray  # (S,) int
    file_order: np.ndarray  # (S,) int
    gain: float
    digits: int
    rescale: tuple[float, float] | None = None  # (slope, intercept)
    truncate_file: int | None = None  # index of a file cut short in its pixel data
    tags: dict[str, Any] = field(default_factory=dict)


@dataclass(frozen=True)
class WrittenSeries:
    """What :func:`write_series` wrote (one metadata.csv row)."""

    study: DicomStudy
    description: str
    uid: str
    folder: Path
    n_files: int
    n_bytes: int


def subject_id(index: int) -> str:
    """Subject ID of patient ``index`` (0-based)."""
    return f"Synthetic-Prostate-{index + 1:04d}"


def _uid(seed: int, *parts: object) -> UID:
    """A DICOM UID derived from the seed and ``parts`` only (deterministic)."""
    return generate_uid(entropy_srcs=["slicelib-demo", str(seed), *map(str, parts)])


def _folder_text(description: str) -> str:
    """A SeriesDescription as the NBIA retriever puts it in a folder name."""
    return re.sub(r"[^A-Za-z0-9 \-]", "", description).strip()[:64] or "NA"


# --------------------------------------------------------------------------- geometry


def oblique_axial(tilt_deg: float) -> np.ndarray:
    """ImageOrientationPatient (6,) of an axial plane tilted about the left-right axis."""
    t = math.radians(tilt_deg)
    return np.array([1.0, 0.0, 0.0, 0.0, math.cos(t), -math.sin(t)])


def slice_normal(orientation: np.ndarray) -> np.ndarray:
    return np.cross(orientation[:3], orientation[3:6])


def stack_positions(
    orientation: np.ndarray,
    centre: np.ndarray,
    shape: tuple[int, int, int],
    pixel_spacing: float,
    spacing: float,
) -> np.ndarray:
    """ImagePositionPatient (S, 3) of a stack of ``shape`` (S, rows, cols) centred on ``centre``.

    Slice s lies at ``(s - (S-1)/2) * spacing`` along the normal; the position is
    that of the first pixel (row 0, column 0).
    """
    n_slices, rows, cols = shape
    row_dir, col_dir = orientation[:3], orientation[3:6]
    normal = slice_normal(orientation)
    corner = (
        centre - (cols - 1) / 2 * pixel_spacing * row_dir - (rows - 1) / 2 * pixel_spacing * col_dir
    )
    steps = (np.arange(n_slices) - (n_slices - 1) / 2) * spacing
    return corner[None, :] + steps[:, None] * normal[None, :]


# --------------------------------------------------------------------------- DICOM


def _stored(series: Series) -> tuple[np.ndarray, float, float]:
    """Pixel data as uint16 and the (slope, intercept) that map it back."""
    slope, intercept = series.rescale or (1.0, 0.0)
    raw = series.pixels * np.float32(series.gain)
    stored = np.rint((raw - np.float32(intercept)) / np.float32(slope))
    return np.clip(stored, 0, MAX_STORED).astype(np.uint16), slope, intercept


def _series_dataset(
    study: DicomStudy, series: Series, series_uid: str, shape: tuple[int, int]
) -> Dataset:
    """The elements every file of ``series`` shares (per-slice ones: :func:`_set_slice`)."""
    meta = FileMetaDataset()
    meta.MediaStorageSOPClassUID = MRImageStorage
    meta.TransferSyntaxUID = ExplicitVRLittleEndian
    meta.ImplementationVersionName = f"SLICELIB_{__version__}"[:16]

    ds = Dataset()
    ds.file_meta = meta
    ds.SpecificCharacterSet = "ISO_IR 100"
    ds.ImageType = ["ORIGINAL", "PRIMARY", "M", "NORM", "DIS2D"]
    ds.SOPClassUID = MRImageStorage
    date = f"{study.date:%Y%m%d}"
    ds.StudyDate = ds.SeriesDate = ds.AcquisitionDate = ds.ContentDate = date
    ds.StudyTime = study.time
    ds.SeriesTime = ds.AcquisitionTime = ds.ContentTime = study.time
    ds.AccessionNumber = ""
    ds.Modality = "MR"
    ds.Manufacturer = study.scanner.manufacturer
    ds.InstitutionName = "slicelib synthetic phantom"
    ds.ReferringPhysicianName = ""
    ds.StudyDescription = STUDY_DESCRIPTION
    ds.SeriesDescription = series.description
    ds.ManufacturerModelName = study.scanner.model
    ds.PatientName = study.patient_id
    ds.PatientID = study.patient_id
    ds.PatientBirthDate = ""
    ds.PatientSex = "M"
    ds.PatientAge = f"{study.patient_age:03d}Y"
    ds.PatientIdentityRemoved = "YES"
    ds.BodyPartExamined = "PROSTATE"
    ds.ScanningSequence = "SE"
    ds.SequenceVariant = ["SK", "SP", "OSP"]
    ds.ScanOptions = ""
    ds.MRAcquisitionType = "3D" if "spc" in series.description else "2D"
    ds.SliceThickness = f"{series.thickness:g}"
    if series.spacing is not None:
        ds.SpacingBetweenSlices = f"{series.spacing:g}"
    ds.RepetitionTime = "2200"
    ds.EchoTime = "101"
    ds.NumberOfAverages = "2"
    ds.ImagingFrequency = f"{study.scanner.frequency_mhz:g}"
    ds.ImagedNucleus = "1H"
    ds.MagneticFieldStrength = f"{study.scanner.field_strength:g}"
    ds.EchoTrainLength = "70"
    ds.PixelBandwidth = "590"
    ds.SoftwareVersions = study.scanner.software
    ds.ProtocolName = series.description
    ds.FlipAngle = "150"
    ds.PatientPosition = "HFS"
    ds.InPlanePhaseEncodingDirection = "ROW"
    ds.StudyInstanceUID = study.uid
    ds.SeriesInstanceUID = series_uid
    ds.StudyID = "1"
    ds.SeriesNumber = series.number
    ds.AcquisitionNumber = 1
    ds.FrameOfReferenceUID = study.frame_uid
    ds.PositionReferenceIndicator = ""
    ds.SamplesPerPixel = 1
    ds.PhotometricInterpretation = "MONOCHROME2"
    ds.Rows, ds.Columns = shape
    ds.PixelSpacing = [f"{v:.6g}" for v in series.pixel_spacing]
    ds.BitsAllocated = 16
    ds.BitsStored = 12
    ds.HighBit = 11
    ds.PixelRepresentation = 0
    ds.WindowCenter = "600"
    ds.WindowWidth = "1200"
    if series.rescale is not None:
        ds.RescaleIntercept = f"{series.rescale[1]:g}"
        ds.RescaleSlope = f"{series.rescale[0]:g}"
        ds.RescaleType = "US"
    for keyword, value in series.tags.items():
        setattr(ds, keyword, value)
    return ds


def _set_slice(ds: Dataset, series: Series, s: int, sop_uid: UID, pixels: np.ndarray) -> None:
    """Set the per-slice elements of ``ds`` to slice ``s``."""
    ds.file_meta.MediaStorageSOPInstanceUID = sop_uid
    ds.SOPInstanceUID = sop_uid
    ds.InstanceNumber = int(series.instance_numbers[s])
    position, orientation = series.positions[s], series.orientations[s]
    ds.ImagePositionPatient = [f"{v:.6g}" for v in position]
    ds.ImageOrientationPatient = [f"{v:.8g}" for v in orientation]
    ds.SliceLocation = f"{float(position @ slice_normal(orientation)):.6g}"
    ds.PixelData = pixels.tobytes()


def write_series(study_dir: Path, study: DicomStudy, series: Series, seed: int) -> WrittenSeries:
    """Write ``series`` into its folder under ``study_dir``; returns what was written."""
    name = f"{series.number}.000000-{_folder_text(series.description)}-{series.digits:05d}"
    folder = study_dir / name
    folder.mkdir(parents=True)
    series_uid = _uid(seed, study.uid, "series", series.number)
    stored, _, _ = _stored(series)
    ds = _series_dataset(study, series, series_uid, (stored.shape[1], stored.shape[2]))
    n_bytes = 0
    for f, s in enumerate(series.file_order):
        _set_slice(ds, series, int(s), _uid(seed, series_uid, "instance", int(s)), stored[s])
        path = folder / f"1-{f + 1:02d}.dcm"
        ds.save_as(path, enforce_file_format=True)
        if series.truncate_file == f:
            # A download cut short: the header survives, half the pixel data does not.
            size = path.stat().st_size
            with open(path, "r+b") as fp:
                fp.truncate(size - stored[s].nbytes // 2)
        n_bytes += path.stat().st_size
    return WrittenSeries(study, series.description, series_uid, folder, len(stored), n_bytes)


# --------------------------------------------------------------------------- patients


def _digits(rng: np.random.Generator) -> int:
    return int(rng.integers(10000, 100000))


def _ordering(rng: np.random.Generator, n: int) -> tuple[np.ndarray, np.ndarray]:
    """InstanceNumbers and file order of a stack of n slices (ascending along the normal).

    Most series number their slices along the normal, upward or downward; one in
    six numbers them out of position order. File names follow InstanceNumber for
    three in four series, else they are shuffled.
    """
    draw = rng.random(3)
    if draw[0] < 1 / 6:
        instance = rng.permutation(n) + 1
    elif draw[1] < 0.5:
        instance = np.arange(1, n + 1)
    else:
        instance = np.arange(n, 0, -1)
    by_instance = np.argsort(instance)
    file_order = rng.permutation(n) if draw[2] < 0.25 else by_instance
    return instance, file_order


def _simple_series(
    rng: np.random.Generator,
    description: str,
    number: int,
    pixels: np.ndarray,
    orientation: np.ndarray,
    centre: np.ndarray,
    pixel_mm: float,
    thickness: float,
    spacing: float,
    gain: float,
) -> Series:
    """A series with one orientation, slices in position order, files in instance order."""
    n = len(pixels)
    return Series(
        description=description,
        number=number,
        pixels=pixels,
        orientations=np.repeat(orientation[None], n, axis=0),
        positions=stack_positions(orientation, centre, pixels.shape, pixel_mm, spacing),
        pixel_spacing=(pixel_mm, pixel_mm),
        thickness=thickness,
        spacing=spacing,
        instance_numbers=np.arange(1, n + 1),
        file_order=np.arange(n),
        gain=gain,
        digits=_digits(rng),
    )


def _small(
    subject: Subject, rng: np.random.Generator, n_slices: int, spacing: float, matrix: int = 64
) -> tuple[np.ndarray, float]:
    """A cheap low-resolution axial volume of ``subject`` and its pixel size (mm)."""
    acq = Acquisition(
        matrix=matrix,
        n_slices=n_slices,
        fov_mm=subject.fov_mm,
        spacing_mm=spacing,
        thickness_mm=spacing,
        z_centre=subject.z_centre,
    )
    return acquire(subject, acq, rng), acq.pixel_mm


def _cube(subject: Subject, rng: np.random.Generator, n: int = 64) -> np.ndarray:
    """An isotropic 1.5 mm cube (z, y, x) around the prostate, for sagittal and scout images."""
    acq = Acquisition(
        matrix=n, n_slices=n, fov_mm=n * SLICE_MM, z_centre=subject.z_centre, profile_samples=2
    )
    return acquire(subject, acq, rng)


@dataclass
class _Patient:
    """Everything drawn for one patient before writing."""

    index: int
    subject: Subject
    study: DicomStudy
    t2: Series
    centre: np.ndarray
    orientation: np.ndarray
    gain: float


def _patient(cfg: CohortConfig, index: int) -> tuple[_Patient, np.random.Generator]:
    """Draw and image patient ``index``; returns it and the generator for its extra series."""
    anatomy_rng, imaging_rng, header_rng, extra_rng = subject_rngs(cfg.seed, index)
    subject = sample_subject(anatomy_rng, cfg.fov_mm)
    acq = Acquisition(
        matrix=cfg.matrix,
        n_slices=cfg.slices,
        fov_mm=subject.fov_mm,
        spacing_mm=SLICE_MM,
        thickness_mm=SLICE_MM,
        z_centre=subject.z_centre,
    )
    pixels = acquire(subject, acq, imaging_rng)

    h = header_rng
    pid = subject_id(index)
    date = dt.date(2008, 1, 1) + dt.timedelta(days=int(h.integers(0, 3650)))
    seconds = int(h.integers(7 * 3600, 19 * 3600))
    study_time = f"{seconds // 3600:02d}{seconds // 60 % 60:02d}{seconds % 60:02d}.000000"
    scanner = SIEMENS_3T[int(h.integers(len(SIEMENS_3T)))]
    study_uid = _uid(cfg.seed, pid, "study", 0)
    study = DicomStudy(
        patient_id=pid,
        patient_age=int(h.integers(45, 80)),
        uid=study_uid,
        frame_uid=_uid(cfg.seed, study_uid, "frame"),
        date=date,
        time=study_time,
        scanner=scanner,
        digits=_digits(h),
    )
    tilt = float(h.uniform(4, 18)) * float(h.choice([-1.0, 1.0])) if h.random() < 0.5 else 0.0
    orientation = oblique_axial(tilt)
    centre = np.array([h.uniform(-15, 15), h.uniform(-40, 0), h.uniform(-80, -20)])
    instance, file_order = _ordering(h, cfg.slices)
    rescale = None
    if h.random() < 1 / 3:
        rescale = (round(float(h.uniform(0.5, 2.5)), 4), float(h.choice([0.0, -20.0])))
    gain = float(h.uniform(700, 1400))
    t2 = Series(
        description=T2_DESCRIPTION,
        number=int(h.integers(3, 8)),
        pixels=pixels,
        orientations=np.repeat(orientation[None], cfg.slices, axis=0),
        positions=stack_positions(orientation, centre, pixels.shape, acq.pixel_mm, SLICE_MM),
        pixel_spacing=(acq.pixel_mm, acq.pixel_mm),
        thickness=SLICE_MM,
        spacing=SLICE_MM,
        instance_numbers=instance,
        file_order=file_order,
        gain=gain,
        digits=_digits(h),
        rescale=rescale,
        tags={"SequenceName": "*spcR_282ns", "AcquisitionMatrix": [0, cfg.matrix, cfg.matrix, 0]},
    )
    return _Patient(index, subject, study, t2, centre, orientation, gain), extra_rng


def _other_study(
    patient: _Patient, rng: np.random.Generator, scanner: Scanner, seed: int
) -> DicomStudy:
    """An earlier study of the same patient on another scanner."""
    first = patient.study
    uid = _uid(seed, first.patient_id, "study", scanner.model)
    return DicomStudy(
        patient_id=first.patient_id,
        patient_age=first.patient_age - 1,
        uid=uid,
        frame_uid=_uid(seed, uid, "frame"),
        date=first.date - dt.timedelta(days=int(rng.integers(200, 900))),
        time=first.time,
        scanner=scanner,
        digits=_digits(rng),
    )


def _distractor(
    name: str, patient: _Patient, rng: np.random.Generator, seed: int
) -> tuple[DicomStudy, Series]:
    """The distractor series ``name`` (a key of :data:`DISTRACTORS`) for ``patient``."""
    sub, centre, axial, gain = patient.subject, patient.centre, patient.orientation, patient.gain
    number = patient.t2.number + 1 + list(DISTRACTORS).index(name)
    study = patient.study
    if name == "t2_spc_sag_Prostate":
        cube = _cube(sub, rng)  # (z, y, x)
        cols = slice(cube.shape[2] // 2 - 12, cube.shape[2] // 2 + 12)
        # Rows run head to foot, columns anterior to posterior, slices along x.
        pixels = np.ascontiguousarray(cube[::-1, :, cols].transpose(2, 0, 1))
        sag = np.array([0.0, 1.0, 0.0, 0.0, 0.0, -1.0])
        series = _simple_series(
            rng, name, number, pixels, sag, centre, SLICE_MM, SLICE_MM, SLICE_MM, gain
        )
        # Slice s is column x_s: ascending x, i.e. descending along the normal (-1, 0, 0).
        series.positions = series.positions[::-1].copy()
        return study, series
    if name == "localizer":
        cube = _cube(sub, rng)
        mid = cube.shape[0] // 2
        planes = np.stack([cube[mid], cube[::-1, :, mid], cube[::-1, mid, :]])
        iops = np.array(
            [[1.0, 0, 0, 0, 1, 0], [0, 1.0, 0, 0, 0, -1], [1.0, 0, 0, 0, 0, -1]], dtype=np.float64
        )
        series = _simple_series(rng, name, 1, planes, iops[0], centre, SLICE_MM, 5.0, 5.0, gain)
        series.orientations = iops
        series.positions = np.stack(
            [stack_positions(iop, centre, (1, *planes.shape[1:]), SLICE_MM, 5.0)[0] for iop in iops]
        )
        series.spacing = None
        return study, series
    if name.startswith("ep2d_diff"):
        t2, px = _small(sub, rng, 24, SLICE_MM)
        t2 = t2 / max(float(np.percentile(t2, 99.5)), 1e-6)
        adc = 0.6 + 2.4 * np.clip(t2, 0, 1.2)  # 1e-3 mm^2/s: free water high, gland low
        if name.endswith("ADC"):
            pixels = adc * (t2 > 0.05) / 3.5
        else:
            pixels = np.exp(-0.8 * adc) * np.sqrt(np.clip(t2, 0, None)) * 2.0
        series = _simple_series(
            rng,
            name,
            number,
            pixels.astype(np.float32),
            axial,
            centre,
            px,
            SLICE_MM,
            SLICE_MM,
            gain,
        )
        series.tags["ImageType"] = [
            "DERIVED",
            "PRIMARY",
            "DIFFUSION",
            "ADC" if "ADC" in name else "TRACEW",
        ]
        return study, series
    if name in ("t2_tse_tra_Prostate_1.5T", "Ax T2 FSE"):
        scanner = SIEMENS_15T if name.endswith("1.5T") else GE_3T
        study = _other_study(patient, rng, scanner, seed)
        pixels, px = _small(sub, rng, 24, SLICE_MM)
        series = _simple_series(
            rng, name, 4, pixels, oblique_axial(0.0), centre, px, SLICE_MM, SLICE_MM, gain
        )
        if scanner is GE_3T:
            series.tags["ImageType"] = ["ORIGINAL", "PRIMARY", "OTHER"]
        return study, series
    if name == "t2_tse_tra_3mm":
        pixels, px = _small(sub, rng, 20, 3.0)
        return study, _simple_series(rng, name, number, pixels, axial, centre, px, 3.0, 3.0, gain)
    if name == "t2_tse_tra_apex":
        pixels, px = _small(sub, rng, 12, SLICE_MM)
        return study, _simple_series(
            rng, name, number, pixels, axial, centre, px, SLICE_MM, SLICE_MM, gain
        )
    if name == "t2_tse_tra_Prostate":
        pixels, px = _small(sub, rng, 24, SLICE_MM)
        series = _simple_series(
            rng, name, number, pixels, axial, centre, px, SLICE_MM, SLICE_MM, gain
        )
        series.truncate_file = int(rng.integers(len(pixels)))
        return study, series
    raise ValueError(f"unknown distractor {name!r}")


def _write_patient(
    root: Path, cfg: CohortConfig, index: int, distractors: Sequence[str]
) -> list[WrittenSeries]:
    """Image and write patient ``index`` with the named distractor series."""
    patient, extra_rng = _patient(cfg, index)
    patient_dir = root / COLLECTION / patient.study.patient_id
    written = [
        write_series(patient_dir / patient.study.folder, patient.study, patient.t2, cfg.seed)
    ]
    for name in distractors:
        study, series = _distractor(name, patient, extra_rng, cfg.seed)
        written.append(write_series(patient_dir / study.folder, study, series, cfg.seed))
    return written


def _write_metadata(root: Path, written: Iterable[WrittenSeries]) -> None:
    with open(root / "metadata.csv", "w", newline="", encoding="utf-8") as fp:
        writer = csv.writer(fp)
        writer.writerow(METADATA_COLUMNS)
        for w in written:
            writer.writerow(
                [
                    w.uid,
                    COLLECTION,
                    "NO",
                    "",
                    w.study.patient_id,
                    w.study.uid,
                    STUDY_DESCRIPTION,
                    f"{w.study.date:%m-%d-%Y}",
                    w.description,
                    w.study.scanner.manufacturer,
                    "MR",
                    "MR Image Storage",
                    MRImageStorage,
                    w.n_files,
                    f"{w.n_bytes / 1e6:.2f} MB",
                    "./" + w.folder.relative_to(root).as_posix(),
                    "",
                ]
            )


def validate_cohort_config(cfg: CohortConfig) -> None:
    """Raise :class:`SlicelibError` naming the first invalid CohortConfig field."""
    if cfg.patients < 1:
        raise SlicelibError(f"patients must be >= 1 (got {cfg.patients})")
    if cfg.matrix < 16:
        raise SlicelibError(f"matrix must be >= 16 pixels (got {cfg.matrix})")
    if cfg.slices < 5:
        raise SlicelibError(f"slices must be >= 5 (got {cfg.slices})")
    lo, hi = cfg.fov_mm
    if not 0 < lo <= hi:
        raise SlicelibError(
            f"fov_mm must be an increasing pair of positive lengths (got {cfg.fov_mm})"
        )


def write_demo_cohort(out: Path, cfg: CohortConfig, *, progress: bool = False) -> list[Path]:
    """Write the synthetic cohort under ``out`` (created if missing).

    Returns the T2 axial series folders, one per patient, in patient order.
    Raises :class:`SlicelibError` if ``out`` already holds a cohort.
    """
    validate_cohort_config(cfg)
    out = Path(out)
    if (out / COLLECTION).exists() or (out / "metadata.csv").exists():
        raise SlicelibError(f"{out} already holds a cohort ({COLLECTION}/ or metadata.csv)")
    (out / COLLECTION).mkdir(parents=True)
    names = list(DISTRACTORS) if cfg.distractors else []
    per_patient: list[list[str]] = [[] for _ in range(cfg.patients)]
    for k, name in enumerate(names):
        per_patient[k % cfg.patients].append(name)
    written: list[WrittenSeries] = []
    t2_folders: list[Path] = []
    for index in tqdm(
        range(cfg.patients), desc="demo cohort", unit="patient", disable=not progress
    ):
        series = _write_patient(out, cfg, index, per_patient[index])
        t2_folders.append(series[0].folder)
        written.extend(series)
    (out / COLLECTION / "README.txt").write_text(
        "Synthetic T2 axial prostate MRI written by slicelib demo-data; not patient data.\n",
        encoding="utf-8",
    )
    (t2_folders[0] / "Thumbs.db").write_bytes(b"\xd0\xcf\x11\xe0\xa1\xb1\x1a\xe1" + bytes(504))
    _write_metadata(out, written)
    log.debug("wrote %d series under %s", len(written), out)
    return t2_folders


# --------------------------------------------------------------------------- calibration


def cohort_difficulty(
    volumes: Iterable[np.ndarray], ks: Sequence[int] = (1, 2)
) -> dict[str, float]:
    """Linear interpolation baseline on prepared volumes, the difficulty the cohort targets.

    ``volumes``: arrays (S, H, W) with values in [0, 1] (normalised and resized as
    the cache holds them). For each k, slice i is predicted as the mean of slices
    i-k and i+k (clipped to [0, 1]) and scored with scikit-image PSNR and SSIM
    (defaults: 7x7 uniform window; ``data_range=1``), per slice, on the slices
    where every k in ``ks`` is evaluable (max(ks) <= i <= S-1-max(ks)).
    Returns ``{"k1_psnr": dB, "k1_ssim": ..., ..., "slices": n}``: means over slices.
    """
    margin = max(ks)
    scores: dict[str, list[float]] = {f"k{k}_{m}": [] for k in ks for m in ("psnr", "ssim")}
    for vol in volumes:
        vol = np.asarray(vol, dtype=np.float64)
        for i in range(margin, vol.shape[0] - margin):
            target = vol[i]
            for k in ks:
                pred = np.clip((vol[i - k] + vol[i + k]) / 2, 0.0, 1.0)
                scores[f"k{k}_psnr"].append(peak_signal_noise_ratio(target, pred, data_range=1.0))
                scores[f"k{k}_ssim"].append(structural_similarity(target, pred, data_range=1.0))
    n = len(scores[f"k{ks[0]}_psnr"])
    if n == 0:
        raise SlicelibError(f"no slice is evaluable at k={margin} (volumes too short)")
    result = {key: float(np.mean(values)) for key, values in scores.items()}
    result["slices"] = float(n)
    return result
