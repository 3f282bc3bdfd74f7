"""The study runner: resume, re-running what changed and nothing else, and one-line
errors that name the notebook and the parameter while keeping what finished."""

from __future__ import annotations

import dataclasses
import json
import shutil
from pathlib import Path
from typing import TYPE_CHECKING

import pytest

from slicelib.cli import main
from slicelib.config import SMOKE
from slicelib.errors import SlicelibError
from slicelib.study import Study
from slicelib.study.notebooks import NotebookJob, NotebookRunner, plan_jobs
from slicelib.study.runner import run_study
from slicelib.study.steps import digest, is_current, read_stamp, write_stamp

if TYPE_CHECKING:
    from study_fixtures import SmokeStudy

pytest_plugins = ["study_fixtures"]

NOTEBOOKS = Path(__file__).resolve().parents[1] / "notebooks"


def executed_mtimes(out: Path) -> dict[str, int]:
    return {p.name: p.stat().st_mtime_ns for p in (out / "notebooks").glob("*.ipynb")}


def one_line_error(capsys: pytest.CaptureFixture[str]) -> str:
    err = capsys.readouterr().err.strip()
    lines = [line for line in err.splitlines() if line.startswith("slicelib study: error:")]
    assert len(lines) == 1, err
    return lines[0]


def test_first_run_executes_every_notebook(smoke_study: SmokeStudy) -> None:
    study = Study("smoke", smoke_study.out)
    jobs = plan_jobs(study, NOTEBOOKS)
    assert smoke_study.report.executed == [job.name for job in jobs]
    expected = {f"train_{m}_k{k}" for m, k in study.runs()}
    assert expected <= set(smoke_study.report.executed)
    assert "train_ddpm_k2" not in smoke_study.report.executed  # DDPM at k=1 only
    for job in jobs:
        assert (smoke_study.out / "notebooks" / f"{job.name}.ipynb").is_file()
    env = json.loads((smoke_study.out / "environment.json").read_text())
    assert env["packages"]["torch"] and env["python"] and env["cpu_count"]
    # the whole environment, not only the packages the book lists
    assert env["installed"]["torch"] == env["packages"]["torch"]
    assert {"papermill", "nbformat", "PyYAML"} <= set(env["installed"])
    assert set(env["git"]) >= {"commit", "dirty", "diff_sha256"}
    record = json.loads((smoke_study.out / "study.json").read_text())
    assert record["preset"] == "smoke" and record["synthetic"] is True
    assert smoke_study.report.book_built and (smoke_study.html / "index.html").is_file()


def test_second_run_executes_nothing(smoke_study: SmokeStudy) -> None:
    before = executed_mtimes(smoke_study.out)
    report = run_study("smoke", smoke_study.out, None, smoke_study.html)
    assert report.executed == []
    assert report.skipped == smoke_study.report.executed
    assert not report.book_built  # the staged book did not change
    assert executed_mtimes(smoke_study.out) == before


def test_changed_parameter_reruns_that_notebook_only(smoke_study: SmokeStudy) -> None:
    changed = run_study(
        "smoke", smoke_study.out, None, None, overrides={"k2_failure": {"device": "cpu"}}
    )
    assert changed.executed == ["k2_failure"]
    executed = json.loads((smoke_study.out / "notebooks" / "k2_failure.ipynb").read_text())
    injected = [
        c for c in executed["cells"] if "injected-parameters" in c["metadata"].get("tags", [])
    ]
    assert 'device = "cpu"' in "".join(injected[0]["source"])
    restored = run_study("smoke", smoke_study.out, None, None)
    assert restored.executed == ["k2_failure"]


def test_changed_configuration_reruns_what_read_it(smoke_study: SmokeStudy) -> None:
    epochs = {**SMOKE.epochs, "unet": SMOKE.epochs["unet"] + 1}
    longer = Study(dataclasses.replace(SMOKE, epochs=epochs), smoke_study.out)
    same = Study("smoke", smoke_study.out)
    assert longer.step_hash("run/unet_k1") != same.step_hash("run/unet_k1")
    identity = [s.steps()["run/unet_k1"].inputs["identity"] for s in (longer, same)]
    assert identity[0] == identity[1]  # the same run with more epochs: resumable
    assert longer.step_hash("run/cnn_k1") == same.step_hash("run/cnn_k1")
    assert longer.step_hash("results/k1") != same.step_hash("results/k1")
    jobs = {job.name: job for job in plan_jobs(longer, NOTEBOOKS)}
    runner = NotebookRunner(longer)
    assert not runner.up_to_date(jobs["train_unet_k1"])
    assert not runner.up_to_date(jobs["results"])  # read the U-Net's results
    assert runner.up_to_date(jobs["train_cnn_k1"])
    assert runner.up_to_date(jobs["data"])


def test_bad_preset_stops_with_one_line(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    with pytest.raises(SystemExit) as stop:
        main(["study", "--preset", "huge", "--out", str(tmp_path / "out")])
    assert stop.value.code == 2
    line = one_line_error(capsys)
    assert "invalid choice: 'huge'" in line and "'demo', 'paper', 'real', 'smoke'" in line
    assert not (tmp_path / "out").exists()


def test_wrong_parameter_type_names_notebook_and_parameter(
    smoke_study: SmokeStudy, capsys: pytest.CaptureFixture[str]
) -> None:
    before = executed_mtimes(smoke_study.out)
    state = (smoke_study.out / "notebooks" / ".state.json").read_text()
    code = main(
        ["study", "--preset", "smoke", "--out", str(smoke_study.out), "--no-book",
         "--set", "qualitative.zoom=wide"]
    )  # fmt: skip
    assert code == 2
    line = one_line_error(capsys)
    assert "notebook 'qualitative'" in line and "parameter 'zoom'" in line
    assert executed_mtimes(smoke_study.out) == before  # what finished is kept
    assert (smoke_study.out / "notebooks" / ".state.json").read_text() == state


def test_wrong_type_inside_the_notebook(smoke_study: SmokeStudy) -> None:
    """A value that reaches the kernel (papermill used directly) fails in one line too."""
    study = Study("smoke", smoke_study.out)
    runner = NotebookRunner(study)
    job = NotebookJob(
        name="train_wrong",
        source=NOTEBOOKS / "train.ipynb",
        parameters={
            "preset": "smoke",
            "out_dir": str(smoke_study.out),
            "model": "unet",
            "k": "one",
        },
    )
    try:
        with pytest.raises(SlicelibError) as info:
            runner.execute(job)
        message = str(info.value)
        assert "notebook 'train'" in message and "parameter 'k' must be int" in message
        assert "\n" not in message
        assert "train_wrong" not in json.loads(runner.state_path.read_text())
    finally:
        runner.output(job).unlink(missing_ok=True)


def test_unknown_or_reserved_parameter(
    smoke_study: SmokeStudy, capsys: pytest.CaptureFixture[str]
) -> None:
    out = str(smoke_study.out)
    assert main(["study", "--preset", "smoke", "--out", out, "--set", "nosuch=1"]) == 2
    assert "no notebook of the study has a parameter 'nosuch'" in one_line_error(capsys)
    assert main(["study", "--preset", "smoke", "--out", out, "--set", "train.k=2"]) == 2
    assert "parameter 'k' is set by the runner" in one_line_error(capsys)
    assert main(["study", "--preset", "smoke", "--out", out, "--only", "nosuch"]) == 2
    assert "--only nosuch" in one_line_error(capsys)


def test_data_root_without_usable_series(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    root = tmp_path / "collection"
    root.mkdir()
    (root / "README.txt").write_text("not DICOM\n")
    code = main(["study", "--preset", "smoke", "--data-root", str(root),
                 "--out", str(tmp_path / "out")])  # fmt: skip
    assert code == 2
    line = one_line_error(capsys)
    assert str(root) in line or "series" in line


def test_workspace_of_another_preset_is_refused(smoke_study: SmokeStudy) -> None:
    with pytest.raises(SlicelibError, match="holds a study of the 'smoke' preset"):
        run_study("demo", smoke_study.out, None, None)


def test_run_trained_outside_the_study_is_adopted(smoke_study: SmokeStudy, tmp_path: Path) -> None:
    study = Study("smoke", smoke_study.out)
    cfg = study.train_config("unet", 1)
    foreign = tmp_path / "unet_k1"
    foreign.mkdir()
    shutil.copyfile(study.run_dir("unet", 1) / "config.json", foreign / "config.json")
    assert study._adoptable(foreign, cfg)
    saved = json.loads((foreign / "config.json").read_text())
    saved["train"]["lr"] = 1.0
    (foreign / "config.json").write_text(json.dumps(saved))
    assert not study._adoptable(foreign, cfg)


def test_stamps(tmp_path: Path) -> None:
    out = tmp_path / "thing"
    assert not is_current(out, "abc")
    out.mkdir()
    write_stamp(out, "abc", {"x": 1}, complete=False)
    assert not is_current(out, "abc")  # unfinished
    write_stamp(out, "abc", {"x": 1}, complete=True)
    assert is_current(out, "abc") and not is_current(out, "abd")
    stamp = read_stamp(out)
    assert stamp is not None and stamp.inputs == {"x": 1}
    assert digest({"a": 1, "b": [1, 2]}) == digest({"b": [1, 2], "a": 1})


def test_nifti_collection_is_scanned_and_prepared(tmp_path: Path) -> None:
    import nibabel as nib
    import numpy as np

    root = tmp_path / "nifti"
    root.mkdir()
    rng = np.random.default_rng(0)
    for i in range(5):
        volume = rng.random((24, 24, 22)).astype(np.float32)
        nib.save(nib.Nifti1Image(volume, np.diag([0.6, 0.6, 1.5, 1.0])), root / f"P{i}.nii.gz")
    study = Study("smoke", tmp_path / "out", root)
    scan = study.scan()
    assert scan.summary["volumes"] == 5 and scan.summary["slices"] == 110
    assert scan.frame["included"].all()
    assert len(study.cache().entries()) == 5


def test_missing_data_root(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    missing = tmp_path / "nowhere"
    code = main(["study", "--preset", "smoke", "--data-root", str(missing),
                 "--out", str(tmp_path / "out")])  # fmt: skip
    assert code == 2
    assert f"data root {missing} is not a folder" in one_line_error(capsys)
