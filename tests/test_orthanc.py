"""A PACS round trip against a real Orthanc (tests/orthanc_server.py): the repository's
ProstateX axial T2 stored in Orthanc, upsampled from it over DICOMweb, the derived series
and its uncertainty series stored back and checked in Orthanc's own REST API; a re-run
that adds nothing; and failures (refused, missing, down, slow, partial, mixed, a slice
missing on the server, a store server that refuses) that leave Orthanc as it was.

Skipped, saying why, where Orthanc and its DICOMweb plugin are not installed."""

from __future__ import annotations

import hashlib
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pydicom
import pytest
from dicomweb_fake import FakeDicomweb, Faults, serving
from orthanc_server import PASSWORD, USER, Orthanc, free_port
from test_dicom_writer import read_all, write_test_series
from test_upsample import _train
from test_upsample_outputs import PROSTATEX_T2

from slicelib.checkpoint import read_checkpoint, save_checkpoint
from slicelib.cli import main
from slicelib.upsample import dicomweb

T2_FILES = sorted(PROSTATEX_T2.glob("*.dcm"))


@pytest.fixture(autouse=True)
def _credentials_from_the_environment(monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> None:
    """Orthanc's user in the environment; no ~/.netrc of the machine."""
    monkeypatch.delenv(dicomweb.ENV_TOKEN, raising=False)
    monkeypatch.setenv(dicomweb.ENV_USER, USER)
    monkeypatch.setenv(dicomweb.ENV_PASSWORD, PASSWORD)
    monkeypatch.setenv("NETRC", str(tmp_path / "no-netrc"))


@pytest.fixture(scope="module")
def t2(orthanc: Orthanc) -> dict[str, Any]:
    """The ProstateX T2 stored in Orthanc (REST), with its UIDs and its files' MD5."""
    for path in T2_FILES:
        orthanc.post("/instances", path.read_bytes())
    first = pydicom.dcmread(T2_FILES[0], stop_before_pixels=True)
    study, series = str(first.StudyInstanceUID), str(first.SeriesInstanceUID)
    md5 = {
        str(pydicom.dcmread(p, stop_before_pixels=True).SOPInstanceUID): hashlib.md5(
            p.read_bytes()
        ).hexdigest()
        for p in T2_FILES
    }
    return {
        "study": study,
        "series": series,
        "url": f"{orthanc.dicomweb}/studies/{study}/series/{series}",
        "md5": md5,
    }


@pytest.fixture(scope="module")
def runs(tiny_cache: Path, tmp_path_factory: pytest.TempPathFactory) -> tuple[Path, Path]:
    """A tiny checkpoint and a second ensemble member (its output bias shifted)."""
    root = tmp_path_factory.mktemp("orthanc_runs")
    run = _train(tiny_cache, root / "plain")
    state = read_checkpoint(run / "best.pt")
    state["models"]["generator"]["final.bias"] += 0.1
    other = root / "other.pt"
    save_checkpoint(other, state)
    return run, other


def _upsample(source: str, out: Path, run: Path, *extra: str) -> int:
    return main(["upsample", source, str(out), "--checkpoint", str(run), *extra])


def test_round_trip_through_orthanc_stores_the_derived_series_once(
    orthanc: Orthanc,
    t2: dict[str, Any],
    runs: tuple[Path, Path],
    tmp_path: Path,
    capsys: pytest.CaptureFixture[str],
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    run, other = runs
    # Credentials from ~/.netrc this time ($NETRC points at it).
    for name in (dicomweb.ENV_USER, dicomweb.ENV_PASSWORD):
        monkeypatch.delenv(name)
    netrc = tmp_path / "netrc"
    netrc.write_text(f"machine 127.0.0.1 login {USER} password {PASSWORD}\n")
    netrc.chmod(0o600)
    monkeypatch.setenv("NETRC", str(netrc))
    before = orthanc.snapshot()["statistics"]["CountInstances"]
    uncertainty = ("--uncertainty", "--ensemble", str(other))
    store = ("--store-dicomweb", orthanc.dicomweb)
    assert _upsample(t2["url"], tmp_path / "x2", run, *uncertainty, *store) == 0
    printed = capsys.readouterr()
    assert printed.out.count("(39 instances stored)") == 2
    assert PASSWORD not in printed.out + printed.err

    # In Orthanc: both derived series, complete, with their own UIDs, in the source's study.
    source_id = orthanc.series_id(t2["series"])
    assert source_id is not None
    study_id = orthanc.get(f"/series/{source_id}")["ParentStudy"]
    for folder in ("interpolated", "uncertainty"):
        written = read_all(tmp_path / "x2" / folder)
        uid = str(written[0].SeriesInstanceUID)
        assert uid != t2["series"]
        series_id = orthanc.series_id(uid)
        assert series_id is not None, folder
        stored = orthanc.sop_uids(series_id)
        assert set(stored) == {str(ds.SOPInstanceUID) for ds in written}
        assert len(stored) == 39 and not set(stored) & set(t2["md5"])
        assert orthanc.get(f"/series/{series_id}")["ParentStudy"] == study_id
        tags = orthanc.get(f"/series/{series_id}/shared-tags?simplify")
        assert tags["ImageType"].startswith("DERIVED\\SECONDARY")
    # The source is untouched: the same instances, byte for byte.
    assert orthanc.sop_uids(source_id) == t2["md5"]
    assert orthanc.snapshot()["statistics"]["CountInstances"] == before + 78

    # A re-run (credentials from the environment) finds both series there and adds nothing.
    monkeypatch.setenv(dicomweb.ENV_USER, USER)
    monkeypatch.setenv(dicomweb.ENV_PASSWORD, PASSWORD)
    snapshot = orthanc.snapshot()
    assert _upsample(t2["url"], tmp_path / "again", run, *uncertainty, *store) == 0
    assert capsys.readouterr().out.count("already there, nothing stored") == 2
    assert orthanc.snapshot() == snapshot
    for folder in ("interpolated", "uncertainty"):
        first, again = (read_all(tmp_path / out / folder) for out in ("x2", "again"))
        assert [ds.SOPInstanceUID for ds in first] == [ds.SOPInstanceUID for ds in again]


@pytest.fixture
def gap_series(orthanc: Orthanc, t2: dict[str, Any]) -> Iterator[str]:
    """A copy of the T2 in Orthanc (new UIDs) with its middle slice deleted: the URL."""
    source_id = orthanc.series_id(t2["series"])
    copy = orthanc.post(f"/series/{source_id}/modify", '{"Replace": {"SeriesNumber": "99"}}')
    instances = orthanc.get(f"/series/{copy['ID']}/instances")
    instances.sort(key=lambda item: int(item["MainDicomTags"]["InstanceNumber"]))
    orthanc.delete(f"/instances/{instances[len(instances) // 2]['ID']}")
    uid = orthanc.get(f"/series/{copy['ID']}")["MainDicomTags"]["SeriesInstanceUID"]
    yield f"{orthanc.dicomweb}/studies/{t2['study']}/series/{uid}"
    orthanc.delete(f"/series/{copy['ID']}")


FAILURES: dict[str, str] = {
    "no-credentials": "refused access (HTTP 401): set SLICELIB_DICOMWEB_USER",
    "wrong-password": "refused the credentials (HTTP 401)",
    "missing-series": "not found",
    "server-down": "connection refused",
    "slow": "no answer within 0.5 s (--dicomweb-timeout)",
    "partial": "partial series: the server sent 19 of the 20 instances",
    "mixed": "mixed series: the server sent instance",
    "slice-missing-on-server": "non-uniform slice spacing",
    "store-refused": "refused access (HTTP 401)",
}


@pytest.mark.parametrize("failure", list(FAILURES))
def test_a_failure_leaves_orthanc_unchanged(
    failure: str,
    orthanc: Orthanc,
    t2: dict[str, Any],
    runs: tuple[Path, Path],
    tmp_path: Path,
    capsys: pytest.CaptureFixture[str],
    monkeypatch: pytest.MonkeyPatch,
    request: pytest.FixtureRequest,
) -> None:
    run, _ = runs
    url, store, where = t2["url"], orthanc.dicomweb, f"DICOMweb server {orthanc.dicomweb}"
    faults: Faults | None = None
    if failure == "no-credentials":
        monkeypatch.delenv(dicomweb.ENV_USER)
    elif failure == "wrong-password":
        monkeypatch.setenv(dicomweb.ENV_PASSWORD, "not-" + PASSWORD)
    elif failure == "missing-series":
        url = f"{orthanc.dicomweb}/studies/{t2['study']}/series/1.2.3.4"
    elif failure == "server-down":
        down = f"http://127.0.0.1:{free_port()}/dicom-web"
        url, where = url.replace(orthanc.dicomweb, down), f"DICOMweb server {down}"
    elif failure == "slow":
        faults = Faults(delay=2.0)
    elif failure == "partial":
        faults = Faults(drop=1)
    elif failure == "mixed":
        other = write_test_series(tmp_path / "other", slices=2)
        faults = Faults(foreign=FakeDicomweb.from_files(other[:1]).instances.popitem()[1])
    elif failure == "slice-missing-on-server":
        url = request.getfixturevalue("gap_series")
    elif failure == "store-refused":
        # The input's credentials in its URL; none for the store server.
        url = url.replace("http://", f"http://{USER}:{PASSWORD}@")
        monkeypatch.delenv(dicomweb.ENV_USER)
        where = f"DICOMweb server {orthanc.dicomweb}: storing what is upsampled from series"
    snapshot = orthanc.snapshot()
    argv = ["--store-dicomweb", store]
    if failure == "slow":
        argv += ["--dicomweb-timeout", "0.5"]
    if faults is not None:
        with serving(FakeDicomweb.from_files(T2_FILES, faults=faults)) as fake:
            url, where = url.replace(orthanc.dicomweb, fake.url), f"DICOMweb server {fake.url}"
            rc = _upsample(url, tmp_path / "out", run, *argv)
    else:
        rc = _upsample(url, tmp_path / "out", run, *argv)
    err = capsys.readouterr().err.strip()
    assert rc == 2 and "\n" not in err, err
    assert where in err and FAILURES[failure] in err, err
    assert PASSWORD not in err
    assert not (tmp_path / "out").exists()
    assert orthanc.snapshot() == snapshot
