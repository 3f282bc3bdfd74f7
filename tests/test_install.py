"""A light library: ``pip install`` without extras gives scan, prepare, train, evaluate,
upsample and the models, without the study's packages or the DICOMweb client;
``slicelib study`` and a DICOMweb ``slicelib upsample`` then say in one line what to
install."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]
T2 = ROOT / "data" / "prostatex-0218" / "ProstateX-0218" / "02-18-2011"
TORCH = "torch==2.13.0"  # the release the lock pins


def run(*argv: str | Path, ok: bool = True) -> subprocess.CompletedProcess[str]:
    env = {**os.environ, "PIP_DISABLE_PIP_VERSION_CHECK": "1", "PYTHONPATH": ""}
    done = subprocess.run([str(a) for a in argv], capture_output=True, text=True, env=env)
    if ok:
        assert done.returncode == 0, done.stdout[-2000:] + done.stderr[-2000:]
    return done


def errors(done: subprocess.CompletedProcess[str]) -> list[str]:
    """The error lines of a command's stderr (INFO lines such as the preset's aside)."""
    return [line for line in done.stderr.splitlines() if ": error: " in line]


@pytest.mark.slow
def test_library_without_extras_upsamples_a_real_series(tmp_path: Path) -> None:
    venv = tmp_path / "venv"
    run(sys.executable, "-m", "venv", venv)
    python, slicelib = venv / "bin" / "python", venv / "bin" / "slicelib"
    run(python, "-m", "pip", "install", "-q", TORCH)
    run(python, "-m", "pip", "install", "-q", "-e", ROOT)
    for module in (
        "papermill",
        "nbval",
        "myst_nb",
        "jupyter_book",
        "matplotlib",
        "dicomweb_client",
    ):
        assert run(python, "-c", f"import {module}", ok=False).returncode != 0, module

    # The whole path of a user's own model: data, cache, training, upsampling.
    run(slicelib, "demo-data", tmp_path / "cohort", "--patients", "4", "--preset", "smoke")
    run(slicelib, "prepare", tmp_path / "cohort", tmp_path / "cache", "--preset", "smoke")
    run(slicelib, "train", "--model", "unet", "--k", "1", "--cache", tmp_path / "cache",
        "--out", tmp_path / "run", "--preset", "smoke", "--epochs", "1")  # fmt: skip
    series = next(p for p in T2.iterdir() if "t2" in p.name.lower())
    run(slicelib, "upsample", series, tmp_path / "x2", "--checkpoint", tmp_path / "run")
    written = sorted((tmp_path / "x2").rglob("*.dcm"))
    assert len(written) == 2 * len(list(series.glob("*.dcm"))) - 1

    study = run(slicelib, "study", "--preset", "smoke", "--out", tmp_path / "s", ok=False)
    assert study.returncode != 0
    assert "slicelib study: preset smoke (--preset)" in study.stderr  # logged (INFO) first
    assert errors(study) == [
        f"slicelib study: error: slicelib study needs the study's packages "
        f"({', '.join(('papermill', 'ipykernel', 'myst_nb', 'matplotlib', 'yaml', 'jupyter_book'))}"
        " not installed): pip install 'slicelib[study]'"
    ]
    assert not (tmp_path / "s").exists()

    # A PACS round trip needs the pacs extra, and says so before anything is written.
    url = "http://127.0.0.1:9/dicom-web/studies/1.2/series/3.4"
    pacs = run(
        slicelib, "upsample", url, tmp_path / "p", "--checkpoint", tmp_path / "run", ok=False
    )
    assert errors(pacs) == [
        "slicelib upsample: error: a DICOMweb input needs the pacs extra (dicomweb-client not "
        "installed): pip install 'slicelib[pacs]'"
    ]
    assert not (tmp_path / "p").exists()
