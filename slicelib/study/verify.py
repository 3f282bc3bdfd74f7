"""A reviewer's check that a study reproduces: copies of its executed notebooks, pointed at a
fresh workspace, run again under ``pytest --nbval``, which compares every stored text output
with the new one, less what nbval's sanitizer (``.nbval-sanitize.cfg`` and the workspace
paths) blanks and the cells tagged ``nbval-ignore-output``."""

from __future__ import annotations

import json
import logging
import math
import os
import re
import shutil
import subprocess
import sys
from collections.abc import Sequence
from pathlib import Path

from slicelib.errors import SlicelibError
from slicelib.study.notebooks import KERNEL_LOG_ENV, KERNEL_LOG_OFF, STATE_FILE, STUDY_NOTEBOOKS

logger = logging.getLogger(__name__)

SANITIZE_FILE = ".nbval-sanitize.cfg"
# Written into the fresh workspace, so that a later check may replace it and nothing else.
MARKER = ".slicelib-verify"

# nbval's limit on one cell, by preset (nbval's default, 2000 s, is shorter than a demo
# training cell); the paper's, also for a preset not listed, is twice the supplement's
# longest training run (the GAN: 25 epochs of 24 min).
CELL_TIMEOUT_S = {"smoke": 15 * 60, "demo": 2 * 3600, "real": 2 * 3600, "paper": 24 * 3600}
# And at least this many times the longest notebook the study recorded (a slower machine).
TIMEOUT_FACTOR = 4

# A line of slicelib's log in a cell's output (notebooks.KERNEL_LOG_FORMAT): what
# ``papermill --log-output`` leaves in a notebook it ran alone (a SLURM array's training
# notebooks). The check runs with the kernel's log off.
LOG_LINE = re.compile(r"^\d{4}-\d{2}-\d{2} \d{2}:\d{2}:\d{2} .*(?:\n|$)", flags=re.MULTILINE)


def ordered_notebooks(notebooks_dir: Path, only: Sequence[str] | None = None) -> list[Path]:
    """The executed notebooks of a study in the order the runner runs them (the copies
    ``train_<model>_k<k>`` where ``train`` runs); ``only`` picks some by name."""
    found = {p.stem: p for p in notebooks_dir.glob("*.ipynb")}
    if not found:
        raise SlicelibError(f"{notebooks_dir}: no executed notebooks (run `slicelib study`)")
    unknown = [name for name in only or () if name not in found]
    if unknown:
        raise SlicelibError(
            f"--only {unknown[0]}: no such notebook in {notebooks_dir} "
            f"(choose from {', '.join(sorted(found))})"
        )
    rank = {name: index for index, name in enumerate(STUDY_NOTEBOOKS)}  # train_*: train's
    names = sorted(
        only or found, key=lambda n: (rank.get(re.sub("^train_.*", "train", n), len(rank)), n)
    )
    return [found[name] for name in names]


def retarget(executed: Path, target: Path, out_dir: Path, study_dir: Path | None = None) -> None:
    """Copy ``executed`` to ``target`` with its injected parameters pointing at ``out_dir``
    (a workspace inside ``study_dir``, the real arm's ``<study>/real``, at the same place
    inside ``out_dir``), and every stored output less slicelib's log lines."""
    import nbformat
    from papermill.parameterize import parameterize_notebook

    nb = nbformat.read(executed, as_version=4)
    parameters = dict(nb.metadata.get("papermill", {}).get("parameters") or {})
    if not parameters:
        raise SlicelibError(f"{executed}: not executed by papermill (no injected parameters)")
    old = Path(str(parameters.get("out_dir") or ""))
    if study_dir is not None and old != study_dir and old.is_relative_to(study_dir):
        out_dir = out_dir / old.relative_to(study_dir)
    parameters["out_dir"] = str(out_dir)
    outputs = [c.get("outputs") for c in nb.cells]
    nb = parameterize_notebook(nb, parameters, report_mode=False)
    # parameterize_notebook rewrites only the injected cell; keep every stored output, less
    # the log lines in its streams and a stream that held nothing else.
    for cell, stored in zip(nb.cells, outputs):
        if stored is not None and cell.metadata.get("tags") != ["injected-parameters"]:
            for output in stored:
                if output.get("output_type") == "stream":
                    output["text"] = LOG_LINE.sub("", str(output.get("text", "")))
            cell.outputs = [
                output
                for output in stored
                if output.get("output_type") != "stream" or output["text"]
            ]
    nbformat.write(nb, target)


def cell_timeout(preset: str, notebooks_dir: Path) -> int:
    """nbval's limit on one cell in seconds: the preset's :data:`CELL_TIMEOUT_S`, or
    :data:`TIMEOUT_FACTOR` times the longest notebook the runner recorded in
    ``notebooks_dir`` (its state file) when that is longer."""
    try:
        state = json.loads((notebooks_dir / STATE_FILE).read_text())
        longest = max((float(e.get("seconds") or 0.0) for e in state.values()), default=0.0)
    except (OSError, ValueError, AttributeError):
        longest = 0.0  # no record (notebooks run by papermill alone): the preset decides
    base = CELL_TIMEOUT_S.get(preset, CELL_TIMEOUT_S["paper"])
    return max(base, math.ceil(TIMEOUT_FACTOR * longest))


def sanitizer(source_root: Path, paths: Sequence[Path], target: Path) -> Path:
    """One section per workspace path, then the checkout's sanitizer file; returns it."""
    # The paths first: the generic patterns must not cut a path in two.
    sections = [
        f"[workspace-{index}]\nregex: {re.escape(str(path))}\nreplace: STUDY\n\n"
        for index, path in enumerate(paths)
    ]
    sections.append((source_root / SANITIZE_FILE).read_text(encoding="utf-8"))
    target.write_text("".join(sections), encoding="utf-8")
    return target


def verify_study(
    study_dir: Path,
    only: Sequence[str] | None = None,
    fresh: Path | None = None,
    source_root: Path | None = None,
    pytest_args: Sequence[str] = (),
    timeout_s: int | None = None,
) -> int:
    """Run the executed notebooks of ``study_dir`` again in ``fresh`` (default
    ``<study_dir>-verify``, replaced when an earlier check made it) under ``pytest
    --nbval``, at most ``timeout_s`` a cell (default :func:`cell_timeout`); returns pytest's
    exit code (0: every output reproduced). A one-line :class:`SlicelibError` when
    ``study_dir`` is not a finished study or ``fresh`` a folder this check did not make.
    """
    import importlib.util

    from slicelib.study.config import find_source_root
    from slicelib.study.runner import RECORD_FILE

    if importlib.util.find_spec("nbval") is None:
        raise SlicelibError("slicelib verify needs pytest and nbval: pip install 'slicelib[test]'")
    study_dir = Path(study_dir).resolve()
    try:
        record = json.loads((study_dir / RECORD_FILE).read_text())
    except (OSError, ValueError):
        raise SlicelibError(
            f"{study_dir}: not a study folder (no readable {RECORD_FILE})"
        ) from None
    notebooks = ordered_notebooks(study_dir / "notebooks", only)
    root = find_source_root(source_root)
    fresh = Path(fresh or study_dir.with_name(study_dir.name + "-verify")).resolve()
    if fresh.exists():
        if not (fresh / MARKER).is_file():
            raise SlicelibError(f"{fresh}: exists and was not made by a verify run; choose another")
        shutil.rmtree(fresh)
    (fresh / "notebooks").mkdir(parents=True)
    (fresh / MARKER).write_text(f"verify of {study_dir} (preset {record.get('preset')})\n")
    targets = [fresh / "notebooks" / executed.name for executed in notebooks]
    for executed, target in zip(notebooks, targets):
        retarget(executed, target, fresh, study_dir)
    config = sanitizer(root, [study_dir, fresh], fresh / SANITIZE_FILE)
    ini = fresh / "pytest.ini"
    ini.write_text("[pytest]\n")  # the checkout's pytest settings do not apply here
    preset = str(record.get("preset"))
    if timeout_s is None:
        timeout_s = cell_timeout(preset, study_dir / "notebooks")
    logger.info(
        "verify: %d notebooks of %s (preset %s) in %s, at most %d s a cell",
        len(targets),
        study_dir,
        preset,
        fresh,
        timeout_s,
    )
    nbval = ["--nbval", "--nbval-current-env", "--nbval-sanitize-with", str(config)]
    nbval += ["--nbval-cell-timeout", str(timeout_s)]
    options = ["-c", str(ini), "--confcutdir", str(fresh), "-p", "no:cacheprovider"]
    command = [sys.executable, "-m", "pytest", *nbval, *options, *pytest_args, *map(str, targets)]
    # The stored notebooks hold no log lines (the runner kept them out): neither may these.
    # nbval reads the sanitizer file (its "×" and "—") in the locale's encoding: UTF-8.
    env = {**os.environ, KERNEL_LOG_ENV: KERNEL_LOG_OFF, "PYTHONUTF8": "1"}
    return subprocess.run(command, cwd=fresh, env=env, check=False).returncode
