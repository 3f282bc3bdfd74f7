"""The ``slicelib`` command line.

Each subcommand lives in its own module under :mod:`slicelib.cli` and exposes
``register(subparsers) -> argparse.ArgumentParser`` whose parser sets
``func=handler``. A subcommand is listed in :data:`COMMANDS` only once it works.

Every command ends a user's mistake (:class:`~slicelib.errors.SlicelibError`) and an
OS error (a read-only file system, a full disk, no permission: the library names the
path it was writing) in one line and a non-zero exit, never a traceback.
"""

from __future__ import annotations

import argparse
import importlib
import logging
import sys
from collections.abc import Sequence
from typing import NoReturn

from slicelib.cli.types import resolve_preset
from slicelib.errors import SlicelibError, os_error_text

# Module names under slicelib.cli, in the order --help lists them.
COMMANDS: tuple[str, ...] = (
    "demo_data",
    "scan",
    "prepare",
    "models",
    "train",
    "evaluate",
    "upsample",
    "study",
    "verify",
)


class VersionAction(argparse.Action):
    """``--version``: the release and the commit of the code that runs (read only when
    asked: it calls git)."""

    def __init__(self, option_strings: Sequence[str], dest: str, **kwargs: object) -> None:
        super().__init__(option_strings, dest, nargs=0, help="show the version and commit")

    def __call__(self, parser: argparse.ArgumentParser, *args: object) -> NoReturn:
        from slicelib.environment import code_label

        print(f"slicelib {code_label()}")  # on stdout, as argparse's own version action
        parser.exit(0)


class OneLineParser(argparse.ArgumentParser):
    """A parser whose errors are one line, ``slicelib COMMAND: error: ...`` (exit 2),
    without the usage block: the line says what is wrong and ``--help`` says the rest."""

    def error(self, message: str) -> NoReturn:
        self.exit(2, f"{self.prog}: error: {message}\n")


def build_parser() -> argparse.ArgumentParser:
    parser = OneLineParser(
        prog="slicelib",
        description="Deep learning for MRI slice interpolation: data, models, evaluation, study.",
    )
    parser.add_argument("--version", action=VersionAction)
    parser.add_argument("-q", "--quiet", action="store_true", help="only warnings and errors")
    sub = parser.add_subparsers(dest="command", metavar="COMMAND", required=True)
    for name in COMMANDS:
        importlib.import_module(f"slicelib.cli.{name}").register(sub)
    return parser


def main(argv: Sequence[str] | None = None) -> int:
    parser = build_parser()
    args = parser.parse_args(argv)  # a bad argument: one line and SystemExit(2)
    logging.basicConfig(
        level=logging.WARNING if args.quiet else logging.INFO,
        format="%(message)s",
        stream=sys.stderr,
    )
    resolve_preset(args)
    try:
        result = args.func(args)
    except SlicelibError as exc:
        print(f"slicelib {args.command}: error: {exc}", file=sys.stderr)
        return exc.exit_code
    except OSError as exc:  # a read-only file system, a full disk, no permission
        print(f"slicelib {args.command}: error: {os_error_text(exc)}", file=sys.stderr)
        return SlicelibError.exit_code
    except KeyboardInterrupt:
        print(f"slicelib {args.command}: interrupted", file=sys.stderr)
        return 130
    return int(result or 0)
