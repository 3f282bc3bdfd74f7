"""The command line: help, version, one-line errors for user mistakes, default presets."""

from __future__ import annotations

import json
import logging
import subprocess
import sys
from collections import Counter
from pathlib import Path

import nibabel as nib
import numpy as np
import pytest

import slicelib
from slicelib import __version__
from slicelib.cli import COMMANDS, build_parser, main
from slicelib.cli.types import resolve_preset
from slicelib.config import DEMO_PRESET, USER_PRESET


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


# The default preset: the study's settings for a user's data, the demo's for the demo.


def _nifti_cohort(root: Path, patients: int) -> Path:
    root.mkdir()
    rng = np.random.default_rng(0)
    for i in range(patients):
        volume = rng.random((12, 12, 20)).astype(np.float32)
        nib.save(nib.Nifti1Image(volume, np.diag([1.0, 1.0, 3.0, 1.0])), root / f"p{i:02d}.nii.gz")
    return root


def _splits(cache: Path) -> dict[str, str]:
    manifest = json.loads((cache / "manifest.json").read_text())
    return {row["patient_id"]: row["split"] for row in manifest["patients"]}


def test_prepare_defaults_to_the_study_split_and_says_so(
    tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    data = _nifti_cohort(tmp_path / "cohort", 10)
    args = ["prepare", str(data), "--size", "12", "--no-progress"]
    caplog.set_level(logging.INFO, logger="slicelib")
    assert main([*args[:2], str(tmp_path / "default"), *args[2:]]) == 0
    assert "slicelib prepare: preset paper (the default for your own data" in caplog.text
    assert main([*args[:2], str(tmp_path / "paper"), *args[2:], "--preset", "paper"]) == 0
    assert "slicelib prepare: preset paper (--preset)" in caplog.text
    default, paper = _splits(tmp_path / "default"), _splits(tmp_path / "paper")
    assert default == paper
    assert Counter(default.values()) == {"train": 6, "val": 2, "test": 2}
    assert main([*args[:2], str(tmp_path / "demo"), *args[2:], "--preset", "demo"]) == 0
    assert Counter(_splits(tmp_path / "demo").values()) == {"train": 5, "val": 1, "test": 4}


def test_models_defaults_to_the_supplement_s_models(
    capsys: pytest.CaptureFixture[str], caplog: pytest.LogCaptureFixture
) -> None:
    caplog.set_level(logging.INFO, logger="slicelib")
    assert main(["models"]) == 0
    assert "20,506,113" in capsys.readouterr().out
    assert "slicelib models: preset paper" in caplog.text


@pytest.mark.parametrize(
    ("argv", "preset"),
    [
        (["prepare", "DATA", "CACHE"], "paper"),
        (["train", "--model", "cnn", "--k", "1", "--cache", "C", "--out", "R"], "paper"),
        (["evaluate", "--cache", "C", "--k", "1", "--out", "r.csv"], "paper"),
        (["models"], "paper"),
        (["demo-data", "OUT"], "demo"),
        (["study"], "demo"),
        (["study", "--preset", "smoke"], "smoke"),
    ],
)
def test_every_command_with_a_preset_resolves_and_logs_it(
    argv: list[str], preset: str, caplog: pytest.LogCaptureFixture
) -> None:
    args = build_parser().parse_args(argv)
    caplog.set_level(logging.INFO, logger="slicelib")
    resolve_preset(args)
    assert args.preset == preset
    assert f"slicelib {argv[0]}: preset {preset} (" in caplog.text


def test_the_default_presets_are_the_study_s_and_the_demo_s() -> None:
    assert (USER_PRESET, DEMO_PRESET) == ("paper", "demo")
    with_preset = {
        name: build_parser().parse_args([name.replace("_", "-"), *ARGS.get(name, [])])
        for name in COMMANDS
    }
    defaults = {name: getattr(args, "preset_default", None) for name, args in with_preset.items()}
    assert defaults == {
        "demo_data": "demo",
        "scan": None,
        "prepare": "paper",
        "models": "paper",
        "train": "paper",
        "evaluate": "paper",
        "upsample": None,
        "study": "demo",
        "verify": None,
    }


# The positional and required arguments of each command, enough to parse it.
ARGS: dict[str, list[str]] = {
    "demo_data": ["OUT"],
    "scan": ["DATA"],
    "prepare": ["DATA", "CACHE"],
    "train": ["--model", "cnn", "--k", "1", "--cache", "C", "--out", "R"],
    "evaluate": ["--cache", "C", "--k", "1", "--out", "r.csv"],
    "upsample": ["IN", "OUT", "--checkpoint", "C"],
    "verify": ["STUDY"],
}
