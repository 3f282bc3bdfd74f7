"""Write an upsampled volume as a new, clearly labelled DERIVED DICOM series.

Every output instance is built from the source series' own datasets, so patient,
study, frame of reference and acquisition attributes carry over. What changes:

- new SeriesInstanceUID (one per output series) and SOPInstanceUID (one per file),
  derived from :attr:`Derivation.identity` and the source instances when it is set, so
  that the same input upsampled the same way gets the same UIDs (a PACS that already
  holds the series recognises it), else random;
  InstanceNumber 1..2n-1 along the slice normal; SeriesDescription marked; its own
  SeriesDate/SeriesTime (when it was written); a ContributingEquipmentSequence item
  naming slicelib, its version and the code's git commit as Processing Equipment
  (DCM 109102);
- ImageType ``DERIVED\\SECONDARY`` (later values kept), a DerivationCodeSequence
  (DCM 113085 "Spatial resampling"), DerivationDescription naming the method, the
  code's version and commit and the model by its checkpoint's SHA-256 (never a local
  path), SourceImageSequence referencing the acquired instance(s) each slice comes
  from (itself for an acquired slice, both neighbours for a synthesized one),
  ImageComments saying which slices were synthesized (supplement 6.2: no reader may
  take them for acquired data);
- a synthesized slice (and every slice of the std series) carries no attribute of an
  acquisition it did not have: the General Acquisition module's (AcquisitionDate,
  AcquisitionTime, AcquisitionDateTime, AcquisitionNumber, ...) are removed and
  TriggerTime is empty (:data:`ACQUISITION_ATTRIBUTES`);
- geometry of the new grid: ImagePositionPatient, SliceLocation,
  SpacingBetweenSlices (half the acquired spacing), and the validated
  ImageOrientationPatient and PixelSpacing of the volume. SliceThickness keeps the
  acquired value: halving the spacing does not make the acquired slab thinner.
  Acquired slices keep their positions as the source wrote them; computed lengths
  are written to 1e-6 mm (:data:`MM_DECIMALS`), so that float arithmetic does not
  show in the header (``1.8``, not ``1.80000002167304``).

Every value copied from the sources has been validated first
(:mod:`slicelib.upsample.sources`): damaged optional elements are dropped with a
warning naming the file, required ones are repaired from the series or refused.

The uncertainty (std) series is a typed derived image, not a picture of the
patient: ImageType ``DERIVED\\SECONDARY\\OTHER``, ImageComments and
DerivationDescription saying what it is, unsigned 16-bit values without a
rescale (the MR IOD has none) and a RealWorldValueMappingSequence mapping them to
the standard deviation in the source's intensity units (one slope for the series).

Acquired slices keep their PixelData bytes, transfer syntax and rescale exactly.
Synthesized slices are stored uncompressed in the source's 16-bit encoding
(same RescaleSlope/Intercept), or, for a source that is not 16-bit, as unsigned
16-bit with a RescaleSlope/Intercept that spans their values. The series is
written to a temporary folder beside the output and renamed into place.
"""

from __future__ import annotations

import copy
import datetime as dt
import logging
from collections.abc import Iterable, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Literal

import numpy as np
import pydicom
from pydicom.dataelem import DataElement
from pydicom.dataset import Dataset
from pydicom.sequence import Sequence as DicomSequence
from pydicom.sr.codedict import codes
from pydicom.uid import UID, ExplicitVRLittleEndian, ImplicitVRLittleEndian, generate_uid
from pydicom.valuerep import format_number_as_ds

from slicelib import __version__
from slicelib.data.dicom import normal
from slicelib.data.headers import dataset_value
from slicelib.environment import code_label, code_version
from slicelib.errors import SlicelibError
from slicelib.io import atomic_directory
from slicelib.outputs import check_output
from slicelib.upsample.sources import read_sources
from slicelib.upsample.volume import Upsampled

log = logging.getLogger(__name__)

SYNTHESIZED_COMMENT = "SYNTHESIZED SLICE - not acquired"
ACQUIRED_COMMENT = "ACQUIRED SLICE"
STD_COMMENT = "UNCERTAINTY MAP - predicted standard deviation, not an image of the patient"
IMAGE_SUFFIX = " [x2 interpolated]"
STD_SUFFIX = " [x2 interpolated, uncertainty SD]"
SERIES_NUMBER_OFFSET = {"image": 1000, "std": 2000}
SOURCE_PURPOSE = ("121322", "DCM", "Source image for image processing operation")
# CID 7005 Contributing Equipment Purposes of Reference: equipment that made new
# instances from others by processing them (109103 "Modifying Equipment" is for
# equipment that changed attributes of existing instances).
PROCESSING_PURPOSE = (
    codes.DCM.ProcessingEquipment.value,
    codes.DCM.ProcessingEquipment.scheme_designator,
    codes.DCM.ProcessingEquipment.meaning,
)
# DerivationCodeSequence, CID 7203 Image Derivation: DCM 113085 "Spatial resampling".
# The series is the acquired volume resampled onto a through-plane grid twice as fine:
# new slice positions between the acquired ones, in the acquired plane. 113072
# "Multiplanar reformatting" re-slices a volume in another orientation and 113091
# "Spatially-related frames extracted from the volume" takes frames that exist: neither
# makes new positions. The std series adds DCM 113061 "Standard Deviation" (PS3.16
# Annex D): its values are the predicted standard deviation, not signal.
RESAMPLING = codes.DCM.SpatialResampling
STANDARD_DEVIATION = codes.DCM.StandardDeviation
# Attributes of one acquisition event, which a synthesized slice did not have: the
# General Acquisition module (PS3.3 C.7.10.1, every one Type 3 where the MR Image IOD
# repeats them in the General Image module) and the per-slice TriggerTime (Type 2C in
# the MR Image module, hence kept empty, not removed). The technique (sequence, TR, TE,
# field strength, ...) stays: it describes the acquired slices the new one comes from.
ACQUISITION_ATTRIBUTES: tuple[str, ...] = (
    "AcquisitionUID",
    "AcquisitionNumber",
    "AcquisitionDate",
    "AcquisitionTime",
    "AcquisitionDateTime",
    "AcquisitionDuration",
    "ImagesInAcquisition",
    "IrradiationEventUID",
)
EMPTIED_ACQUISITION_ATTRIBUTES: tuple[str, ...] = ("TriggerTime",)
# Computed lengths (mm: positions and locations of synthesized slices, the new spacing)
# are rounded to this many decimals, 1 nm: far below any scanner's precision, and
# enough to hide float arithmetic on the source's values.
MM_DECIMALS = 6
MANUFACTURER = "slicelib"
# MR signal has no physical unit: the std map is in the source's arbitrary units.
NO_UNITS = ("1", "UCUM", "no units")
STD_IMAGE_TYPE = ["DERIVED", "SECONDARY", "OTHER"]
STD_LEVELS = 65535  # the std map's largest value is stored as this
NATIVE_SYNTAXES = (ExplicitVRLittleEndian, ImplicitVRLittleEndian)

Kind = Literal["image", "std"]


@dataclass(frozen=True)
class Derivation:
    """What made the new slices, for DerivationDescription.

    ``method``: e.g. ``"unet (k=1)"``; ``checkpoint``: the model's name by content,
    :func:`slicelib.checkpoint.checkpoint_label` (a local path would leave the machine);
    ``detail``: anything else worth recording (epoch, sampler, uncertainty method);
    ``identity``: a digest of everything that decides the new pixels (the checkpoints'
    contents, the sampler, the software version; see
    :func:`slicelib.upsample.folder.derivation_identity`), from which, with the source
    instances, the new UIDs are derived; empty: random UIDs.
    """

    method: str
    checkpoint: str  # the model's name: the checkpoint's content hash, "sha256:..."
    detail: str = ""
    identity: str = ""

    def description(self, kind: Kind = "image") -> str:
        what = "predicted standard deviation of " if kind == "std" else ""
        text = (
            f"{what}x2 through-plane slice interpolation (slicelib {code_label()}): "
            f"a slice synthesized between each acquired pair by {self.method}, "
            f"checkpoint {self.checkpoint}"
        )
        if self.detail:
            text += f", {self.detail}"
        if kind == "image":
            text += "; acquired slices copied unchanged"
        return text[:1024]  # DerivationDescription is ST (at most 1024 characters)


def check_output_location(out: Path, inputs: Iterable[Path]) -> None:
    """Refuse an output inside (or equal to, or containing) any input folder or file."""
    out_r = out.expanduser().resolve()
    for item in inputs:
        inp = item.expanduser().resolve()
        if out_r == inp or inp in out_r.parents:
            raise SlicelibError(f"output {out} is inside the input {item}; choose another folder")
        if out_r in inp.parents:
            raise SlicelibError(f"output {out} contains the input {item}; choose another folder")


def check_new_output(out: Path, *, force: bool = False) -> None:
    """Refuse an existing ``out`` unless ``force`` and slicelib wrote it as an upsampled
    series (:func:`~slicelib.outputs.check_output`); make sure its parent can be created."""
    out = Path(out)
    check_output(out, "upsampled series", force=force)
    try:
        out.parent.mkdir(parents=True, exist_ok=True)
    except OSError as exc:
        raise SlicelibError(f"output {out}: cannot create ({exc.strerror})") from None


def _ds(value: float) -> str:
    return format_number_as_ds(float(value))


def _ds_mm(value: float) -> str:
    """A computed length in mm as DS, to :data:`MM_DECIMALS` decimals without trailing
    zeros (``1.8``, not ``1.80000002167304``)."""
    return format_number_as_ds(round(float(value), MM_DECIMALS) + 0.0)  # + 0.0: no "-0.0"


def slice_locations(sources: Sequence[Dataset], up: Upsampled) -> np.ndarray:
    """SliceLocation (mm) of every output slice, (2n-1,).

    When every source has SliceLocation, its (scanner-specific) linear relation to
    the position along the normal is fitted and kept, and acquired slices keep
    their value exactly; otherwise it is the position along the normal.
    """
    along = up.positions @ normal(up.source.orientation)
    values = [dataset_value(s, "SliceLocation", "number") for s in sources]
    if any(v.reason for v in values):
        return along
    known = np.asarray([float(v.value) for v in values], dtype=np.float64)
    slope, intercept = np.polyfit(along[0::2], known, 1)
    out = slope * along + intercept
    out[0::2] = known
    return out


def _code_item(code: tuple[str, str, str]) -> Dataset:
    item = Dataset()
    item.CodeValue, item.CodingSchemeDesignator, item.CodeMeaning = code
    return item


def _source_sequence(refs: Sequence[Dataset]) -> DicomSequence:
    items = []
    for ref in refs:
        item = Dataset()
        item.ReferencedSOPClassUID = ref.SOPClassUID
        item.ReferencedSOPInstanceUID = ref.SOPInstanceUID
        item.PurposeOfReferenceCodeSequence = DicomSequence([_code_item(SOURCE_PURPOSE)])
        items.append(item)
    return DicomSequence(items)


def _stored_range(bits_stored: int, signed: bool) -> tuple[int, int]:
    if signed:
        return -(2 ** (bits_stored - 1)), 2 ** (bits_stored - 1) - 1
    return 0, 2**bits_stored - 1


def _set_pixels(ds: Dataset, values: np.ndarray, std_slope: float | None = None) -> None:
    """Store float ``values`` (H, W, original units) as native 16-bit pixel data in ``ds``.

    Keeps the template's 16-bit encoding and rescale when it is 16-bit; otherwise
    unsigned 16-bit with a slope/intercept spanning ``values``. ``std_slope``: a std
    map, stored unsigned as ``values / std_slope`` without any rescale (its mapping
    to real values is the RealWorldValueMappingSequence).
    """
    if std_slope is not None:
        slope, intercept, bits, signed = std_slope, 0.0, 16, False
        for keyword in ("RescaleSlope", "RescaleIntercept", "RescaleType"):
            if keyword in ds:
                del ds[keyword]
    elif int(ds.get("BitsAllocated", 0)) == 16:
        slope = float(ds.get("RescaleSlope", 1.0) or 1.0)
        intercept = float(ds.get("RescaleIntercept", 0.0) or 0.0)
        bits = int(ds.get("BitsStored", 16))
        signed = int(ds.get("PixelRepresentation", 0)) == 1
    else:
        low, high = float(np.min(values)), float(np.max(values))
        intercept = low
        span = high - intercept
        slope = span / 65535.0 if span > 0 else 1.0
        bits, signed = 16, False
        ds.RescaleSlope, ds.RescaleIntercept = _ds(slope), _ds(intercept)
        if "RescaleType" not in ds and ds.get("Modality") not in ("CT", "PT"):
            ds.RescaleType = "US"
    lo, hi = _stored_range(bits, signed)
    stored = np.clip(np.rint((values.astype(np.float64) - intercept) / slope), lo, hi)
    ds.BitsAllocated, ds.BitsStored, ds.HighBit = 16, bits, bits - 1
    ds.PixelRepresentation = int(signed)
    ds.SamplesPerPixel = 1
    if ds.get("PhotometricInterpretation") not in ("MONOCHROME1", "MONOCHROME2"):
        ds.PhotometricInterpretation = "MONOCHROME2"
    ds.Rows, ds.Columns = values.shape
    for keyword in ("SmallestImagePixelValue", "LargestImagePixelValue", "PlanarConfiguration"):
        if keyword in ds:
            del ds[keyword]
    if ds.file_meta.TransferSyntaxUID not in NATIVE_SYNTAXES:
        ds.file_meta.TransferSyntaxUID = ExplicitVRLittleEndian
    dtype = np.dtype("<i2" if signed else "<u2")
    ds["PixelData"] = DataElement(0x7FE00010, "OW", stored.astype(dtype).tobytes())


@dataclass(frozen=True)
class _SeriesHeader:
    uid: UID
    deterministic: bool  # instance UIDs derived from the series UID
    number: int
    description: str
    derivation: str
    spacing: str
    date: str
    time: str
    orientation: list[str]
    pixel_spacing: list[str]


def derived_uid(*parts: str) -> UID:
    """A UID determined by ``parts`` (pydicom's root, then digits of their SHA-512)."""
    return generate_uid(entropy_srcs=["slicelib derived", *parts])


def _header(
    sources: Sequence[Dataset], up: Upsampled, deriv: Derivation, kind: Kind
) -> _SeriesHeader:
    first = sources[0]
    uid = (
        derived_uid(deriv.identity, kind, *(str(s.get("SOPInstanceUID", "")) for s in sources))
        if deriv.identity
        else generate_uid()
    )
    suffix = STD_SUFFIX if kind == "std" else IMAGE_SUFFIX
    number = dataset_value(first, "SeriesNumber", "int")
    description = dataset_value(first, "SeriesDescription", "text")
    now = dt.datetime.now()
    return _SeriesHeader(
        uid=uid,
        deterministic=bool(deriv.identity),
        number=(0 if number.reason else int(number.value)) + SERIES_NUMBER_OFFSET[kind],
        description=(("" if description.reason else str(description.value)) + suffix).strip()[:64],
        derivation=deriv.description(kind),
        spacing=_ds_mm(up.slice_spacing),
        date=now.strftime("%Y%m%d"),
        time=now.strftime("%H%M%S.%f"),
        orientation=[_ds(v) for v in up.source.orientation],
        pixel_spacing=[_ds(v) for v in up.source.pixel_spacing],
    )


def _contributing_equipment(ds: Dataset, head: _SeriesHeader) -> DicomSequence:
    """The source's ContributingEquipmentSequence (when readable) plus slicelib's item."""
    item = Dataset()
    item.Manufacturer = MANUFACTURER
    item.SoftwareVersions = _software_versions()
    item.PurposeOfReferenceCodeSequence = DicomSequence([_code_item(PROCESSING_PURPOSE)])
    item.ContributionDateTime = head.date + head.time
    item.ContributionDescription = "x2 through-plane slice interpolation"
    earlier = list(ds.get("ContributingEquipmentSequence", []))
    return DicomSequence([*earlier, item])


def _software_versions() -> str | list[str]:
    """SoftwareVersions (LO, 1-n): the release, and ``commit <sha>`` (``... modified``
    with uncommitted changes) when the code runs from a git checkout."""
    code = code_version()
    if code["commit"] is None:
        return __version__
    return [__version__, f"commit {code['commit']}" + (" modified" if code["dirty"] else "")]


def _derivation_codes(kind: Kind) -> DicomSequence:
    codes_ = [RESAMPLING] + ([STANDARD_DEVIATION] if kind == "std" else [])
    return DicomSequence([_code_item((c.value, c.scheme_designator, c.meaning)) for c in codes_])


def _remove_acquisition(ds: Dataset) -> None:
    """Drop the attributes of an acquisition ``ds`` did not have (a synthesized slice)."""
    for keyword in ACQUISITION_ATTRIBUTES:
        if keyword in ds:
            del ds[keyword]
    for keyword in EMPTIED_ACQUISITION_ATTRIBUTES:
        if keyword in ds:
            ds[keyword].value = None


def _real_world_values(slope: float) -> DicomSequence:
    """Stored value (0..65535) -> standard deviation in the source's units: ``slope * v``."""
    item = Dataset()
    item.LUTExplanation = "predicted standard deviation, source intensity units"
    item.LUTLabel = "STD"
    item.MeasurementUnitsCodeSequence = DicomSequence([_code_item(NO_UNITS)])
    item.RealWorldValueFirstValueMapped = 0
    item.RealWorldValueLastValueMapped = STD_LEVELS
    item.RealWorldValueIntercept = 0.0
    item.RealWorldValueSlope = float(slope)
    return DicomSequence([item])


def _instance(
    template: Dataset,
    refs: Sequence[Dataset],
    head: _SeriesHeader,
    *,
    number: int,
    position: np.ndarray,
    location: float,
    comment: str,
    acquired: bool,
    kind: Kind = "image",
    std_slope: float = 1.0,
) -> Dataset:
    """Set the series-, instance- and derivation-level attributes of one output dataset.
    ``acquired``: an acquired slice copied from the source (it keeps its acquisition
    attributes and its position as written); otherwise a computed one."""
    ds = template
    sop_uid = derived_uid(head.uid, str(number)) if head.deterministic else generate_uid()
    ds.SOPInstanceUID = sop_uid
    ds.file_meta.MediaStorageSOPInstanceUID = sop_uid
    ds.file_meta.MediaStorageSOPClassUID = ds.SOPClassUID
    ds.file_meta.ImplementationClassUID = pydicom.uid.PYDICOM_IMPLEMENTATION_UID
    ds.file_meta.ImplementationVersionName = f"SLICELIB_{__version__}"[:16]
    ds.SeriesInstanceUID = head.uid
    ds.SeriesNumber = head.number
    ds.SeriesDescription = head.description
    ds.SeriesDate, ds.SeriesTime = head.date, head.time
    ds.InstanceNumber = number
    old_type = list(ds.get("ImageType", []))
    ds.ImageType = STD_IMAGE_TYPE if kind == "std" else ["DERIVED", "SECONDARY", *old_type[2:]]
    ds.ContributingEquipmentSequence = _contributing_equipment(ds, head)
    if kind == "std":
        ds.RealWorldValueMappingSequence = _real_world_values(std_slope)
    ds.DerivationDescription = head.derivation
    ds.DerivationCodeSequence = _derivation_codes(kind)
    ds.SourceImageSequence = _source_sequence(refs)
    ds.ImageComments = comment
    if not acquired:
        _remove_acquisition(ds)
    fmt = _ds if acquired else _ds_mm  # an acquired slice's values are the source's
    ds.ImagePositionPatient = [fmt(v) for v in position]
    ds.ImageOrientationPatient = head.orientation
    ds.PixelSpacing = head.pixel_spacing
    ds.SliceLocation = fmt(location)
    ds.SpacingBetweenSlices = head.spacing
    ds.ContentDate, ds.ContentTime = head.date, head.time
    ds.InstanceCreationDate, ds.InstanceCreationTime = head.date, head.time
    return ds


def write_dicom_series(
    up: Upsampled,
    out: str | Path,
    derivation: Derivation,
    *,
    kind: Kind = "image",
    force: bool = False,
) -> list[Path]:
    """Write ``up`` (``kind="image"``) or its std map (``kind="std"``) as a new series.

    ``out``: the series folder to create (one file per slice, ``IM00001.dcm`` ...);
    must not be inside the source series' folder; refused if it exists unless
    ``force``. Returns the written files in slice order.
    """
    out = Path(out)
    src = up.source
    if not src.files:
        raise SlicelibError(
            f"series {src.series_uid}: has no DICOM files (NIfTI input); write NIfTI instead"
        )
    if len(src.files) != src.n_slices:
        raise SlicelibError(
            f"series {src.series_uid}: {len(src.files)} files for {src.n_slices} slices"
        )
    if kind == "std" and up.std is None:
        raise SlicelibError("no uncertainty was computed: cannot write the std series")
    check_output_location(out, {Path(f).parent for f in src.files})

    sources = read_sources(src.files, f"series {src.series_uid}")
    head = _header(sources, up, derivation, kind)
    locations = slice_locations(sources, up)
    std = up.std
    # One scale for the whole std series, so that one window shows every slice alike.
    std_slope = (float(std.max()) or 1.0) / STD_LEVELS if std is not None else 1.0
    names: list[Path] = []
    check_new_output(out, force=force)
    # No marker file in the series folder: PACS import tools read every file there.
    with atomic_directory(out) as tmp:
        for j in range(up.n_slices):
            refs = [sources[i] for i in up.sources(j)]
            if kind == "image" and up.acquired[j]:
                ds = copy.deepcopy(sources[j // 2])  # pixel data and encoding untouched
                comment = ACQUIRED_COMMENT
            else:
                ds = copy.deepcopy(refs[0])
                ds.remove_private_tags()  # per-instance vendor data of another slice
                comment = SYNTHESIZED_COMMENT if not up.acquired[j] else ACQUIRED_COMMENT
                if kind == "std":
                    assert std is not None
                    comment = f"{STD_COMMENT}; {comment}"
                    _set_pixels(ds, std[j], std_slope=std_slope)
                    ds.WindowCenter, ds.WindowWidth = _ds(STD_LEVELS / 2), _ds(STD_LEVELS)
                else:
                    _set_pixels(ds, up.pixels[j])
            _instance(
                ds,
                refs,
                head,
                number=j + 1,
                position=up.positions[j],
                location=float(locations[j]),
                comment=comment,
                acquired=kind == "image" and bool(up.acquired[j]),
                kind=kind,
                std_slope=std_slope,
            )
            name = tmp / f"IM{j + 1:05d}.dcm"
            ds.save_as(name, enforce_file_format=True)
            names.append(out / name.name)
    log.info("wrote %d slices (%s) to %s", len(names), kind, out)
    return names
