"""Argument types for the command line: bounded numbers and output paths.

Each factory returns a callable for ``argparse``'s ``type=`` (and :func:`path_arg` is one,
for every file or folder argument: an empty path is refused); a bad value is
reported by argparse as ``argument --size: must be an integer in 8..4096
(got '100000')`` with exit status 2, never a traceback. Bounds are stated once,
where the option is declared, e.g. ``type=bounded_int(1, 1024)``.
"""

from __future__ import annotations

import argparse
import logging
import math
from collections.abc import Callable
from pathlib import Path
from typing import TYPE_CHECKING

if TYPE_CHECKING:
    from slicelib.config import PresetName

log = logging.getLogger(__name__)

# The largest integer any option accepts (a seed, a step count): beyond this a
# value is a typo, and numpy or torch would fail on it later with a traceback.
MAX_INT = 2**63 - 1
# Bounds shared by several commands: numpy's seed range; the neighbour distance k
# (a volume needs 2k + 1 slices, so beyond this no cohort has a triplet); counts of
# passes, samples and steps; a batch or a cohort larger than any machine holds.
MAX_SEED = 2**32 - 1
MAX_K = 256
MAX_COUNT = 100_000
MAX_BATCH = 65_536


def bounded_int(lo: int, hi: int = MAX_INT) -> Callable[[str], int]:
    """An integer in ``lo..hi`` (both included)."""

    def parse(text: str) -> int:
        try:
            value = int(text.strip())
        except ValueError:
            raise argparse.ArgumentTypeError(f"must be an integer (got {text!r})") from None
        if not lo <= value <= hi:
            shown = f"{lo}..{hi}" if hi != MAX_INT else f">= {lo}"
            raise argparse.ArgumentTypeError(f"must be an integer {shown} (got {text!r})")
        return value

    parse.__name__ = "integer"
    return parse


def positive_int(hi: int = MAX_INT) -> Callable[[str], int]:
    """An integer in ``1..hi``."""
    return bounded_int(1, hi)


def non_negative_int(hi: int = MAX_INT) -> Callable[[str], int]:
    """An integer in ``0..hi``."""
    return bounded_int(0, hi)


def bounded_float(
    lo: float, hi: float, *, lo_open: bool = False, hi_open: bool = False
) -> Callable[[str], float]:
    """A finite number in ``[lo, hi]`` (``lo_open``/``hi_open`` exclude an end)."""

    def parse(text: str) -> float:
        try:
            value = float(text.strip())
        except ValueError:
            raise argparse.ArgumentTypeError(f"must be a number (got {text!r})") from None
        below = value <= lo if lo_open else value < lo
        above = value >= hi if hi_open else value > hi
        if not math.isfinite(value) or below or above:
            left, right = "(" if lo_open else "[", ")" if hi_open else "]"
            raise argparse.ArgumentTypeError(
                f"must be a number in {left}{lo:g}, {hi:g}{right} (got {text!r})"
            )
        return value

    parse.__name__ = "number"
    return parse


def path_arg(text: str) -> Path:
    """A file or folder name, not empty or blank (``Path("")`` is the current folder, which
    a command would silently read or overwrite)."""
    if not text.strip():
        raise argparse.ArgumentTypeError("empty path; give a file or folder name")
    return Path(text).expanduser()


path_arg.__name__ = "path"


def source_arg(text: str) -> str:
    """An input named by a path or a URL (kept as text), not empty or blank."""
    if not text.strip():
        raise argparse.ArgumentTypeError("empty path; give a file, folder or URL")
    return text


source_arg.__name__ = "input"


def output_file(text: str) -> Path:
    """A file to write: not an existing folder, in a folder that exists."""
    path = path_arg(text)
    if path.is_dir():
        raise argparse.ArgumentTypeError(f"{text} is a folder; give a file name")
    if not path.parent.is_dir():
        raise argparse.ArgumentTypeError(f"folder {path.parent} does not exist")
    return path


def add_preset_option(parser: argparse.ArgumentParser, what: str, default: PresetName) -> None:
    """``--preset``, the same on every command: one of the presets, default ``default``
    (:data:`~slicelib.config.USER_PRESET` for a command applied to a user's data,
    :data:`~slicelib.config.DEMO_PRESET` for one that makes or runs the demo); ``what``
    says what the command takes from it. :func:`resolve_preset` fills it in and says
    which preset the command uses."""
    from slicelib.config import PRESET_NAMES

    parser.add_argument(
        "--preset",
        choices=PRESET_NAMES,
        default=None,
        help=f"{what} ({', '.join(PRESET_NAMES)}; default {default})",
    )
    parser.set_defaults(preset_default=default)


def resolve_preset(args: argparse.Namespace) -> None:
    """Set ``args.preset`` to the default when ``--preset`` was not given, and log (INFO)
    which preset the command uses and why; nothing for a command without ``--preset``."""
    from slicelib.config import USER_PRESET

    default = getattr(args, "preset_default", None)
    if default is None:
        return
    if args.preset is not None:
        why = "--preset"
    elif default == USER_PRESET:
        why = "the default for your own data; --preset demo for the demo's settings"
    else:
        why = "the default for the demo; --preset paper for the study's settings"
    args.preset = args.preset or default
    log.info("slicelib %s: preset %s (%s)", args.command, args.preset, why)
