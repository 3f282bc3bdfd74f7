"""The study's notebooks: which ones run, with which parameters, and running them
with papermill only when their inputs changed.

A notebook's inputs are its source (cells, without outputs), the parameters the
runner injects, the package source it imports (see :mod:`slicelib.study.sources`),
and the input hashes of the study steps it read the last time it
ran (each notebook logs them through :data:`~slicelib.study.workspace.READS_ENV`).
When all four are unchanged and its executed copy exists, it is not run again.
"""

from __future__ import annotations

import json
import logging
import os
from collections.abc import Mapping
from dataclasses import dataclass, field
from datetime import datetime, timezone
from pathlib import Path
from typing import Any

from slicelib.errors import SlicelibError
from slicelib.io import write_json
from slicelib.methods import method_label
from slicelib.locking import hold_file_lock
from slicelib.study.parameters import (
    RUNNER_PARAMETERS,
    TRAIN_PARAMETERS,
    check_parameter,
    notebook_parameters,
)
from slicelib.study.sources import code_hash, notebook_modules
from slicelib.study.stamps import digest
from slicelib.study.workspace import READS_ENV, Study, run_name

logger = logging.getLogger(__name__)

KERNEL = "python3"
STATE_FILE = ".state.json"

# The notebooks of the study, in the order they run and the book shows them.
# ``train`` runs once per model and k; the upsampling work's three and the real-anatomy
# arm's notebook run when their sources exist (the latter only with a real arm).
STUDY_NOTEBOOKS: tuple[str, ...] = (
    "data",
    "train",
    "results",
    "qualitative",
    "k2_failure",
    "ddpm_analysis",
    "multiplanar",
    "uncertainty",
    "diffusion_refine",
    "real_anatomy",
)
REAL_NOTEBOOK = "real_anatomy"  # the notebook of the real-anatomy arm (its own workspace)
REQUIRED_NOTEBOOKS: tuple[str, ...] = STUDY_NOTEBOOKS[:6]


class StudyError(SlicelibError):
    """A notebook or the book build failed for a reason other than the user's input."""

    exit_code = 1


@dataclass(frozen=True)
class NotebookJob:
    """One execution: ``source`` run with ``parameters`` into ``<notebooks_dir>/<name>.ipynb``."""

    name: str
    source: Path
    parameters: dict[str, Any] = field(default_factory=dict)
    title: str | None = None  # the book's table-of-contents title, when not the notebook's
    arm: str | None = None  # the workspace it reads: None the study's, "real" the real arm's


def source_hash(source: Path) -> str:
    """Hash of a notebook's cells (type, source, tags), ignoring outputs and counts."""
    nb = json.loads(source.read_text())
    cells = [
        (
            c.get("cell_type"),
            "".join(c["source"]) if isinstance(c["source"], list) else c["source"],
            sorted(c.get("metadata", {}).get("tags", [])),
        )
        for c in nb.get("cells", [])
    ]
    return digest(cells)


def notebook_code_hash(source: Path) -> str:
    """Hash of the package source that a notebook's code cells import (transitively)."""
    nb = json.loads(source.read_text())
    cells = [
        "".join(c["source"]) if isinstance(c["source"], list) else c["source"]
        for c in nb.get("cells", [])
        if c.get("cell_type") == "code"
    ]
    return code_hash(*sorted(notebook_modules(cells)))


def plan_jobs(
    study: Study,
    notebooks_src: Path,
    overrides: Mapping[str | None, Mapping[str, Any]] | None = None,
    real: Study | None = None,
) -> list[NotebookJob]:
    """Every notebook execution of the study, in order, with checked parameters.

    ``real``: the real-anatomy arm's workspace; its notebook runs on it (None: no
    real arm, the notebook is left out).

    ``overrides`` maps a notebook name (``None``: every notebook that declares the
    parameter) to extra parameter values. Raises a one-line :class:`SlicelibError`
    naming the notebook and the parameter when a value has the wrong type, when
    no notebook declares an overridden parameter, or when an override targets a
    parameter the runner sets itself.
    """
    overrides = dict(overrides or {})
    missing = [n for n in REQUIRED_NOTEBOOKS if not (notebooks_src / f"{n}.ipynb").is_file()]
    if missing:
        raise SlicelibError(
            f"notebooks folder {notebooks_src}: missing {', '.join(m + '.ipynb' for m in missing)}"
        )
    unknown = [n for n in overrides if n is not None and n not in STUDY_NOTEBOOKS]
    if unknown:
        raise SlicelibError(
            f"--set: unknown notebook {unknown[0]!r} (choose from {', '.join(STUDY_NOTEBOOKS)})"
        )
    base = {
        "preset": study.preset.name,
        "out_dir": str(study.out_dir),
        "data_root": None if study.user_data_root is None else str(study.user_data_root),
    }
    jobs: list[NotebookJob] = []
    used: set[tuple[str | None, str]] = set()
    for notebook in STUDY_NOTEBOOKS:
        source = notebooks_src / f"{notebook}.ipynb"
        if not source.is_file():
            logger.info(
                "notebook %s.ipynb not found in %s: not part of this study", notebook, notebooks_src
            )
            continue
        if notebook == REAL_NOTEBOOK and real is None:
            logger.info("notebook %s.ipynb: no real-anatomy arm in this study", notebook)
            continue
        declared = notebook_parameters(source)
        params = {k: v for k, v in base.items() if k in declared}
        if notebook == REAL_NOTEBOOK and real is not None:
            params.update(
                preset=real.preset.name, out_dir=str(real.out_dir), data_root=str(real.data_root)
            )
        for scope in (None, notebook):
            for name, value in overrides.get(scope, {}).items():
                if name in RUNNER_PARAMETERS or (notebook == "train" and name in TRAIN_PARAMETERS):
                    raise SlicelibError(
                        f"notebook {notebook!r}: parameter {name!r} is set by the runner "
                        "(use --preset, --out, --data-root)"
                    )
                if name in declared:
                    check_parameter(notebook, declared[name], value)
                    params[name] = value
                    used.add((scope, name))
                elif scope == notebook:
                    raise SlicelibError(
                        f"notebook {notebook!r}: no parameter {name!r} "
                        f"(it has {', '.join(sorted(declared))})"
                    )
        if notebook == "train":
            for model, k in study.runs():
                jobs.append(
                    NotebookJob(
                        name=f"train_{run_name(model, k)}",
                        source=source,
                        parameters={**params, "model": model, "k": k},
                        title=f"{method_label(model)}, k={k}",
                    )
                )
        else:
            arm = "real" if notebook == REAL_NOTEBOOK else None
            jobs.append(NotebookJob(name=notebook, source=source, parameters=params, arm=arm))
    for name in overrides.get(None, {}):
        if (None, name) not in used:
            raise SlicelibError(f"--set {name}: no notebook of the study has a parameter {name!r}")
    return jobs


class NotebookRunner:
    """Executes :class:`NotebookJob` s into ``study.notebooks_dir``, skipping the
    ones whose inputs are unchanged since their last successful run."""

    def __init__(self, study: Study, arms: Mapping[str, Study] | None = None) -> None:
        self.study = study
        self.arms = dict(arms or {})  # other workspaces a job may read (NotebookJob.arm)
        self.dir = study.notebooks_dir
        self.dir.mkdir(parents=True, exist_ok=True)
        self.state_path = self.dir / STATE_FILE
        try:
            self.state: dict[str, Any] = json.loads(self.state_path.read_text())
        except (OSError, ValueError):
            self.state = {}

    def output(self, job: NotebookJob) -> Path:
        return self.dir / f"{job.name}.ipynb"

    def fingerprint(self, job: NotebookJob) -> str:
        return digest(
            {
                "source": source_hash(job.source),
                "parameters": job.parameters,
                "code": notebook_code_hash(job.source),
            }
        )

    def up_to_date(self, job: NotebookJob) -> bool:
        """True when the executed copy exists and nothing it depends on changed."""
        entry = self.state.get(job.name)
        if entry is None or not self.output(job).is_file():
            return False
        if entry.get("fingerprint") != self.fingerprint(job):
            return False
        study = self.study if job.arm is None else self.arms.get(job.arm)
        if study is None:
            return False
        try:
            return all(study.step_hash(s) == h for s, h in entry.get("reads", {}).items())
        except (SlicelibError, ValueError):
            return False

    def _update_state(self, name: str, entry: dict[str, Any] | None) -> None:
        """Set (or with None, drop) one notebook's entry in the state file, merging
        with what concurrent runners of the same study wrote meanwhile."""
        with hold_file_lock(self.dir / ".state.lock", "notebook state", wait=True):
            try:
                current: dict[str, Any] = json.loads(self.state_path.read_text())
            except (OSError, ValueError):
                current = {}
            if entry is None:
                current.pop(name, None)
            else:
                current[name] = entry
            write_json(self.state_path, current, sort_keys=True)
            self.state = current

    def execute(self, job: NotebookJob) -> float:
        """Run ``job`` with papermill; returns the seconds it took.

        Raises :class:`SlicelibError` (the user's mistake, e.g. a parameter) or
        :class:`StudyError` (anything else) in one line; the failed copy stays in
        the notebooks folder for inspection and is run again next time.
        """
        import time

        import papermill
        from papermill.exceptions import PapermillExecutionError

        output = self.output(job)
        reads_log = self.dir / f".{job.name}.reads.jsonl"
        reads_log.unlink(missing_ok=True)
        self._update_state(job.name, None)
        previous = os.environ.get(READS_ENV)
        os.environ[READS_ENV] = str(reads_log)
        papermill_log = logging.getLogger("papermill")
        papermill_level = papermill_log.level
        papermill_log.setLevel(logging.WARNING)
        start = time.perf_counter()
        try:
            papermill.execute_notebook(
                str(job.source),
                str(output),
                parameters=job.parameters,
                kernel_name=KERNEL,
                cwd=str(self.dir),
                progress_bar=False,
                log_output=False,
                # The kernel's own start-up notices would interleave with the runner's log.
                extra_arguments=["--IPKernelApp.log_level=ERROR"],
            )
        except PapermillExecutionError as exc:
            where = f"notebook {job.name!r}"
            if exc.ename.endswith("SlicelibError"):
                message = (
                    exc.evalue if exc.evalue.startswith("notebook ") else f"{where}: {exc.evalue}"
                )
                raise SlicelibError(message) from None
            raise StudyError(
                f"{where} failed in cell {exc.cell_index}: {exc.ename}: {exc.evalue} (see {output})"
            ) from None
        finally:
            papermill_log.setLevel(papermill_level)
            if previous is None:
                os.environ.pop(READS_ENV, None)
            else:
                os.environ[READS_ENV] = previous
        seconds = time.perf_counter() - start
        reads: dict[str, str] = {}
        if reads_log.is_file():
            for line in reads_log.read_text().splitlines():
                record = json.loads(line)
                reads[record["step"]] = record["hash"]
            reads_log.unlink()
        entry = {
            "fingerprint": self.fingerprint(job),
            "reads": reads,
            "parameters": job.parameters,
            "seconds": round(seconds, 1),
            "executed_at": datetime.now(timezone.utc).isoformat(timespec="seconds"),
        }
        self._update_state(job.name, entry)
        return seconds
