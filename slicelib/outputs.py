"""Which folders a command may write into: one ownership rule for every output folder.

Every folder that slicelib writes as a whole holds the marker file
:data:`~slicelib.io.OUTPUT_MARKER`, which names its kind (:data:`OutputKind`: a cache
from ``prepare``, a run from ``train``, a cohort from ``demo-data``, an upsampled
series from ``upsample``, a study from ``study``, the html book that ``study``
publishes) and, for a folder written at once, the entries it wrote.
:func:`check_output` applies the rule before anything is written:

- a path that does not exist, or an empty folder, may be written;
- a folder slicelib wrote as the same kind may be continued (a run resumes, a study
  picks up where it stopped) or, with ``--force``, replaced (a cache of other
  settings, an upsampled series, a cohort), unless files were added to it that
  slicelib did not write: those would be lost;
- anything else (a file, a folder without the marker, a folder of another kind) is
  refused in one line naming the folder and what it holds, ``--force`` or not.

Folders written before the marker named its kind are recognised by what they hold
(:func:`folder_kind`). An empty or blank path is refused everywhere
(:func:`require_path`): ``Path("")`` is the current folder.

:func:`writing` holds the output's lock for the time of a write (one writer per
output, naming the holder) and removes the temporary folders that killed writers
left beside it.
"""

from __future__ import annotations

import json
import logging
import shutil
from collections.abc import Iterable, Iterator
from contextlib import ExitStack, contextmanager
from pathlib import Path
from typing import Any, Literal, get_args

from slicelib.errors import SlicelibError, os_error_text
from slicelib.io import OUTPUT_MARKER
from slicelib.locking import hold_lock

log = logging.getLogger(__name__)

OutputKind = Literal["cache", "run", "cohort", "upsampled series", "study", "book"]
OUTPUT_KINDS: tuple[str, ...] = get_args(OutputKind)
# How a command treats an existing folder of its own kind: "replace" it whole (only
# with --force), or "continue" writing into it (a resumed run, a resumed study).
Mode = Literal["replace", "continue"]

# What the commands wrote before the marker named the kind: recognised by these files.
_LEGACY_CACHE_ENTRIES = frozenset({"manifest.json", "volumes"})
_SHOWN = 3  # entries named in a refusal


def require_path(value: str | Path | None, what: str) -> Path:
    """``value`` as a path; a one-line error for an empty or blank one (``Path("")`` would
    be the current folder, and silently read or overwrite what is there)."""
    text = "" if value is None else str(value)
    if not text.strip():
        raise SlicelibError(f"{what}: empty path; give a file or folder name")
    return Path(text).expanduser()


def _article(kind: str) -> str:
    return f"an {kind}" if kind[0] in "aeiou" else f"a {kind}"


def read_marker(folder: Path) -> dict[str, Any] | None:
    """The marker of ``folder`` as a dict (``{}`` when unreadable), or None without one."""
    path = folder / OUTPUT_MARKER
    if not path.is_file():
        return None
    try:
        data = json.loads(path.read_text(encoding="utf-8"))
    except (OSError, ValueError):
        return {}
    return data if isinstance(data, dict) else {}


def _legacy_kind(folder: Path, marker: dict[str, Any] | None) -> str | None:
    """The kind of a folder slicelib wrote before its marker named one, or None."""
    if marker is not None:  # only upsample and demo-data wrote a marker then
        return "cohort" if (folder / "metadata.csv").is_file() else "upsampled series"
    try:
        from slicelib.data.cache import read_manifest

        manifest = read_manifest(folder)
        if isinstance(manifest.get("config"), dict):
            return "cache"
    except SlicelibError:
        pass
    config = _json(folder / "config.json")
    if "slicelib_version" in config and "train" in config:
        return "run"
    if "preset" in _json(folder / "study.json"):
        return "study"
    if (folder / "index.html").is_file() and (folder / "searchindex.js").is_file():
        return "book"  # what Jupyter Book builds
    return None


def _json(path: Path) -> dict[str, Any]:
    try:
        data = json.loads(path.read_text(encoding="utf-8"))
    except (OSError, ValueError):
        return {}
    return data if isinstance(data, dict) else {}


def folder_kind(folder: Path) -> tuple[str | None, frozenset[str] | None]:
    """(the kind slicelib wrote ``folder`` as, or None; the entries it wrote, or None when
    not recorded)."""
    marker = read_marker(folder)
    kind = marker.get("kind") if marker else None
    if kind not in OUTPUT_KINDS:
        kind = _legacy_kind(folder, marker)
        entries = _LEGACY_CACHE_ENTRIES if kind == "cache" and marker is None else None
        return kind, entries
    written = marker.get("entries") if marker else None
    entries = frozenset(str(e) for e in written) if isinstance(written, list) else None
    return kind, entries


def _names(entries: Iterable[str]) -> str:
    names = sorted(entries)
    shown = ", ".join(names[:_SHOWN])
    return shown + (f" and {len(names) - _SHOWN} more" if len(names) > _SHOWN else "")


def check_output(
    target: Path,
    kind: OutputKind,
    *,
    force: bool = False,
    mode: Mode = "replace",
    what: str = "output",
) -> bool:
    """Apply the ownership rule (see the module docstring) to the folder ``target`` that
    a command is about to write as ``kind``; ``what`` names it in errors ("cache",
    "--out"). Returns True when ``target`` is already a folder of that kind (to be
    replaced or continued), False when it is new or empty. Raises
    :class:`SlicelibError` otherwise; in ``"replace"`` mode a folder of that kind needs
    ``force``.
    """
    if not target.exists() and not target.is_symlink():
        return False
    if target.is_symlink() or not target.is_dir():
        raise SlicelibError(f"{what} {target} exists and is not a folder; choose a folder name")
    try:
        present = {p.name for p in target.iterdir()}
    except OSError as exc:
        raise SlicelibError(f"{what} {target}: cannot read ({exc.strerror})") from None
    if not present:
        return False
    found, entries = folder_kind(target)
    if found is None:
        raise SlicelibError(
            f"{what} {target} already exists and was not written by slicelib (it is not a "
            f"slicelib {kind}, and it holds {_names(present)}); refusing to write there, "
            "even with --force: choose a new or empty folder"
        )
    if found != kind:
        raise SlicelibError(
            f"{what} {target} holds {_article(found)} written by slicelib, not "
            f"{_article(kind)}; refusing to write there, even with --force: choose another "
            "folder"
        )
    if mode == "continue":
        return True
    added = present - entries - {OUTPUT_MARKER} if entries is not None else set()
    if added:
        raise SlicelibError(
            f"{what} {target} is {_article(kind)} written by slicelib, but it also holds "
            f"{_names(added)}, not written by slicelib; refusing to replace it, even with "
            "--force: move them out first"
        )
    if not force:
        raise SlicelibError(
            f"{what} {target} already exists (use --force to replace it: it is "
            f"{_article(kind)} written by slicelib)"
        )
    return True


def claim(folder: Path, kind: OutputKind) -> None:
    """Mark an existing ``folder`` (written in place: a run, a study) as ``kind``, unless
    its marker already says so."""
    from slicelib.io import write_marker

    marker = read_marker(folder)
    if not marker or marker.get("kind") != kind:
        write_marker(folder, kind)


def remove_stale(target: Path) -> None:
    """Remove the temporary folders that killed writers of ``target`` left beside it
    (``.NAME.tmp-*`` being written, ``.NAME.old-*`` being replaced).

    Call with the lock of ``target`` held (:func:`writing`): then no live writer owns them.
    """
    for pattern in (f".{target.name}.tmp-*", f".{target.name}.old-*"):
        for stale in target.parent.glob(pattern):
            if stale.is_dir() and not stale.is_symlink():
                log.info("removing %s, left by an interrupted run", stale)
                shutil.rmtree(stale, ignore_errors=True)


def remove_stale_files(folder: Path, names: Iterable[str]) -> None:
    """Remove the temporary files that killed atomic writes of ``folder/NAME`` left
    (``.NAME.*.tmp*``, :func:`slicelib.io.atomic_write`); call with the folder's lock held."""
    for name in names:
        for stale in folder.glob(f".{name}.*.tmp*"):
            if stale.is_file() and not stale.is_symlink():
                log.info("removing %s, left by an interrupted run", stale)
                stale.unlink(missing_ok=True)


@contextmanager
def writing(target: Path, what: str) -> Iterator[None]:
    """Hold the lock of the output ``target`` for the block (a second writer stops at once,
    naming this one) and remove what killed writers left beside it first."""
    with ExitStack() as stack:
        try:
            target.parent.mkdir(parents=True, exist_ok=True)
            stack.enter_context(hold_lock(target, f"{what} {target}"))
        except OSError as exc:  # the lock is a file beside the output: none can be written
            raise SlicelibError(
                f"{what} {target}: cannot write in {target.parent} ({os_error_text(exc)})"
            ) from None
        remove_stale(target)
        yield
