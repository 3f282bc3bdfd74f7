"""One study step: make an output once, stamped by the hash of its inputs.

Every output of the workspace (the cohort, the scan, the cache, each run, each
results file, the uncertainty and refinement runs) is a :class:`Step`. Making one
follows the same rule everywhere: nothing to do when the output exists and its
stamp says it finished from the same inputs; otherwise take the step's lock (so
concurrent jobs sharing a folder make it once), look again, clear what cannot be
continued, stamp the output unfinished, make it, stamp it finished.
"""

from __future__ import annotations

import logging
import shutil
import time
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from slicelib.locking import hold_file_lock
from slicelib.study.stamps import Stamp, is_current, read_stamp, write_stamp

logger = logging.getLogger(__name__)

Resumable = bool | Callable[[Stamp | None], bool]


@dataclass(frozen=True)
class Step:
    """One output and how to make it.

    Attributes:
        name: the lock's name (one per output), e.g. ``unet_k1``.
        output: the file or folder made.
        hash: the hash of everything the output depends on.
        inputs: what the stamp records of those inputs (JSON-ready).
        make: makes ``output`` (called under the lock, only when it is not current).
        resumable: whether an existing, not current output is kept for ``make`` to
            continue or replace (True), removed first (False), or decided from its
            stamp (a function of the stamp, ``None`` when there is none).
        also: other files the step writes, which must exist for it to be current.
        what: a short description for the log ("training unet_k1").
    """

    name: str
    output: Path
    hash: str
    inputs: Mapping[str, Any]
    make: Callable[[], object]
    resumable: Resumable = False
    also: tuple[Path, ...] = field(default=())
    what: str = ""

    def current(self) -> bool:
        """True when the output (and ``also``) exist and finished from ``hash``."""
        return is_current(self.output, self.hash) and all(p.exists() for p in self.also)


def ensure(step: Step, lock_dir: Path) -> Path:
    """Make ``step``'s output unless it is current; returns the output path."""
    if step.current():
        return step.output
    with hold_file_lock(lock_dir / f"{step.name}.lock", step.name, wait=True):
        if step.current():  # made by a concurrent job while this one waited
            return step.output
        keep = (
            step.resumable(read_stamp(step.output)) if callable(step.resumable) else step.resumable
        )
        if step.output.exists() and not keep:
            # Made from other inputs: continuing would mix two experiments.
            if step.output.is_dir():
                shutil.rmtree(step.output)
            else:
                step.output.unlink()
        inputs = dict(step.inputs)
        write_stamp(step.output, step.hash, inputs, complete=False)
        start = time.perf_counter()
        what = step.what or f"making {step.output}"
        logger.info("%s ...", what)
        step.make()
        logger.info("%s: done in %.1f s", what, time.perf_counter() - start)
        write_stamp(step.output, step.hash, inputs, complete=True)
    return step.output
