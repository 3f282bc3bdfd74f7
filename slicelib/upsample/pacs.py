"""The PACS round trip of ``slicelib upsample``: a series on a DICOMweb server in, the
derived series (and the uncertainty series) stored back on a DICOMweb server.

The order makes a failure leave the servers as they were:

1. the URLs, the output folder and the store server's answer (reachable, credentials
   accepted, answering within the timeout) are checked before the slow work;
2. a series on a server is downloaded (WADO-RS) into a private temporary folder and
   checked whole (:func:`slicelib.upsample.dicomweb.fetch_series`) and readable as one
   uniformly spaced volume; the folder is removed at the end;
3. the usual folder pipeline (:func:`slicelib.upsample.folder.upsample_to_folder`) writes
   the derived series into ``OUTPUT_DIR`` and ``upsample.json``;
4. every derived series is read back and checked (:func:`check_written_series`);
5. the store server is asked which instances of each derived series it already holds
   (their UIDs are derived from the input and the checkpoint, so a re-run makes the same
   ones): what is there is not sent again, and a series holding instances this run did
   not write is refused; the rest is stored in one STOW-RS request, and the server is
   asked again to confirm that it lists every instance.
"""

from __future__ import annotations

import dataclasses
import logging
import os
import tempfile
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from slicelib.errors import SlicelibError
from slicelib.io import write_json
from slicelib.upsample.dicomweb import (
    DEFAULT_TIMEOUT_S,
    SeriesRef,
    Server,
    check_access,
    fetch_series,
    instances_on_server,
    is_dicomweb_url,
    parse_series_url,
    parse_server,
    require_pacs_extra,
    store_instances,
)
from slicelib.upsample.folder import RECORD, UpsampleReport, upsample_to_folder

log = logging.getLogger(__name__)


@dataclass(frozen=True)
class DerivedSeries:
    """A derived series folder slicelib wrote, read back and checked."""

    kind: str  # "image" or "std"
    study: str
    series: str
    files: dict[str, Path]  # SOPInstanceUID -> file, in instance order


@dataclass
class StoredSeries:
    """What happened to one derived series on the store server."""

    kind: str
    series: str
    instances: int
    sent: int  # 0: the server held every instance already


@dataclass
class PacsReport:
    """What :func:`upsample_with_dicomweb` did."""

    upsample: UpsampleReport
    source: str  # the input: a path, or the series URL without credentials
    server: str | None = None  # the store server's URL without credentials
    stored: list[StoredSeries] = field(default_factory=list)
    seconds_fetch: float = 0.0
    seconds_store: float = 0.0


def check_written_series(folder: Path, expected: int, kind: str) -> DerivedSeries:
    """Read back the series slicelib wrote in ``folder``: ``expected`` files of one series
    and study, distinct SOP instances numbered 1..``expected``, readable by slicelib as
    one uniformly spaced volume. Anything else is an error and nothing is stored."""
    import pydicom

    from slicelib.data.dicom import load_series

    files = sorted(p for p in folder.iterdir() if p.suffix == ".dcm")
    where = f"derived series in {folder}"
    if len(files) != expected:
        raise SlicelibError(f"{where}: {len(files)} files, expected {expected}; nothing stored")
    headers = [pydicom.dcmread(p, stop_before_pixels=True) for p in files]
    studies = {str(ds.StudyInstanceUID) for ds in headers}
    series = {str(ds.SeriesInstanceUID) for ds in headers}
    by_number = {
        int(ds.InstanceNumber): (str(ds.SOPInstanceUID), p) for ds, p in zip(headers, files)
    }
    if len(studies) != 1 or len(series) != 1:
        raise SlicelibError(f"{where}: files of {len(series)} series; nothing stored")
    if sorted(by_number) != list(range(1, expected + 1)):
        raise SlicelibError(f"{where}: instance numbers are not 1..{expected}; nothing stored")
    if len({sop for sop, _ in by_number.values()}) != expected:
        raise SlicelibError(f"{where}: a SOPInstanceUID is used twice; nothing stored")
    volume = load_series(files)
    if volume.n_slices != expected:
        raise SlicelibError(f"{where}: reads as {volume.n_slices} slices; nothing stored")
    ordered = {by_number[n][0]: by_number[n][1] for n in sorted(by_number)}
    return DerivedSeries(kind, studies.pop(), series.pop(), ordered)


def store_derived(server: Server, report: UpsampleReport) -> list[StoredSeries]:
    """Store every derived series of ``report`` on ``server`` unless it holds them already
    (see the module docstring, steps 4 and 5)."""
    derived = [
        check_written_series(paths[0].parent, report.slices_out, kind)
        for kind, paths in report.files.items()
    ]
    plan: list[tuple[DerivedSeries, list[Path]]] = []
    for item in derived:
        where = f"{server}: derived series {item.series} (study {item.study})"
        present = instances_on_server(server, item.study, item.series)
        foreign = present - set(item.files)
        if foreign:
            raise SlicelibError(
                f"{where}: the server holds {len(foreign)} instance(s) of this series that "
                "this run did not write; nothing stored"
            )
        plan.append((item, [path for sop, path in item.files.items() if sop not in present]))
    to_send = [path for _, missing in plan for path in missing]
    if to_send:
        studies = {item.study for item in derived}
        where = f"{server}: derived series {', '.join(item.series for item in derived)}"
        for study in sorted(studies):  # one study: every derived series shares the source's
            batch = [p for item, missing in plan if item.study == study for p in missing]
            store_instances(server, study, batch, where)
    results = []
    for item, missing in plan:
        where = f"{server}: derived series {item.series} (study {item.study})"
        listed = instances_on_server(server, item.study, item.series)
        if listed != set(item.files):
            raise SlicelibError(
                f"{where}: after storing, the server lists {len(listed & set(item.files))} "
                f"of its {len(item.files)} instances"
            )
        if missing:
            log.info("%s: stored %d instances", where, len(missing))
        else:
            log.info("%s: already there (%d instances); nothing stored", where, len(item.files))
        results.append(StoredSeries(item.kind, item.series, len(item.files), len(missing)))
    return results


def _uids_of_local_input(path: Path) -> tuple[str, str] | None:
    """(StudyInstanceUID, SeriesInstanceUID) of a local DICOM input (its first file), or
    None when they cannot be read (the upsampling then says why)."""
    from slicelib.data.headers import looks_like_dicom_name, read_header

    try:
        first = (
            path
            if path.is_file()
            else min(p for p in path.iterdir() if p.is_file() and looks_like_dicom_name(p.name))
        )
    except (OSError, ValueError):
        return None
    header = read_header(str(first))
    return (header.study_uid, header.series_uid) if header.study_uid else None


def _checked_download(ref: SeriesRef, folder: Path) -> None:
    """Download ``ref`` into ``folder`` and check that it reads as one volume that can be
    upsampled; errors name the server and the series, not the temporary folder."""
    from slicelib.data.dicom import load_series
    from slicelib.upsample.volume import check_upsamplable

    files = fetch_series(ref, folder)
    try:
        check_upsamplable(load_series(files), str(ref))
    except SlicelibError as exc:
        text = str(exc).replace(f"{folder}{os.sep}", "")
        raise SlicelibError(text if text.startswith(str(ref)) else f"{ref}: {text}") from None


def upsample_with_dicomweb(
    input_text: str,
    output: str | Path,
    checkpoint: str | Path | None,
    *,
    store: str | None = None,
    timeout: float = DEFAULT_TIMEOUT_S,
    force: bool = False,
    **options: Any,
) -> PacsReport:
    """``slicelib upsample`` with a series on a DICOMweb server as its input (``input_text``
    is its WADO-RS series URL) or with ``store`` (a DICOMweb base URL) to store the derived
    series on, or both. ``options`` go to :func:`upsample_to_folder`."""
    from slicelib.upsample.dicom_writer import check_new_output, check_output_location

    remote = is_dicomweb_url(input_text)
    require_pacs_extra("a DICOMweb input" if remote else "--store-dicomweb")
    ref = parse_series_url(input_text, timeout) if remote else None
    server = parse_server(store, timeout) if store else None
    output = Path(output)
    if ref is None:
        from slicelib.data.nifti import is_nifti

        local = Path(input_text)
        if local.is_file() and is_nifti(local):
            raise SlicelibError(
                f"input {local}: --store-dicomweb stores DICOM series; a NIfTI input gives NIfTI"
            )
        check_output_location(output, [local])
    check_new_output(output, force=force)

    started = time.perf_counter()
    with tempfile.TemporaryDirectory(prefix="slicelib-dicomweb-") as tmp:
        uids: tuple[str, str] | None
        if ref is not None:
            _checked_download(ref, Path(tmp))
            input_path, source, uids = Path(tmp), ref.url, (ref.study, ref.series)
        else:
            input_path, source = Path(input_text), input_text
            uids = _uids_of_local_input(input_path)
        seconds_fetch = time.perf_counter() - started
        if server is not None and uids is not None:
            check_access(server, *uids)
        report = upsample_to_folder(
            input_path,
            output,
            checkpoint,
            force=force,
            source_name=source if ref is not None else None,
            **options,
        )
    result = PacsReport(report, source, seconds_fetch=seconds_fetch)
    if server is not None:
        store_started = time.perf_counter()
        result.server = server.url
        result.stored = store_derived(server, report)
        result.seconds_store = time.perf_counter() - store_started
        record = dict(report.record)
        record["stored"] = {
            "server": server.url,
            "series": [dataclasses.asdict(item) for item in result.stored],
            "seconds": round(result.seconds_store, 3),
        }
        report.record = record
        write_json(output / RECORD, record)
    return result
