"""Inclusion criteria (supplement 1.2) and header quality control, per series.

Each check returns ``None`` when the series passes it, else the reason in words
(e.g. ``"field strength 1.5 T (want 3 T)"``). :data:`CHECKS` lists them in the
order they are applied: the first failing one is the series' ``reason``.
"""

from __future__ import annotations

import math
import re
from collections import Counter
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np

from slicelib.config import ScanConfig
from slicelib.data.headers import FileHeader

GAUSS_PER_TESLA = 10_000.0


@dataclass
class SeriesRow:
    """One series as the scan sees it (one CSV row). ``files`` are not written to the CSV."""

    patient_id: str
    study_uid: str
    series_uid: str
    series_number: int | None
    series_description: str
    protocol_name: str
    modality: str
    manufacturer: str
    model: str
    field_strength: float | None
    orientation: str  # "axial", "sagittal", "coronal" (closest plane), or "unknown"
    axial_angle_deg: float | None  # angle between the slice normal and the z axis
    slice_thickness: float | None
    slice_spacing: float | None  # mean distance between sorted slice positions, mm
    pixel_spacing: str  # "row x col" mm
    matrix: str  # "rows x columns"
    n_slices: int
    n_files: int
    transfer_syntax: str
    folders: str  # the folder(s) holding the files, relative to the scan root, "; "-joined
    included: bool = False
    criterion: str = ""  # short name of the first failing check
    reason: str = ""  # the first failing check in words; "" when included
    selected: bool = False  # the one series kept for its patient
    note: str = ""  # why it was (not) selected among the patient's passing series
    files: list[Path] = field(default_factory=list, repr=False)
    # Per-file facts the checks need; not written to the CSV.
    headers: list[FileHeader] = field(default_factory=list, repr=False)
    unreadable: list[str] = field(default_factory=list, repr=False)
    # Other series of the same folder that look like this one split in two.
    twins: list[str] = field(default_factory=list, repr=False)


def field_strength_tesla(value: float | None) -> float | None:
    """MagneticFieldStrength in tesla (a few old files store gauss)."""
    if value is None:
        return None
    return value / GAUSS_PER_TESLA if value > 100 else value


def axial_angle(orientation: Sequence[float]) -> float:
    """Angle in degrees between the slice normal of ImageOrientationPatient and z."""
    iop = np.asarray(orientation, dtype=np.float64)
    n = np.cross(iop[:3], iop[3:])
    norm = float(np.linalg.norm(n))
    if norm < 1e-6:
        return 90.0
    return math.degrees(math.acos(min(1.0, abs(float(n[2])) / norm)))


def plane_name(orientation: Sequence[float]) -> str:
    """The anatomical plane closest to the slice plane."""
    iop = np.asarray(orientation, dtype=np.float64)
    n = np.abs(np.cross(iop[:3], iop[3:]))
    return ("sagittal", "coronal", "axial")[int(np.argmax(n))]


def _token_match(patterns: Sequence[str], text: str) -> str | None:
    """The first pattern that starts a word-like token of ``text`` (case-insensitive)."""
    for pattern in patterns:
        if re.search(rf"(?<![a-z0-9]){re.escape(pattern.lower())}", text):
            return pattern
    return None


def _fmt(x: float) -> str:
    return f"{x:g}"


def check_unreadable(row: SeriesRow, cfg: ScanConfig) -> str | None:
    if row.unreadable:
        more = f" and {len(row.unreadable) - 1} more" if len(row.unreadable) > 1 else ""
        return f"unreadable file {row.unreadable[0]}{more}"
    return None


def check_twins(row: SeriesRow, cfg: ScanConfig) -> str | None:
    if row.twins:
        return (
            f"folder {row.folders} also holds {row.twins[0]} with the same SeriesNumber, "
            "description, plane and matrix (a damaged SeriesInstanceUID?)"
        )
    return None


def check_size(row: SeriesRow, cfg: ScanConfig) -> str | None:
    cap = cfg.max_slice_mb * 2**20
    for h in row.headers:
        if h.pixel_bytes() > cap:
            return (
                f"file {Path(h.path).name}: image of {h.rows} x {h.columns} x {h.n_frames} "
                f"({h.pixel_bytes() / 2**20:.0f} MB) exceeds the {_fmt(cfg.max_slice_mb)} MB cap "
                "(max_slice_mb)"
            )
    return None


def _first_file(row: SeriesRow, bad: Callable[[FileHeader], object]) -> FileHeader | None:
    """The first file of ``row`` for which ``bad`` holds, or None."""
    return next((h for h in row.headers if bad(h)), None)


def check_values(row: SeriesRow, cfg: ScanConfig) -> str | None:
    h = _first_file(row, lambda h: h.problems)
    return None if h is None else f"file {Path(h.path).name}: {h.problems[0]}"


def check_complete(row: SeriesRow, cfg: ScanConfig) -> str | None:
    """Every slice from the first to the last instance is there, each once."""
    numbers = [h.instance_number for h in row.headers if h.instance_number is not None]
    absent = [Path(h.path).name for h in row.headers if h.instance_number is None]
    if absent and numbers:
        return f"file {absent[0]}: missing InstanceNumber"
    if absent:  # no file has one: nothing to compare
        return None
    counts = Counter(numbers)
    dup = [n for n, c in counts.items() if c > 1]
    if dup:
        names = [Path(h.path).name for h in row.headers if h.instance_number == dup[0]]
        return f"InstanceNumber {dup[0]} in {len(names)} files ({', '.join(names[:3])})"
    lo, hi = min(counts), max(counts)
    if hi - lo + 1 != len(numbers):
        have = set(counts)
        gaps = [n for n in range(lo, hi + 1) if n not in have][:3]
        return (
            f"InstanceNumber runs {lo}-{hi} but {len(numbers)} files "
            f"(missing {', '.join(map(str, gaps))}; a slice may be lost)"
        )
    return None


def check_modality(row: SeriesRow, cfg: ScanConfig) -> str | None:
    if not row.modality:
        return "missing Modality"
    if row.modality.upper() != cfg.modality.upper():
        return f"modality {row.modality} (want {cfg.modality})"
    return None


def check_field_strength(row: SeriesRow, cfg: ScanConfig) -> str | None:
    tesla = field_strength_tesla(row.field_strength)
    if tesla is None:
        return "missing MagneticFieldStrength"
    if abs(tesla - cfg.field_strength_t) > cfg.field_strength_tol_t:
        return f"field strength {tesla:.3g} T (want {_fmt(cfg.field_strength_t)} T)"
    return None


def check_manufacturer(row: SeriesRow, cfg: ScanConfig) -> str | None:
    if not row.manufacturer:
        return "missing Manufacturer"
    if cfg.manufacturer.lower() not in row.manufacturer.lower():
        return f"manufacturer {row.manufacturer} (want {cfg.manufacturer.capitalize()})"
    return None


def check_sequence(row: SeriesRow, cfg: ScanConfig) -> str | None:
    text = f"{row.series_description} {row.protocol_name}".lower()
    shown = row.series_description or row.protocol_name or "(no description)"
    excluded = _token_match(cfg.exclude_patterns, text)
    if excluded:
        return f"sequence '{shown}' matches '{excluded}' (want T2-weighted)"
    if not _token_match(cfg.t2_patterns, text):
        return f"sequence '{shown}' is not T2-weighted (no {'/'.join(cfg.t2_patterns)})"
    return None


def check_orientation(row: SeriesRow, cfg: ScanConfig) -> str | None:
    if row.axial_angle_deg is None:
        return "missing ImageOrientationPatient"
    if row.orientation == "mixed":
        return "slices differ in ImageOrientationPatient"
    if row.axial_angle_deg > cfg.max_axial_angle_deg:
        return (
            f"orientation {row.orientation} ({row.axial_angle_deg:.0f} deg from axial; "
            f"want axial within {_fmt(cfg.max_axial_angle_deg)} deg)"
        )
    return None


def check_thickness(row: SeriesRow, cfg: ScanConfig) -> str | None:
    if row.slice_thickness is None:
        return "missing SliceThickness"
    if abs(row.slice_thickness - cfg.slice_thickness_mm) > cfg.slice_thickness_tol_mm + 1e-6:
        return (
            f"slice thickness {_fmt(row.slice_thickness)} mm "
            f"(want {_fmt(cfg.slice_thickness_mm)} +/- {_fmt(cfg.slice_thickness_tol_mm)} mm)"
        )
    return None


def check_slices(row: SeriesRow, cfg: ScanConfig) -> str | None:
    if any(h.n_frames > 1 for h in row.headers):
        return "multi-frame images (not supported)"
    if row.n_slices < cfg.min_slices:
        return f"{row.n_slices} slices (want >= {cfg.min_slices})"
    return None


def check_metadata(row: SeriesRow, cfg: ScanConfig) -> str | None:
    missing = Counter(tag for h in row.headers for tag in h.missing)
    if missing:
        tag, count = missing.most_common(1)[0]
        first = next(Path(h.path).name for h in row.headers if tag in h.missing)
        return f"missing {tag} in {count} of {row.n_files} files (e.g. {first})"
    if not row.patient_id:
        return "missing PatientID"
    sizes = {(h.rows, h.columns) for h in row.headers}
    spacings = {h.pixel_spacing for h in row.headers}
    if len(sizes) > 1 or len(spacings) > 1:
        return "slices differ in image size or pixel spacing"
    if any(h.samples != 1 for h in row.headers):
        return "colour images (want greyscale)"
    return None


def check_files(row: SeriesRow, cfg: ScanConfig) -> str | None:
    h = _first_file(row, lambda h: h.truncated)
    return None if h is None else f"truncated file {Path(h.path).name} ({h.truncated})"


def check_positions(row: SeriesRow, cfg: ScanConfig) -> str | None:
    positions = [h.position for h in row.headers]
    if any(p is None for p in positions):
        return "missing ImagePositionPatient"
    if row.orientation == "mixed" or row.axial_angle_deg is None:
        return None
    first = next((h.orientation for h in row.headers if h.orientation is not None), None)
    if first is None:
        return "missing ImageOrientationPatient"
    iop = np.asarray(first, dtype=np.float64)
    n = np.cross(iop[:3], iop[3:])
    if float(np.linalg.norm(n)) < 1e-6:
        return f"degenerate ImageOrientationPatient {list(first)}"
    along = np.sort(np.asarray(positions, dtype=np.float64) @ (n / np.linalg.norm(n)))
    if not np.all(np.isfinite(along)):
        return "slice positions out of range"
    gaps = np.diff(along)
    n_dup = int(np.sum(gaps < 1e-3))
    if n_dup:
        return f"{n_dup} duplicate slice position(s)"
    if len(gaps):
        median = float(np.median(gaps))
        if float(np.max(np.abs(gaps - median))) > cfg.spacing_rel_tol * median:
            return (
                f"non-uniform slice spacing ({gaps.min():.2f}-{gaps.max():.2f} mm; "
                "a slice may be missing)"
            )
    return None


Check = Callable[[SeriesRow, ScanConfig], str | None]

# (criterion name, check) in the order applied: the cohort definition, then QC.
CHECKS: tuple[tuple[str, Check], ...] = (
    ("unreadable", check_unreadable),
    ("split", check_twins),
    ("size", check_size),
    ("values", check_values),
    ("modality", check_modality),
    ("field_strength", check_field_strength),
    ("manufacturer", check_manufacturer),
    ("sequence", check_sequence),
    ("orientation", check_orientation),
    ("thickness", check_thickness),
    ("slices", check_slices),
    ("metadata", check_metadata),
    ("truncated", check_files),
    ("positions", check_positions),
    ("complete", check_complete),
)


def apply_criteria(row: SeriesRow, cfg: ScanConfig) -> None:
    """Set ``row.included``, ``row.criterion`` and ``row.reason`` from :data:`CHECKS`."""
    for name, check in CHECKS:
        reason = check(row, cfg)
        if reason:
            row.included, row.criterion, row.reason = False, name, reason
            return
    row.included, row.criterion, row.reason = True, "", ""


def summarise_series(headers: list[FileHeader], rel_folders: list[str]) -> SeriesRow:
    """One :class:`SeriesRow` from the headers of all files of one series."""
    headers = sorted(headers, key=lambda h: h.path)
    first = headers[0]

    def common(values: list[str]) -> str:
        values = [v for v in values if v]
        return Counter(values).most_common(1)[0][0] if values else ""

    orientations = [h.orientation for h in headers if h.orientation is not None]
    angle: float | None = None
    plane = "unknown"
    if orientations:
        arr = np.asarray(orientations)
        if float(np.max(np.abs(arr - arr[0]))) > 1e-3:
            plane, angle = "mixed", axial_angle(arr[0])
        else:
            plane, angle = plane_name(arr[0]), axial_angle(arr[0])
    spacing: float | None = None
    positions = [h.position for h in headers]
    if orientations and plane != "mixed" and all(p is not None for p in positions):
        iop = np.asarray(orientations[0])
        n = np.cross(iop[:3], iop[3:])
        if np.linalg.norm(n) > 1e-6 and len(positions) > 1:
            along = np.sort(np.asarray(positions, dtype=np.float64) @ (n / np.linalg.norm(n)))
            spacing = round(float(np.mean(np.diff(along))), 4)
    px = first.pixel_spacing
    return SeriesRow(
        patient_id=common([h.patient_id for h in headers]),
        study_uid=common([h.study_uid for h in headers]),
        series_uid=first.series_uid,
        series_number=first.series_number,
        series_description=first.series_description,
        protocol_name=first.protocol_name,
        modality=first.modality,
        manufacturer=first.manufacturer,
        model=first.model,
        field_strength=first.field_strength,
        orientation=plane,
        axial_angle_deg=None if angle is None else round(angle, 2),
        slice_thickness=first.slice_thickness,
        slice_spacing=spacing,
        pixel_spacing=f"{px[0]:g} x {px[1]:g}" if px else "",
        matrix=f"{first.rows} x {first.columns}" if first.rows else "",
        n_slices=sum(h.n_frames for h in headers),
        n_files=len(headers),
        transfer_syntax=first.transfer_syntax,
        folders="; ".join(sorted(set(rel_folders))),
        files=[Path(h.path) for h in headers],
        headers=headers,
    )
