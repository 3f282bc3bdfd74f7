"""Atomic writes: a file or a folder appears whole or not at all.

Every output slicelib writes goes through here: a temporary file (or folder)
beside the target, then one rename, so a crash or a concurrent reader never
sees a half-written file. The temporary name keeps the target's suffixes, so a
library that picks a format by extension (pandas, nibabel) writes the same
format it would write to the target.

File modes are decided in :func:`_mode` only: ``private`` outputs
(checkpoints, evaluation results, written volumes) keep the owner-only mode of
``tempfile``; the others get the ordinary mode the umask allows.
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
from typing import Any

__all__ = [
    "atomic_directory",
    "atomic_write",
    "publish_directory",
    "staged_directory",
    "write_bytes",
    "write_json",
    "write_text",
]


def _mode(*, folder: bool, private: bool) -> int:
    """The permission bits of a new output file or folder."""
    if private:
        return 0o700 if folder else 0o600
    umask = os.umask(0)
    os.umask(umask)
    return (0o777 if folder else 0o666) & ~umask


def atomic_write(
    path: str | Path,
    write: Callable[[Path], object],
    *,
    private: bool = False,
    durable: bool = False,
) -> Path:
    """Call ``write(tmp)`` on a temporary path beside ``path``, then rename it to ``path``.

    ``durable`` flushes the file to disk before the rename (for checkpoints, which a
    power cut must not truncate). On any error the temporary file is removed and
    ``path`` is left as it was. Creates the parent folder. Returns ``path``.
    """
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    suffix = ".tmp" + "".join(path.suffixes[-2:])
    fd, name = tempfile.mkstemp(prefix=f".{path.name}.", suffix=suffix, dir=path.parent)
    os.close(fd)
    tmp = Path(name)
    try:
        tmp.chmod(_mode(folder=False, private=private))
        write(tmp)
        if durable:
            with tmp.open("rb+") as handle:
                os.fsync(handle.fileno())
        os.replace(tmp, path)
    except BaseException:
        tmp.unlink(missing_ok=True)
        raise
    return path


def write_text(path: str | Path, text: str, *, private: bool = False) -> Path:
    """Write ``text`` (UTF-8, newlines as given) to ``path`` atomically."""

    def write(tmp: Path) -> None:
        with tmp.open("w", encoding="utf-8", newline="") as handle:
            handle.write(text)

    return atomic_write(path, write, private=private)


def write_bytes(
    path: str | Path, data: bytes, *, private: bool = False, durable: bool = False
) -> Path:
    """Write ``data`` to ``path`` atomically."""
    return atomic_write(path, lambda tmp: tmp.write_bytes(data), private=private, durable=durable)


def write_json(
    path: str | Path,
    data: Any,
    *,
    sort_keys: bool = False,
    default: Callable[[Any], Any] | None = None,
    private: bool = False,
) -> Path:
    """Write ``data`` as indented JSON (two spaces, a final newline) to ``path`` atomically."""
    text = json.dumps(data, indent=2, sort_keys=sort_keys, default=default) + "\n"
    return write_text(path, text, private=private)


@contextlib.contextmanager
def staged_directory(target: str | Path, *, private: bool = False) -> Iterator[Path]:
    """Yield a new empty folder beside ``target``, removed when the block ends.

    Fill it, then :func:`publish_directory` it inside the block; whatever was not
    published (an error, an early return) is removed.
    """
    target = Path(target)
    target.parent.mkdir(parents=True, exist_ok=True)
    tmp = Path(tempfile.mkdtemp(prefix=f".{target.name}.tmp-", dir=target.parent))
    try:
        tmp.chmod(_mode(folder=True, private=private))
        yield tmp
    finally:
        shutil.rmtree(tmp, ignore_errors=True)


def publish_directory(tmp: Path, target: Path) -> None:
    """Rename the finished folder ``tmp`` to ``target``, replacing what is there.

    An existing ``target`` is moved aside first and removed only once ``tmp`` is in
    place; if the rename fails it is moved back.
    """
    old: Path | None = None
    if target.exists():
        old = target.with_name(f".{target.name}.old-{uuid.uuid4().hex[:8]}")
        os.replace(target, old)
    try:
        os.replace(tmp, target)
    except OSError:
        if old is not None:
            os.replace(old, target)
        raise
    if old is not None:
        shutil.rmtree(old, ignore_errors=True)


@contextlib.contextmanager
def atomic_directory(target: str | Path, *, private: bool = False) -> Iterator[Path]:
    """Yield a temporary folder that replaces ``target`` when the block ends without error.

    On error the temporary folder is removed and ``target`` is left as it was. Checks
    on an existing ``target`` (refuse it, or allow it with ``--force``) are the caller's.
    """
    target = Path(target)
    with staged_directory(target, private=private) as tmp:
        yield tmp
        publish_directory(tmp, target)
