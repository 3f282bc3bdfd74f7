"""Fuzz campaign: damaged copies of one small series through ``scan``, ``prepare`` and
``upsample`` (with an untrained tiny checkpoint).

Prints, per mutation kind, how many runs ended ok / excluded (with a reason or a
one-line error) / lost (a slice missing without a reason) / traceback / hang.
Each case runs in its own child process with a 2 GiB address-space cap and a
time limit, so a crash or a runaway allocation is counted, not fatal.

    python -m benchmarks fuzz        # FUZZ_CASES=40 cases per kind by default
"""

from __future__ import annotations

import multiprocessing as mp
import os
import resource
import sys
import tempfile
from collections import Counter
from pathlib import Path
from typing import Any

sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "tests"))

from dicom_fuzz import (  # noqa: E402
    COMMANDS,
    MUTATIONS,
    OUTCOMES,
    Case,
    cases,
    restore_permissions,
    run_case,
    write_checkpoint,
    write_template,
)

MEMORY_CAP = 2 << 30
CASE_SECONDS = 60


def _failed(outcome: str, why: str) -> dict[str, str]:
    return {**{cmd: outcome for cmd in COMMANDS}, "why": why, "detail": ""}


def _child(template: str, case: Case, work: str, checkpoint: str, conn: Any) -> None:
    import logging
    import warnings

    logging.disable(logging.CRITICAL)
    warnings.simplefilter("ignore")
    resource.setrlimit(resource.RLIMIT_AS, (MEMORY_CAP, MEMORY_CAP))
    try:
        conn.send(run_case(Path(template), case, Path(work), CASE_SECONDS, Path(checkpoint)))
    except BaseException as exc:  # MemoryError and the like: counted as a traceback
        conn.send(_failed("traceback", repr(exc)))


def run_one(template: Path, case: Case, work: Path, checkpoint: Path) -> dict[str, str]:
    ctx = mp.get_context("fork")
    parent, child = ctx.Pipe(duplex=False)
    proc = ctx.Process(target=_child, args=(str(template), case, str(work), str(checkpoint), child))
    proc.start()
    child.close()
    result: dict[str, str] | None = None
    if parent.poll(len(COMMANDS) * CASE_SECONDS + 30):
        try:
            result = parent.recv()
        except EOFError:
            result = None
    proc.join(5)
    if proc.is_alive():
        proc.kill()
        proc.join()
        return _failed("hang", "killed")
    if result is None:
        why = f"child died (exit {proc.exitcode})"
        return _failed("traceback", why)
    return result


def main() -> None:
    import slicelib.data.prepare  # noqa: F401  (imported once, before the children fork)
    import slicelib.upsample.folder  # noqa: F401

    n = int(os.environ.get("FUZZ_CASES", "40"))
    counts: dict[str, dict[str, Counter[str]]] = {
        cmd: {k: Counter() for k in MUTATIONS} for cmd in COMMANDS
    }
    bad: list[str] = []
    with tempfile.TemporaryDirectory() as tmp:
        template = Path(tmp) / "template"
        write_template(template)
        checkpoint = write_checkpoint(Path(tmp) / "run" / "best.pt")
        for i, case in enumerate(cases(n)):
            work = Path(tmp) / f"case{i}"
            work.mkdir()
            out = run_one(template, case, work, checkpoint)
            for cmd in COMMANDS:
                counts[cmd][case.kind][out[cmd]] += 1
                if out[cmd] in ("lost", "traceback", "hang"):
                    why = out["why"].strip().splitlines()[-1:] or [""]
                    bad.append(f"{cmd} {case.kind} {out['detail']}: {out[cmd]} {why[0][:160]}")
            restore_permissions(work)
    for cmd in COMMANDS:
        total: Counter[str] = Counter()
        print(f"\n{cmd}: {n} cases per kind")
        print(f"{'kind':16s}" + "".join(f"{o:>10s}" for o in OUTCOMES))
        for kind, c in counts[cmd].items():
            total.update(c)
            print(f"{kind:16s}" + "".join(f"{c[o]:10d}" for o in OUTCOMES))
        print(f"{'total':16s}" + "".join(f"{total[o]:10d}" for o in OUTCOMES))
    if bad:
        print(f"\n{len(bad)} bad outcomes (first 40):")
        for line in bad[:40]:
            print("  " + line)


if __name__ == "__main__":
    main()
