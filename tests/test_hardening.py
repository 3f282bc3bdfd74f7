"""Damaged input never stops a run and never loses a slice in silence (issue 13)."""

from __future__ import annotations

import argparse
import dataclasses
import multiprocessing as mp
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import nibabel as nib
import numpy as np
import pydicom
import pytest
from dicom_factory import write_cohort, write_series
from dicom_fuzz import _set_raw

import slicelib.data.prepare as prepare_module
from slicelib.cli import main
from slicelib.cli.types import bounded_float, bounded_int, output_file
from slicelib.config import PrepareConfig, ScanConfig
from slicelib.data.dicom import load_series
from slicelib.data.headers import parse_value, read_header
from slicelib.data.prepare import prepare
from slicelib.data.scan import die_with_parent, scan, walk_entries
from slicelib.errors import SlicelibError
from slicelib.locking import hold_lock

SMALL = {"n_slices": 6, "rows": 16, "cols": 16}
SCAN = ScanConfig(min_slices=3, workers=1)
CFG = PrepareConfig(size=16)


@pytest.mark.parametrize(
    ("raw", "kind", "n", "want"),
    [
        (b"1e400 ", "int", 0, "invalid SeriesNumber"),
        (b"nan ", "int", 0, "invalid SeriesNumber"),
        (b"abc ", "number", 0, "invalid SeriesNumber"),
        (b"1\\0\\0 ", "vector", 6, "3 values, want 6"),
        (b"0\\0 ", "vector", 2, "want > 0"),
        (b"", "int", 0, "missing SeriesNumber"),
        (b"1.5 ", "int", 0, "want an integer"),
    ],
)
def test_parse_value_gives_a_reason_never_an_exception(
    raw: bytes, kind: str, n: int, want: str
) -> None:
    got = parse_value("SeriesNumber", raw, kind, n, positive=True)
    assert got.value is None
    assert want in got.reason


def test_parse_value_reads_good_values() -> None:
    assert parse_value("X", b"12 ", "int").value == 12
    assert parse_value("X", b"1\\0\\0\\0\\1\\0", "vector", 6).value == (1, 0, 0, 0, 1, 0)
    assert parse_value("X", "0.6", "number", positive=True).value == 0.6
    assert parse_value("X", b"1.2.3 ", "uid").value == "1.2.3"
    assert parse_value("X", b"1.2.x", "uid").reason.startswith("invalid X")


def _damage(path: Path, keyword: str, vr: str, value: bytes) -> None:
    ds = pydicom.dcmread(path)
    _set_raw(ds, keyword, vr, value)
    ds.save_as(path)


@pytest.mark.parametrize("which", [0, -1])
@pytest.mark.parametrize("damage", ["empty", "64 bytes", "no Rows", "no preamble"])
def test_damaged_first_or_last_slice_excludes_the_series_naming_it(
    tmp_path: Path, which: int, damage: str
) -> None:
    spec = write_series(tmp_path / "p1", patient_id="p1", **SMALL)
    victim = spec.files[which]
    data = victim.read_bytes()
    if damage == "empty":
        victim.write_bytes(b"")
    elif damage == "64 bytes":
        victim.write_bytes(data[:64])
    elif damage == "no Rows":
        ds = pydicom.dcmread(victim)
        del ds.Rows
        ds.save_as(victim)
    else:
        victim.write_bytes(data[132:])
    row = scan(tmp_path, SCAN, progress=False).series[0]
    if damage == "no preamble":  # a plain data set is still the slice: read, not lost
        assert row.included and row.n_files == 6
        assert load_series(row.files).n_slices == 6
        return
    assert not row.included
    assert victim.name in row.reason


@pytest.mark.parametrize(
    ("keyword", "vr", "value"),
    [
        ("SeriesNumber", "IS", b"1e400 "),
        ("SeriesNumber", "IS", b"nan "),
        ("ImageOrientationPatient", "DS", b"1\\0\\0 "),
        ("NumberOfFrames", "IS", b"abc "),
        ("PixelSpacing", "DS", b"0\\0 "),
    ],
)
def test_malformed_value_excludes_its_series_and_the_run_goes_on(
    tmp_path: Path, keyword: str, vr: str, value: bytes
) -> None:
    specs = write_cohort(tmp_path / "data", n_patients=2, **SMALL)
    _damage(specs[0].files[2], keyword, vr, value)
    result = scan(tmp_path / "data", SCAN, progress=False)
    bad = next(r for r in result.series if r.patient_id == specs[0].patient_id)
    assert not bad.included and keyword in bad.reason and specs[0].files[2].name in bad.reason
    cache = prepare(tmp_path / "data", tmp_path / "cache", CFG, SCAN, progress=False)
    assert [e.patient_id for e in cache.entries()] == [specs[1].patient_id]


@pytest.mark.parametrize(
    ("slope", "intercept", "want"),
    [("0", "0", "RescaleSlope 0"), ("100", "0", "RescaleSlope 100 "), ("-1", "0", "Slope -1 "),
     ("1e30", "0", "RescaleSlope 1e"), ("1", "-5000", "RescaleIntercept -5000 "),
     ("abc", "0", "invalid RescaleSlope")],
)  # fmt: skip
def test_rescale_outliers_refused_naming_the_file(
    tmp_path: Path, slope: str, intercept: str, want: str
) -> None:
    spec = write_series(tmp_path / "s", **SMALL)
    ds = pydicom.dcmread(spec.files[3])
    _set_raw(ds, "RescaleSlope", "DS", (slope + " " * (len(slope) % 2)).encode())
    _set_raw(ds, "RescaleIntercept", "DS", (intercept + " " * (len(intercept) % 2)).encode())
    ds.save_as(spec.files[3])
    with pytest.raises(SlicelibError, match=want) as err:
        load_series(spec.folder)
    assert spec.files[3].name in str(err.value)


def test_per_slice_slopes_that_keep_the_range_are_accepted(tmp_path: Path) -> None:
    spec = write_series(tmp_path / "s", **SMALL)
    ds = pydicom.dcmread(spec.files[2])  # half the slope, twice the stored values
    ds.RescaleSlope, ds.RescaleIntercept = "0.5", "0"
    ds.PixelData = (ds.pixel_array.astype(np.uint16) * 2).tobytes()
    ds.save_as(spec.files[2])
    assert np.array_equal(load_series(spec.folder).pixels, spec.expected)


def test_values_beyond_the_stored_bit_depth_refused(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    # pydicom masks native data to BitsStored; a decoder that does not (a corrupt
    # compressed stream) hands back values the header rules out.
    spec = write_series(tmp_path / "s", **SMALL)
    ds = pydicom.dcmread(spec.files[-1])
    ds.BitsStored, ds.HighBit = 8, 7
    ds.save_as(spec.files[-1])
    real = pydicom.Dataset.pixel_array

    def unmasked(self: pydicom.Dataset) -> np.ndarray:
        arr = np.asarray(real.fget(self))  # type: ignore[attr-defined]
        return arr + 300 if self.BitsStored == 8 else arr

    monkeypatch.setattr(pydicom.Dataset, "pixel_array", property(unmasked))
    with pytest.raises(SlicelibError, match="outside the stored range 0..255") as err:
        load_series(spec.folder)
    assert spec.files[-1].name in str(err.value)


def test_size_cap_from_the_header_before_decoding(tmp_path: Path) -> None:
    spec = write_series(tmp_path / "s", **SMALL)
    ds = pydicom.dcmread(spec.files[0])
    ds.Rows = ds.Columns = 65535
    ds.save_as(spec.files[0])
    row = scan(tmp_path, SCAN, progress=False).series[0]
    assert not row.included and "exceeds the 64 MB cap" in row.reason
    bigger = dataclasses.replace(SCAN, max_slice_mb=16384.0)
    row = scan(tmp_path, bigger, progress=False).series[0]
    assert "exceeds" not in row.reason  # the cap is overridable
    with pytest.raises(SlicelibError, match="exceeds the 1 MB cap"):
        load_series(spec.folder, max_slice_mb=1.0)


@pytest.mark.parametrize(
    ("charset", "text"),
    [("ISO_IR 100", "t2_tse_tra Müller"), ("ISO_IR 192", "t2_tse_tra 山田"),
     (["", "ISO 2022 IR 87"], "t2_tse_tra 山田")],
)  # fmt: skip
def test_specific_character_set_honoured(tmp_path: Path, charset: object, text: str) -> None:
    spec = write_series(tmp_path / "s", **SMALL)
    for f in spec.files:
        ds = pydicom.dcmread(f)
        ds.SpecificCharacterSet = charset
        ds.SeriesDescription = text
        ds.save_as(f)
    header = read_header(str(spec.files[0]))
    assert header.series_description == text
    assert scan(tmp_path, SCAN, progress=False).series[0].series_description == text


def test_pydicom_warnings_name_the_file(tmp_path: Path, caplog: pytest.LogCaptureFixture) -> None:
    spec = write_series(tmp_path / "s", **SMALL)
    _damage(spec.files[1], "SpecificCharacterSet", "CS", b"ISO_IR 999 ")
    caplog.set_level("WARNING")
    scan(tmp_path, SCAN, progress=False)
    named = [r.getMessage() for r in caplog.records if str(spec.files[1]) in r.getMessage()]
    assert any("ISO_IR 999" in m for m in named)


def test_unreadable_file_and_folder_reported(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    spec = write_series(tmp_path / "data" / "s", **SMALL)
    (tmp_path / "data" / "locked").mkdir()
    real_open, real_scandir = open, os.scandir

    def fake_open(path: object, *args: object, **kwargs: object) -> object:
        if str(path) == str(spec.files[-1]):
            raise PermissionError(13, "Permission denied", str(path))
        return real_open(path, *args, **kwargs)  # type: ignore[call-overload]

    def fake_scandir(path: object = ".") -> object:
        if str(path).endswith("locked"):
            raise PermissionError(13, "Permission denied", str(path))
        return real_scandir(path)  # type: ignore[arg-type]

    import slicelib.data.headers as headers

    monkeypatch.setattr(headers, "open", fake_open, raising=False)
    monkeypatch.setattr(os, "scandir", fake_scandir)
    result = scan(tmp_path / "data", SCAN, progress=False)
    row = result.series[0]
    assert not row.included and spec.files[-1].name in row.reason
    assert "Permission denied" in row.reason
    listed = dict(result.unreadable)
    assert any(p.endswith("locked") for p in listed)
    assert any("locked" in s for s in result.summary()["unreadable"])


def test_odd_entries_reported_not_followed(tmp_path: Path) -> None:
    write_series(tmp_path / "s", **SMALL)
    os.mkfifo(tmp_path / "s" / "fifo.dcm")
    os.symlink(".", tmp_path / "s" / "loop")
    files, unlisted, odd = walk_entries(tmp_path)
    assert len(files) == 6 and not unlisted
    assert sorted(Path(p).name for p, _ in odd) == ["fifo.dcm", "loop"]
    result = scan(tmp_path, SCAN, progress=False)
    assert result.series[0].included and len(result.skipped) == 2


def test_patient_isolated_from_an_unexpected_error(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    specs = write_cohort(tmp_path / "data", n_patients=3, **SMALL)
    real = prepare_module.preprocess_volume
    calls: list[int] = []

    def failing(*args: object, **kwargs: object) -> object:
        calls.append(1)
        if len(calls) == 2:
            raise ValueError("boom")
        return real(*args, **kwargs)  # type: ignore[arg-type]

    monkeypatch.setattr(prepare_module, "preprocess_volume", failing)
    cache = prepare(tmp_path / "data", tmp_path / "cache", CFG, SCAN, progress=False)
    assert len(cache) == 2
    excluded = cache.manifest["excluded_in_prepare"]
    assert excluded[0]["patient_id"] == specs[1].patient_id
    assert "unexpected ValueError: boom" in excluded[0]["reason"]


def test_stray_nifti_in_a_dicom_tree_is_an_error_listing_both(tmp_path: Path) -> None:
    write_cohort(tmp_path / "data", n_patients=2, **SMALL)
    img = nib.Nifti1Image(np.zeros((4, 4, 4), np.float32), np.eye(4))
    nib.save(img, tmp_path / "data" / "mask.nii.gz")
    with pytest.raises(SlicelibError, match=r"mixes 1 NIfTI file\(s\) \(mask.nii.gz\) and 12"):
        prepare(tmp_path / "data", tmp_path / "cache", CFG, SCAN, progress=False)
    cache = prepare(
        tmp_path / "data", tmp_path / "cache", CFG, SCAN, progress=False, input_kind="dicom"
    )
    assert len(cache) == 2


def test_cache_inside_the_data_root_refused(tmp_path: Path) -> None:
    write_cohort(tmp_path / "data", n_patients=1, **SMALL)
    with pytest.raises(SlicelibError, match="inside the data root"):
        prepare(tmp_path / "data", tmp_path / "data" / "cache", CFG, SCAN, progress=False)


def test_lock_names_the_holder_and_stale_temp_is_removed(tmp_path: Path) -> None:
    write_cohort(tmp_path / "data", n_patients=1, **SMALL)
    target = tmp_path / "cache"
    stale = tmp_path / ".cache.tmp-killed"
    (stale / "volumes").mkdir(parents=True)
    with hold_lock(target, "cache"), pytest.raises(SlicelibError, match=f"pid {os.getpid()}"):
        prepare(tmp_path / "data", target, CFG, SCAN, progress=False)
    assert stale.exists()  # never removed while another writer may own it
    prepare(tmp_path / "data", target, CFG, SCAN, progress=False)
    assert sorted(p.name for p in tmp_path.iterdir()) == ["cache", "data"]


def test_waiting_lock_lets_one_holder_in_at_a_time(tmp_path: Path) -> None:
    import threading

    from slicelib.locking import hold_file_lock

    path = tmp_path / "locks" / "step.lock"
    order: list[str] = []
    trying = threading.Event()

    def second() -> None:
        trying.set()
        with hold_file_lock(path, "step", wait=True):
            order.append("second")

    with hold_file_lock(path, "step", wait=True):
        thread = threading.Thread(target=second)
        thread.start()
        trying.wait()
        time.sleep(0.1)  # let the second holder reach its flock
        busy = pytest.raises(SlicelibError, match=f"step is in use by pid {os.getpid()}")
        with busy, hold_file_lock(path, "step"):
            pass
        order.append("first")
    thread.join()
    assert order == ["first", "second"] and not path.exists()


def _sleeping_worker(parent: int, pid_file: str) -> None:
    die_with_parent(parent)
    Path(pid_file).write_text(str(os.getpid()))
    time.sleep(60)


def _parent(pid_file: str) -> None:
    ctx = mp.get_context("fork")
    proc = ctx.Process(target=_sleeping_worker, args=(os.getpid(), pid_file))
    proc.start()
    proc.join()


def test_worker_dies_with_its_parent(tmp_path: Path) -> None:
    pid_file = tmp_path / "worker.pid"
    parent = mp.get_context("fork").Process(target=_parent, args=(str(pid_file),))
    parent.start()
    for _ in range(100):
        if pid_file.exists() and pid_file.read_text():
            break
        time.sleep(0.05)
    worker = int(pid_file.read_text())
    os.kill(parent.pid, signal.SIGKILL)  # type: ignore[arg-type]
    parent.join()
    for _ in range(100):  # the worker is reaped by init once it exits
        try:
            os.kill(worker, 0)
        except ProcessLookupError:
            break
        with open(f"/proc/{worker}/stat") as fh:
            if fh.read().split()[2] == "Z":
                break
        time.sleep(0.05)
    else:
        os.kill(worker, signal.SIGKILL)
        pytest.fail("the worker outlived its parent")


def test_argument_types() -> None:
    with pytest.raises(argparse.ArgumentTypeError, match="integer 1..100"):
        bounded_int(1, 100)("99999999999999999999")
    with pytest.raises(argparse.ArgumentTypeError, match="must be an integer"):
        bounded_int(1)("3.5")
    assert bounded_int(1)("7") == 7
    with pytest.raises(argparse.ArgumentTypeError, match="number in"):
        bounded_float(0, 10, lo_open=True)("inf")
    with pytest.raises(argparse.ArgumentTypeError, match="is a folder"):
        output_file("/")


@pytest.mark.parametrize(
    "argv",
    [
        ["scan", "DATA", "--csv", "FOLDER"],
        ["scan", "DATA", "--workers", "-1"],
        ["prepare", "DATA", "OUT", "--size", "100000"],
        ["prepare", "DATA", "OUT", "--seed", "99999999999999999999"],
        ["prepare", "DATA", "OUT", "--max-slice-mb", "nan"],
        ["train", "--model", "unet", "--k", "99999999999999999999", "--cache", "DATA",
         "--out", "OUT"],
        ["train", "--model", "unet", "--k", "0", "--cache", "DATA", "--out", "OUT"],
        ["train", "--model", "unet", "--k", "1", "--cache", "DATA", "--out", "OUT",
         "--epochs", "1e9"],
        ["evaluate", "--cache", "DATA", "--k", "-1", "--out", "OUT"],
        ["evaluate", "--cache", "DATA", "--k", "1", "--out", "OUT", "--seed", "-3"],
        ["evaluate", "--cache", "DATA", "--k", "1", "--out", "OUT", "--ddim-steps", "0"],
        ["upsample", "DATA", "OUT", "--checkpoint", "DATA", "--batch-size", "0"],
        ["upsample", "DATA", "OUT", "--checkpoint", "DATA", "--mc-samples", "1"],
        ["upsample", "DATA", "OUT", "--checkpoint", "DATA", "--factor", "99999999999"],
        ["demo-data", "OUT", "--patients", "0"],
        ["demo-data", "OUT", "--seed", "99999999999999999999"],
    ],
)  # fmt: skip
def test_bad_options_give_one_line_error(
    tmp_path: Path, argv: list[str], capsys: pytest.CaptureFixture[str]
) -> None:
    (tmp_path / "FOLDER").mkdir()
    argv = [str(tmp_path / a) if a in ("DATA", "OUT", "FOLDER") else a for a in argv]
    with pytest.raises(SystemExit) as exit_:
        main(argv)
    assert exit_.value.code == 2
    errors = [line for line in capsys.readouterr().err.splitlines() if "error:" in line]
    assert len(errors) == 1 and "argument --" in errors[0]


def test_scan_csv_folder_from_the_library(tmp_path: Path) -> None:
    write_series(tmp_path / "s", **SMALL)
    result = scan(tmp_path, SCAN, progress=False)
    with pytest.raises(SlicelibError, match="is a folder"):
        result.write_csv(tmp_path)


def test_kill_of_scan_leaves_no_worker(tmp_path: Path) -> None:
    write_cohort(tmp_path / "data", n_patients=12, **SMALL)  # 72 files: the pool is used
    env = {**os.environ, "PYTHONPATH": str(Path(__file__).resolve().parents[1])}
    code = (
        "import time, slicelib.data.scan as s\n"
        "orig = s.read_header\n"
        "def slow(p):\n    time.sleep(0.5)\n    return orig(p)\n"
        "s.read_header = slow\n"
        f"s.scan({str(tmp_path / 'data')!r}, s.ScanConfig(workers=2), progress=False)\n"
    )
    proc = subprocess.Popen([sys.executable, "-c", code], env=env)
    children: list[int] = []
    for _ in range(200):
        children = [
            int(p) for p in os.listdir("/proc") if p.isdigit() and _ppid(int(p)) == proc.pid
        ]
        if len(children) >= 2:
            break
        time.sleep(0.05)
    assert children, "the scan started no worker"
    proc.kill()
    proc.wait()
    alive = children
    for _ in range(100):
        alive = [c for c in children if _ppid(c) is not None and _state(c) != "Z"]
        if not alive:
            break
        time.sleep(0.05)
    for c in alive:
        os.kill(c, signal.SIGKILL)
    assert not alive


def _stat_fields(pid: int) -> list[str] | None:
    try:
        with open(f"/proc/{pid}/stat") as fh:
            return fh.read().rsplit(")", 1)[1].split()
    except OSError:
        return None


def _ppid(pid: int) -> int | None:
    fields = _stat_fields(pid)
    return int(fields[1]) if fields else None


def _state(pid: int) -> str:
    fields = _stat_fields(pid)
    return fields[0] if fields else ""


@pytest.mark.parametrize("which", [0, -1])
def test_directory_record_class_on_an_end_slice_excludes_the_series(
    tmp_path: Path, which: int
) -> None:
    """A first or last slice whose SOP class reads as a DICOMDIR's was skipped as "other
    DICOM" and its series cached one slice short (the fuzz campaign's one loss)."""
    specs = write_cohort(tmp_path / "data", n_patients=2, **SMALL)
    victim = specs[0].files[which]
    ds = pydicom.dcmread(victim)
    ds.SOPClassUID = "1.2.840.10008.1.3.10"  # Media Storage Directory Storage
    ds.save_as(victim)
    row = next(r for r in scan(tmp_path / "data", SCAN, progress=False).series if r.n_files > 4)
    assert not row.included and victim.name in row.reason and "DICOMDIR" in row.reason
    cache = prepare(tmp_path / "data", tmp_path / "cache", CFG, SCAN, progress=False)
    assert [e.patient_id for e in cache.entries()] == [specs[1].patient_id]
