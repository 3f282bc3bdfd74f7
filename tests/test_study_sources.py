"""Stale results cannot reach the book: editing package source changes the hash of
every study step that runs it (and only those), so the next ``slicelib study``
trains, evaluates and executes again what depends on the edit."""

from __future__ import annotations

import json
import shutil
from collections.abc import Callable
from pathlib import Path

import pytest

from slicelib.study import Study, sources
from slicelib.study.notebooks import NotebookJob, NotebookRunner
from slicelib.study.step import Step, ensure

NOTEBOOKS = Path(__file__).resolve().parents[1] / "notebooks"


@pytest.fixture
def package(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Path:
    """A copy of the package source that the study's hashes read."""
    root = tmp_path / "src" / "slicelib"
    shutil.copytree(sources.PACKAGE_ROOT, root, ignore=shutil.ignore_patterns("__pycache__"))
    monkeypatch.setattr(sources, "PACKAGE_ROOT", root)
    return root


def edit(path: Path) -> None:
    """A change that keeps the module working: one more comment line."""
    path.write_text(path.read_text() + "\n# edited\n")


def step_hashes(out: Path) -> dict[str, str]:
    study = Study("smoke", out)
    return {
        "cohort": study.data_hash(),
        "scan": study.scan_hash(),
        "cache": study.cache_hash(),
        "run": study.run_hash("unet", 1),
        "results": study.results_hash(1),
    }


def test_import_graph_follows_lazy_imports() -> None:
    # slicelib.train imports the models; the cache preparation does not.
    assert "slicelib.models.unet" in sources.closure(["slicelib.train"])
    assert "slicelib.models.unet" in sources.closure(["slicelib.evaluate"])
    assert "slicelib.models.unet" not in sources.closure(["slicelib.data.prepare"])
    # Study.run imports slicelib.train inside the method, and that counts.
    assert "slicelib.train" in sources.closure(["slicelib.study.workspace"])


def test_code_hash_is_by_content(package: Path) -> None:
    # a fresh copy (other paths, other times) of the same files hashes the same
    real = sources.code_hash("slicelib.train", root=Path(sources.__file__).parents[1])
    assert sources.code_hash("slicelib.train") == real
    edit(package / "models" / "edsr.py")
    assert sources.code_hash("slicelib.train") != real


@pytest.mark.parametrize(
    ("edited", "changed"),
    [
        ("models/unet.py", {"run", "results"}),
        ("evaluate.py", {"results"}),
        ("data/prepare.py", {"scan", "cache", "run", "results"}),
        ("data/phantom.py", {"cohort", "scan", "cache", "run", "results"}),
        ("upsample/dicom_writer.py", set()),
    ],
)
def test_edit_changes_the_steps_that_run_it(
    package: Path, tmp_path: Path, edited: str, changed: set[str]
) -> None:
    before = step_hashes(tmp_path / "out")
    edit(package / edited)
    after = step_hashes(tmp_path / "out")
    assert {name for name in before if before[name] != after[name]} == changed


def test_edited_model_retrains_and_reevaluates(package: Path, tmp_path: Path) -> None:
    """What ``slicelib study`` does with a run and a results file: made once, kept
    while the code is unchanged, made again after a model file changes."""
    made: list[str] = []
    out = tmp_path / "out"

    def steps() -> list[Step]:
        study = Study("smoke", out)
        run, results = study.run_dir("unet", 1), study.results_dir / "k1.csv"

        def maker(name: str, path: Path, is_dir: bool) -> Callable[[], None]:
            def make() -> None:
                made.append(name)
                path.parent.mkdir(parents=True, exist_ok=True)
                path.mkdir() if is_dir else path.write_text("rows")

            return make

        return [
            Step("unet_k1", run, study.run_hash("unet", 1), {}, maker("train", run, True)),
            Step("results_k1", results, study.results_hash(1), {}, maker("eval", results, False)),
            Step(
                "cache",
                study.cache_dir,
                study.cache_hash(),
                {},
                maker("cache", study.cache_dir, True),
            ),
        ]

    for step in steps():
        ensure(step, out / ".locks")
    for step in steps():  # nothing changed: nothing is made again
        ensure(step, out / ".locks")
    assert made == ["train", "eval", "cache"]
    edit(package / "models" / "layers.py")
    for step in steps():
        ensure(step, out / ".locks")
    assert made == ["train", "eval", "cache", "train", "eval"]


def test_edited_module_reruns_the_notebook_that_imports_it(package: Path, tmp_path: Path) -> None:
    study = Study("smoke", tmp_path / "out")
    runner = NotebookRunner(study)
    job = NotebookJob("results", NOTEBOOKS / "results.ipynb", {"preset": "smoke"})
    runner.output(job).write_text(json.dumps({"cells": []}))
    reads = {"results/1": study.results_hash(1)}
    runner._update_state(job.name, {"fingerprint": runner.fingerprint(job), "reads": reads})
    assert runner.up_to_date(job)
    edit(package / "upsample" / "dicom_writer.py")  # not imported by the notebook
    assert runner.up_to_date(job)
    edit(package / "study" / "tables.py")  # formats the notebook's tables
    assert not runner.up_to_date(job)
    runner._update_state(job.name, {"fingerprint": runner.fingerprint(job), "reads": reads})
    assert runner.up_to_date(job)
    edit(package / "metrics.py")  # the notebook's results file is stale now
    assert study.results_hash(1) != reads["results/1"]
    assert not runner.up_to_date(job)
