"""Nothing lost, whatever the user types (issue 22): foreign folders refused, empty paths
refused, NIfTI bombs and odd voxel types refused from the header, implausible
predictions and out-of-domain inputs reported, one study per folder, OS errors in
one line, temporary folders of killed runs removed.

Each probe of the issue is one test below (its number in the test's docstring).
"""

from __future__ import annotations

import errno
import gzip
import json
import logging
import os
import shutil
from pathlib import Path

import nibabel as nib
import numpy as np
import pytest
from dicom_factory import write_cohort

from slicelib.checkpoint import read_checkpoint, save_checkpoint
from slicelib.cli import main
from slicelib.config import PrepareConfig, ScanConfig
from slicelib.data.cache import MANIFEST
from slicelib.data.nifti import load_nifti
from slicelib.data.prepare import prepare
from slicelib.errors import SlicelibError
from slicelib.io import OUTPUT_MARKER
from slicelib.locking import hold_lock
from slicelib.model_card import domain_differences

SCAN = ScanConfig(min_slices=3, workers=1)
NOTEBOOKS = Path(__file__).resolve().parents[1] / "notebooks"
CFG = PrepareConfig(size=16)


def one_line(capsys: pytest.CaptureFixture[str], command: str) -> str:
    """The single error line of ``slicelib COMMAND``; fails on a traceback or more lines."""
    err = capsys.readouterr().err
    assert "Traceback" not in err, err
    lines = [line for line in err.splitlines() if line.startswith(f"slicelib {command}:")]
    assert len(lines) == 1, err
    return lines[0]


def listing(folder: Path) -> dict[str, bytes]:
    """Every file under ``folder`` with its bytes (to show nothing changed)."""
    return {
        str(p.relative_to(folder)): p.read_bytes() for p in sorted(folder.rglob("*")) if p.is_file()
    }


@pytest.fixture(scope="module")
def cohort(tmp_path_factory: pytest.TempPathFactory) -> Path:
    root = tmp_path_factory.mktemp("safety_cohort") / "data"
    write_cohort(root, n_patients=2, n_slices=6, rows=16, cols=16)
    return root


def _upsample(series: Path, out: Path | str, ckpt: Path | str, *extra: str) -> int:
    return main(["upsample", str(series), str(out), "--checkpoint", str(ckpt), *extra])


# 1. prepare --force into a folder the user owns -----------------------------------------


@pytest.mark.parametrize("manifest", ["slicelib", "other"])
def test_prepare_force_never_replaces_a_folder_slicelib_did_not_write(
    cohort: Path, tmp_path: Path, manifest: str
) -> None:
    """Probe 1: ``prepare COHORT F --force`` with the user's thesis.txt and a manifest.json."""
    folder = tmp_path / "F"
    folder.mkdir()
    (folder / "thesis.txt").write_text("years of work")
    text = {"format": 1, "config": {"size": 8}, "patients": []} if manifest == "slicelib" else {}
    (folder / MANIFEST).write_text(json.dumps(text))
    before = listing(folder)
    with pytest.raises(SlicelibError, match="not written by slicelib") as err:
        prepare(cohort, folder, CFG, SCAN, force=True, progress=False)
    assert str(folder) in str(err.value) and "thesis.txt" in str(err.value)
    assert "--force" not in str(err.value).split("even with")[0]  # never suggested
    assert listing(folder) == before


def test_prepare_refuses_an_unreadable_manifest_without_suggesting_force(
    cohort: Path, tmp_path: Path
) -> None:
    folder = tmp_path / "F"
    folder.mkdir()
    (folder / MANIFEST).write_text("{not json")
    with pytest.raises(SlicelibError) as err:
        prepare(cohort, folder, CFG, SCAN, progress=False)
    assert "pass --force" not in str(err.value)


def test_prepare_force_replaces_its_own_cache_and_writes_the_kind(
    cohort: Path, tmp_path: Path
) -> None:
    target = tmp_path / "cache"
    prepare(cohort, target, CFG, SCAN, progress=False)
    marker = json.loads((target / OUTPUT_MARKER).read_text())
    assert marker["kind"] == "cache"
    other = PrepareConfig(size=8)
    with pytest.raises(SlicelibError, match="--force"):
        prepare(cohort, target, other, SCAN, progress=False)
    assert prepare(cohort, target, other, SCAN, force=True, progress=False).size == 8
    (target / "notes.txt").write_text("mine")  # added beside slicelib's files
    with pytest.raises(SlicelibError, match="notes.txt"):
        prepare(cohort, target, CFG, SCAN, force=True, progress=False)
    assert (target / "notes.txt").read_text() == "mine"


# 2, 3. train --out a foreign folder, or "" ----------------------------------------------


def _train_argv(cache: Path, out: str) -> list[str]:
    return ["train", "--model", "unet", "--k", "1", "--cache", str(cache), "--out", out,
            "--preset", "smoke", "--epochs", "1", "--device", "cpu"]  # fmt: skip


def test_train_refuses_a_folder_slicelib_did_not_write(
    tiny_cache: Path, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    """Probe 2: ``train --out G`` where G holds the user's config.json and model_card.md."""
    folder = tmp_path / "G"
    folder.mkdir()
    (folder / "config.json").write_text('{"mine": true}')
    (folder / "model_card.md").write_text("# my card")
    before = listing(folder)
    assert main(_train_argv(tiny_cache, str(folder))) == 2
    line = one_line(capsys, "train")
    assert str(folder) in line and "not written by slicelib" in line
    assert listing(folder) == before


def test_train_refuses_a_folder_of_another_kind(
    tiny_cache: Path, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    assert main(_train_argv(tiny_cache, str(tiny_cache))) == 2
    line = one_line(capsys, "train")
    assert "holds a cache" in line and "not a run" in line


@pytest.mark.parametrize("out", ["", "   "])
def test_train_refuses_an_empty_output_path(
    tiny_cache: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch,
    capsys: pytest.CaptureFixture[str], out: str,
) -> None:  # fmt: skip
    """Probe 3: ``train --out ""`` wrote into the current folder."""
    monkeypatch.chdir(tmp_path)
    (tmp_path / "config.json").write_text("mine")
    with pytest.raises(SystemExit) as stop:
        main(_train_argv(tiny_cache, out))
    assert stop.value.code == 2
    assert "empty" in one_line(capsys, "train")
    assert sorted(p.name for p in tmp_path.iterdir()) == ["config.json"]
    with pytest.raises(SlicelibError, match="empty"):
        from slicelib.config import TrainConfig
        from slicelib.train import train

        train(TrainConfig(model="unet", epochs=1, device="cpu"), tiny_cache, out)


def test_train_resumes_in_its_own_run_folder(run: Path) -> None:
    marker = json.loads((run / OUTPUT_MARKER).read_text())
    assert marker["kind"] == "run"


# 4. upsample --force over a cohort ------------------------------------------------------


def test_upsample_force_refuses_a_cohort(
    run: Path, series: Path, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    """Probe 4: ``upsample SERIES COHORT --force`` where demo-data wrote COHORT."""
    cohort = tmp_path / "cohort"
    args = ["demo-data", str(cohort), "--preset", "smoke", "--patients", "1", "--no-progress"]
    assert main(args) == 0
    capsys.readouterr()
    assert json.loads((cohort / OUTPUT_MARKER).read_text())["kind"] == "cohort"
    before = listing(cohort)
    assert _upsample(series, cohort, run, "--force") == 2
    line = one_line(capsys, "upsample")
    assert "holds a cohort" in line and "not an upsampled series" in line
    assert listing(cohort) == before
    # a cohort written before markers named their kind is recognised by its metadata.csv
    (cohort / OUTPUT_MARKER).write_text('{"written_by": "slicelib", "version": "0.1.0"}')
    assert _upsample(series, cohort, run, "--force") == 2
    assert "holds a cohort" in one_line(capsys, "upsample")
    assert (cohort / "metadata.csv").is_file()


def test_demo_data_force_refuses_an_upsampled_series(
    run: Path, series: Path, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    out = tmp_path / "x2"
    assert _upsample(series, out, run) == 0
    capsys.readouterr()
    args = ["demo-data", str(out), "--preset", "smoke", "--patients", "1", "--no-progress"]
    assert main([*args, "--force"]) == 2
    assert "holds an upsampled series" in one_line(capsys, "demo-data")
    assert (out / "interpolated").is_dir()


# 5. two studies in one folder; notebooks written atomically ----------------------------


def test_second_study_in_the_same_folder_is_refused_naming_the_holder(tmp_path: Path) -> None:
    """Probe 5 (the race): one study at a time per folder."""
    from slicelib.study.runner import run_study

    out = tmp_path / "study"
    # (a source folder that is not a checkout: an unlocked run stops there, at once)
    with hold_lock(out, f"study {out}"), pytest.raises(SlicelibError) as err:
        run_study("smoke", out, None, None, only=["data"], source_root=tmp_path / "nowhere")
    assert f"pid {os.getpid()}" in str(err.value) and str(out) in str(err.value)


def test_study_refuses_a_folder_slicelib_did_not_write(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    folder = tmp_path / "mine"
    folder.mkdir()
    (folder / "environment.json").write_text("mine")
    argv = ["study", "--preset", "smoke", "--out", str(folder), "--no-book"]
    assert main([*argv, "--source", str(tmp_path / "nowhere")]) == 2
    assert "not written by slicelib" in one_line(capsys, "study")
    assert sorted(p.name for p in folder.iterdir()) == ["environment.json"]


def test_killed_notebook_never_leaves_a_file_that_reads_as_up_to_date(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Probe 5 (the file): papermill writes the executed notebook as it goes; a kill
    mid-way must leave the earlier copy or none, never a partial one."""
    import papermill

    from slicelib.study.notebooks import NotebookJob, NotebookRunner
    from slicelib.study.workspace import Study

    study = Study("smoke", tmp_path / "study")
    runner = NotebookRunner(study)
    job = NotebookJob("data", NOTEBOOKS / "data.ipynb", {"preset": "smoke"})
    good = json.dumps({"cells": [], "metadata": {}, "nbformat": 4, "nbformat_minor": 5})
    runner.output(job).write_text(good)

    def killed(source: str, output: str, **kwargs: object) -> None:
        Path(output).write_text(good[:20])  # a write cut short
        raise KeyboardInterrupt

    monkeypatch.setattr(papermill, "execute_notebook", killed)
    with pytest.raises(KeyboardInterrupt):
        runner.execute(job)
    text = runner.output(job).read_text() if runner.output(job).exists() else good
    json.loads(text)  # never a partial file under the notebook's name
    assert not runner.up_to_date(job)
    assert [p.name for p in runner.dir.glob("*.ipynb")] in ([], ["data.ipynb"])


# 6, extra. NIfTI size caps from the header ---------------------------------------------


@pytest.fixture
def no_voxel_read(monkeypatch: pytest.MonkeyPatch) -> None:
    """Fail any read of NIfTI voxel data: a cap must be decided from the header."""
    from nibabel import arrayproxy

    def refuse(self: object, *args: object, **kwargs: object) -> None:
        raise AssertionError("voxel data read before the size was checked")

    monkeypatch.setattr(arrayproxy.ArrayProxy, "_get_unscaled", refuse)
    monkeypatch.setattr(arrayproxy.ArrayProxy, "_get_scaled", refuse)


def _header_only(path: Path, shape: tuple[int, ...], dtype: type = np.int16) -> None:
    """A NIfTI file whose header announces ``shape`` but holds only a few voxels (what a
    decompression bomb or a damaged header looks like before the data is read)."""
    header = nib.Nifti1Header()
    header.set_data_shape(shape)
    header.set_data_dtype(dtype)
    header.set_zooms((1.0, 1.0, 3.0)[: len(shape)])
    header.set_sform(np.diag([1.0, 1.0, 3.0, 1.0]), code=1)
    opener = gzip.open if path.name.endswith(".gz") else open
    with opener(path, "wb") as handle:  # type: ignore[operator]
        header.write_to(handle)
        handle.write(b"\x00" * (int(header["vox_offset"]) - 348 + 4096))


@pytest.mark.usefixtures("no_voxel_read")
@pytest.mark.parametrize(
    ("shape", "want"),
    [((1024, 1024, 1024), "1024 x 1024 x 1024"), ((32767, 32767, 100), "32767 x 32767 x 100")],
)
def test_nifti_size_cap_decided_from_the_header(
    tmp_path: Path, shape: tuple[int, int, int], want: str
) -> None:
    """Probe 6 (a 4.4 MB .nii.gz inflating to 4.3 GiB) and the 32767 x 32767 x 100 header
    that failed with only "unreadable (MemoryError)"."""
    path = tmp_path / "bomb.nii.gz"
    _header_only(path, shape)
    with pytest.raises(SlicelibError) as err:
        load_nifti(path)
    message = str(err.value)
    assert str(path) in message and want in message and "cap" in message
    assert "--max-volume-mb" in message or "--max-slice-mb" in message


def test_nifti_caps_are_options_of_upsample_and_prepare(
    run: Path, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    rng = np.random.default_rng(0)
    data = rng.integers(0, 1000, size=(40, 40, 60)).astype(np.int16)  # 0.4 MB as float32
    src = tmp_path / "in" / "vol.nii.gz"
    src.parent.mkdir()
    nib.save(nib.Nifti1Image(data, np.diag([0.8, 0.8, 3.0, 1.0])), src)
    assert _upsample(src, tmp_path / "o", run, "--max-volume-mb", "0.2") == 2
    line = one_line(capsys, "upsample")
    assert "exceeds the 0.2 MB cap" in line and "--max-volume-mb" in line
    assert not (tmp_path / "o").exists()
    assert _upsample(src, tmp_path / "o", run) == 0  # the default cap lets it through
    capsys.readouterr()
    cache = tmp_path / "cache"
    argv = ["prepare", str(src.parent), str(cache), "--size", "16", "--no-progress"]
    assert main([*argv, "--max-volume-mb", "0.2"]) == 2  # the only volume is excluded
    assert "exceeds the 0.2 MB cap" in one_line(capsys, "prepare")


# 7. complex and other unusable voxel types -----------------------------------------------


@pytest.mark.parametrize("dtype", [np.complex64, np.complex128, "rgb"])
def test_unusable_nifti_voxel_types_refused(
    run: Path, tmp_path: Path, capsys: pytest.CaptureFixture[str], dtype: object
) -> None:
    """Probe 7: a complex-valued NIfTI was upsampled (the imaginary part kept on acquired
    slices only)."""
    rng = np.random.default_rng(1)
    if dtype == "rgb":
        data = np.zeros((12, 10, 5), dtype=[("R", "u1"), ("G", "u1"), ("B", "u1")])
    else:
        data = (rng.random((12, 10, 5)) + 1j * rng.random((12, 10, 5))).astype(dtype)
    src = tmp_path / "odd.nii"
    nib.save(nib.Nifti1Image(data, np.diag([0.8, 0.8, 3.0, 1.0])), src)
    assert _upsample(src, tmp_path / "o", run) == 2
    line = one_line(capsys, "upsample")
    assert str(src) in line and "voxel type" in line
    assert not (tmp_path / "o").exists()


# 8. predictions far outside their neighbours --------------------------------------------


def test_saturated_predictions_warned_in_one_line(
    run: Path, series: Path, tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    """Probe 8: huge but finite weights gave saturated new slices with no word."""
    state = read_checkpoint(run / "best.pt")
    generator = state["models"]["generator"]
    generator["final.bias"] += 1e4  # finite, and every prediction far above 1
    ckpt = tmp_path / "huge.pt"
    save_checkpoint(ckpt, state)
    caplog.set_level(logging.WARNING, logger="slicelib")
    assert _upsample(series, tmp_path / "o", ckpt) == 0
    lines = [r.getMessage() for r in caplog.records if "neighbours" in r.getMessage()]
    assert len(lines) == 1 and "\n" not in lines[0]
    assert "3 of 3 predicted slices" in lines[0] and "10 %" in lines[0]
    record = json.loads((tmp_path / "o" / "upsample.json").read_text())
    assert len(record["outside_neighbour_range"]) == 3

    caplog.clear()  # predictions between their neighbours (the mean of both): no warning
    from slicelib.data.dicom import load_series
    from slicelib.upsample.volume import upsample_volume

    up = upsample_volume(load_series(series), lambda x: x.mean(dim=1, keepdim=True), 16)
    assert up.outside_neighbours == ()
    assert not [r for r in caplog.records if "neighbours" in r.getMessage()]


def test_help_states_the_neighbour_tolerance_and_that_it_warns(
    capsys: pytest.CaptureFixture[str],
) -> None:
    with pytest.raises(SystemExit):
        main(["upsample", "--help"])
    text = " ".join(capsys.readouterr().out.split())
    assert "10 %" in text and "checks warn" in text and "neighbour" in text


# 9. OS errors on every command ---------------------------------------------------------


FAILURES = {
    "read-only": (errno.EROFS, "Read-only file system"),
    "full": (errno.ENOSPC, "No space left on device"),
    "permission": (errno.EACCES, "Permission denied"),
}


@pytest.fixture(params=sorted(FAILURES))
def broken_disk(request: pytest.FixtureRequest, monkeypatch: pytest.MonkeyPatch) -> str:
    """Every rename that publishes an output fails as on a read-only file system, a full
    disk or a folder without write permission (as root, chmod would not block)."""
    code, text = FAILURES[request.param]
    real_replace = os.replace

    def failing(src: object, dst: object, *args: object, **kwargs: object) -> None:
        if ".tmp" in os.fspath(src):  # type: ignore[arg-type]
            raise OSError(code, text)
        real_replace(src, dst, *args, **kwargs)  # type: ignore[arg-type]

    monkeypatch.setattr(os, "replace", failing)
    return text


def _commands(tmp_path: Path, cohort: Path, tiny_cache: Path, run: Path, series: Path) -> dict:
    out = tmp_path / "out"
    return {
        "demo-data": (["demo-data", str(out), "--preset", "smoke", "--patients", "1",
                       "--no-progress"], out),
        "scan": (["scan", str(cohort), "--csv", str(tmp_path / "scan.csv"), "--no-progress",
                  "--workers", "1"], tmp_path / "scan.csv"),
        "prepare": (["prepare", str(cohort), str(out), "--size", "16", "--no-progress"], out),
        "train": (_train_argv(tiny_cache, str(out)), out),
        "evaluate": (["evaluate", "--cache", str(tiny_cache), "--k", "1", "--methods", "linear",
                      "--out", str(tmp_path / "r.csv"), "--no-progress"], tmp_path / "r.csv"),
        "upsample": (["upsample", str(series), str(out), "--checkpoint", str(run)], out),
    }  # fmt: skip


@pytest.mark.parametrize(
    "command", ["demo-data", "scan", "prepare", "train", "evaluate", "upsample"]
)
def test_os_errors_are_one_line_naming_the_path(
    command: str, broken_disk: str, tmp_path: Path, tiny_cache: Path, run: Path, series: Path,
    capsys: pytest.CaptureFixture[str], monkeypatch: pytest.MonkeyPatch,
) -> None:  # fmt: skip
    """Probe 9: a read-only file system or a full disk gave chained tracebacks."""
    cohort = tmp_path / "cohort"
    write_cohort(cohort, n_patients=1, rows=16, cols=16)
    argv, target = _commands(tmp_path, cohort, tiny_cache, run, series)[command]
    before = set(tmp_path.iterdir())
    assert main(argv) != 0
    line = one_line(capsys, command)
    assert broken_disk in line and str(target.name) in line, line
    left = {p for p in set(tmp_path.iterdir()) - before if p.name.startswith(".")}
    assert not left  # nothing partial, hidden or not
    if command not in ("train",):
        assert not target.exists()


def test_full_disk_while_writing_a_cache_volume(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch,
    capsys: pytest.CaptureFixture[str],
) -> None:  # fmt: skip
    import slicelib.data.cache as cache_module

    def full(*args: object, **kwargs: object) -> None:
        raise OSError(errno.ENOSPC, "No space left on device")

    data = tmp_path / "data"
    write_cohort(data, n_patients=1, rows=16, cols=16)
    monkeypatch.setattr(cache_module.np, "save", full)
    cache = tmp_path / "cache"
    assert main(["prepare", str(data), str(cache), "--size", "16", "--no-progress"]) == 2
    line = one_line(capsys, "prepare")
    assert "No space left on device" in line and str(cache) in line
    assert sorted(p.name for p in tmp_path.iterdir()) == ["data"]


# 10. an empty checkpoint path --------------------------------------------------------------


def test_empty_checkpoint_path_is_refused(
    run: Path, series: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch,
    capsys: pytest.CaptureFixture[str],
) -> None:  # fmt: skip
    """Probe 10: ``--checkpoint ""`` silently loaded ./best.pt."""
    monkeypatch.chdir(tmp_path)
    shutil.copyfile(run / "best.pt", tmp_path / "best.pt")
    with pytest.raises(SystemExit) as stop:
        _upsample(series, tmp_path / "o", "")
    assert stop.value.code == 2
    assert "--checkpoint" in one_line(capsys, "upsample")
    assert not (tmp_path / "o").exists()
    from slicelib.upsample.folder import upsample_to_folder

    with pytest.raises(SlicelibError, match="empty"):
        upsample_to_folder(series, tmp_path / "o", " ")


@pytest.mark.parametrize(
    "argv",
    [
        ["demo-data", ""],
        ["scan", " "],
        ["prepare", "DATA", ""],
        ["prepare", "", "OUT"],
        ["evaluate", "--cache", "DATA", "--k", "1", "--out", ""],
        ["evaluate", "--cache", "DATA", "--k", "1", "--out", "OUT/r.csv", "--run", ""],
        ["upsample", "", "OUT", "--checkpoint", "DATA"],
        ["upsample", "DATA", " ", "--checkpoint", "DATA"],
        ["upsample", "DATA", "OUT", "--checkpoint", "DATA", "--uncertainty", "--ensemble", ""],
        ["study", "--out", ""],
        ["study", "--data-root", " "],
        ["study", "--book", ""],
        ["verify", ""],
    ],
)  # fmt: skip
def test_every_path_option_refuses_an_empty_path(
    tmp_path: Path, argv: list[str], capsys: pytest.CaptureFixture[str]
) -> None:
    argv = [str(tmp_path / a) if a in ("DATA", "OUT", "OUT/r.csv") else a for a in argv]
    with pytest.raises(SystemExit) as stop:
        main(argv)
    assert stop.value.code == 2
    assert "empty" in one_line(capsys, argv[0])
    assert sorted(p.name for p in tmp_path.iterdir()) == []


# 11. the training domain covers k and the neighbour distance ----------------------------


def test_domain_check_covers_k_and_the_neighbour_distance() -> None:
    """Probe 11: a k=2 checkpoint, and a k=1 model trained on neighbours 3 mm apart
    upsampling a 1.5 mm series, were not reported."""
    domain = {"slice_spacing_mm": [1.5, 1.5], "pixel_spacing_mm": [0.5, 0.5]}
    same = {"pixel_spacing": [0.5, 0.5], "matrix": [384, 384]}
    found = domain_differences(domain, k=1, slice_spacing=1.5, **same)  # type: ignore[arg-type]
    assert found == [
        "neighbour distance 1.50 mm (the k=1 model was trained on neighbours 3.00 mm apart, x0.50)"
    ]
    found = domain_differences(domain, k=2, slice_spacing=1.5, **same)  # type: ignore[arg-type]
    assert found == [
        "neighbour distance 1.50 mm (the k=2 model was trained on neighbours 6.00 mm apart, x0.25)"
    ]
    assert domain_differences(domain, k=1, slice_spacing=3.0, **same) == []  # type: ignore[arg-type]
    assert domain_differences(domain, k=2, slice_spacing=6.0, **same) == []  # type: ignore[arg-type]


def test_upsample_reports_the_neighbour_distance_of_a_k2_checkpoint(
    run: Path, series: Path, tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    state = read_checkpoint(run / "best.pt")
    state["k"] = state["train_config"]["k"] = 2
    state["training_domain"] = {"slice_spacing_mm": [1.5, 1.5]}  # the series' own spacing
    ckpt = tmp_path / "k2.pt"
    save_checkpoint(ckpt, state)
    caplog.set_level(logging.WARNING, logger="slicelib")
    assert _upsample(series, tmp_path / "o", ckpt) == 0
    lines = [r.getMessage() for r in caplog.records if "training domain" in r.getMessage()]
    assert len(lines) == 1 and "k=2" in lines[0] and "6.00 mm apart" in lines[0]


# Extra: temporary folders of a killed run are removed by the next one --------------------


def test_stale_temporary_folders_of_a_killed_upsample_are_removed(
    run: Path, series: Path, tmp_path: Path
) -> None:
    """kill -9 during upsample left a hidden ``.NAME.tmp-*`` folder that reruns kept."""
    stale = tmp_path / ".o.tmp-killed"
    (stale / "interpolated").mkdir(parents=True)
    (stale / "interpolated" / "1.dcm").write_bytes(b"x" * 1000)
    old = tmp_path / ".o.old-12345678"
    old.mkdir()
    other = tmp_path / ".other.tmp-keep"  # another output's: not this run's to remove
    other.mkdir()
    assert _upsample(series, tmp_path / "o", run) == 0
    assert not stale.exists() and not old.exists() and other.exists()


def test_stale_temporary_files_of_a_killed_training_are_removed(
    tiny_cache: Path, tmp_path: Path
) -> None:
    out = tmp_path / "run"
    assert main(_train_argv(tiny_cache, str(out))) == 0
    stale = out / ".last.pt.abc123.tmp.pt"  # what a kill during a save leaves
    stale.write_bytes(b"x" * 1000)
    assert main(_train_argv(tiny_cache, str(out))) == 0  # finished: resumes at once
    assert not stale.exists() and (out / "best.pt").is_file()


def test_stale_temporary_folders_of_a_killed_demo_data_are_removed(tmp_path: Path) -> None:
    stale = tmp_path / ".cohort.tmp-killed"
    stale.mkdir()
    argv = ["demo-data", str(tmp_path / "cohort"), "--preset", "smoke", "--patients", "1",
            "--no-progress"]  # fmt: skip
    assert main(argv) == 0
    assert not stale.exists()


def test_book_published_only_over_a_book_slicelib_wrote(tmp_path: Path) -> None:
    """``study --book DIR`` replaced any folder with an index.html in it."""
    from slicelib.study.book import publish

    html = tmp_path / "html"
    (html / "_static").mkdir(parents=True)
    (html / "index.html").write_text("<html>book</html>")
    site = tmp_path / "site"  # the user's own web site
    site.mkdir()
    (site / "index.html").write_text("<html>mine</html>")
    (site / "cv.pdf").write_bytes(b"%PDF")
    with pytest.raises(SlicelibError, match="not written by slicelib"):
        publish(html, site)
    assert sorted(p.name for p in site.iterdir()) == ["cv.pdf", "index.html"]
    dest = tmp_path / "book"
    publish(html, dest)
    assert json.loads((dest / OUTPUT_MARKER).read_text())["kind"] == "book"
    (html / "index.html").write_text("<html>book, again</html>")
    publish(html, dest)  # its own book: replaced
    assert (dest / "index.html").read_text() == "<html>book, again</html>"
    assert sorted(p.name for p in tmp_path.iterdir()) == ["book", "html", "site"]


def test_full_disk_while_saving_a_checkpoint_names_it(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """torch.save reports a full disk as a RuntimeError about a zip position, raised while
    handling the OSError of the write."""
    import torch

    def full(obj: object, handle: object) -> None:
        try:
            raise OSError(errno.ENOSPC, "No space left on device")
        except OSError:
            raise RuntimeError("[enforce fail at inline_container.cc:672] unexpected pos") from None

    monkeypatch.setattr(torch, "save", full)
    path = tmp_path / "run" / "best.pt"
    with pytest.raises(OSError) as err:
        save_checkpoint(path, {"format": 1})
    assert err.value.errno == errno.ENOSPC and err.value.filename == str(path)
    assert list((tmp_path / "run").iterdir()) == []
