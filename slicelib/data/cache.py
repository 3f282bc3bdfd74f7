"""The preprocessed cache: one memory-mappable ``.npy`` per patient and a manifest.

Layout::

    CACHE_DIR/manifest.json
    CACHE_DIR/volumes/<patient>.npy     (S, size, size) float16 (or float32), in [0, 1]

``manifest.json`` = ``{"format", "slicelib_version", "created", "fingerprint",
"config": PrepareConfig, "patients": [{"patient_id", "series_uid", "split",
"n_slices", "spacing_mm", "file", ...}], "statistics": ..., ...}`` with ``file``
relative to the cache. A cache is written into a temporary folder beside its
target and renamed into place, so a failure never leaves a half-written cache; it
holds the marker of :mod:`slicelib.outputs` (kind ``cache``), and only a folder that
slicelib wrote as a cache is ever replaced.
"""

from __future__ import annotations

import contextlib
import dataclasses
import hashlib
import json
import logging
import os
import re
from collections import OrderedDict
from collections.abc import Mapping
from dataclasses import dataclass
from datetime import UTC, datetime
from pathlib import Path
from types import TracebackType
from typing import Any

import numpy as np

from slicelib import __version__
from slicelib.config import PrepareConfig, from_dict, to_dict
from slicelib.data.triplets import SPLITS, cohort_statistics, format_statistics
from slicelib.errors import SlicelibError
from slicelib.io import publish_directory, staged_directory, write_marker
from slicelib.outputs import check_output

log = logging.getLogger(__name__)

MANIFEST = "manifest.json"
FORMAT = 1
VOLUME_DIR = "volumes"
MAX_OPEN_VOLUMES = 256  # each memmap holds a file descriptor: keep well under ulimit -n
RANGE_TOL = 1e-3  # values outside [0, 1] by more than this are refused


@dataclass(frozen=True)
class CacheEntry:
    """One patient's volume in the cache.

    ``spacing_mm``: distance between slices (through-plane), mm. ``file``: the
    ``.npy`` path relative to the cache folder; ``path``: the same, absolute.
    ``pixel_mm``: in-plane pixel size after resizing (None when unknown).
    """

    patient_id: str
    series_uid: str
    split: str
    n_slices: int
    spacing_mm: float
    file: str
    path: Path
    pixel_mm: float | None = None


class Cache:
    """Read access to a cache folder (see the module docstring).

    Volumes are opened lazily as read-only memmaps and kept (at most
    :data:`MAX_OPEN_VOLUMES`); pickling drops them, so a ``Cache`` travels to
    DataLoader worker processes without open file handles.
    """

    def __init__(self, cache_dir: str | Path) -> None:
        self.root = Path(cache_dir)
        self.manifest = read_manifest(self.root)
        try:
            self.config: PrepareConfig = from_dict(PrepareConfig, self.manifest["config"])
            self._entries = [self._entry(p) for p in self.manifest["patients"]]
        except (KeyError, TypeError, ValueError) as exc:
            raise SlicelibError(f"cache {self.root}: invalid {MANIFEST} ({exc!r})") from None
        self._by_id = {e.patient_id: e for e in self._entries}
        self._open: OrderedDict[str, np.ndarray] = OrderedDict()

    def _entry(self, p: Mapping[str, Any]) -> CacheEntry:
        return CacheEntry(
            patient_id=str(p["patient_id"]),
            series_uid=str(p["series_uid"]),
            split=str(p["split"]),
            n_slices=int(p["n_slices"]),
            spacing_mm=float(p["spacing_mm"]),
            file=str(p["file"]),
            path=self.root / str(p["file"]),
            pixel_mm=None if p.get("pixel_mm") is None else float(p["pixel_mm"]),
        )

    @property
    def fingerprint(self) -> str:
        return str(self.manifest.get("fingerprint", ""))

    @property
    def size(self) -> int:
        """Slices are ``size x size`` pixels."""
        return self.config.size

    def __len__(self) -> int:
        return len(self._entries)

    def __repr__(self) -> str:
        return f"Cache({str(self.root)!r}, patients={len(self)}, size={self.size})"

    def entries(self, split: str | None = None) -> list[CacheEntry]:
        """The patients of ``split`` ("train", "val", "test"; None: all), by patient id."""
        if split is None:
            return list(self._entries)
        if split not in SPLITS:
            raise SlicelibError(f"unknown split {split!r} (choose from {', '.join(SPLITS)})")
        return [e for e in self._entries if e.split == split]

    def entry(self, patient_id: str) -> CacheEntry:
        try:
            return self._by_id[patient_id]
        except KeyError:
            raise SlicelibError(f"cache {self.root}: no patient {patient_id!r}") from None

    def volume(self, patient_id: str) -> np.ndarray:
        """Read-only memmap (S, size, size) of the cache dtype, values in [0, 1]."""
        vol = self._open.get(patient_id)
        if vol is not None:
            self._open.move_to_end(patient_id)
            return vol
        entry = self.entry(patient_id)
        try:
            vol = np.load(entry.path, mmap_mode="r")
        except (OSError, ValueError) as exc:
            raise SlicelibError(f"cache volume {entry.path}: unreadable ({exc})") from None
        if vol.ndim != 3 or vol.shape[0] != entry.n_slices:
            raise SlicelibError(
                f"cache volume {entry.path}: shape {vol.shape} does not match the manifest "
                f"({entry.n_slices} slices)"
            )
        self._open[patient_id] = vol
        if len(self._open) > MAX_OPEN_VOLUMES:
            self._open.popitem(last=False)
        return vol

    def statistics(self) -> dict[str, dict[str, int]]:
        """Patients, volumes, slices and triplets (k=1, k=2, common) per split."""
        return cohort_statistics(self._entries)

    def __getstate__(self) -> dict[str, Any]:
        state = self.__dict__.copy()
        state["_open"] = OrderedDict()
        return state


def read_manifest(root: Path) -> dict[str, Any]:
    path = root / MANIFEST
    if not root.is_dir():
        raise SlicelibError(f"cache {root} does not exist")
    if not path.is_file():
        raise SlicelibError(f"cache {root}: no {MANIFEST} (not a slicelib cache)")
    try:
        manifest = json.loads(path.read_text())
    except (OSError, ValueError) as exc:
        raise SlicelibError(f"cache {root}: unreadable {MANIFEST} ({exc})") from None
    if not isinstance(manifest, dict) or manifest.get("format") != FORMAT:
        raise SlicelibError(f"cache {root}: unsupported {MANIFEST} format")
    return manifest


def safe_name(patient_id: str, taken: set[str]) -> str:
    """A file name for a patient id: unsafe characters replaced, unique within ``taken``."""
    base = re.sub(r"[^A-Za-z0-9._-]", "_", patient_id).strip(".") or "patient"
    name, i = base, 1
    while name.lower() in taken:
        i += 1
        name = f"{base}_{i}"
    taken.add(name.lower())
    return name


def config_differences(old: Mapping[str, Any], new: Mapping[str, Any]) -> list[str]:
    """``"size 128 (want 256)"`` for each config field that differs."""
    keys = sorted(set(old) | set(new))
    return [f"{k} {old.get(k)} (want {new.get(k)})" for k in keys if old.get(k) != new.get(k)]


def check_target(
    cache_dir: Path, config: PrepareConfig, fingerprint: str | None, force: bool
) -> Cache | None:
    """What to do with an existing ``cache_dir`` before writing a cache there.

    Returns the existing :class:`Cache` when it was made with the same
    ``config`` and ``fingerprint`` (nothing to do), None when writing may go on.
    Raises :class:`SlicelibError` for a folder that slicelib did not write as a cache
    (:func:`slicelib.outputs.check_output`, ``--force`` or not), or a cache with other
    settings unless ``force``. With ``fingerprint=None`` only the config is compared
    (an early check, before the inputs are known).
    """
    if not cache_dir.exists() and not cache_dir.parent.is_dir():
        raise SlicelibError(f"cache folder's parent {cache_dir.parent} does not exist")
    # A cache of the same settings is kept as it is; one of other settings is replaced
    # only with force, and only when it holds nothing that slicelib did not write.
    if not check_output(cache_dir, "cache", mode="continue", what="cache"):
        return None
    try:
        old = read_manifest(cache_dir)
        old_config = old["config"]
    except (SlicelibError, KeyError):
        if force:
            check_output(cache_dir, "cache", force=True, what="cache")
            return None
        raise SlicelibError(
            f"cache {cache_dir} (written by slicelib) has an unreadable {MANIFEST}; pass "
            "--force (force=True) to replace it"
        ) from None
    diffs = config_differences(old_config, json.loads(json.dumps(to_dict(config))))
    same_inputs = fingerprint is None or old.get("fingerprint") == fingerprint
    if not diffs and same_inputs:
        return Cache(cache_dir) if fingerprint is not None else None
    if force:
        check_output(cache_dir, "cache", force=True, what="cache")
        return None
    what = ", ".join(diffs) if diffs else "other input data"
    raise SlicelibError(
        f"cache {cache_dir} was made with other settings ({what}); "
        "pass --force (force=True) to replace it or choose another folder"
    )


class CacheWriter:
    """Write a cache into a temporary folder; :meth:`finish` renames it into place.

    Use as a context manager: leaving the block by an exception removes the
    temporary folder, so nothing half-written remains.
    """

    def __init__(self, cache_dir: str | Path, config: PrepareConfig) -> None:
        self.target = Path(cache_dir).expanduser().absolute()
        self.config = config
        self.tmp: Path | None = None
        self._stage: contextlib.ExitStack | None = None
        self.records: dict[str, dict[str, Any]] = {}
        self._taken: set[str] = set()

    def __enter__(self) -> CacheWriter:
        self._stage = contextlib.ExitStack()
        self.tmp = self._stage.enter_context(staged_directory(self.target))
        (self.tmp / VOLUME_DIR).mkdir()
        return self

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        if self._stage is not None:  # the error, if any, goes through: it names the cache
            self._stage.__exit__(exc_type, exc, tb)
        self._stage = None
        self.tmp = None

    def add(self, patient_id: str, volume: np.ndarray, meta: Mapping[str, Any]) -> None:
        """Store one volume (S, size, size), values in [0, 1]. ``meta`` goes to the manifest
        (it should hold ``series_uid`` and ``spacing_mm``)."""
        if self.tmp is None:
            raise RuntimeError("CacheWriter.add outside its with-block")
        if patient_id in self.records:
            raise SlicelibError(f"patient {patient_id!r} given twice")
        vol = np.asarray(volume)
        size = self.config.size
        if vol.ndim != 3 or vol.shape[1:] != (size, size) or vol.shape[0] < 1:
            raise SlicelibError(
                f"patient {patient_id!r}: volume shape {vol.shape} (want (S, {size}, {size}) "
                f"for size {size})"
            )
        if not np.all(np.isfinite(vol)) or vol.min() < -RANGE_TOL or vol.max() > 1 + RANGE_TOL:
            raise SlicelibError(f"patient {patient_id!r}: values must be finite and in [0, 1]")
        name = safe_name(patient_id, self._taken)
        rel = f"{VOLUME_DIR}/{name}.npy"
        data = np.clip(vol, 0.0, 1.0).astype(self.config.dtype)
        np.save(self.tmp / rel, np.ascontiguousarray(data))
        record = {
            "patient_id": patient_id,
            "series_uid": str(meta.get("series_uid", patient_id)),
            "split": "",
            "n_slices": int(vol.shape[0]),
            "spacing_mm": float(meta.get("spacing_mm", float("nan"))),
            "file": rel,
        }
        record.update({k: v for k, v in meta.items() if k not in record})
        self.records[patient_id] = record

    def finish(
        self,
        splits: Mapping[str, str],
        fingerprint: str,
        extra: Mapping[str, Any] | None = None,
        force: bool = False,
    ) -> Cache:
        """Write the manifest and rename the folder into place; returns the new cache."""
        if self.tmp is None:
            raise RuntimeError("CacheWriter.finish outside its with-block")
        if not self.records:
            raise SlicelibError("no volumes to write to the cache")
        missing = sorted(set(self.records) - set(splits))
        if missing:
            raise SlicelibError(f"no split given for patient(s) {', '.join(missing[:5])}")
        bad = sorted({s for s in splits.values() if s not in SPLITS})
        if bad:
            raise SlicelibError(f"unknown split(s) {', '.join(bad)} (use {', '.join(SPLITS)})")
        patients = []
        for pid in sorted(self.records):
            self.records[pid]["split"] = splits[pid]
            patients.append(self.records[pid])
        manifest: dict[str, Any] = {
            "format": FORMAT,
            "slicelib_version": __version__,
            "created": datetime.now(UTC).isoformat(timespec="seconds"),
            "fingerprint": fingerprint,
            "config": to_dict(self.config),
            "patients": patients,
            "statistics": cohort_statistics(_Split(p["split"], p["n_slices"]) for p in patients),
        }
        manifest.update(extra or {})
        (self.tmp / MANIFEST).write_text(json.dumps(manifest, indent=1, default=_json_default))
        write_marker(self.tmp, "cache", entries=[MANIFEST, VOLUME_DIR])
        if (self.target / MANIFEST).exists() and not force:
            # Another writer finished first: keep its cache rather than clobber it.
            raise SlicelibError(f"cache {self.target} appeared while writing; not replaced")
        publish_directory(self.tmp, self.target)
        self.tmp = None
        cache = Cache(self.target)
        for line in format_statistics(cache.statistics()):
            log.info("%s", line)
        return cache


@dataclass(frozen=True)
class _Split:
    split: str
    n_slices: int


def _json_default(value: Any) -> Any:
    if isinstance(value, np.generic):
        return value.item()
    if isinstance(value, (Path, os.PathLike)):
        return str(value)
    if dataclasses.is_dataclass(value) and not isinstance(value, type):
        return dataclasses.asdict(value)
    if isinstance(value, (set, frozenset)):
        return sorted(value)
    raise TypeError(f"not JSON serialisable: {type(value).__name__}")


def content_fingerprint(
    volumes: Mapping[str, np.ndarray],
    splits: Mapping[str, str],
    config: PrepareConfig,
    meta: Mapping[str, Mapping[str, Any]] | None,
) -> str:
    """SHA-256 over the config, the splits, the metadata and every volume's bytes."""
    h = hashlib.sha256()
    head = {"config": to_dict(config), "splits": dict(sorted(splits.items()))}
    head["meta"] = {k: dict(v) for k, v in sorted((meta or {}).items())}
    h.update(json.dumps(head, sort_keys=True, default=_json_default).encode())
    for pid in sorted(volumes):
        arr = np.ascontiguousarray(volumes[pid])
        h.update(f"{pid}:{arr.shape}:{arr.dtype}".encode())
        h.update(arr.tobytes())
    return h.hexdigest()


def write_cache(
    cache_dir: str | Path,
    volumes: Mapping[str, np.ndarray],
    splits: Mapping[str, str],
    config: PrepareConfig,
    meta: Mapping[str, dict] | None = None,
    force: bool = False,
    *,
    fingerprint: str | None = None,
    extra: Mapping[str, Any] | None = None,
) -> Cache:
    """Write ``volumes`` ({patient: (S, size, size) in [0, 1]}) as a cache, atomically.

    ``splits``: {patient: "train" | "val" | "test"}. ``meta``: per patient extra
    manifest fields (``series_uid``, ``spacing_mm``, ...). An existing cache with
    the same config and content is returned as it is; one with other settings
    is refused unless ``force``. ``fingerprint`` defaults to a hash of the content.
    """
    target = Path(cache_dir).expanduser().absolute()
    fp = fingerprint or content_fingerprint(volumes, splits, config, meta)
    existing = check_target(target, config, fp, force)
    if existing is not None:
        log.info("cache %s is up to date", target)
        return existing
    meta = meta or {}
    with CacheWriter(target, config) as writer:
        for pid in sorted(volumes):
            writer.add(pid, volumes[pid], meta.get(pid, {}))
        return writer.finish(splits, fp, extra, force=force)
