"""Fast header reading of one file for the scan: no pixel decoding.

:func:`read_header` runs in worker processes, so it takes and returns plain,
picklable values. Besides the tags it checks that the file really holds the
pixel data its header announces (a truncated download keeps a readable header).
"""

from __future__ import annotations

import logging
import math
import os
import re
import struct
import threading
import warnings
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from typing import Any, Literal, NamedTuple

import pydicom
from pydicom import charset
from pydicom.datadict import dictionary_VR
from pydicom.dataset import Dataset
from pydicom.errors import InvalidDicomError
from pydicom.uid import UID, ImplicitVRLittleEndian

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
    """What the scan needs from one file. ``kind`` says whether it is a usable image.

    ``problems``: one reason per tag whose value is present but unusable
    (``"invalid SeriesNumber '1e400'"``). ``warnings``: what pydicom warned
    while reading this file. An ``unreadable`` file keeps the SeriesInstanceUID
    when it could be recovered, so that it is charged to its series.
    """

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
    instance_number: int | None = None
    orientation: tuple[float, ...] | None = None
    position: tuple[float, ...] | None = None
    pixel_spacing: tuple[float, ...] | None = None
    slice_thickness: float | None = None
    spacing_between_slices: float | None = None
    rows: int | None = None
    columns: int | None = None
    n_frames: int = 1
    samples: int = 1
    bits_allocated: int = 16
    transfer_syntax: str = ""
    missing: tuple[str, ...] = ()
    truncated: str = ""  # why the pixel data is incomplete, "" when it is complete
    problems: tuple[str, ...] = ()
    warnings: tuple[str, ...] = ()

    def pixel_bytes(self) -> int:
        """Bytes of decoded pixels the header announces (rows x columns x frames x samples)."""
        n = (self.rows or 0) * (self.columns or 0) * max(self.n_frames, 1) * max(self.samples, 1)
        return n * max(self.bits_allocated, 8) // 8


class Parsed(NamedTuple):
    """A header value or the reason there is none: ``value`` is None exactly when
    ``reason`` is set ("missing X" or "invalid X '...'")."""

    value: Any
    reason: str = ""


# Largest integer a header count or index may hold (IS is a 32-bit signed integer).
MAX_IS = 2**31 - 1
UID_PATTERN = re.compile(r"[0-9]+(\.[0-9]+)*")
TEXT_VRS = frozenset({"SH", "LO", "ST", "LT", "UT", "PN", "UC"})


def _text_of(raw: Any, encodings: list[str] | None = None) -> str:
    if isinstance(raw, bytes):
        if encodings:
            return charset.decode_bytes(raw, encodings, set()).strip(" \x00")
        return raw.decode("latin-1").strip(" \x00")
    if isinstance(raw, (list, tuple)) or type(raw).__name__ == "MultiValue":
        return "\\".join(str(v) for v in raw)
    return str(raw).strip(" \x00")


def parse_value(keyword: str, raw: Any, kind: str, n: int = 0, positive: bool = False) -> Parsed:
    """One header value, checked: never raises.

    ``kind``: ``"text"``, ``"uid"`` (digits and dots, <= 64 characters),
    ``"number"`` (finite float), ``"int"`` (integral, |x| <= 2**31 - 1), or
    ``"vector"`` (``n`` finite floats). ``raw`` is what the
    element holds: bytes as stored, a string, a number or a list.
    ``positive``: numbers must be > 0 (every one, for a vector).
    """
    try:
        if isinstance(raw, bytes) and kind != "text":
            raw = raw.decode("latin-1")
        text = _text_of(raw) if not isinstance(raw, (int, float)) else ""
    except Exception as exc:  # undecodable bytes
        return Parsed(None, f"invalid {keyword} ({type(exc).__name__})")
    if raw is None or (not isinstance(raw, (int, float)) and text == ""):
        return Parsed(None, f"missing {keyword}")
    if kind == "text":
        return Parsed(text)
    if kind == "uid":
        if len(text) > 64 or not UID_PATTERN.fullmatch(text):
            return Parsed(None, f"invalid {keyword} {text[:70]!r}")
        return Parsed(text)
    shown = repr(text[:40]) if text else repr(raw)
    try:
        if isinstance(raw, (int, float)):
            items = [float(raw)]
        else:
            items = [float(v) for v in text.split("\\")]
    except (TypeError, ValueError, OverflowError):
        return Parsed(None, f"invalid {keyword} {shown}")
    if not all(math.isfinite(v) for v in items):
        return Parsed(None, f"invalid {keyword} {shown} (not finite)")
    if kind == "vector" and len(items) != n:
        return Parsed(None, f"invalid {keyword} {shown} ({len(items)} values, want {n})")
    if positive and any(v <= 0 for v in items):
        return Parsed(None, f"invalid {keyword} {shown} (want > 0)")
    if kind == "vector":
        return Parsed(tuple(items))
    if len(items) != 1 and kind == "int":
        return Parsed(None, f"invalid {keyword} {shown} (want one value)")
    if kind == "int":
        v = items[0]
        if v != int(v) or abs(v) > MAX_IS:
            return Parsed(None, f"invalid {keyword} {shown} (want an integer)")
        return Parsed(int(v))
    return Parsed(items[0])


def dataset_value(
    ds: Dataset, keyword: str, kind: str, n: int = 0, positive: bool = False
) -> Parsed:
    """:func:`parse_value` of ``keyword`` in a pydicom ``ds``, read without pydicom's
    own conversion (which raises on damaged values): the layer the loaders and
    writers share. Text follows the file's SpecificCharacterSet."""
    try:
        elem = ds.get_item(keyword)
    except Exception as exc:  # a damaged element pydicom cannot even wrap
        return Parsed(None, f"invalid {keyword} ({type(exc).__name__})")
    if elem is None:
        return Parsed(None, f"missing {keyword}")
    raw = elem.value
    vr = _vr_of(elem)
    if isinstance(raw, bytes) and vr in ("US", "SS", "UL", "SL") and kind != "text":
        size = 4 if vr in ("UL", "SL") else 2
        if len(raw) < size:
            return Parsed(None, f"invalid {keyword} ({len(raw)} bytes)")
        little = getattr(elem, "is_little_endian", True)
        raw = int.from_bytes(raw[:size], "little" if little else "big", signed=vr[0] == "S")
    elif kind == "text" and isinstance(raw, bytes) and vr in TEXT_VRS:
        try:
            raw = _text_of(raw, encodings_of(ds))
        except Exception as exc:
            return Parsed(None, f"invalid {keyword} ({type(exc).__name__})")
    elif (
        kind != "text"
        and not isinstance(raw, (bytes, str, int, float, list, tuple))
        and type(raw).__name__ != "MultiValue"
    ):
        return Parsed(None, f"invalid {keyword} (VR {vr})")
    return parse_value(keyword, raw, kind, n, positive)


def _vr_of(elem: Any) -> str:
    """The element's VR; for implicit-VR files (no VR stored) the dictionary's."""
    vr = getattr(elem, "VR", None)
    if vr:
        return str(vr)
    try:
        return str(dictionary_VR(elem.tag))
    except KeyError:
        return ""


def encodings_of(ds: Dataset) -> list[str]:
    """Python codecs for the data set's SpecificCharacterSet (default ISO-IR 6)."""
    elem = ds.get_item(0x00080005)
    if elem is None or not elem.value:
        return ["iso8859"]
    value = elem.value
    terms = _text_of(value).split("\\") if isinstance(value, (bytes, str)) else list(value)
    return charset.convert_encodings([t.strip() for t in terms])


class _Header:
    """Values of :data:`TAGS` read straight from the undecoded elements.

    pydicom's value conversion costs more than parsing the file, and raises on
    damaged values; the scan needs a handful of plain strings and numbers, so it
    decodes those bytes itself through :func:`parse_value`. Every unusable value
    is recorded in :attr:`problems` (keyword -> reason).
    """

    def __init__(self, ds: Dataset, tags: dict[str, int] = TAGS) -> None:
        # Dataset.get_item costs ~5 us a call; the element dict itself is a plain lookup.
        elements = getattr(ds, "_dict", None)
        get = elements.get if isinstance(elements, dict) else ds.get_item
        self.problems: dict[str, str] = {}
        encodings: list[str] | None = None
        values: dict[str, Any] = {}
        for keyword, tag in tags.items():
            elem = get(tag)
            if elem is None:
                continue
            value = elem.value
            vr = _vr_of(elem)
            if isinstance(value, bytes):
                if tag in BINARY_TAGS:
                    if len(value) != 2 or vr not in ("US", "SS"):
                        self.problems[keyword] = f"invalid {keyword} (VR {vr}, {len(value)} bytes)"
                        continue
                    little = getattr(elem, "is_little_endian", True)
                    value = int.from_bytes(value, "little" if little else "big")
                elif vr in TEXT_VRS:
                    if encodings is None:
                        try:
                            encodings = encodings_of(ds)
                        except Exception:  # unknown charset: pydicom has warned
                            encodings = ["iso8859"]
                    try:
                        value = _text_of(value, encodings)
                    except Exception as exc:
                        self.problems[keyword] = f"invalid {keyword} ({type(exc).__name__})"
                        continue
                else:
                    value = value.decode("latin-1").strip(" \x00")
            if value is not None and value != "":
                values[keyword] = value
        self.values = values

    def _parsed(self, keyword: str, kind: str, n: int = 0, positive: bool = False) -> Any:
        if keyword not in self.values:
            return None
        got = parse_value(keyword, self.values[keyword], kind, n, positive)
        if got.reason:
            self.problems[keyword] = got.reason
        return got.value

    def text(self, keyword: str) -> str:
        value = self._parsed(keyword, "text")
        return value or ""

    def uid(self, keyword: str) -> str:
        value = self._parsed(keyword, "uid")
        return value or ""

    def number(self, keyword: str, positive: bool = False) -> float | None:
        value: float | None = self._parsed(keyword, "number", positive=positive)
        return value

    def integer(self, keyword: str, positive: bool = False) -> int | None:
        value: int | None = self._parsed(keyword, "int", positive=positive)
        return value

    def vector(self, keyword: str, n: int, positive: bool = False) -> tuple[float, ...] | None:
        value: tuple[float, ...] | None = self._parsed(keyword, "vector", n, positive)
        return value

    def present(self, keyword: str) -> bool:
        return keyword in self.values or keyword in self.problems


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


# File names a DICOM file may carry; a file so named (or empty) that is not
# readable DICOM is damaged, not junk, and is charged to its folder's series.
DICOM_SUFFIXES = frozenset({"", ".dcm", ".dicom", ".ima", ".img"})


def looks_like_dicom_name(path: str) -> bool:
    """True for names a DICOM image may have: ``.dcm``, ``.ima``, ``.dicom`` or no suffix."""
    name = os.path.basename(path)
    suffix = os.path.splitext(name)[1].lower()
    return suffix in DICOM_SUFFIXES and not name.startswith(".") and name != "DICOMDIR"


def _is_image_class(sop_class: str) -> bool:
    return bool(sop_class) and "Image Storage" in UID(sop_class).name


def read_header(path: str) -> FileHeader:
    """Classify one file and read its header (no pixel data). Never raises.

    ``not_dicom``: not DICOM and not named like DICOM (a README, a thumbnail).
    ``unreadable``: cannot be opened, or named like DICOM (or empty) but not
    parseable, or an image whose header is damaged beyond use; ``series_uid`` is
    kept when it could be read. ``other_dicom``: DICOM without an image
    (DICOMDIR, a report). Files without the 128-byte preamble are read too.
    """
    caught: list[warnings.WarningMessage] = []
    try:
        with captured_warnings() as caught:
            return _read_header(path, caught)
    except Exception as exc:  # any parse failure is reported, never raised
        return FileHeader(path, "unreadable", error=_short(exc), warnings=_messages(caught))


class _WhileCapturing(logging.Filter):
    """Drops the pydicom logger's copy of a warning while :func:`captured_warnings`
    records it: the copy names no file, the recorded one is logged with its path."""

    def __init__(self) -> None:
        super().__init__()
        self.local = threading.local()

    def filter(self, record: logging.LogRecord) -> bool:
        return not getattr(self.local, "active", False)


_PYDICOM_FILTER = _WhileCapturing()
logging.getLogger("pydicom").addFilter(_PYDICOM_FILTER)


@contextmanager
def captured_warnings() -> Iterator[list[warnings.WarningMessage]]:
    """Record every warning raised in the block (pydicom's included) into the list
    yielded, so the caller can attach them to the file being read."""
    _PYDICOM_FILTER.local.active = True
    try:
        with warnings.catch_warnings(record=True) as caught:
            warnings.simplefilter("always")
            yield caught
    finally:
        _PYDICOM_FILTER.local.active = False


def _messages(caught: list[warnings.WarningMessage]) -> tuple[str, ...]:
    return tuple(dict.fromkeys(str(w.message).splitlines()[0][:200] for w in caught))


def _read_header(path: str, caught: list[warnings.WarningMessage]) -> FileHeader:
    try:
        fp = open(path, "rb")  # noqa: SIM115  (closed by the with block below)
    except OSError as exc:
        return FileHeader(path, "unreadable", error=f"cannot open ({exc.strerror or exc})")
    with fp:
        size = os.fstat(fp.fileno()).st_size
        suspect = looks_like_dicom_name(path)
        if size == 0:
            kind: FileKind = "unreadable" if suspect else "not_dicom"
            return FileHeader(path, kind, error="empty file")
        ds: Dataset | None
        try:  # pydicom checks the preamble's "DICM" marker first
            ds = pydicom.dcmread(fp, stop_before_pixels=True)
        except InvalidDicomError:
            if not suspect:
                return FileHeader(path, "not_dicom")
            ds = _read_forced(fp)
            if ds is None:
                return FileHeader(path, "unreadable", error=f"not a DICOM file ({size} bytes)")
        except Exception as exc:
            uid = _recover_uid(fp)
            return FileHeader(path, "unreadable", error=_short(exc), series_uid=uid)
        hd = _Header(ds)
        meta = _Header(ds.file_meta, META_TAGS) if "file_meta" in ds.__dict__ else None
        sop_class = hd.uid("SOPClassUID")
        media_class = meta.uid("MediaStorageSOPClassUID") if meta is not None else ""
        ts = meta.text("TransferSyntaxUID") if meta is not None else ""
        series_uid = hd.uid("SeriesInstanceUID")
        if "SeriesInstanceUID" in hd.problems:
            # A damaged UID would make a series of its own: the file is unreadable,
            # and charged to the series of its folder.
            return FileHeader(path, "unreadable", error=hd.problems["SeriesInstanceUID"])
        if not (sop_class or media_class):
            error = hd.problems.get("SOPClassUID", "no SOP class in the header")
            return FileHeader(path, "unreadable", error=error, series_uid=series_uid)
        # Either class saying "image" makes it one: a damaged element must not
        # turn a slice into "other DICOM" that is skipped.
        is_image = _is_image_class(sop_class) or _is_image_class(media_class)
        if DICOMDIR_CLASS in (sop_class, media_class) or not (is_image or hd.present("Rows")):
            if "SOPClassUID" in hd.problems:
                error = hd.problems["SOPClassUID"]
                return FileHeader(path, "unreadable", error=error, series_uid=series_uid)
            if is_image or hd.present("Rows"):
                # A directory record's class on a file that holds an image (a damaged
                # class): skipping it would shorten its series without a word.
                error = (
                    f"SOP class {DICOMDIR_CLASS} (a DICOMDIR) on a file that holds an image "
                    f"(SOP class {sop_class or '-'}, media class {media_class or '-'}, "
                    f"{'Rows' if hd.present('Rows') else 'no Rows'})"
                )
                return FileHeader(path, "unreadable", error=error, series_uid=series_uid)
            return FileHeader(path, "other_dicom", transfer_syntax=ts)
        truncated = check_pixel_data(fp, size, hd, ts == ImplicitVRLittleEndian)

    header = FileHeader(
        path=path,
        kind="image",
        patient_id=hd.text("PatientID"),
        study_uid=hd.uid("StudyInstanceUID"),
        series_uid=series_uid,
        series_number=hd.integer("SeriesNumber"),
        series_description=hd.text("SeriesDescription"),
        protocol_name=hd.text("ProtocolName"),
        modality=hd.text("Modality"),
        manufacturer=hd.text("Manufacturer"),
        model=hd.text("ManufacturerModelName"),
        field_strength=hd.number("MagneticFieldStrength"),
        instance_number=hd.integer("InstanceNumber"),
        orientation=hd.vector("ImageOrientationPatient", 6),
        position=hd.vector("ImagePositionPatient", 3),
        pixel_spacing=hd.vector("PixelSpacing", 2, positive=True),
        slice_thickness=hd.number("SliceThickness"),
        spacing_between_slices=hd.number("SpacingBetweenSlices"),
        rows=hd.integer("Rows", positive=True),
        columns=hd.integer("Columns", positive=True),
        n_frames=hd.integer("NumberOfFrames", positive=True) or 1,
        samples=hd.integer("SamplesPerPixel", positive=True) or 1,
        bits_allocated=hd.integer("BitsAllocated", positive=True) or 16,
        transfer_syntax=ts,
        missing=tuple(k for k in REQUIRED_TAGS if not hd.present(k)),
        truncated=truncated,
    )
    if header.bits_allocated not in (1, 8, 16, 32, 64):
        hd.problems["BitsAllocated"] = f"invalid BitsAllocated {header.bits_allocated}"
    header.problems = tuple(hd.problems.values())
    header.warnings = _messages(caught)
    return header


def _read_forced(fp: Any) -> Dataset | None:
    """A data set without preamble and file meta, or None when the bytes are not one."""
    fp.seek(0)
    try:
        ds = pydicom.dcmread(fp, stop_before_pixels=True, force=True)
    except Exception:
        return None
    keys = ("SOPClassUID", "SeriesInstanceUID", "Rows")
    if not any(TAGS[k] in ds._dict for k in keys):
        return None
    return ds


def _recover_uid(fp: Any) -> str:
    """The SeriesInstanceUID of a file whose header pydicom cannot finish: the data
    set is read again up to that tag (it comes early, in group 0x0020)."""
    try:
        fp.seek(0)
        ds = pydicom.dcmread(
            fp, force=True, stop_before_pixels=True, specific_tags=["SeriesInstanceUID"]
        )
        value = ds.get_item(TAGS["SeriesInstanceUID"])
        if value is None:
            return ""
        uid: str = parse_value("SeriesInstanceUID", value.value, "uid").value or ""
        return uid
    except Exception:
        return ""
