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
    """``slicelib study --preset smoke`` on the synthetic cohort, with the book built."""
    home = tmp_path_factory.mktemp("slicelib_home")
    with pytest.MonkeyPatch.context() as patch:
        patch.setenv("SLICELIB_HOME", str(home))
        out, html = home / "study", home / "html"
        report = run_study("smoke", out, None, html)
        yield SmokeStudy(home=home, out=out, html=html, report=report)
