"""Seeded fuzz campaign: damaged copies of one tiny series through scan, prepare and
upsample.

Every case must end ``ok`` (the series used whole) or ``excluded`` (a reason, or a
one-line error): never a traceback, a hang, or a series used with a slice
missing. ``python -m benchmarks fuzz`` runs a longer campaign.
"""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import pytest
from dicom_fuzz import (
    COMMANDS,
    MUTATIONS,
    Case,
    cases,
    restore_permissions,
    run_case,
    write_checkpoint,
    write_template,
)

CASES_PER_KIND = 20
REPO = Path(__file__).resolve().parents[1]


@pytest.fixture(scope="module")
def template(tmp_path_factory: pytest.TempPathFactory) -> Path:
    root = tmp_path_factory.mktemp("template")
    write_template(root)
    return root


@pytest.fixture(scope="module")
def checkpoint(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return write_checkpoint(tmp_path_factory.mktemp("fuzz_run") / "best.pt")


def test_campaign_has_no_traceback_hang_or_lost_slice(
    template: Path, checkpoint: Path, tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    caplog.set_level("ERROR")  # the damaged files warn by design
    bad: list[str] = []
    outcomes: dict[str, set[str]] = {k: set() for k in MUTATIONS}
    for i, case in enumerate(cases(CASES_PER_KIND, seed=13)):
        work = tmp_path / f"case{i}"
        work.mkdir()
        out = run_case(template, case, work, seconds=60, checkpoint=checkpoint)
        for cmd in COMMANDS:
            outcomes[case.kind].add(out[cmd])
            if out[cmd] not in ("ok", "excluded"):
                bad.append(f"{cmd} {case.kind} ({out['detail']}): {out[cmd]}: {out['why']}")
            if out[cmd] == "excluded":
                assert out["why"].strip(), f"{cmd} {case.kind} ({out['detail']}) without reason"
        restore_permissions(work)
    assert not bad, "\n".join(bad[:10])
    # The campaign exercises both outcomes, so it checks something.
    assert any("excluded" in o for o in outcomes.values())
    assert any("ok" in o for o in outcomes.values())


@pytest.mark.parametrize("kind", ["truncate", "huge_dims"])
def test_cli_on_damaged_series_gives_no_traceback(
    template: Path, checkpoint: Path, tmp_path: Path, kind: str
) -> None:
    from dicom_fuzz import build_case

    root = tmp_path / "data"
    build_case(template, Case(kind, seed=7), root)
    env = {**os.environ, "PYTHONPATH": f"{REPO}{os.pathsep}{os.environ.get('PYTHONPATH', '')}"}
    base = [sys.executable, "-m", "slicelib"]
    commands = [
        ["scan", str(root), "--no-progress", "--workers", "1"],
        ["prepare", str(root), str(tmp_path / "cache"), "--preset", "smoke", "--no-progress"],
        ["upsample", str(root / "DAMAGED" / "series"), str(tmp_path / "x2")]
        + ["--checkpoint", str(checkpoint), "--device", "cpu"],
    ]
    for args in commands:
        proc = subprocess.run(
            base + args, capture_output=True, text=True, env=env, timeout=120, cwd=tmp_path
        )
        assert "Traceback" not in proc.stderr, proc.stderr[-2000:]
        assert proc.returncode in (0, 2), proc.stderr[-2000:]
