"""``slicelib upsample`` over DICOMweb against a small local server (tests/dicomweb_fake.py):
URLs and credentials, deterministic derived UIDs, a round trip, a re-run that stores
nothing, and the faults (down, refused, missing, slow, partial, mixed series) that end in
one line naming the server and the series with nothing stored. The same against a real
Orthanc: tests/test_orthanc.py."""

from __future__ import annotations

import json
import socket
from pathlib import Path

import nibabel as nib
import numpy as np
import pydicom
import pytest
from dicomweb_fake import FakeDicomweb, Faults, serving
from test_dicom_writer import DERIVATION, read_all, upsampled, write_test_series

from slicelib.checkpoint import read_checkpoint, save_checkpoint
from slicelib.cli import main
from slicelib.errors import SlicelibError
from slicelib.upsample import dicomweb
from slicelib.upsample.dicom_writer import Derivation, write_dicom_series
from slicelib.upsample.dicomweb import _auth, parse_series_url, parse_server

PASSWORD = "pa55-w0rd"  # must never appear in any output


@pytest.fixture
def series(tmp_path: Path) -> list[Path]:
    return sorted(write_test_series(tmp_path / "source", slices=4, rows=20, cols=24))


@pytest.fixture(autouse=True)
def _no_credentials(monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> None:
    """No credentials from the environment or a ~/.netrc of the machine."""
    for name in (dicomweb.ENV_USER, dicomweb.ENV_PASSWORD, dicomweb.ENV_TOKEN):
        monkeypatch.delenv(name, raising=False)
    monkeypatch.setenv("NETRC", str(tmp_path / "no-netrc"))


def _uids(files: list[Path]) -> tuple[str, str]:
    ds = pydicom.dcmread(files[0], stop_before_pixels=True)
    return str(ds.StudyInstanceUID), str(ds.SeriesInstanceUID)


def _series_url(server: FakeDicomweb, files: list[Path]) -> str:
    study, series = _uids(files)
    return f"{server.url}/studies/{study}/series/{series}"


def _upsample(source: str, out: Path, run: Path, *extra: str) -> int:
    return main(["upsample", source, str(out), "--checkpoint", str(run), *extra])


# URLs and credentials --------------------------------------------------------------------


def test_a_series_url_names_server_study_and_series_without_its_credentials() -> None:
    ref = parse_series_url(
        f"https://bob:{PASSWORD}@pacs.example:8443/dicom-web/studies/1.2.3/series/1.2.3.4/"
    )
    assert ref.server.url == "https://pacs.example:8443/dicom-web"
    assert (ref.study, ref.series) == ("1.2.3", "1.2.3.4")
    assert ref.server.auth == ("bob", PASSWORD)
    assert PASSWORD not in f"{ref} {ref!r} {ref.url}"
    assert parse_server("http://pacs:8042/dicom-web/").url == "http://pacs:8042/dicom-web"


@pytest.mark.parametrize(
    ("text", "message"),
    [
        (f"http://bob:{PASSWORD}@pacs/dicom-web/studies/1.2", "not a DICOMweb series URL"),
        (f"http://bob:{PASSWORD}@pacs/studies/1.2/series/x.y", "series UID 'x.y' is not a UID"),
        (f"http://bob:{PASSWORD}@pacs:99999/studies/1/series/2", "invalid port"),
        ("http://pacs/studies/1/series/2?limit=3", "no query"),
    ],
)
def test_a_bad_series_url_is_one_line_without_credentials(text: str, message: str) -> None:
    with pytest.raises(SlicelibError, match=message) as err:
        parse_series_url(text)
    assert PASSWORD not in str(err.value)


def test_a_store_url_is_the_server_s_base_url() -> None:
    with pytest.raises(SlicelibError, match="base URL"):
        parse_server("http://pacs/dicom-web/studies/1.2/series/3.4")
    with pytest.raises(SlicelibError, match="not an http"):
        parse_server("ftp://pacs/dicom-web")


def test_credentials_from_the_url_then_the_environment_else_netrc(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    assert _auth(parse_server("http://pacs/dicom-web")) is None  # requests reads ~/.netrc
    monkeypatch.setenv(dicomweb.ENV_TOKEN, "t0ken")
    bearer = _auth(parse_server("http://pacs/dicom-web"))
    assert "t0ken" not in repr(bearer)
    monkeypatch.setenv(dicomweb.ENV_USER, "carol")
    monkeypatch.setenv(dicomweb.ENV_PASSWORD, "pw")
    assert _auth(parse_server("http://pacs/dicom-web")) == ("carol", "pw")
    assert _auth(parse_server("http://ann:x@pacs/dicom-web")) == ("ann", "x")


def test_a_dicomweb_timeout_without_dicomweb_is_refused(
    series: list[Path], run: Path, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    folder = str(series[0].parent)
    assert _upsample(folder, tmp_path / "out", run, "--dicomweb-timeout", "5") == 2
    assert (
        "--dicomweb-timeout needs a DICOMweb input or --store-dicomweb" in capsys.readouterr().err
    )
    assert not (tmp_path / "out").exists()


def test_the_pacs_extra_is_named_when_missing(
    monkeypatch: pytest.MonkeyPatch,
    series: list[Path],
    run: Path,
    tmp_path: Path,
    capsys: pytest.CaptureFixture[str],
) -> None:
    real = dicomweb.importlib.util.find_spec
    monkeypatch.setattr(
        dicomweb.importlib.util,
        "find_spec",
        lambda name, *a: None if name == "dicomweb_client" else real(name, *a),
    )
    rc = _upsample(
        str(series[0].parent), tmp_path / "out", run, "--store-dicomweb", "http://pacs/dicom-web"
    )
    err = capsys.readouterr().err.strip()
    assert rc == 2 and "\n" not in err
    assert "needs the pacs extra" in err and "pip install 'slicelib[pacs]'" in err
    assert not (tmp_path / "out").exists()


# Deterministic derived UIDs ---------------------------------------------------------------


def test_the_same_derivation_gives_the_same_uids_another_gives_others(
    series: list[Path], tmp_path: Path
) -> None:
    up = upsampled(series[0].parent)
    same = Derivation(DERIVATION.method, DERIVATION.checkpoint, identity="abc")
    other = Derivation(DERIVATION.method, DERIVATION.checkpoint, identity="abd")
    for name, derivation in (("a", same), ("b", same), ("c", other)):
        write_dicom_series(up, tmp_path / name, derivation)
    a, b, c = (read_all(tmp_path / name) for name in "abc")
    assert [ds.SOPInstanceUID for ds in a] == [ds.SOPInstanceUID for ds in b]
    assert a[0].SeriesInstanceUID == b[0].SeriesInstanceUID
    assert a[0].SeriesInstanceUID != c[0].SeriesInstanceUID
    assert not {ds.SOPInstanceUID for ds in a} & {ds.SOPInstanceUID for ds in c}
    assert len({ds.SOPInstanceUID for ds in a}) == len(a)
    for ds in a:  # valid UIDs: digits and dots, at most 64 characters
        assert len(ds.SOPInstanceUID) <= 64 and ds.SOPInstanceUID.replace(".", "").isdigit()


def test_upsampling_again_with_the_same_checkpoint_gives_the_same_uids(
    series: list[Path], run: Path, tmp_path: Path
) -> None:
    folder = series[0].parent
    assert _upsample(str(folder), tmp_path / "one", run) == 0
    assert _upsample(str(folder), tmp_path / "two", run) == 0
    state = read_checkpoint(run / "best.pt")
    state["models"]["generator"]["final.bias"] += 0.01
    other = tmp_path / "other.pt"
    save_checkpoint(other, state)
    assert _upsample(str(folder), tmp_path / "three", other) == 0
    one, two, three = (read_all(tmp_path / n / "interpolated") for n in ("one", "two", "three"))
    assert [ds.SOPInstanceUID for ds in one] == [ds.SOPInstanceUID for ds in two]
    assert one[0].SeriesInstanceUID != three[0].SeriesInstanceUID
    record = json.loads((tmp_path / "one" / "upsample.json").read_text())
    assert len(record["derivation_identity"]) == 64


# A round trip and a re-run ----------------------------------------------------------------


def test_round_trip_stores_the_derived_series_once(
    series: list[Path],
    run: Path,
    tmp_path: Path,
    capsys: pytest.CaptureFixture[str],
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    source = FakeDicomweb.from_files(series, credentials=("alice", PASSWORD))
    with serving(source), serving(FakeDicomweb(credentials=("bob", PASSWORD))) as target:
        # The source's credentials in its URL; the target's from ~/.netrc ($NETRC).
        netrc = tmp_path / "netrc"
        netrc.write_text(f"machine 127.0.0.1 login bob password {PASSWORD}\n")
        netrc.chmod(0o600)
        monkeypatch.setenv("NETRC", str(netrc))
        url = _series_url(source, series).replace("http://", f"http://alice:{PASSWORD}@")
        assert _upsample(url, tmp_path / "x2", run, "--store-dicomweb", target.url) == 0
        out = capsys.readouterr()
        assert "7 instances stored" in out.out
        written = read_all(tmp_path / "x2" / "interpolated")
        stored = target.series_of(
            str(written[0].StudyInstanceUID), str(written[0].SeriesInstanceUID)
        )
        assert sorted(i.sop for i in stored) == sorted(str(ds.SOPInstanceUID) for ds in written)
        assert source.posts == 0 and target.posts == 1
        record = json.loads((tmp_path / "x2" / "upsample.json").read_text())
        assert record["input"] == _series_url(source, series)
        assert record["stored"]["series"][0]["sent"] == 7

        # A re-run derives the same UIDs, finds them on the server and sends nothing.
        assert _upsample(url, tmp_path / "again", run, "--store-dicomweb", target.url) == 0
        again = capsys.readouterr()
        assert "already there, nothing stored" in again.out
        assert target.posts == 1 and len(target.instances) == 7
        records = [(tmp_path / n / "upsample.json").read_text() for n in ("x2", "again")]
        assert PASSWORD not in "".join([out.out, out.err, again.out, again.err, *records])

    # The same series upsampled from its folder gets the same UIDs as from the server.
    assert _upsample(str(series[0].parent), tmp_path / "local", run) == 0
    local = read_all(tmp_path / "local" / "interpolated")
    assert [ds.SOPInstanceUID for ds in local] == [ds.SOPInstanceUID for ds in written]


def test_a_local_series_can_be_stored_and_a_nifti_cannot(
    series: list[Path], run: Path, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    with serving(FakeDicomweb()) as target:
        folder = str(series[0].parent)
        assert (
            _upsample(
                folder,
                tmp_path / "x2",
                run,
                "--store-dicomweb",
                target.url,
                "--uncertainty",
                "--ensemble",
                str(run),
            )
            == 0
        )
        assert len(target.instances) == 14  # the interpolated and the uncertainty series
        assert len({i.series for i in target.instances.values()}) == 2
    nifti = tmp_path / "v.nii"
    nib.save(nib.Nifti1Image(np.zeros((8, 8, 4), np.float32), np.eye(4)), nifti)
    capsys.readouterr()
    assert (
        _upsample(
            str(nifti), tmp_path / "n", run, "--store-dicomweb", "http://127.0.0.1:9/dicom-web"
        )
        == 2
    )
    assert "a NIfTI input gives NIfTI" in capsys.readouterr().err


# Faults: one line naming the server and the series, nothing stored ------------------------


def _free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


# What each fault is, and what the one line says about it.
FAULTS: dict[str, str] = {
    "unavailable": "answered HTTP 503",
    "no-credentials": "refused access (HTTP 401): set SLICELIB_DICOMWEB_USER",
    "wrong-password": "refused the credentials (HTTP 401)",
    "forbidden": "refused access (HTTP 403)",
    "slow": "no answer within 0.3 s (--dicomweb-timeout)",
    "partial": "partial series: the server sent 3 of the 4 instances",
    "mixed": "mixed series: the server sent instance",
}


@pytest.mark.parametrize("fault", list(FAULTS))
def test_a_faulty_source_stores_nothing(
    fault: str,
    series: list[Path],
    run: Path,
    tmp_path: Path,
    capsys: pytest.CaptureFixture[str],
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    faults, credentials = Faults(), None
    if fault == "unavailable":
        faults.status = 503
    elif fault in ("no-credentials", "wrong-password"):
        credentials = ("alice", PASSWORD)
        if fault == "wrong-password":
            monkeypatch.setenv(dicomweb.ENV_USER, "alice")
            monkeypatch.setenv(dicomweb.ENV_PASSWORD, PASSWORD + "x")
    elif fault == "forbidden":
        faults.status = 403
    elif fault == "slow":
        faults.delay = 1.5
    elif fault == "partial":
        faults.drop = 1
    elif fault == "mixed":
        other = write_test_series(tmp_path / "other", slices=4, rows=20, cols=24)
        faults.foreign = FakeDicomweb.from_files(other[:1]).instances.popitem()[1]
    source = FakeDicomweb.from_files(series, faults=faults, credentials=credentials)
    with serving(source), serving(FakeDicomweb()) as target:
        url = _series_url(source, series)
        timeout = ("--dicomweb-timeout", "0.3")
        rc = _upsample(url, tmp_path / "out", run, "--store-dicomweb", target.url, *timeout)
        err = capsys.readouterr().err.strip()
        assert rc == 2 and "\n" not in err, err
        assert FAULTS[fault] in err
        assert f"DICOMweb server {source.url}: series {_uids(series)[1]}" in err
        assert PASSWORD not in err
        assert target.posts == 0 and not target.instances
    assert not (tmp_path / "out").exists()


def test_a_server_that_is_down_or_lacks_the_series(
    series: list[Path], run: Path, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    study, uid = _uids(series)
    down = f"http://127.0.0.1:{_free_port()}/dicom-web"
    with serving(FakeDicomweb.from_files(series)) as source, serving(FakeDicomweb()) as target:
        cases = [
            (
                f"{down}/studies/{study}/series/{uid}",
                target.url,
                f"DICOMweb server {down}: series {uid}",
                "connection refused",
            ),
            (
                f"{source.url}/studies/{study}/series/1.2.3",
                target.url,
                f"DICOMweb server {source.url}: series 1.2.3",
                "not found",
            ),
            (
                f"{source.url}/studies/{study}/series/{uid}",
                down,
                f"DICOMweb server {down}: storing what is upsampled from series {uid}",
                "connection refused",
            ),
        ]
        for url, store, where, message in cases:
            assert _upsample(url, tmp_path / "out", run, "--store-dicomweb", store) == 2
            err = capsys.readouterr().err.strip()
            assert "\n" not in err and where in err and message in err, err
            assert not (tmp_path / "out").exists()
        assert target.posts == 0


def test_a_derived_series_the_server_holds_other_instances_of_is_not_stored(
    series: list[Path], run: Path, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    folder = str(series[0].parent)
    assert _upsample(folder, tmp_path / "local", run) == 0
    derived = sorted((tmp_path / "local" / "interpolated").iterdir())
    ds = pydicom.dcmread(derived[0])
    ds.SOPInstanceUID = ds.file_meta.MediaStorageSOPInstanceUID = "1.2.3.999"
    stranger = tmp_path / "stranger.dcm"
    ds.save_as(stranger)
    with serving(FakeDicomweb.from_files([stranger])) as target:
        assert _upsample(folder, tmp_path / "x2", run, "--store-dicomweb", target.url) == 2
        err = capsys.readouterr().err
        assert "holds 1 instance(s) of this series that this run did not write" in err
        assert target.posts == 0 and len(target.instances) == 1
