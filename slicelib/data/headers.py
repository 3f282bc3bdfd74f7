"""Fast header reading of one file for the scan: no pixel decoding.

:func:`read_header` runs in worker processes, so it takes and returns plain,
picklable values. Besides the tags it checks that the file really holds the
pixel data its header announces (a truncated download keeps a readable header).
"""

from __future__ import annotations

import os
import struct
import warnings
from dataclasses import dataclass
from typing import Any, Literal

import pydicom
from pydicom.dataset import Dataset
from pydicom.errors import InvalidDicomError
from pydicom.uid import ImplicitVRLittleEndian

FileKind = Literal["image", "other_dicom", "not_dicom", "unreadable"]

# The tags the scan reads; binary (US) ones are decoded as unsigned 16-bit.
TAGS: dict[str, int] = {
    "SOPClassUID": 0x00080016,
    "Modality": 0x00080060,
    "Manufacturer": 0x00080070,
    "ManufacturerModelName": 0x00081090,
    "MagneticFieldStrength": 0x00180087,
    "StudyInstanceUID": 0x0020000D,
    "SeriesInstanceUID": 0x0020000E,
    "SeriesNumber": 0x00200011,
    "SeriesDescription": 0x0008103E,
    "ProtocolName": 0x00181030,
    "PatientID": 0x00100020,
    "InstanceNumber": 0x00200013,
    "ImagePositionPatient": 0x00200032,
    "ImageOrientationPatient": 0x00200037,
    "PixelSpacing": 0x00280030,
    "SliceThickness": 0x00180050,
    "SpacingBetweenSlices": 0x00180088,
    "Rows": 0x00280010,
    "Columns": 0x00280011,
    "BitsAllocated": 0x00280100,
    "SamplesPerPixel": 0x00280002,
    "NumberOfFrames": 0x00280008,
}
META_TAGS: dict[str, int] = {"MediaStorageSOPClassUID": 0x00020002, "TransferSyntaxUID": 0x00020010}
BINARY_TAGS = {TAGS[k] for k in ("Rows", "Columns", "BitsAllocated", "SamplesPerPixel")}
REQUIRED_TAGS: tuple[str, ...] = (
    "Modality",
    "ImagePositionPatient",
    "ImageOrientationPatient",
    "PixelSpacing",
    "Rows",
    "Columns",
    "BitsAllocated",
)
PIXEL_TAGS = {(0x7FE0, 0x0010), (0x7FE0, 0x0008), (0x7FE0, 0x0009)}
ITEM, SEQ_DELIM = (0xFFFE, 0xE000), (0xFFFE, 0xE0DD)
DICOMDIR_CLASS = "1.2.840.10008.1.3.10"


@dataclass(slots=True)
class FileHeader:
    """What the scan needs from one file. ``kind`` says whether it is a usable image."""

    path: str
    kind: FileKind
    error: str = ""
    patient_id: str = ""
    study_uid: str = ""
    series_uid: str = ""
    series_number: int | None = None
    series_description: str = ""
    protocol_name: str = ""
    modality: str = ""
    manufacturer: str = ""
    model: str = ""
    field_strength: float | None = None
    orientation: tuple[float, ...] | None = None
    position: tuple[float, ...] | None = None
    pixel_spacing: tuple[float, ...] | None = None
    slice_thickness: float | None = None
    spacing_between_slices: float | None = None
    rows: int | None = None
    columns: int | None = None
    n_frames: int = 1
    samples: int = 1
    transfer_syntax: str = ""
    missing: tuple[str, ...] = ()
    truncated: str = ""  # why the pixel data is incomplete, "" when it is complete


class _Header:
    """Values of :data:`TAGS` read straight from the undecoded elements.

    pydicom's value conversion costs more than parsing the file; the scan needs
    a handful of plain strings and numbers, so it decodes those bytes itself.
    Absent or empty elements are left out of :attr:`values`.
    """

    def __init__(self, ds: Dataset, tags: dict[str, int] = TAGS) -> None:
        # Dataset.get_item costs ~5 us a call; the element dict itself is a plain lookup.
        elements = getattr(ds, "_dict", None)
        get = elements.get if isinstance(elements, dict) else ds.get_item
        values: dict[str, Any] = {}
        for keyword, tag in tags.items():
            elem = get(tag)
            if elem is None:
                continue
            value = elem.value
            if isinstance(value, bytes):
                if tag in BINARY_TAGS:
                    little = getattr(elem, "is_little_endian", True)
                    word = value[:2] if little else value[1::-1]
                    value = int.from_bytes(word, "little") if len(value) >= 2 else None
                else:
                    value = value.decode("utf-8", "replace").strip(" \x00")
            if value is not None and value != "":
                values[keyword] = value
        self.values = values

    def text(self, keyword: str) -> str:
        value = self.values.get(keyword)
        return "" if value is None else str(value).strip()

    def number(self, keyword: str) -> float | None:
        value = self.values.get(keyword)
        if value is None or isinstance(value, (int, float)):
            return value
        try:
            return float(str(value).split("\\", 1)[0])
        except ValueError:
            return None

    def integer(self, keyword: str) -> int | None:
        value = self.number(keyword)
        return None if value is None else int(value)

    def vector(self, keyword: str, n: int) -> tuple[float, ...] | None:
        value = self.values.get(keyword)
        if value is None:
            return None
        try:
            items = value.split("\\") if isinstance(value, str) else list(value)
            out = tuple(float(v) for v in items)
        except (TypeError, ValueError):
            return None
        return out if len(out) == n else None

    def present(self, keyword: str) -> bool:
        return keyword in self.values


def _short(exc: BaseException) -> str:
    lines = str(exc).strip().splitlines()
    return f"{type(exc).__name__}: {lines[0][:120]}" if lines else type(exc).__name__


def check_pixel_data(fp: Any, size: int, hd: _Header, implicit: bool) -> str:
    """Why the pixel data that starts at ``fp.tell()`` is incomplete ("" when complete).

    Native data must be at least Rows x Columns x frames x samples x bytes long;
    encapsulated (compressed) data must hold all its fragment items and the
    sequence delimiter before the end of the file.
    """
    start = fp.tell()
    head = fp.read(8 if implicit else 12)
    if len(head) < 8:
        return "no pixel data (file ends after the header)"
    group, elem = struct.unpack("<HH", head[:4])
    if (group, elem) not in PIXEL_TAGS:
        return ""
    if implicit:
        length, header_len = struct.unpack("<I", head[4:8])[0], 8
    elif head[4:6] in (b"OB", b"OW", b"OF", b"OD", b"OL", b"UN") and len(head) == 12:
        length, header_len = struct.unpack("<I", head[8:12])[0], 12
    else:
        length, header_len = struct.unpack("<H", head[6:8])[0], 8
    pos = start + header_len
    if length != 0xFFFFFFFF:
        rows, cols = hd.integer("Rows") or 0, hd.integer("Columns") or 0
        frames = hd.integer("NumberOfFrames") or 1
        samples = hd.integer("SamplesPerPixel") or 1
        bits = hd.integer("BitsAllocated") or 16
        n = rows * cols * frames * samples
        expected = (n + 7) // 8 if bits == 1 else n * bits // 8
        available = min(length, size - pos)
        if available < expected:
            return f"pixel data {available} of {expected} bytes"
        return ""
    # Encapsulated: walk the items (offset table, fragments) to the delimiter.
    while True:
        fp.seek(pos)
        item = fp.read(8)
        if len(item) < 8:
            return "compressed pixel data cut short"
        group, elem, item_len = struct.unpack("<HHI", item)
        if (group, elem) == SEQ_DELIM:
            return ""
        if (group, elem) != ITEM or item_len == 0xFFFFFFFF:
            return "compressed pixel data corrupt"
        pos += 8 + item_len
        if pos > size:
            return "compressed pixel data cut short"


def read_header(path: str) -> FileHeader:
    """Classify one file and read its header (no pixel data). Never raises."""
    try:
        with open(path, "rb") as fp:
            size = os.fstat(fp.fileno()).st_size
            try:  # pydicom checks the preamble's "DICM" marker first
                with warnings.catch_warnings():
                    warnings.simplefilter("ignore")  # damage is reported in the row instead
                    ds = pydicom.dcmread(fp, stop_before_pixels=True)
            except InvalidDicomError:
                return FileHeader(path, "not_dicom")
            hd = _Header(ds)
            meta = _Header(ds.file_meta, META_TAGS) if "file_meta" in ds.__dict__ else None
            sop_class = hd.text("SOPClassUID")
            if meta is not None and not sop_class:
                sop_class = meta.text("MediaStorageSOPClassUID")
            ts = meta.text("TransferSyntaxUID") if meta is not None else ""
            if not sop_class:
                return FileHeader(path, "unreadable", error="no SOP class in the header")
            if sop_class == DICOMDIR_CLASS or not hd.present("Rows"):
                return FileHeader(path, "other_dicom", transfer_syntax=ts)
            truncated = check_pixel_data(fp, size, hd, ts == ImplicitVRLittleEndian)
    except Exception as exc:  # any parse failure is reported, never raised
        return FileHeader(path, "unreadable", error=_short(exc))

    return FileHeader(
        path=path,
        kind="image",
        patient_id=hd.text("PatientID"),
        study_uid=hd.text("StudyInstanceUID"),
        series_uid=hd.text("SeriesInstanceUID"),
        series_number=hd.integer("SeriesNumber"),
        series_description=hd.text("SeriesDescription"),
        protocol_name=hd.text("ProtocolName"),
        modality=hd.text("Modality"),
        manufacturer=hd.text("Manufacturer"),
        model=hd.text("ManufacturerModelName"),
        field_strength=hd.number("MagneticFieldStrength"),
        orientation=hd.vector("ImageOrientationPatient", 6),
        position=hd.vector("ImagePositionPatient", 3),
        pixel_spacing=hd.vector("PixelSpacing", 2),
        slice_thickness=hd.number("SliceThickness"),
        spacing_between_slices=hd.number("SpacingBetweenSlices"),
        rows=hd.integer("Rows"),
        columns=hd.integer("Columns"),
        n_frames=hd.integer("NumberOfFrames") or 1,
        samples=hd.integer("SamplesPerPixel") or 1,
        transfer_syntax=ts,
        missing=tuple(k for k in REQUIRED_TAGS if not hd.present(k)),
        truncated=truncated,
    )
