"""A lock that says who holds it: one writer per output folder (a cache, a run).

:func:`hold_lock` takes an exclusive, non-blocking ``flock`` on a small file
beside the folder and writes the holder (pid, host, start time, command) into
it; a second process is refused at once with a :class:`SlicelibError` naming the
holder. :func:`hold_file_lock` is the same on any file, and can wait instead
(concurrent study jobs sharing a folder make each output once). The holder
removes the file when done; the kernel drops the lock when the holder dies, even
by ``kill -9``, so a lock file left behind never blocks the next run.
"""

from __future__ import annotations

import json
import os
import socket
import sys
import time
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

from slicelib.errors import SlicelibError


def lock_path(folder: Path) -> Path:
    """The lock file of ``folder``: a hidden file beside it (the folder may not exist yet)."""
    return folder.parent / f".{folder.name}.lock"


def describe_holder(text: str) -> str:
    """The holder written in a lock file, in words ("pid 123 on host, since ...")."""
    try:
        info = json.loads(text)
        return (
            f"pid {info['pid']} on {info['host']} since {info['started']} ({info['command'][:120]})"
        )
    except (ValueError, KeyError, TypeError):
        return "another process"


@contextmanager
def hold_lock(folder: Path, what: str) -> Iterator[Path]:
    """Hold the lock of ``folder`` for the block, or stop at once with a one-line error
    naming the holder; ``what`` names the folder in it (e.g. ``"cache /data/cache"``).
    Yields the lock file's path."""
    with hold_file_lock(lock_path(folder), what) as path:
        yield path


@contextmanager
def hold_file_lock(path: Path, what: str, *, wait: bool = False) -> Iterator[Path]:
    """Hold an exclusive ``flock`` on the file ``path`` for the block; ``wait``: wait for
    the holder to finish rather than stop with an error naming it. Yields ``path``.

    Where ``fcntl`` does not exist (Windows) the block runs unlocked.
    """
    try:
        import fcntl
    except ImportError:  # pragma: no cover - not POSIX
        yield path
        return
    if wait:
        path.parent.mkdir(parents=True, exist_ok=True)
    elif not path.parent.is_dir():
        raise SlicelibError(f"folder {path.parent} does not exist (for {what})")
    while True:
        with open(path, "a+") as handle:
            try:
                fcntl.flock(handle, fcntl.LOCK_EX | (0 if wait else fcntl.LOCK_NB))
                # The file may have been removed by a holder finishing between our open
                # and our lock: then a newer file is the lock, and this one is stale.
                if os.stat(path).st_ino != os.fstat(handle.fileno()).st_ino:
                    raise BlockingIOError
            except (BlockingIOError, FileNotFoundError):
                if wait:
                    continue  # a stale file: open the current one
                handle.seek(0)
                holder = describe_holder(handle.read())
                raise SlicelibError(
                    f"{what} is in use by {holder}; wait for it or stop it"
                ) from None
            try:
                handle.seek(0)
                handle.truncate()
                started = time.strftime("%Y-%m-%d %H:%M:%S", time.localtime())
                info = {
                    "pid": os.getpid(),
                    "host": socket.gethostname(),
                    "started": started,
                    "command": " ".join(sys.argv),
                }
                handle.write(json.dumps(info))
                handle.flush()
                yield path
                return
            finally:
                path.unlink(missing_ok=True)  # before unlocking, so no one locks a removed file
                fcntl.flock(handle, fcntl.LOCK_UN)
