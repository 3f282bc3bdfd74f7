"""Errors that are the user's to fix: the CLI prints them as one line and exits non-zero."""

from __future__ import annotations

import os
from collections.abc import Iterable, Mapping
from typing import TypeVar

T = TypeVar("T")


class SlicelibError(Exception):
    """A problem with the user's input (file, series, parameter), reported in one line.

    The message must say what is wrong and where, e.g.
    ``"checkpoint runs/unet_k1/best.pt: key 'body.0.weight' missing (model 'unet')"``.
    """

    exit_code: int = 2


def unknown_choice(what: str, name: object, choices: Iterable[str]) -> SlicelibError:
    """The one-line error for a name that is none of ``choices``:
    ``unknown model 'x' (choose from cnn, unet, ...)``."""
    return SlicelibError(f"unknown {what} {name!r} (choose from {', '.join(choices)})")


def lookup(table: Mapping[str, T], name: str, what: str) -> T:
    """``table[name]``, or :func:`unknown_choice` naming ``what`` and the table's keys."""
    try:
        return table[name]
    except KeyError:
        raise unknown_choice(what, name, table) from None


def os_error_cause(exc: OSError) -> OSError:
    """``exc``, or the OS error with an errno that it was raised from: a library may wrap
    one in an error of its own message (pydicom adds the tag and a traceback)."""
    found: BaseException | None = exc
    while isinstance(found, OSError):
        if found.errno is not None:
            return found
        found = found.__cause__
    return exc


def os_error_text(exc: OSError) -> str:
    """An OS error in one line, naming its path: ``/data/x2: No space left on device``."""
    cause = os_error_cause(exc)
    lines = str(cause).strip().splitlines()
    reason = cause.strerror or (lines[0] if lines else type(cause).__name__)
    if cause.filename is None:
        return reason
    return f"{os.fsdecode(cause.filename)}: {reason}"
