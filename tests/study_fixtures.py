"""The smoke study, run once per test session and shared by the study and book tests
(loaded with ``pytest_plugins = ["study_fixtures"]``)."""

from __future__ import annotations

from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import pytest

from slicelib.study.runner import StudyReport, run_study


@dataclass(frozen=True)
class SmokeStudy:
    """The workspace, the html book and the report of the session's smoke study."""

    home: Path
    out: Path
    html: Path
    report: StudyReport


@pytest.fixture(scope="session")
def smoke_study(tmp_path_factory: pytest.TempPathFactory) -> Iterator[SmokeStudy]:
    """``slicelib study --preset smoke`` on the synthetic cohort, with the book built.

    The workspace is the notebooks' default, ``$SLICELIB_HOME/smoke``, with
    ``SLICELIB_HOME`` in a temporary folder for the rest of the session: the notebook
    checks (``pytest notebooks --nbval-lax``) that run later in the same session find
    every run and result there and only draw their tables and figures.
    """
    home = tmp_path_factory.mktemp("slicelib_home")
    with pytest.MonkeyPatch.context() as patch:
        patch.setenv("SLICELIB_HOME", str(home))
        html = home / "html"
        report = run_study("smoke", None, None, html)
        yield SmokeStudy(home=home, out=report.out_dir, html=html, report=report)
