"""A reviewer's check that a study reproduces: its executed notebooks run again in a
fresh workspace (same preset, same seeds) under ``pytest --nbval``, which compares
every stored text output with the new one.

The copies keep their stored outputs; only papermill's injected-parameters cell is
rewritten to point at the fresh workspace, so that each notebook makes again what it
reads (cohort, cache, runs, results). nbval's sanitizer, ``.nbval-sanitize.cfg`` at
the checkout's root plus the two workspace paths, blanks what legitimately varies.
"""

from __future__ import annotations

import json
import logging
import os
import shutil
import subprocess
import sys
from collections.abc import Sequence
from pathlib import Path

from slicelib.errors import SlicelibError
from slicelib.study.notebooks import STUDY_NOTEBOOKS

logger = logging.getLogger(__name__)

SANITIZE_FILE = ".nbval-sanitize.cfg"
# Written into the fresh workspace, so that a later check may replace it and nothing else.
MARKER = ".slicelib-verify"


def ordered_notebooks(notebooks_dir: Path, only: Sequence[str] | None = None) -> list[Path]:
    """The executed notebooks of a study in the order the runner runs them (the train
    copies, ``train_<model>_k<k>``, where ``train`` runs); ``only`` picks some by name."""
    found = {p.stem: p for p in notebooks_dir.glob("*.ipynb")}
    if not found:
        raise SlicelibError(f"{notebooks_dir}: no executed notebooks (run `slicelib study`)")
    unknown = [name for name in only or () if name not in found]
    if unknown:
        raise SlicelibError(
            f"--only {unknown[0]}: no such notebook in {notebooks_dir} "
            f"(choose from {', '.join(sorted(found))})"
        )

    def rank(name: str) -> tuple[int, str]:
        base = "train" if name.startswith("train_") else name
        return (
            STUDY_NOTEBOOKS.index(base) if base in STUDY_NOTEBOOKS else len(STUDY_NOTEBOOKS),
            name,
        )

    names = sorted(only or found, key=rank)
    return [found[name] for name in names]


def retarget(executed: Path, target: Path, out_dir: Path, study_dir: Path | None = None) -> None:
    """Copy ``executed`` to ``target`` with its injected parameters pointing at
    ``out_dir``; every stored output is kept for the comparison. A notebook that ran on
    a workspace inside ``study_dir`` (the real-anatomy arm's ``<study>/real``) points at
    the same place inside ``out_dir``."""
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
    # parameterize_notebook rewrites only the injected cell; keep every stored output.
    for cell, stored in zip(nb.cells, outputs):
        if stored is not None and cell.metadata.get("tags") != ["injected-parameters"]:
            cell.outputs = stored
    nbformat.write(nb, target)


def sanitizer(source_root: Path, paths: Sequence[Path], target: Path) -> Path:
    """One section per workspace path, then the checkout's sanitizer file; returns it."""
    import re

    # The paths first: the generic patterns must not cut a path in two.
    sections = [
        f"[workspace-{index}]\nregex: {re.escape(str(path))}\nreplace: STUDY\n\n"
        for index, path in enumerate(paths)
    ]
    sections.append((source_root / SANITIZE_FILE).read_text())
    target.write_text("".join(sections))
    return target


def verify_study(
    study_dir: Path,
    only: Sequence[str] | None = None,
    fresh: Path | None = None,
    source_root: Path | None = None,
    pytest_args: Sequence[str] = (),
) -> int:
    """Run the executed notebooks of ``study_dir`` again in ``fresh`` (default
    ``<study_dir>-verify``, replaced when an earlier check made it) under
    ``pytest --nbval``; returns pytest's exit code (0: every output reproduced).

    Raises a one-line :class:`SlicelibError` when ``study_dir`` is not a finished
    study or ``fresh`` is a folder this check did not make.
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
    fresh = Path(fresh) if fresh is not None else study_dir.with_name(study_dir.name + "-verify")
    fresh = fresh.resolve()
    if fresh.exists():
        if not (fresh / MARKER).is_file():
            raise SlicelibError(f"{fresh}: exists and was not made by a verify run; choose another")
        shutil.rmtree(fresh)
    copies = fresh / "notebooks"
    copies.mkdir(parents=True)
    (fresh / MARKER).write_text(f"verify of {study_dir} (preset {record.get('preset')})\n")
    targets = []
    for executed in notebooks:
        target = copies / executed.name
        retarget(executed, target, fresh, study_dir)
        targets.append(target)
    config = sanitizer(root, [study_dir, fresh], fresh / SANITIZE_FILE)
    ini = fresh / "pytest.ini"
    ini.write_text("[pytest]\n")  # the checkout's pytest settings do not apply here
    logger.info(
        "verify: %d notebooks of %s (preset %s) in %s",
        len(targets),
        study_dir,
        record.get("preset"),
        fresh,
    )
    command = [
        sys.executable,
        "-m",
        "pytest",
        "--nbval",
        "--nbval-current-env",
        "--nbval-sanitize-with",
        str(config),
        "-c",
        str(ini),
        "--confcutdir",
        str(fresh),
        "-p",
        "no:cacheprovider",
        "-p",
        "slicelib.study.nbval_glue",
        *pytest_args,
        *map(str, targets),
    ]
    # The stored notebooks hold no log lines (the runner kept them out): neither may these.
    from slicelib.study.notebooks import KERNEL_LOG_ENV, KERNEL_LOG_OFF

    env = {**os.environ, KERNEL_LOG_ENV: KERNEL_LOG_OFF}
    return subprocess.run(command, cwd=fresh, env=env, check=False).returncode
