"""The study's notebooks: their parameters (a papermill ``parameters`` cell of annotated
values with inline help, ``k: int = 1  # the neighbour distance``), which ones run with which
values, and running them with papermill when their cells, parameters, imported package
source or the study steps they read (:data:`~slicelib.study.workspace.READS_ENV`) changed."""

from __future__ import annotations

import ast
import contextlib
import functools
import json
import logging
import os
import re
import shutil
import sys
import threading
import time
from collections.abc import Iterator, Mapping
from dataclasses import dataclass, field
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

from slicelib.config import MODEL_NAMES, get_preset
from slicelib.errors import SlicelibError
from slicelib.io import write_json
from slicelib.locking import hold_file_lock
from slicelib.methods import method_label
from slicelib.study.config import REAL_WORKSPACE, find_source_root, real_data_root
from slicelib.study.steps import code_hash, digest, notebook_modules, package_snapshot
from slicelib.study.workspace import READS_ENV, Study, run_name, slicelib_home

logger = logging.getLogger(__name__)

# Parameters ---------------------------------------------------------------------------

RUNNER_PARAMETERS = ("preset", "out_dir", "data_root")  # set by the runner
TRAIN_PARAMETERS = ("model", "k")  # set per copy of the train notebook

# papermill reads ``Optional[str]`` but not ``str | None`` (its pattern stops at ``|``).
_TYPES: dict[str, type] = {"str": str, "int": int, "float": float, "bool": bool}
_OPTIONAL = re.compile(r"^Optional\[\s*(\w+)\s*\]$")


@dataclass(frozen=True)
class NotebookParameter:
    """One parameter of a notebook's ``parameters`` cell."""

    name: str
    annotation: str  # as written, e.g. "int" or "Optional[str]"; "" when missing
    default: Any  # the literal value
    help: str  # the inline comment; "" when missing

    @property
    def types(self) -> tuple[type, ...]:
        """The accepted Python types (``type(None)`` for an optional value)."""
        optional = _OPTIONAL.match(self.annotation)
        base = optional.group(1) if optional else self.annotation
        if base not in _TYPES:
            raise SlicelibError(
                f"parameter {self.name!r}: annotation {self.annotation or 'missing'!r} is not "
                f"one of {', '.join(_TYPES)} or Optional[...] of them"
            )
        return (_TYPES[base], type(None)) if optional else (_TYPES[base],)


def notebook_parameters(source: Path) -> dict[str, NotebookParameter]:
    """The parameters of the notebook at ``source`` as papermill reads them, in their order;
    a one-line :class:`SlicelibError` without a ``parameters`` cell or a literal default."""
    return dict(_read_parameters(Path(source).resolve(), Path(source).stat().st_mtime_ns))


@functools.lru_cache(maxsize=64)
def _read_parameters(source: Path, mtime_ns: int) -> tuple[tuple[str, NotebookParameter], ...]:
    import papermill

    if not any("parameters" in tags for _, _, tags in _cells(source)):
        raise SlicelibError(f"notebook {source}: no cell tagged 'parameters'")
    found: list[tuple[str, NotebookParameter]] = []
    for name, info in papermill.inspect_notebook(str(source)).items():
        try:
            default = ast.literal_eval(info["default"])
        except (ValueError, SyntaxError):
            raise SlicelibError(
                f"notebook {source}: parameter {name!r}: default {info['default']!r} "
                "is not a plain value"
            ) from None
        annotation = "" if info["inferred_type_name"] == "None" else info["inferred_type_name"]
        found.append((name, NotebookParameter(name, annotation, default, info["help"])))
    return tuple(found)


def check_parameter(notebook: str, parameter: NotebookParameter, value: Any) -> None:
    """A one-line :class:`SlicelibError` unless ``value`` has ``parameter``'s type; a
    ``bool`` is not an ``int``, an ``int`` is a ``float``."""
    types = parameter.types
    if float in types:
        types = (*types, int)
    if not isinstance(value, types) or (isinstance(value, bool) and bool not in types):
        raise SlicelibError(
            f"notebook {notebook!r}: parameter {parameter.name!r} must be "
            f"{parameter.annotation} (got {type(value).__name__} {value!r})"
        )


def check_parameters(
    notebook: str, values: Mapping[str, Any], source: Path | None = None
) -> dict[str, Any]:
    """``values`` as a dict, each checked against ``notebook``'s parameters; ``source``:
    the notebook file (default ``notebooks/<notebook>.ipynb`` of the checkout)."""
    source = source or find_source_root() / "notebooks" / f"{notebook}.ipynb"
    declared = notebook_parameters(source)
    for name, value in values.items():
        if name not in declared:
            raise SlicelibError(
                f"notebook {notebook!r}: unknown parameter {name!r} (known: {', '.join(declared)})"
            )
        check_parameter(notebook, declared[name], value)
    return dict(values)


def parse_assignment(text: str) -> tuple[str | None, str, Any]:
    """(notebook or None, name, value) of ``[NOTEBOOK.]NAME=VALUE`` from the command line;
    VALUE is read as YAML, as papermill's ``-y`` reads it (``3`` an int, ``null`` None)."""
    import yaml

    key, sep, raw = text.partition("=")
    if not sep or not key.strip():
        raise SlicelibError(f"--set {text!r}: expected [NOTEBOOK.]NAME=VALUE")
    notebook, dot, name = key.strip().rpartition(".")
    try:
        value = yaml.safe_load(raw) if raw.strip() else ""
    except yaml.YAMLError:
        value = raw
    return (notebook if dot else None), name, value


# Jobs ---------------------------------------------------------------------------------

KERNEL = "python3"
STATE_FILE = ".state.json"

# The notebooks of the study, in the order they run and the book shows them: the required
# ones, then those that run when their sources exist (the real-anatomy arm's notebook, on
# its own workspace, only with a real arm). ``train`` runs once per model and k.
REAL_NOTEBOOK = "real_anatomy"
REQUIRED_NOTEBOOKS = ("data", "train", "results", "qualitative", "k2_failure", "ddpm_analysis")
OPTIONAL_NOTEBOOKS = ("multiplanar", "uncertainty", "diffusion_refine", REAL_NOTEBOOK)
STUDY_NOTEBOOKS = (*REQUIRED_NOTEBOOKS, *OPTIONAL_NOTEBOOKS)


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


def _cells(source: Path) -> list[tuple[str | None, str, list[str]]]:
    """(type, text, sorted tags) of every cell of a notebook file."""
    return [
        (
            c.get("cell_type"),
            "".join(c["source"]) if isinstance(c["source"], list) else c["source"],
            sorted(c.get("metadata", {}).get("tags", [])),
        )
        for c in json.loads(source.read_text()).get("cells", [])
    ]


def source_hash(source: Path) -> str:
    """Hash of a notebook's cells (type, source, tags), ignoring outputs and counts."""
    return digest(_cells(source))


def plan_jobs(
    study: Study,
    notebooks_src: Path,
    overrides: Mapping[str | None, Mapping[str, Any]] | None = None,
    real: Study | None = None,
) -> list[NotebookJob]:
    """Every notebook execution of the study, in order, with ``overrides`` (by notebook,
    None: every one that declares the parameter) checked, one-line :class:`SlicelibError`
    otherwise; ``real``: the real-anatomy arm's workspace (None: its notebook is left out)."""
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
        if notebook != "train":
            arm = "real" if notebook == REAL_NOTEBOOK else None
            jobs.append(NotebookJob(notebook, source, params, arm=arm))
            continue
        for model, k in study.runs():
            parameters = {**params, "model": model, "k": k}
            title = f"{method_label(model)}, k={k}"
            jobs.append(NotebookJob(f"train_{run_name(model, k)}", source, parameters, title))
    for name in overrides.get(None, {}):
        if (None, name) not in used:
            raise SlicelibError(f"--set {name}: no notebook of the study has a parameter {name!r}")
    return jobs


# Where papermill writes a running notebook (it rewrites its output after every cell),
# renamed over ``<name>.ipynb`` once complete: a kill or a concurrent run never leaves a
# partial notebook under the real name.
PARTIAL_DIR = ".partial"


class NotebookRunner:
    """Executes :class:`NotebookJob` s into ``study.notebooks_dir`` (whole or not at all,
    :data:`PARTIAL_DIR`), skipping those unchanged since their last successful run."""

    def __init__(self, study: Study, arms: Mapping[str, Study] | None = None) -> None:
        self.study = study
        self.arms = dict(arms or {})  # other workspaces a job may read (NotebookJob.arm)
        self.dir = study.notebooks_dir
        self.dir.mkdir(parents=True, exist_ok=True)
        self.state_path = self.dir / STATE_FILE

    @property
    def state(self) -> dict[str, Any]:
        """The state file's entries by notebook name ({} when it is missing or unreadable)."""
        try:
            return json.loads(self.state_path.read_text())
        except (OSError, ValueError):
            return {}

    def output(self, job: NotebookJob) -> Path:
        return self.dir / f"{job.name}.ipynb"

    def remove_partial(self) -> None:
        """Remove the notebooks that killed runs left half-written (call with the study's
        lock held: then no live runner is writing them)."""
        shutil.rmtree(self.dir / PARTIAL_DIR, ignore_errors=True)

    def fingerprint(self, job: NotebookJob) -> str:
        """Hash of the job's cells, parameters and the package source its code imports."""
        cells = [text for kind, text, _ in _cells(job.source) if kind == "code"]
        code, source = code_hash(*sorted(notebook_modules(cells))), source_hash(job.source)
        return digest({"source": source, "parameters": job.parameters, "code": code})

    def up_to_date(self, job: NotebookJob) -> bool:
        """True when the executed copy exists and nothing it depends on changed."""
        entry = self.state.get(job.name)
        if entry is None or not self.output(job).is_file():
            return False
        study = self.study if job.arm is None else self.arms.get(job.arm)
        if entry.get("fingerprint") != self.fingerprint(job) or study is None:
            return False
        try:
            with package_snapshot():
                steps = study.steps()
                reads = entry.get("reads", {}).items()
                return all(s in steps and steps[s].hash == h for s, h in reads)
        except (SlicelibError, ValueError):
            return False

    def _update_state(self, name: str, entry: dict[str, Any] | None) -> None:
        """Set (or with None, drop) one notebook's entry in the state file, merging with
        what concurrent runners of the same study wrote meanwhile."""
        with hold_file_lock(self.dir / ".state.lock", "notebook state", wait=True):
            current = self.state
            if entry is None:
                current.pop(name, None)
            else:
                current[name] = entry
            write_json(self.state_path, current, sort_keys=True)

    def execute(self, job: NotebookJob) -> float:
        """Run ``job`` with papermill; returns the seconds it took. A one-line
        :class:`SlicelibError` (the user's mistake) or :class:`StudyError` when it fails; a
        notebook that failed in a cell stays for inspection, an interrupted one is removed."""
        import papermill
        from papermill.exceptions import PapermillExecutionError

        output = self.output(job)
        partial = self.dir / PARTIAL_DIR / f"{job.name}.{os.getpid()}.ipynb"
        partial.parent.mkdir(exist_ok=True)
        reads_log = self.dir / f".{job.name}.reads.jsonl"
        reads_log.unlink(missing_ok=True)
        self._update_state(job.name, None)
        kernel_log = self.dir / f".{job.name}.log"
        env = {READS_ENV: str(reads_log), KERNEL_LOG_ENV: str(kernel_log)}
        previous = {name: os.environ.get(name) for name in env}
        os.environ.update(env)
        papermill_log = logging.getLogger("papermill")
        papermill_level = papermill_log.level
        papermill_log.setLevel(logging.WARNING)
        start = time.perf_counter()
        try:
            with forward_kernel_log(kernel_log, job.name):
                papermill.execute_notebook(
                    str(job.source),
                    str(partial),
                    parameters=job.parameters,
                    kernel_name=KERNEL,
                    cwd=str(self.dir),
                    progress_bar=False,
                    log_output=False,
                    # The kernel's own start-up notices would interleave with the runner's log.
                    extra_arguments=["--IPKernelApp.log_level=ERROR"],
                )
            os.replace(partial, output)
        except PapermillExecutionError as exc:
            os.replace(partial, output)  # complete up to the failed cell, for inspection
            where = f"notebook {job.name!r}"
            if exc.ename.endswith("SlicelibError"):
                named = exc.evalue.startswith("notebook ")
                raise SlicelibError(exc.evalue if named else f"{where}: {exc.evalue}") from None
            raise StudyError(
                f"{where} failed in cell {exc.cell_index}: {exc.ename}: {exc.evalue} (see {output})"
            ) from None
        finally:
            partial.unlink(missing_ok=True)  # interrupted: never a partial notebook
            with contextlib.suppress(OSError):  # empty unless another runner is writing
                partial.parent.rmdir()
            papermill_log.setLevel(papermill_level)
            os.environ.update({k: v for k, v in previous.items() if v is not None})
            for name in [k for k, v in previous.items() if v is None]:
                os.environ.pop(name, None)
        seconds = time.perf_counter() - start
        lines = reads_log.read_text().splitlines() if reads_log.is_file() else []
        reads_log.unlink(missing_ok=True)
        entry = {
            "fingerprint": self.fingerprint(job),
            "reads": {r["step"]: r["hash"] for r in map(json.loads, lines)},
            "parameters": job.parameters,
            "seconds": round(seconds, 1),
            "executed_at": datetime.now(UTC).isoformat(timespec="seconds"),
        }
        self._update_state(job.name, entry)
        return seconds


# Where slicelib's log goes in a notebook's kernel (:func:`kernel_logging`). Unset: the
# running cell's stdout, which ``papermill --log-output`` (a SLURM job's output) shows as
# it comes and the executed notebook keeps. A file path: that file, which the study runner
# forwards to its own log, so that the book's pages hold no wall-clock lines. "off": nowhere.
KERNEL_LOG_ENV = "SLICELIB_KERNEL_LOG"
KERNEL_LOG_OFF = "off"
KERNEL_LOG_FORMAT = "%(asctime)s %(message)s"
KERNEL_LOG_DATES = "%Y-%m-%d %H:%M:%S"


def kernel_logging() -> None:
    """In a notebook's kernel, send slicelib's INFO log where :data:`KERNEL_LOG_ENV` says
    (a kernel has no handler, so a long cell would print nothing). Idempotent; outside a
    kernel (whose stdout is its output stream) it does nothing."""
    target = os.environ.get(KERNEL_LOG_ENV, "")
    package = logging.getLogger("slicelib")
    iostream = sys.modules.get("ipykernel.iostream")
    in_kernel = iostream is not None and isinstance(sys.stdout, iostream.OutStream)
    installed = any(getattr(h, "slicelib_kernel", False) for h in package.handlers)
    if not in_kernel or target == KERNEL_LOG_OFF or installed:
        return
    handler: logging.Handler = (
        logging.FileHandler(target, encoding="utf-8") if target else
        logging.StreamHandler(sys.stdout)
    )  # fmt: skip
    handler.setFormatter(logging.Formatter(KERNEL_LOG_FORMAT, KERNEL_LOG_DATES))
    handler.slicelib_kernel = True  # type: ignore[attr-defined]
    package.addHandler(handler)
    if package.level == logging.NOTSET or package.level > logging.INFO:
        package.setLevel(logging.INFO)


@contextlib.contextmanager
def forward_kernel_log(path: Path, name: str, poll_s: float = 0.5) -> Iterator[None]:
    """While the block runs, forward each line a kernel logs into ``path``
    (:data:`KERNEL_LOG_ENV`) to this process's log, prefixed with the notebook's ``name``."""
    stop = threading.Event()

    def pump() -> None:
        pending = ""
        with open(path, encoding="utf-8", errors="replace") as fh:
            while True:
                done = stop.is_set()  # the kernel has exited: what is there is all
                *lines, pending = (pending + fh.read()).split("\n")
                for line in [*lines, pending] if done and pending else lines:
                    logger.info("[%s] %s", name, line)
                if done:
                    return
                stop.wait(poll_s)

    path.write_text("")
    thread = threading.Thread(target=pump, daemon=True)
    thread.start()
    try:
        yield
    finally:
        stop.set()
        thread.join()
        path.unlink(missing_ok=True)


def notebook_study(notebook: str, **parameters: Any) -> Study:
    """The workspace a notebook works in, from its ``parameters`` cell's values, after
    :func:`kernel_logging`; a one-line :class:`SlicelibError` names the notebook and the
    parameter of a wrong type or value. The real-anatomy notebook defaults to the checkout's
    IXI data in ``$SLICELIB_HOME/<preset>-real``."""
    kernel_logging()
    values = check_parameters(notebook, parameters)
    where = f"notebook {notebook!r}: parameter"
    try:
        preset = get_preset(values.get("preset", "smoke"))
    except SlicelibError as exc:
        raise SlicelibError(f"{where} 'preset': {exc}") from None
    model = values.get("model")
    if model is not None and model not in MODEL_NAMES:
        raise SlicelibError(
            f"{where} 'model': unknown model {model!r} (choose from {', '.join(MODEL_NAMES)})"
        )
    for name in ("k", "samples"):
        if name in values and values[name] < 1:
            raise SlicelibError(f"{where} {name!r} must be >= 1 (got {values[name]})")
    if model == "ddpm" and "k" in values and values["k"] not in preset.ddpm_ks:
        raise SlicelibError(
            f"{where} 'k': the {preset.name} preset trains the DDPM at k in "
            f"{list(preset.ddpm_ks)} only (got {values['k']})"
        )
    out_dir, data_root = values.get("out_dir"), values.get("data_root")
    if notebook == REAL_NOTEBOOK:
        if data_root is None and (data_root := real_data_root(find_source_root())) is None:
            raise SlicelibError(f"notebook {notebook!r}: no NIfTI volumes in the checkout")
        out_dir = out_dir or slicelib_home() / f"{preset.name}-{REAL_WORKSPACE}"
    return Study(preset, out_dir, data_root, device=values.get("device", "auto"))
