"""``slicelib study``: the whole study, resumable, from data to book.

1. the data (the synthetic cohort when no data root is given, the scan, the cache) and
   the real-anatomy arm's workspace (``<out>/real``: the preset's ``real_arm`` on the
   checkout's ``data/ixi-t1-2mm``) unless it is switched off;
2. the environment record (``<out>/environment.json``);
3. every notebook with papermill into ``<out>/notebooks/`` (the train notebook once per
   model and k), skipping those whose inputs did not change;
4. the book, staged in ``<out>/book/``, built offline in strict mode, copied to ``book_dir``.

Each step logs what it does and the elapsed time. What finished is kept when a later step
fails, and a second run picks up where the first stopped.
"""

from __future__ import annotations

import json
import logging
import time
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

from slicelib.config import get_preset
from slicelib.environment import installed_distributions, record_environment, write_environment
from slicelib.errors import SlicelibError
from slicelib.io import write_json
from slicelib.outputs import check_output, claim, writing
from slicelib.study.book import build_book, publish, stage_book, tree_hash
from slicelib.study.config import REAL_DATA, REAL_WORKSPACE, find_source_root, real_data_root
from slicelib.study.notebooks import NotebookRunner, plan_jobs
from slicelib.study.workspace import Study, resolve_out_dir

logger = logging.getLogger(__name__)

RECORD_FILE = "study.json"


@dataclass
class StudyReport:
    """What a run of the study did."""

    out_dir: Path
    executed: list[str] = field(default_factory=list)
    skipped: list[str] = field(default_factory=list)
    book: Path | None = None
    book_built: bool = False
    seconds: float = 0.0


class _Clock:
    def __init__(self) -> None:
        self.start = time.perf_counter()

    def __str__(self) -> str:
        seconds = int(time.perf_counter() - self.start)
        return f"{seconds // 60:d}:{seconds % 60:02d}"


def _check_workspace(out_dir: Path, preset: str) -> dict[str, Any]:
    """The previous run record of ``out_dir``; refuses a folder of another preset,
    whose runs this run would otherwise replace."""
    path = out_dir / RECORD_FILE
    try:
        previous: dict[str, Any] = json.loads(path.read_text()) if path.is_file() else {}
    except ValueError:
        return {}
    if previous.get("preset") not in (None, preset):
        raise SlicelibError(
            f"--out {out_dir}: holds a study of the {previous['preset']!r} preset; "
            f"choose another folder for the {preset!r} preset"
        )
    return previous


def _environment(path: Path) -> dict[str, Any]:
    """Record the environment, with every installed distribution (``installed``) beside
    the few the book lists; keep the earlier record when only its time differs, so
    that an unchanged study keeps an unchanged book."""
    try:
        previous: dict[str, Any] = json.loads(path.read_text())
    except (OSError, ValueError):
        previous = {}
    current = {**record_environment(), "installed": installed_distributions()}
    if {**previous, "recorded_at": None} == {**current, "recorded_at": None}:
        return previous
    return write_environment(path, current)


def _real_arm(study: Study, root: Path, out: Path, wanted: bool, device: str) -> Study | None:
    """The real-anatomy arm's workspace, or None when it is off, the preset has none or
    the checkout lacks its data (each said in the log)."""
    name = study.config.real_arm
    if not wanted or name is None:
        why = "switched off" if not wanted else f"none in the {study.preset.name} preset"
        logger.info("real-anatomy arm: %s", why)
        return None
    data = real_data_root(root)
    if data is None:
        logger.warning("real-anatomy arm left out: %s holds no NIfTI volumes", root / REAL_DATA)
        return None
    where = out / REAL_WORKSPACE
    logger.info("real-anatomy arm: the %s preset on %s, in %s", name, data, where)
    return Study(name, where, data, device=device)


def run_study(
    preset: str = "demo",
    out_dir: str | Path | None = "study",
    data_root: str | Path | None = None,
    book_dir: str | Path | None = "_build/html",
    *,
    source_root: str | Path | None = None,
    overrides: Mapping[str | None, Mapping[str, Any]] | None = None,
    only: Sequence[str] | None = None,
    device: str = "auto",
    command: str | None = None,
    progress: bool = False,
    real: bool = True,
) -> StudyReport:
    """Run the study (see the module docstring); returns what it did.

    Args:
        preset: demo, paper or smoke.
        out_dir: the workspace; ``None`` gives ``$SLICELIB_HOME/<preset>``.
        data_root: a DICOM or NIfTI collection; ``None`` generates the synthetic cohort.
        book_dir: where the html goes; ``None`` skips the book.
        source_root: the checkout with ``notebooks/``, ``book/``, ``_config.yml`` and
            ``_toc.yml`` (default: the one the package comes from, else the cwd).
        overrides: extra notebook parameters, ``{notebook or None: {name: value}}``.
        only: run only these notebooks (as named in ``<out>/notebooks``, e.g. ``data``,
            ``train_unet_k1``) and build no book.
        device: passed to the notebooks that take a ``device`` parameter.
        command: the command line, for the book's reproducibility chapter.
        progress: progress bars for the steps run in this process.
        real: run the real-anatomy arm when the preset has one and the checkout carries
            its data; False leaves it and its chapter out.

    One study runs in a folder at a time (a lock beside it names the holder), and only in
    a new or empty folder or one that slicelib wrote as a study
    (:func:`slicelib.outputs.check_output`).

    Raises:
        SlicelibError: the user's mistake (preset, data root, parameter), one line.
        StudyError: a notebook or the book build failed (one line, with the path).
    """
    clock = _Clock()
    get_preset(preset)
    out = resolve_out_dir(preset, out_dir)
    check_output(out, "study", mode="continue", what="study folder")
    with writing(out, "study"):
        root = find_source_root(Path(source_root) if source_root is not None else None)
        previous = _check_workspace(out, preset)
        study = Study(preset, out, data_root, device=device, progress=progress)
        claim(out, "study")
        scoped = {k: dict(v) for k, v in (overrides or {}).items()}
        if device != "auto":
            scoped.setdefault(None, {})["device"] = device
        real_arm = _real_arm(study, root, out, real, device)
        jobs = plan_jobs(study, root / "notebooks", scoped, real=real_arm)
        if only:
            names = [job.name for job in jobs]
            unknown = [name for name in only if name not in names]
            if unknown:
                raise SlicelibError(
                    f"--only {unknown[0]}: no such notebook in this study (choose from "
                    f"{', '.join(names)})"
                )
            jobs = [job for job in jobs if job.name in only]
            book_dir = None
        report = StudyReport(out_dir=out)
        record: dict[str, Any] = {
            **study.describe(),
            "command": command or f"slicelib study --preset {preset} --out {out}",
            "started_at": datetime.now(UTC).isoformat(timespec="seconds"),
            "book": previous.get("book"),
            "book_hash": previous.get("book_hash"),
            "real_arm": None if real_arm is None else real_arm.describe(),
        }
        write_json(out / RECORD_FILE, record, default=str)
        logger.info("[%s] study: preset %s, output %s, %d notebooks", clock, preset, out, len(jobs))

        record["environment"] = _environment(study.environment_json)
        source = "synthetic cohort" if study.synthetic else f"data root {study.data_root}"
        logger.info("[%s] data: %s", clock, source)
        study.cohort()
        summary = study.scan().summary
        record["scan"] = {
            key: summary.get(key) for key in ("patients", "volumes", "slices", "series")
        }
        cache = study.cache()
        splits = ", ".join(f"{s} {len(cache.entries(s))}" for s in ("train", "val", "test"))
        logger.info("[%s] cache: %s (%s)", clock, study.cache_dir, splits)

        runner = NotebookRunner(study, {} if real_arm is None else {"real": real_arm})
        runner.remove_partial()
        for number, job in enumerate(jobs, start=1):
            tag = f"notebook {number}/{len(jobs)} {job.name}"
            if runner.up_to_date(job):
                logger.info("[%s] %s: up to date", clock, tag)
                report.skipped.append(job.name)
                continue
            logger.info("[%s] %s: running ...", clock, tag)
            seconds = runner.execute(job)
            report.executed.append(job.name)
            logger.info("[%s] %s: done in %.1f s", clock, tag, seconds)

        record["executed"], record["skipped"] = report.executed, report.skipped
        record["finished_at"] = datetime.now(UTC).isoformat(timespec="seconds")
        if book_dir is not None:
            dest = Path(book_dir).resolve()
            executed = {job.name: runner.output(job) for job in jobs}
            # The edition line carries the date only when the book's content changes.
            stable = {**record, "finished_at": record["finished_at"][:10]}
            stage = stage_book(root, out / "book", executed, jobs, stable)
            book_hash = tree_hash(stage)
            unchanged = book_hash == previous.get("book_hash") and previous.get("book") == str(dest)
            if unchanged and (dest / "index.html").is_file():
                logger.info("[%s] book: unchanged, %s", clock, dest / "index.html")
            else:
                logger.info("[%s] book: building from %s ...", clock, stage)
                publish(build_book(stage), dest)
                report.book_built = True
            record["book"], record["book_hash"] = str(dest), book_hash
            report.book = dest
        write_json(out / RECORD_FILE, record, default=str)
        report.seconds = time.perf_counter() - clock.start
        done, skipped = len(report.executed), len(report.skipped)
        logger.info("[%s] study done: %d notebooks run, %d up to date", clock, done, skipped)
        if report.book is not None:
            logger.info("the book: %s", (report.book / "index.html").as_uri())
        return report
