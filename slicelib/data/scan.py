"""Scan a DICOM tree: one row per series, the inclusion criteria, one series per patient.

Files are grouped by SeriesInstanceUID, never by folder, so TCIA descriptive
folders, UID folders and flat folders all work. Headers are read in parallel
worker processes (pixel data is never decoded here); non-DICOM files are
skipped and counted. A bad file excludes its series with a reason and never
stops the scan; a file or folder that cannot be read is reported, never skipped
in silence. Worker processes die with the scan (see :func:`die_with_parent`).
"""

from __future__ import annotations

import concurrent.futures as cf
import ctypes
import dataclasses
import logging
import os
import signal
import stat
import sys
import threading
import time
from collections import Counter, defaultdict
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import pandas as pd
from tqdm import tqdm

from slicelib.config import ScanConfig, to_dict
from slicelib.data.criteria import SeriesRow, apply_criteria, summarise_series
from slicelib.data.headers import FileHeader, read_header
from slicelib.errors import SlicelibError
from slicelib.io import atomic_write

log = logging.getLogger(__name__)

DEFAULT_SCAN_CONFIG = ScanConfig()

# Columns of the CSV, in order (SeriesRow fields that are not per-file lists).
CSV_COLUMNS: tuple[str, ...] = tuple(
    f.name
    for f in dataclasses.fields(SeriesRow)
    if f.name not in ("files", "headers", "unreadable", "twins")
)


@dataclass
class ScanResult:
    """The outcome of :func:`scan`.

    ``series``: one :class:`SeriesRow` per SeriesInstanceUID, sorted by patient,
    study and series number. ``unreadable``: (path, error) of files whose header
    could not be read or that lack a SeriesInstanceUID.
    """

    root: Path
    config: ScanConfig
    series: list[SeriesRow]
    n_files: int
    n_images: int
    n_other_dicom: int
    n_not_dicom: int
    unreadable: list[tuple[str, str]] = field(default_factory=list)
    skipped: list[tuple[str, str]] = field(default_factory=list)  # (path, why): FIFOs, links

    def included(self) -> list[SeriesRow]:
        """The series that pass every criterion."""
        return [r for r in self.series if r.included]

    def selected(self) -> list[SeriesRow]:
        """One series per patient (the chosen passing one), sorted by patient id."""
        return sorted((r for r in self.series if r.selected), key=lambda r: r.patient_id)

    def candidates(self, patient_id: str) -> list[SeriesRow]:
        """A patient's passing series, best first (the selection order)."""
        rows = [r for r in self.series if r.included and r.patient_id == patient_id]
        return sorted(rows, key=lambda r: selection_key(r, self.config))

    def to_frame(self) -> pd.DataFrame:
        """One row per series with the :data:`CSV_COLUMNS`."""
        rows = [{c: getattr(r, c) for c in CSV_COLUMNS} for r in self.series]
        return pd.DataFrame(rows, columns=list(CSV_COLUMNS))

    def exclusions(self) -> Counter[str]:
        """How many series fail at each criterion (by the first failing one)."""
        return Counter(r.criterion for r in self.series if not r.included)

    def top_reasons(self, n: int = 3) -> str:
        """The most common exclusion criteria with one example reason each."""
        examples: dict[str, str] = {}
        for r in self.series:
            if not r.included:
                examples.setdefault(r.criterion, r.reason)
        parts = [f"{c}x {examples[k]}" for k, c in self.exclusions().most_common(n)]
        return "; ".join(parts) if parts else "no series found"

    def summary(self) -> dict[str, Any]:
        """Counts for the log and the cache manifest (JSON-ready)."""
        chosen = self.selected()
        return {
            "root": str(self.root),
            "files": self.n_files,
            "dicom_images": self.n_images,
            "other_dicom": self.n_other_dicom,
            "non_dicom_skipped": self.n_not_dicom,
            "unreadable_files": len(self.unreadable),
            "unreadable": [f"{p}: {e}" for p, e in self.unreadable[:50]],
            "skipped_entries": [f"{p}: {e}" for p, e in self.skipped[:50]],
            "series": len(self.series),
            "series_included": len(self.included()),
            "patients_scanned": len({r.patient_id for r in self.series}),
            "patients": len(chosen),
            "volumes": len(chosen),
            "slices": sum(r.n_slices for r in chosen),
            "excluded_by": dict(self.exclusions().most_common()),
            "config": to_dict(self.config),
        }

    def log_summary(self) -> None:
        s = self.summary()
        log.info(
            "scanned %d files under %s: %d DICOM images, %d other DICOM, "
            "%d non-DICOM skipped, %d unreadable",
            s["files"],
            s["root"],
            s["dicom_images"],
            s["other_dicom"],
            s["non_dicom_skipped"],
            s["unreadable_files"],
        )
        log.info(
            "%d series (%d pass the criteria): %d patients, %d volumes, %d slices selected",
            s["series"],
            s["series_included"],
            s["patients"],
            s["volumes"],
            s["slices"],
        )
        for criterion, count in self.exclusions().most_common():
            example = next(r.reason for r in self.series if r.criterion == criterion)
            log.info("  excluded %3d series: %s (e.g. %s)", count, criterion, example)

    def write_csv(self, path: str | Path) -> Path:
        """Write :meth:`to_frame` to ``path`` atomically (temporary file, then rename)."""
        path = Path(path)
        check_csv_path(path)
        atomic_write(path, lambda tmp: self.to_frame().to_csv(tmp, index=False))
        log.info("wrote %s (%d series)", path, len(self.series))
        return path


def check_csv_path(path: Path) -> None:
    """Refuse a CSV path that is a folder or whose folder does not exist."""
    if path.is_dir():
        raise SlicelibError(f"CSV path {path} is a folder; give a file name")
    if not path.parent.is_dir():
        raise SlicelibError(f"CSV folder {path.parent} does not exist")


def selection_key(row: SeriesRow, cfg: ScanConfig) -> tuple[float, float, float, str]:
    """Order of preference among a patient's passing series (smallest first):
    most slices, then thickness closest to the target, lowest series number, UID."""
    thickness = row.slice_thickness if row.slice_thickness is not None else float("inf")
    number = row.series_number if row.series_number is not None else float("inf")
    return (-row.n_slices, abs(thickness - cfg.slice_thickness_mm), number, row.series_uid)


def _why_first(best: SeriesRow, other: SeriesRow, cfg: ScanConfig) -> str:
    a, b = selection_key(best, cfg), selection_key(other, cfg)
    if a[0] != b[0]:
        return f"more slices ({best.n_slices} vs {other.n_slices})"
    if a[1] != b[1]:
        return f"thickness closer to {cfg.slice_thickness_mm:g} mm"
    if a[2] != b[2]:
        return f"lower series number ({best.series_number} vs {other.series_number})"
    return "lower SeriesInstanceUID"


def select_series(rows: list[SeriesRow], cfg: ScanConfig) -> None:
    """Mark one passing series per patient as ``selected`` and write each ``note``."""
    by_patient: dict[str, list[SeriesRow]] = defaultdict(list)
    for r in rows:
        r.selected, r.note = False, ""
        if r.included:
            by_patient[r.patient_id].append(r)
    for candidates in by_patient.values():
        candidates.sort(key=lambda r: selection_key(r, cfg))
        best, others = candidates[0], candidates[1:]
        best.selected = True
        if not others:
            best.note = "the patient's only passing series"
            continue
        best.note = f"chosen over {len(others)} other passing series: " + _why_first(
            best, others[0], cfg
        )
        for r in others:
            r.note = f"passes; series {best.series_number} chosen ({_why_first(best, r, cfg)})"


def walk_entries(root: Path) -> tuple[list[str], list[tuple[str, str]], list[tuple[str, str]]]:
    """Every regular file under ``root`` in a deterministic order, the folders that
    could not be listed (path, error), and the entries that are not regular files
    (FIFOs, sockets, dangling links; path, what). Symbolic links to folders are not
    followed, so a link loop costs nothing."""
    files: list[str] = []
    unlisted: list[tuple[str, str]] = []
    odd: list[tuple[str, str]] = []

    def on_error(exc: OSError) -> None:
        unlisted.append((str(exc.filename), f"folder cannot be listed ({exc.strerror or exc})"))

    for folder, dirs, names in os.walk(root, onerror=on_error):
        dirs.sort()
        for d in dirs:
            if os.path.islink(os.path.join(folder, d)):
                odd.append((os.path.join(folder, d), "link to a folder (not followed)"))
        for n in sorted(names):
            p = os.path.join(folder, n)
            try:
                mode = os.stat(p).st_mode
            except OSError as exc:
                odd.append((p, f"cannot stat ({exc.strerror or exc}; a dangling link?)"))
                continue
            if stat.S_ISREG(mode):
                files.append(p)
            else:
                odd.append((p, "not a regular file (FIFO, socket or device)"))
    return files, unlisted, odd


def walk_files(root: Path) -> list[str]:
    """Every regular file under ``root``, in a deterministic order."""
    return walk_entries(root)[0]


def die_with_parent(parent: int | None = None) -> None:
    """Make this worker process exit when its parent dies (even by ``kill -9``).

    On Linux the kernel sends SIGKILL (``prctl(PR_SET_PDEATHSIG)``); everywhere a
    daemon thread also polls the parent's pid once a second, which covers other
    systems and a parent that died before the ``prctl`` call.
    """
    parent = os.getppid() if parent is None else parent
    if sys.platform.startswith("linux"):
        try:
            libc = ctypes.CDLL(None, use_errno=True)
            libc.prctl(1, signal.SIGKILL, 0, 0, 0)  # 1 = PR_SET_PDEATHSIG
        except (OSError, AttributeError):  # no usable libc: the poll below still runs
            pass

    def watch() -> None:
        while os.getppid() == parent:
            time.sleep(1.0)
        os._exit(1)

    threading.Thread(target=watch, name="die-with-parent", daemon=True).start()


def resolve_workers(workers: int) -> int:
    if workers < 0:
        raise SlicelibError(f"workers must be >= 0 (got {workers})")
    return workers or os.cpu_count() or 1


def read_headers(paths: list[str], workers: int, progress: bool = True) -> Iterator[FileHeader]:
    """:func:`read_header` over ``paths`` (in order), in ``workers`` processes."""
    bar = tqdm(total=len(paths), desc="scan", unit="file", disable=not progress, mininterval=0.5)
    try:
        if workers <= 1 or len(paths) < 64:
            for p in paths:
                yield read_header(p)
                bar.update()
            return
        chunk = max(1, min(256, len(paths) // (workers * 8)))
        with cf.ProcessPoolExecutor(
            max_workers=workers, initializer=die_with_parent, initargs=(os.getpid(),)
        ) as pool:
            for header in pool.map(read_header, paths, chunksize=chunk):
                yield header
                bar.update()
    finally:
        bar.close()


def _check_root(root: str | Path) -> Path:
    path = Path(root).expanduser()
    if not path.exists():
        raise SlicelibError(f"data root {path} does not exist")
    if not path.is_dir():
        raise SlicelibError(f"data root {path} is not a folder")
    return path


def scan(
    root: str | Path, cfg: ScanConfig = DEFAULT_SCAN_CONFIG, *, progress: bool = True
) -> ScanResult:
    """Read every header under ``root`` and apply the criteria of ``cfg``.

    Raises :class:`SlicelibError` when ``root`` is missing or holds no DICOM image.
    """
    root = _check_root(root)
    paths, unlisted, skipped = walk_entries(root)
    headers = list(read_headers(paths, resolve_workers(cfg.workers), progress))
    kinds = Counter(h.kind for h in headers)

    groups: dict[str, list[FileHeader]] = defaultdict(list)
    unreadable: list[tuple[str, str]] = list(unlisted)
    charged: list[FileHeader] = []  # unreadable, but their series is known
    for h in headers:
        for message in h.warnings:
            log.warning("pydicom warning for %s: %s", h.path, message)
        if h.kind == "unreadable":
            unreadable.append((h.path, h.error))
            if h.series_uid:
                charged.append(h)
        elif h.kind == "image" and not h.series_uid:
            unreadable.append((h.path, "missing SeriesInstanceUID"))
        elif h.kind == "image":
            groups[h.series_uid].append(h)
    if not groups and not unreadable:
        raise SlicelibError(
            f"no DICOM images under {root} ({len(paths)} files: {kinds['not_dicom']} non-DICOM, "
            f"{kinds['other_dicom']} DICOM without images)"
        )

    rows = [
        summarise_series(hs, [os.path.relpath(os.path.dirname(h.path), root) for h in hs])
        for hs in groups.values()
    ]
    by_uid = {r.series_uid: r for r in rows}
    for h in charged:
        if h.series_uid in by_uid:
            by_uid[h.series_uid].unreadable.append(f"{Path(h.path).name} ({h.error})")
    _attribute_unreadable(
        rows, [(p, e) for p, e in unreadable if p not in {h.path for h in charged}]
    )
    _find_twins(rows)
    for r in rows:
        apply_criteria(r, cfg)
    select_series(rows, cfg)
    rows.sort(key=lambda r: (r.patient_id, r.study_uid, r.series_number or 0, r.series_uid))
    result = ScanResult(
        root=root,
        config=cfg,
        series=rows,
        n_files=len(paths),
        n_images=kinds["image"],
        n_other_dicom=kinds["other_dicom"],
        n_not_dicom=kinds["not_dicom"],
        unreadable=unreadable,
        skipped=skipped,
    )
    for path, error in unreadable:
        log.warning("unreadable: %s: %s", path, error)
    for path, what in skipped:
        log.warning("skipped %s: %s", path, what)
    return result


def _find_twins(rows: list[SeriesRow]) -> None:
    """Note series that share a folder, SeriesNumber, description, plane and matrix.

    One damaged byte in a SeriesInstanceUID makes a valid UID of another series:
    the file then leaves its series, which looks complete without it.
    """
    groups: dict[tuple[str, int | None, str, str, str], list[SeriesRow]] = defaultdict(list)
    for r in rows:
        key = (r.folders, r.series_number, r.series_description, r.orientation, r.matrix)
        groups[key].append(r)
    for group in groups.values():
        if len(group) < 2:
            continue
        for r in group:
            for other in group:
                if other is not r:
                    names = ", ".join(f.name for f in other.files[:3])
                    r.twins.append(f"series {other.series_uid} ({other.n_files} files: {names})")


def _attribute_unreadable(rows: list[SeriesRow], unreadable: list[tuple[str, str]]) -> None:
    """Charge an unreadable file to the series of its folder when the folder holds one only.

    A file whose header cannot be read has no known series; in a per-series
    folder (the usual layout) it is surely part of that series, which is then
    incomplete. In a flat folder of several series it cannot be attributed.
    """
    by_folder: dict[str, set[int]] = defaultdict(set)
    for i, r in enumerate(rows):
        for f in r.files:
            by_folder[str(f.parent)].add(i)
    for path, error in unreadable:
        owners = by_folder.get(str(Path(path).parent), set())
        if len(owners) == 1:
            rows[next(iter(owners))].unreadable.append(f"{Path(path).name} ({error})")
