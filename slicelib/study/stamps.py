"""Input hashes ("stamps") that make every study step idempotent.

Each output (a folder or a file) gets a sibling ``<name>.step.json`` that holds
the hash of what produced it: the step's configuration and the hashes of the
steps it read. A step runs again only when that hash changes or the output is
missing or unfinished.
"""

from __future__ import annotations

import hashlib
import json
from dataclasses import dataclass
from datetime import datetime, timezone
from pathlib import Path
from typing import Any

from slicelib.io import write_json


def digest(obj: Any) -> str:
    """A short, stable hash of a JSON-ready object (dict keys sorted)."""
    text = json.dumps(obj, sort_keys=True, default=str, separators=(",", ":"))
    return hashlib.sha256(text.encode()).hexdigest()[:16]


def stamp_path(output: Path) -> Path:
    """Where the stamp of ``output`` lives: ``<output>.step.json`` beside it."""
    return output.with_name(output.name + ".step.json")


@dataclass(frozen=True)
class Stamp:
    """What is known about an output: the hash it was made from and whether it finished."""

    hash: str
    complete: bool
    inputs: dict[str, Any]


def read_stamp(output: Path) -> Stamp | None:
    """The stamp beside ``output``, or ``None`` when absent or unreadable."""
    path = stamp_path(output)
    try:
        data = json.loads(path.read_text())
        return Stamp(hash=str(data["hash"]), complete=bool(data["complete"]), inputs=data["inputs"])
    except (OSError, ValueError, KeyError, TypeError):
        return None


def write_stamp(output: Path, hash_: str, inputs: dict[str, Any], *, complete: bool) -> None:
    """Write the stamp beside ``output`` atomically."""
    record = {
        "hash": hash_,
        "complete": complete,
        "written_at": datetime.now(timezone.utc).isoformat(timespec="seconds"),
        "inputs": inputs,
    }
    write_json(stamp_path(output), record, sort_keys=True, default=str)


def is_current(output: Path, hash_: str) -> bool:
    """True when ``output`` exists and its stamp says it finished from inputs ``hash_``."""
    stamp = read_stamp(output)
    return output.exists() and stamp is not None and stamp.complete and stamp.hash == hash_


def tree_fingerprint(root: Path) -> dict[str, Any]:
    """A cheap fingerprint of every file under ``root``: relative path, size, mtime.

    Stats files only (no reads), so it stays fast on an 80 GB collection.
    """
    entries: list[tuple[str, int, int]] = []
    for path in sorted(root.rglob("*")):
        if path.is_file():
            st = path.stat()
            entries.append((path.relative_to(root).as_posix(), st.st_size, st.st_mtime_ns))
    return {"files": len(entries), "bytes": sum(e[1] for e in entries), "hash": digest(entries)}
