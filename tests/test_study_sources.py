"""Stale results cannot reach the book: every step's hash comes from one recipe that
includes the source of the code it runs, so editing a module re-makes every step that
runs it and what depends on those, and nothing else; the notebooks that read them run
again."""

from __future__ import annotations

import json
import shutil
from pathlib import Path

import pytest

from slicelib.study import Study, steps
from slicelib.study.notebooks import NotebookJob, NotebookRunner
from slicelib.study.steps import Step, ensure

NOTEBOOKS = Path(__file__).resolve().parents[1] / "notebooks"


@pytest.fixture
def package(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Path:
    """A copy of the package source that the study's hashes read."""
    root = tmp_path / "src" / "slicelib"
    shutil.copytree(steps.PACKAGE_ROOT, root, ignore=shutil.ignore_patterns("__pycache__"))
    monkeypatch.setattr(steps, "PACKAGE_ROOT", root)
    return root


def edit(path: Path) -> None:
    """A change that keeps the module working: one more statement."""
    path.write_text(path.read_text() + "\n_EDITED = True\n")


def module_path(package: Path, module: str) -> Path:
    parts = module.split(".")[1:]
    path = package.joinpath(*parts)
    return path / "__init__.py" if path.is_dir() else path.with_suffix(".py")


def test_import_graph_follows_lazy_imports() -> None:
    # slicelib.train imports the models; the cache preparation does not.
    assert "slicelib.models.unet" in steps.closure(["slicelib.train"])
    assert "slicelib.models.unet" in steps.closure(["slicelib.evaluate"])
    assert "slicelib.models.unet" not in steps.closure(["slicelib.data.prepare"])
    # Study.run imports slicelib.train inside the method, and that counts.
    assert "slicelib.train" in steps.closure(["slicelib.study.workspace"])


def test_code_hash_is_by_content(package: Path) -> None:
    # a fresh copy (other paths, other times) of the same files hashes the same
    real = steps.code_hash("slicelib.train", root=Path(steps.__file__).parents[1])
    assert steps.code_hash("slicelib.train") == real
    # a comment or a reformatted line is no change of the code
    edsr = package / "models" / "edsr.py"
    edsr.write_text("# a comment\n" + edsr.read_text().replace("\n\n\n", "\n\n\n\n") + "\n")
    assert steps.code_hash("slicelib.train") == real
    edit(edsr)
    assert steps.code_hash("slicelib.train") != real


def test_a_snapshot_reads_the_package_once_per_module_set(
    package: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    reads = []
    graph = steps.package_graph
    monkeypatch.setattr(steps, "package_graph", lambda root=None: reads.append(1) or graph(root))
    before = steps.code_hash("slicelib.train")
    with steps.package_snapshot():
        hashes = {steps.code_hash("slicelib.train") for _ in range(5)}
        steps.code_hash("slicelib.evaluate")
    assert hashes == {before} and len(reads) == 1 + 2  # once before, once per module set
    edit(package / "models" / "edsr.py")
    assert steps.code_hash("slicelib.train") != before  # outside a snapshot: read again


def dependents(every: dict[str, Step], changed: set[str]) -> set[str]:
    """``changed`` and every step whose inputs hold the hash of one of them, transitively
    (read from the inputs, independently of how the workspace builds them)."""
    out = set(changed)
    while True:
        more = {
            name
            for name, step in every.items()
            if name not in out and any(every[c].hash in json.dumps(step.inputs) for c in out)
        }
        if not more:
            return out
        out |= more


def test_every_step_reruns_on_an_edit_of_its_code_and_only_its_dependents(
    package: Path, tmp_path: Path
) -> None:
    """Walks every step of a study with every kind of step (the demo's: cohort, scan,
    cache, every run, the uncertainty, ablation and refinement runs, every results file,
    the headroom): an edit of a module a step's code imports changes its hash and the
    hashes of the steps that read it, and no other."""
    study = Study("demo", tmp_path / "out")
    before = {name: step.hash for name, step in study.steps().items()}
    assert {"cohort", "scan", "cache", "run/unet_k1", "run/unet_k1_dropout", "run/refine_k1",
            "run/ddpm_k1_cosine", "results/k2_common", "results/refine_k1",
            "results/ddpm_ablation_k1", "results/headroom"} <= set(before)  # fmt: skip
    edited: set[str] = set()
    for name, step in study.steps().items():
        closure = steps.closure(step.code)
        assert step.code and closure, f"{name} names no code"
        module = sorted(closure - edited)[0]  # a module of its code not edited yet
        edited.add(module)
        edit(module_path(package, module))
        every = study.steps()
        after = {n: s.hash for n, s in every.items()}
        changed = {n for n in after if after[n] != before[n]}
        runs_it = {n for n, s in every.items() if module in steps.closure(s.code)}
        assert name in changed, f"editing {module} left {name} as it was"
        assert changed == dependents(every, runs_it), f"editing {module}"
        before = after


@pytest.mark.parametrize(
    ("edited", "changed"),
    [
        ("models/unet.py", {"run/unet_k1", "results/k1"}),
        ("evaluate.py", {"results/k1"}),
        ("data/prepare.py", {"scan", "cache", "run/unet_k1", "results/k1"}),
        ("data/phantom.py", {"cohort", "scan", "cache", "run/unet_k1", "results/k1"}),
        ("upsample/dicom_writer.py", set()),
        ("study/present.py", set()),  # presentation: only the notebooks that show it
    ],
)
def test_edit_changes_the_steps_that_run_it(
    package: Path, tmp_path: Path, edited: str, changed: set[str]
) -> None:
    names = ("cohort", "scan", "cache", "run/unet_k1", "results/k1")
    before = {n: Study("smoke", tmp_path / "out").step_hash(n) for n in names}
    edit(package / edited)
    after = {n: Study("smoke", tmp_path / "out").step_hash(n) for n in names}
    assert {name for name in before if before[name] != after[name]} == changed


def test_edited_model_retrains_and_reevaluates(package: Path, tmp_path: Path) -> None:
    """What ``slicelib study`` does with a run and a results file: made once, kept
    while the code is unchanged, made again after a model file changes."""
    made: list[str] = []
    out = tmp_path / "out"

    def make_all() -> None:
        study = Study("smoke", out)
        for name in ("cache", "run/unet_k1", "results/k1"):
            step = study.steps()[name]

            def make(step: Step = step) -> None:
                made.append(step.name)
                step.output.parent.mkdir(parents=True, exist_ok=True)
                step.output.mkdir() if step.name != "results/k1" else step.output.write_text("")

            ensure(Step(step.name, step.output, step.code, step.inputs, make), study.lock_dir)

    make_all()
    make_all()  # nothing changed: nothing is made again
    assert made == ["cache", "run/unet_k1", "results/k1"]
    edit(package / "models" / "layers.py")
    make_all()
    assert made == ["cache", "run/unet_k1", "results/k1", "run/unet_k1", "results/k1"]


def test_edited_module_reruns_the_notebook_that_imports_it(package: Path, tmp_path: Path) -> None:
    study = Study("smoke", tmp_path / "out")
    runner = NotebookRunner(study)
    job = NotebookJob("results", NOTEBOOKS / "results.ipynb", {"preset": "smoke"})
    runner.output(job).write_text(json.dumps({"cells": []}))
    reads = {"results/k1": study.step_hash("results/k1")}
    runner._update_state(job.name, {"fingerprint": runner.fingerprint(job), "reads": reads})
    assert runner.up_to_date(job)
    edit(package / "upsample" / "dicom_writer.py")  # not imported by the notebook
    assert runner.up_to_date(job)
    edit(package / "study" / "present.py")  # formats the notebook's tables
    assert not runner.up_to_date(job)
    runner._update_state(job.name, {"fingerprint": runner.fingerprint(job), "reads": reads})
    assert runner.up_to_date(job)
    edit(package / "metrics.py")  # the notebook's results file is stale now
    assert study.step_hash("results/k1") != reads["results/k1"]
    assert not runner.up_to_date(job)
