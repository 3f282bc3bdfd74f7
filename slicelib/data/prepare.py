"""``prepare``: scan a DICOM tree (or a folder of NIfTI volumes) and write the cache.

For each patient the chosen series is read, normalised to [0, 1], centre-cropped
to a square and resized to ``size x size`` (see :mod:`slicelib.data.preprocess`).
A series that fails to load or normalise, for whatever reason, is excluded with
its reason and the patient's next passing series, if any, is tried: one patient
never stops the run. Patients are then split 70/15/15 with the configured seed,
and the cache is written atomically.

The input kind follows :data:`INPUT_KIND_RULE` unless given. One ``prepare`` at
a time writes a cache folder (a lock beside it names the holder); temporary
folders that killed runs left beside it are removed; a cache inside the data
root (or a data root inside the cache) is refused.
"""

from __future__ import annotations

import hashlib
import json
import logging
import os
from collections import Counter
from collections.abc import Callable
from dataclasses import dataclass, field
from functools import partial
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd
from tqdm import tqdm

from slicelib.config import (
    DEFAULT_INPUT_KIND,
    INPUT_KINDS,
    PrepareConfig,
    ScanConfig,
    to_dict,
)
from slicelib.data.cache import Cache, CacheWriter, check_target
from slicelib.data.dicom import Volume, load_series
from slicelib.data.headers import looks_like_dicom_name
from slicelib.data.nifti import check_slice_axis, is_nifti, load_nifti, nifti_stem, slice_axis
from slicelib.data.preprocess import preprocess_volume
from slicelib.data.scan import DEFAULT_SCAN_CONFIG, scan, walk_files
from slicelib.data.split import split_patients
from slicelib.errors import SlicelibError
from slicelib.outputs import require_path, writing

log = logging.getLogger(__name__)


@dataclass
class Candidate:
    """One series that may become a patient's volume; ``load`` reads it."""

    patient_id: str
    series_uid: str
    load: Callable[[], Volume]
    meta: dict[str, Any] = field(default_factory=dict)
    inputs: list[tuple[str, int, int]] = field(default_factory=list)  # (file, size, mtime_ns)


@dataclass
class Source:
    """What ``prepare`` reads: candidates per patient (best first) and a summary."""

    kind: str
    root: Path
    patients: dict[str, list[Candidate]]
    summary: dict[str, Any]


def validate_config(cfg: PrepareConfig) -> None:
    if cfg.size < 8:
        raise SlicelibError(f"size must be >= 8 pixels (got {cfg.size})")
    if cfg.clip_percentiles is not None:
        lo, hi = cfg.clip_percentiles
        if not 0.0 <= lo < hi <= 100.0:
            raise SlicelibError(
                f"clip_percentiles must satisfy 0 <= lo < hi <= 100 (got {lo}, {hi})"
            )
    if cfg.dtype not in ("float16", "float32"):
        raise SlicelibError(f"dtype must be float16 or float32 (got {cfg.dtype!r})")


def _stat(root: Path, files: list[Path]) -> list[tuple[str, int, int]]:
    out = []
    for f in files:
        st = os.stat(f)
        out.append((os.path.relpath(f, root), st.st_size, st.st_mtime_ns))
    return out


def dicom_source(root: Path, scan_cfg: ScanConfig, progress: bool) -> Source:
    result = scan(root, scan_cfg, progress=progress)
    result.log_summary()
    if not result.included():
        raise SlicelibError(
            f"no series under {root} passes the criteria ({len(result.series)} series): "
            f"{result.top_reasons()}"
        )
    patients: dict[str, list[Candidate]] = {}
    for chosen in result.selected():
        cands = []
        for row in result.candidates(chosen.patient_id):
            meta = {
                "series_uid": row.series_uid,
                "study_uid": row.study_uid,
                "series_number": row.series_number,
                "series_description": row.series_description,
                "manufacturer": row.manufacturer,
                "model": row.model,
                "field_strength": row.field_strength,
                "slice_thickness": row.slice_thickness,
                "folders": row.folders,
                "note": row.note,
            }
            files = list(row.files)
            cands.append(
                Candidate(
                    patient_id=row.patient_id,
                    series_uid=row.series_uid,
                    load=partial(
                        load_series,
                        files,
                        spacing_rel_tol=scan_cfg.spacing_rel_tol,
                        max_slice_mb=scan_cfg.max_slice_mb,
                        max_volume_mb=scan_cfg.max_volume_mb,
                    ),
                    meta=meta,
                    inputs=_stat(root, files),
                )
            )
        patients[chosen.patient_id] = cands
    return Source("dicom", root, patients, result.summary())


def nifti_source(
    root: Path,
    files: list[Path],
    requested_axis: int | None = None,
    scan_cfg: ScanConfig = DEFAULT_SCAN_CONFIG,
) -> Source:
    """One candidate per file; each file's slice axis (and the rule that chose it) is read
    from its header now, so that a broken header stops ``prepare`` naming the file.
    ``scan_cfg``: its size caps (``max_slice_mb``, ``max_volume_mb``) apply to each file."""
    check_slice_axis(requested_axis)
    patients: dict[str, list[Candidate]] = {}
    for f in files:
        pid = nifti_stem(f)
        if pid in patients:
            raise SlicelibError(f"two NIfTI files for patient {pid!r} under {root} ({f})")
        axis = slice_axis(f, requested_axis)
        patients[pid] = [
            Candidate(
                patient_id=pid,
                series_uid=pid,
                load=partial(
                    load_nifti,
                    f,
                    axis.axis,
                    max_slice_mb=scan_cfg.max_slice_mb,
                    max_volume_mb=scan_cfg.max_volume_mb,
                ),
                meta={
                    "series_uid": pid,
                    "file_name": str(f.relative_to(root)),
                    "slice_axis": axis.axis,
                    "slice_axis_rule": axis.rule,
                },
                inputs=_stat(root, [f]),
            )
        ]
    summary = {"root": str(root), "nifti_files": len(files), "patients": len(patients)}
    log.info("found %d NIfTI volumes under %s (one per patient)", len(files), root)
    return Source("nifti", root, patients, summary)


def find_nifti(root: Path) -> list[Path]:
    return [Path(p) for p in walk_files(root) if is_nifti(Path(p))]


def scan_nifti(root: Path, files: list[Path]) -> tuple[pd.DataFrame, dict[str, Any]]:
    """The scan table of a folder of NIfTI volumes (one per patient): every volume is
    included; its slices are counted from the header. Returns the table and its summary
    counts (as :meth:`slicelib.data.scan.ScanResult.summary` gives them for DICOM)."""
    import nibabel as nib

    rows = []
    for path in files:
        header: Any = nib.load(str(path)).header  # reads the header only
        shape = tuple(header.get_data_shape())
        rows.append(
            {"patient_id": nifti_stem(path), "file": str(path.relative_to(root)),
             "n_slices": int(shape[2]) if len(shape) > 2 else 1, "included": True,
             "selected": True, "reason": ""}
        )  # fmt: skip
    frame = pd.DataFrame(rows)
    n = len(frame)
    summary = {"root": str(root), "series": n, "series_included": n, "volumes": n,
               "patients": int(frame["patient_id"].nunique()),
               "slices": int(frame["n_slices"].sum())}  # fmt: skip
    return frame, summary


def _examples(paths: list[str], root: Path, n: int = 3) -> str:
    shown = ", ".join(os.path.relpath(p, root) for p in paths[:n])
    return shown + (f", ... ({len(paths)} in all)" if len(paths) > n else "")


def input_kind(root: Path, kind: str = DEFAULT_INPUT_KIND) -> tuple[str, list[Path]]:
    """("dicom" | "nifti", the NIfTI files) of ``root`` by :data:`INPUT_KIND_RULE`."""
    if kind not in INPUT_KINDS:
        raise SlicelibError(f"input kind must be one of {', '.join(INPUT_KINDS)} (got {kind!r})")
    files = walk_files(root)
    nifti = [p for p in files if is_nifti(Path(p))]
    dicom = [p for p in files if not is_nifti(Path(p)) and looks_like_dicom_name(p)]
    if kind == "dicom":
        if nifti:
            log.info("input kind dicom: %d NIfTI file(s) ignored", len(nifti))
        return "dicom", []
    if kind == "nifti":
        if not nifti:
            raise SlicelibError(f"no .nii/.nii.gz file under {root} (input kind nifti)")
        if dicom:
            log.info("input kind nifti: %d other file(s) ignored", len(dicom))
        return "nifti", [Path(p) for p in nifti]
    if nifti and dicom:
        raise SlicelibError(
            f"{root} mixes {len(nifti)} NIfTI file(s) ({_examples(nifti, root)}) and "
            f"{len(dicom)} DICOM-named file(s) ({_examples(dicom, root)}); "
            "pass --input-kind dicom or nifti (input_kind=...)"
        )
    return ("nifti", [Path(p) for p in nifti]) if nifti else ("dicom", [])


def check_not_nested(root: Path, target: Path) -> None:
    """Refuse a cache inside the data root (it would be scanned) or around it (it
    would be replaced)."""
    r, t = root.resolve(), target.resolve()
    if t == r or r in t.parents:
        raise SlicelibError(f"cache {target} is inside the data root {root}; choose another")
    if t in r.parents:
        raise SlicelibError(f"data root {root} is inside the cache folder {target}")


def fingerprint(source: Source, cfg: PrepareConfig, scan_cfg: ScanConfig) -> str:
    """SHA-256 over the settings and every input file's name, size and mtime."""
    # Safety limits and parallelism change no result for valid data.
    ignored = ("workers", "max_slice_mb", "max_volume_mb")
    scan_settings = {k: v for k, v in to_dict(scan_cfg).items() if k not in ignored}
    payload = {
        "kind": source.kind,
        "config": to_dict(cfg),
        "scan": scan_settings if source.kind == "dicom" else {"min_slices": scan_cfg.min_slices},
        "inputs": {
            pid: [(c.series_uid, c.inputs) for c in cands]
            for pid, cands in sorted(source.patients.items())
        },
    }
    return hashlib.sha256(json.dumps(payload, sort_keys=True).encode()).hexdigest()


def prepare_patient(
    candidates: list[Candidate],
    cfg: PrepareConfig,
    scan_cfg: ScanConfig,
    excluded: list[dict[str, str]],
) -> tuple[np.ndarray, dict[str, Any]] | None:
    """The first candidate that loads and normalises: (S, size, size) in [0, 1] and its
    manifest fields. Each failure, of any kind, is appended to ``excluded`` with its
    reason: one damaged patient never stops the others."""
    for cand in candidates:
        try:
            vol = cand.load()
            if vol.n_slices < scan_cfg.min_slices:
                raise SlicelibError(f"{vol.n_slices} slices (want >= {scan_cfg.min_slices})")
            if cand.inputs and len(vol.files) not in (0, len(cand.inputs)):
                raise SlicelibError(f"{len(vol.files)} of {len(cand.inputs)} files loaded")
            pixels, pixel_mm = preprocess_volume(
                vol.pixels, vol.pixel_spacing, cfg.size, cfg.clip_percentiles, cfg.min_p99
            )
        except Exception as exc:  # isolate the patient, whatever went wrong
            reason = str(exc) if isinstance(exc, SlicelibError) else _unexpected(exc)
            excluded.append(
                {"patient_id": cand.patient_id, "series_uid": cand.series_uid, "reason": reason}
            )
            log.warning(
                "excluded patient %s series %s: %s", cand.patient_id, cand.series_uid, reason
            )
            log.debug("details", exc_info=True)
            continue
        meta = {
            **cand.meta,
            "spacing_mm": round(vol.slice_spacing, 4),
            "pixel_mm": round(pixel_mm, 5),
            "original_shape": list(vol.pixels.shape),
            "original_pixel_spacing_mm": list(vol.pixel_spacing),
        }
        return pixels, meta
    return None


def _unexpected(exc: BaseException) -> str:
    lines = str(exc).strip().splitlines()
    text = lines[0][:200] if lines else ""
    return f"unexpected {type(exc).__name__}" + (f": {text}" if text else "")


def prepare(
    data_root: str | Path,
    cache_dir: str | Path,
    cfg: PrepareConfig,
    scan_cfg: ScanConfig = DEFAULT_SCAN_CONFIG,
    force: bool = False,
    *,
    progress: bool = True,
    input_kind: str = DEFAULT_INPUT_KIND,
) -> Cache:
    """Build the cache of ``data_root`` (DICOM tree, or folder of NIfTI files) in ``cache_dir``.

    ``input_kind``: one of :data:`INPUT_KINDS` (see :data:`INPUT_KIND_RULE`).
    Identical settings and inputs return the existing cache untouched; a cache
    made with other settings is refused unless ``force``. Raises
    :class:`SlicelibError` with the top exclusion reasons when no volume passes,
    and when another ``prepare`` is writing the same cache (naming it).
    """
    validate_config(cfg)
    root = require_path(data_root, "data root")
    if not root.exists():
        raise SlicelibError(f"data root {root} does not exist")
    if not root.is_dir():
        raise SlicelibError(f"data root {root} is not a folder")
    target = require_path(cache_dir, "cache").absolute()
    check_not_nested(root, target)
    check_target(target, cfg, None, force)  # refuse early, before a long scan
    with writing(target, "cache"):
        return _prepare_locked(root, target, cfg, scan_cfg, force, progress, input_kind)


def _prepare_locked(
    root: Path,
    target: Path,
    cfg: PrepareConfig,
    scan_cfg: ScanConfig,
    force: bool,
    progress: bool,
    kind: str,
) -> Cache:
    kind, nifti = input_kind(root, kind)
    source = (
        nifti_source(root, nifti, cfg.slice_axis, scan_cfg)
        if kind == "nifti"
        else dicom_source(root, scan_cfg, progress)
    )
    fp = fingerprint(source, cfg, scan_cfg)
    existing = check_target(target, cfg, fp, force)
    if existing is not None:
        log.info("cache %s is up to date (same settings and inputs): nothing to do", target)
        return existing

    excluded: list[dict[str, str]] = []
    with CacheWriter(target, cfg) as writer:
        patients = sorted(source.patients.items())
        for pid, cands in tqdm(patients, desc="prepare", unit="patient", disable=not progress):
            done = prepare_patient(cands, cfg, scan_cfg, excluded)
            if done is not None:
                writer.add(pid, *done)
        if not writer.records:
            reasons = Counter(e["reason"] for e in excluded).most_common(3)
            shown = "; ".join(f"{n}x {r}" for r, n in reasons)
            raise SlicelibError(f"no volume under {root} could be prepared: {shown}")
        splits = split_patients(writer.records, cfg.split, cfg.seed)
        extra = {
            "source": {"kind": source.kind, "root": str(root)},
            "scan": source.summary,
            "scan_config": to_dict(scan_cfg),
            "excluded_in_prepare": excluded,
        }
        cache = writer.finish(splits, fp, extra, force=force)
    n_slices = sum(e.n_slices for e in cache.entries())
    log.info(
        "wrote cache %s: %d patients, %d slices at %dx%d (%d excluded while preparing)",
        target,
        len(cache),
        n_slices,
        cfg.size,
        cfg.size,
        len(excluded),
    )
    return cache
