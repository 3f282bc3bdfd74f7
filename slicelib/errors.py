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


def os_error_text(exc: OSError) -> str:
    """An OS error in one line, naming its path: ``/data/x2: No space left on device``."""
    reason = exc.strerror or str(exc) or type(exc).__name__
    if exc.filename is None:
        return reason
    return f"{os.fsdecode(exc.filename)}: {reason}"
