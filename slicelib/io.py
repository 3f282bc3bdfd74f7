"""Atomic writes: a file or a folder appears whole or not at all.

Every output slicelib writes goes through here: a temporary file (or folder)
beside the target, then one rename, so a crash or a concurrent reader never
sees a half-written file. The temporary name keeps the target's suffixes, so a
library that picks a format by extension (pandas, nibabel) writes the same
format it would write to the target.

File modes are decided in :func:`_mode` only: every file and folder gets the
ordinary mode the umask allows (0644 and 0755 under umask 022), not the
owner-only mode of ``tempfile``, so that results, checkpoints and upsampled
series on a shared group storage are readable by the group. Who else may read
them is the user's umask to decide.

Every output folder written by :func:`atomic_directory` with a ``kind`` carries the
marker file :data:`OUTPUT_MARKER` naming it; :mod:`slicelib.outputs` lets a command
write only into a folder of its own kind, so a mistyped output path never deletes
someone's data.

An OS error while writing (a read-only file system, a full disk, no permission) leaves
the target as it was and propagates with ``filename`` set to the target the user
named, never to a temporary path, so that the command line reports it in one line.
"""

from __future__ import annotations

import contextlib
import json
import os
import shutil
import tempfile
import uuid
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any, NoReturn

from slicelib.errors import os_error_cause

__all__ = [
    "OUTPUT_MARKER",
    "atomic_directory",
    "atomic_write",
    "publish_directory",
    "staged_directory",
    "write_bytes",
    "write_json",
    "write_marker",
    "write_text",
]


# The file that says "slicelib wrote this folder" (hidden, and not DICOM, so that
# series readers skip it).
OUTPUT_MARKER = ".slicelib-output"


def _named(exc: OSError, target: Path, inside: Path | None = None) -> OSError:
    """The OS error behind ``exc`` (:func:`~slicelib.errors.os_error_cause`), made to name
    ``target`` when it names no file or a temporary one (``inside`` that temporary
    folder, or a hidden temporary file beside ``target``). An error raised with a
    message of its own and no errno behind it is returned as it is."""
    exc = os_error_cause(exc)
    if exc.errno is None:
        return exc
    name = exc.filename
    if name is None:
        exc.filename = str(target)
        return exc
    path = Path(os.path.abspath(os.fsdecode(name)))
    where = Path(os.path.abspath(target))
    inside = None if inside is None else inside.absolute()
    temporary = path.name.startswith(f".{where.name}.") and path.parent == where.parent
    if temporary or (inside is not None and (path == inside or inside in path.parents)):
        exc.filename = str(target)
        exc.filename2 = None
    return exc


def _os_error_behind(exc: BaseException) -> OSError | None:
    """``exc`` if an OS error, else the OS error (with an errno) it was raised from or
    while handling: a writer may turn a full disk into an error of its own (torch.save
    raises a RuntimeError while handling the OSError of a Python file's write)."""
    if isinstance(exc, OSError):
        return exc
    found = exc.__cause__ or exc.__context__
    for _ in range(8):  # a short chain: the writer's own error and what it handled
        if found is None:
            return None
        if isinstance(found, OSError) and found.errno is not None:
            return found
        found = found.__cause__ or found.__context__
    return None


def _reraise(exc: OSError, target: Path, inside: Path | None = None) -> NoReturn:
    """Raise the OS error behind ``exc``, naming ``target`` (see :func:`_named`)."""
    named = _named(exc, target, inside)
    if named is exc:
        raise exc
    raise named from None


def _mode(*, folder: bool) -> int:
    """The permission bits of a new output file or folder: what ``open``/``mkdir`` give."""
    umask = os.umask(0)
    os.umask(umask)
    return (0o777 if folder else 0o666) & ~umask


def atomic_write(
    path: str | Path,
    write: Callable[[Path], object],
    *,
    durable: bool = False,
) -> Path:
    """Call ``write(tmp)`` on a temporary path beside ``path``, then rename it to ``path``.

    ``durable`` flushes the file to disk before the rename (for checkpoints, which a
    power cut must not truncate). On any error the temporary file is removed and
    ``path`` is left as it was. Creates the parent folder. Returns ``path``.
    """
    path = Path(path)
    suffix = ".tmp" + "".join(path.suffixes[-2:])
    try:
        path.parent.mkdir(parents=True, exist_ok=True)
        fd, name = tempfile.mkstemp(prefix=f".{path.name}.", suffix=suffix, dir=path.parent)
        os.close(fd)
    except OSError as exc:
        _reraise(exc, path)
    tmp = Path(name)
    try:
        tmp.chmod(_mode(folder=False))
        write(tmp)
        if durable:
            with tmp.open("rb+") as handle:
                os.fsync(handle.fileno())
        os.replace(tmp, path)
    except BaseException as exc:
        with contextlib.suppress(OSError):
            tmp.unlink(missing_ok=True)
        found = _os_error_behind(exc)
        if found is not None:
            _reraise(found, path)
        raise
    return path


def write_text(path: str | Path, text: str) -> Path:
    """Write ``text`` (UTF-8, newlines as given) to ``path`` atomically."""

    def write(tmp: Path) -> None:
        with tmp.open("w", encoding="utf-8", newline="") as handle:
            handle.write(text)

    return atomic_write(path, write)


def write_bytes(path: str | Path, data: bytes, *, durable: bool = False) -> Path:
    """Write ``data`` to ``path`` atomically."""
    return atomic_write(path, lambda tmp: tmp.write_bytes(data), durable=durable)


def write_json(
    path: str | Path,
    data: Any,
    *,
    sort_keys: bool = False,
    default: Callable[[Any], Any] | None = None,
) -> Path:
    """Write ``data`` as indented JSON (two spaces, a final newline) to ``path`` atomically."""
    text = json.dumps(data, indent=2, sort_keys=sort_keys, default=default) + "\n"
    return write_text(path, text)


@contextlib.contextmanager
def staged_directory(target: str | Path) -> Iterator[Path]:
    """Yield a new empty folder beside ``target``, removed when the block ends.

    Fill it, then :func:`publish_directory` it inside the block; whatever was not
    published (an error, an early return) is removed.
    """
    target = Path(target)
    try:
        target.parent.mkdir(parents=True, exist_ok=True)
        tmp = Path(tempfile.mkdtemp(prefix=f".{target.name}.tmp-", dir=target.parent))
    except OSError as exc:
        _reraise(exc, target)
    try:
        tmp.chmod(_mode(folder=True))
        yield tmp
    except OSError as exc:
        _reraise(exc, target, inside=tmp)
    finally:
        shutil.rmtree(tmp, ignore_errors=True)


def publish_directory(tmp: Path, target: Path) -> None:
    """Rename the finished folder ``tmp`` to ``target``, replacing what is there.

    An existing ``target`` is moved aside first and removed only once ``tmp`` is in
    place; if the rename fails it is moved back.
    """
    old: Path | None = None
    try:
        if target.exists():
            old = target.with_name(f".{target.name}.old-{uuid.uuid4().hex[:8]}")
            os.replace(target, old)
        try:
            os.replace(tmp, target)
        except OSError:
            if old is not None:
                os.replace(old, target)
            raise
    except OSError as exc:
        _reraise(exc, target, inside=tmp)
    if old is not None:
        shutil.rmtree(old, ignore_errors=True)


@contextlib.contextmanager
def atomic_directory(target: str | Path, *, kind: str | None = None) -> Iterator[Path]:
    """Yield a temporary folder that replaces ``target`` when the block ends without error.

    ``kind``: write :data:`OUTPUT_MARKER` naming this kind of output and the entries
    written (see :mod:`slicelib.outputs`); None for a folder whose every file is read
    by other programs, such as a DICOM series folder.

    On error the temporary folder is removed and ``target`` is left as it was. Checks
    on an existing ``target`` (:func:`slicelib.outputs.check_output`) are the caller's.
    """
    target = Path(target)
    with staged_directory(target) as tmp:
        yield tmp
        if kind is not None:
            write_marker(tmp, kind, entries=sorted(p.name for p in tmp.iterdir()))
        publish_directory(tmp, target)


def write_marker(folder: Path, kind: str, entries: list[str] | None = None) -> None:
    """Mark ``folder`` as written by slicelib as ``kind`` (a cache, a run, ...);
    ``entries``: the names it wrote at its top level, when written at once."""
    from slicelib import __version__

    marker: dict[str, Any] = {"written_by": "slicelib", "version": __version__, "kind": kind}
    if entries is not None:
        marker["entries"] = entries
    write_json(folder / OUTPUT_MARKER, marker)
