"""The command line: help, version, and one-line errors for user mistakes."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import pytest

import slicelib
from slicelib import __version__
from slicelib.cli import COMMANDS, build_parser, main


def test_help_lists_every_registered_command() -> None:
    help_text = build_parser().format_help()
    for name in COMMANDS:
        assert name.replace("_", "-") in help_text


def test_version_names_the_release_and_the_commit(capsys: pytest.CaptureFixture[str]) -> None:
    with pytest.raises(SystemExit) as exc:
        main(["--version"])
    assert exc.value.code == 0
    printed = capsys.readouterr().out.strip()
    head = subprocess.run(
        ["git", "-C", str(Path(slicelib.__file__).parent), "rev-parse", "HEAD"],
        capture_output=True, text=True, check=False,
    ).stdout.strip()  # fmt: skip
    if head:  # a git checkout: the commit too
        assert printed.startswith(f"slicelib {__version__} (commit {head[:12]}")
    else:
        assert printed == f"slicelib {__version__}"


def test_python_dash_m_runs_the_same_cli() -> None:
    proc = subprocess.run(
        [sys.executable, "-m", "slicelib", "--help"], capture_output=True, text=True, check=False
    )
    assert proc.returncode == 0
    assert "usage: slicelib" in proc.stdout


def test_unknown_command_is_a_usage_error() -> None:
    proc = subprocess.run(
        [sys.executable, "-m", "slicelib", "frobnicate"],
        capture_output=True,
        text=True,
        check=False,
    )
    assert proc.returncode == 2
    assert "invalid choice" in proc.stderr
    assert "Traceback" not in proc.stderr
