"""The source series' datasets, validated before anything is written from them.

``slicelib upsample`` builds every output instance from a source dataset, so a
damaged value in a source file would otherwise end as a traceback (pydicom
converts values when they are first touched) or be copied into the new series.
:func:`read_sources` reads every file once and keeps only what it can write:

- an element whose VR is not the standard's, or whose value pydicom cannot
  convert or encode (an unknown VR, a value that does not fit it), loses its value
  (it is written empty, as a Type 2 attribute may be), with a warning naming the
  file and the tag;
- a series-level attribute the output needs (:data:`SERIES_REQUIRED`) that is
  missing or damaged in one file is taken from the other files of the series
  (the SOP class also from the file meta), with a warning; missing in every file,
  the study and frame of reference get new UIDs and the modality follows the SOP
  class (with a warning); a SOP class missing everywhere is a one-line
  :class:`~slicelib.errors.SlicelibError`.

The file meta is cleaned the same way. Pixel data is not checked here: the
loader has decoded and checked it.
"""

from __future__ import annotations

import logging
from collections import Counter
from collections.abc import Sequence
from pathlib import Path

from pydicom.datadict import dictionary_has_tag, dictionary_keyword, dictionary_VR
from pydicom.dataelem import DataElement
from pydicom.dataset import Dataset
from pydicom.filebase import DicomBytesIO
from pydicom.filewriter import write_data_element
from pydicom.sequence import Sequence as DicomSequence
from pydicom.tag import BaseTag
from pydicom.uid import UID, generate_uid

from slicelib.data.dicom import read_dataset
from slicelib.data.headers import captured_warnings, dataset_value
from slicelib.errors import SlicelibError

log = logging.getLogger(__name__)

# The UIDs that a series with none in any file gets anew.
_NEW_UIDS: tuple[str, ...] = ("StudyInstanceUID", "FrameOfReferenceUID")
# Type 1 attributes of the series that the output needs, copied from the sources (a
# damaged copy in one file is repaired from the others); the SOP class first, as a
# modality missing everywhere follows from it.
SERIES_REQUIRED: tuple[str, ...] = ("SOPClassUID", *_NEW_UIDS, "Modality")


def _problem(ds: Dataset, tag: BaseTag) -> str | None:
    """Why the element at ``tag`` cannot be written as it is, or None."""
    try:
        elem = ds[tag]  # converts a raw element: an unknown VR or a bad value raises here
        if dictionary_has_tag(tag) and elem.VR not in dictionary_VR(tag).split(" or "):
            return f"VR {elem.VR}, the standard says {dictionary_VR(tag)}"
        fp = DicomBytesIO()
        fp.is_little_endian, fp.is_implicit_VR = True, False
        write_data_element(fp, elem, ds._character_set)
    except Exception as exc:  # pydicom raises many types for damaged values
        text = str(exc).strip().splitlines()
        return f"{type(exc).__name__}: {text[0][:120]}" if text else type(exc).__name__
    return None


def _empty(tag: BaseTag) -> DataElement | None:
    """An empty element of the standard's VR at ``tag`` (None for a private tag)."""
    if not dictionary_has_tag(tag):
        return None
    vr = dictionary_VR(tag).split(" or ")[0]
    return DataElement(tag, vr, DicomSequence() if vr == "SQ" else None)


def clean_dataset(ds: Dataset, path: Path) -> Dataset:
    """Drop the value of every element of ``ds`` (in place) that cannot be converted
    or encoded; a warning names ``path`` and the tag. A standard element stays, empty,
    with its standard VR (what the IODs allow for a Type 2 or 3 attribute whose value
    is unknown); a private one is removed. Returns ``ds``."""
    with captured_warnings():  # pydicom's own warnings on bad values: reported below
        for tag in list(ds.keys()):
            keyword = dictionary_keyword(tag) if dictionary_has_tag(tag) else "private tag"
            if keyword == "PixelData":  # decoded and checked by the loader
                continue
            why = _problem(ds, tag)
            if why is not None:
                del ds[tag]
                empty = _empty(tag)
                if empty is not None:
                    ds[tag] = empty
                log.warning(
                    "file %s: damaged %s %s dropped (%s)%s",
                    path, keyword, tag, why, "; written empty" if empty is not None else "",
                )  # fmt: skip
    return ds


def _valid(ds: Dataset, keyword: str) -> str | None:
    got = dataset_value(ds, keyword, "uid" if keyword.endswith("UID") else "text")
    return None if got.reason else str(got.value)


def _fill(datasets: Sequence[Dataset], files: Sequence[Path], keyword: str, where: str) -> None:
    """Give every dataset a valid ``keyword``: its own, else (for the SOP class) the one
    of its file meta, else the most common among the other files."""
    values = [_valid(ds, keyword) for ds in datasets]
    if keyword == "SOPClassUID":
        metas = [getattr(ds, "file_meta", None) for ds in datasets]
        values = [
            v or (_valid(meta, "MediaStorageSOPClassUID") if meta is not None else None)
            for v, meta in zip(values, metas)
        ]
    known = Counter(v for v in values if v)
    if known:
        common, origin = known.most_common(1)[0][0], "the series"
    else:
        derived = _derive(datasets[0], keyword)
        if derived is None:
            raise SlicelibError(f"{where}: {keyword} missing or damaged in every file ({files[0]})")
        common, origin = derived
    for ds, path, value in zip(datasets, files, values):
        if _valid(ds, keyword) is None:
            log.warning(
                "file %s: %s missing or damaged; written as %s (from %s)",
                path, keyword, value or common, "its file meta" if value else origin,
            )  # fmt: skip
            setattr(ds, keyword, value or common)


def _derive(ds: Dataset, keyword: str) -> tuple[str, str] | None:
    """A value for ``keyword`` when no file of the series has one, and where it comes
    from; None when it cannot be derived (the SOP class)."""
    if keyword in _NEW_UIDS:
        # A new UID: the derived series then stands alone in its study or frame, which
        # is all a source without one allows.
        return str(generate_uid()), "a new UID: no file of the series has one"
    if keyword == "Modality":
        sop_class = _valid(ds, "SOPClassUID")
        name = UID(sop_class).name if sop_class else ""
        modality = next((m for m in ("MR", "CT", "PET") if name.startswith(m)), None)
        if modality is not None:
            return ("PT" if modality == "PET" else modality), f"the SOP class {name!r}"
    return None


def read_sources(files: Sequence[Path], where: str) -> list[Dataset]:
    """Every source file read once, cleaned (:func:`clean_dataset`) and with the
    attributes of :data:`SERIES_REQUIRED` present. ``where``: names the series in errors."""
    datasets = [clean_dataset(read_dataset(Path(f)), Path(f)) for f in files]
    for ds, f in zip(datasets, files):
        if getattr(ds, "file_meta", None) is not None:
            clean_dataset(ds.file_meta, Path(f))
    for keyword in SERIES_REQUIRED:
        _fill(datasets, [Path(f) for f in files], keyword, where)
    return datasets
