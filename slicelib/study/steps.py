"""One study step: an output made once, stamped by the hash of what made it.

Every output of a study's workspace (the cohort, the scan, the cache, each training run,
each results file) is a :class:`Step`, and its identity has one recipe,
:func:`step_hash`: the step's ``inputs`` (its settings and the hashes of the steps it
reads) and the source of the ``code`` that makes it, that is the named modules and
every ``slicelib`` module they import, directly or through others, at the top of a file
or inside a function (the import graph is read with :mod:`ast`, nothing is imported).
Editing ``slicelib/models/unet.py`` therefore re-makes every run and results file and
leaves the cohort, scan and cache alone.

Making a step follows one rule (:func:`ensure`): nothing to do when the output exists and
its stamp (``<output>.step.json`` beside it) says it finished from the same hash;
otherwise take the step's lock (so concurrent jobs sharing a folder make it once), look
again, clear what cannot be continued, stamp the output unfinished, make it, stamp it
finished.
"""

from __future__ import annotations

import ast
import hashlib
import json
import logging
import os
import shutil
import time
from collections.abc import Callable, Iterable, Mapping
from dataclasses import dataclass, field
from datetime import datetime, timezone
from functools import lru_cache
from pathlib import Path
from typing import Any

from slicelib.io import write_json
from slicelib.locking import hold_file_lock

logger = logging.getLogger(__name__)

PACKAGE = "slicelib"
# The installed (or checked-out) package that the study runs; tests point it at a copy.
PACKAGE_ROOT = Path(__file__).resolve().parents[1]


def digest(obj: Any) -> str:
    """A short, stable hash of a JSON-ready object (dict keys sorted)."""
    text = json.dumps(obj, sort_keys=True, default=str, separators=(",", ":"))
    return hashlib.sha256(text.encode()).hexdigest()[:16]


# The import graph --------------------------------------------------------------------


def module_name(path: Path, root: Path) -> str:
    """``slicelib.models.unet`` for ``<root>/models/unet.py``, ``slicelib.models``
    for ``<root>/models/__init__.py``."""
    parts = [PACKAGE, *path.relative_to(root).with_suffix("").parts]
    if parts[-1] == "__init__":
        parts.pop()
    return ".".join(parts)


def imported_modules(tree: ast.AST, known: Iterable[str]) -> set[str]:
    """The ``slicelib`` modules that ``tree`` imports, anywhere in it, with their parent
    packages (importing a module runs their ``__init__``)."""
    modules = set(known)
    found: set[str] = set()
    for node in ast.walk(tree):
        if isinstance(node, ast.Import):
            found.update(alias.name for alias in node.names)
        elif isinstance(node, ast.ImportFrom) and node.module and node.level == 0:
            found.add(node.module)
            found.update(f"{node.module}.{alias.name}" for alias in node.names)
    result: set[str] = set()
    for name in found:
        parts = name.split(".")
        if parts[0] == PACKAGE:
            result.update(
                p for end in range(1, len(parts) + 1) if (p := ".".join(parts[:end])) in modules
            )
    return result


@lru_cache(maxsize=4096)
def _module(
    path: Path, size: int, mtime_ns: int, known: frozenset[str]
) -> tuple[str, frozenset[str]]:
    """(code hash, the ``known`` modules it imports) of one file, read again when its
    size or modification time changes. The hash is of the syntax tree: an edited comment
    or a reformatted line changes no step, an edited docstring or statement does."""
    data = path.read_bytes()
    try:
        tree = ast.parse(data, filename=str(path))
    except SyntaxError:
        # A file that does not parse makes any step that runs it fail anyway;
        # depending on the whole package keeps its hash honest meanwhile.
        return hashlib.sha256(data).hexdigest(), known
    code = ast.dump(tree).encode()
    return hashlib.sha256(code).hexdigest(), frozenset(imported_modules(tree, known))


@lru_cache(maxsize=4)
def _graph(
    root: Path, signature: tuple[tuple[str, int, int], ...]
) -> dict[str, tuple[str, frozenset[str]]]:
    """``{module: (content hash, modules it imports)}`` of the package at ``root``
    (``signature``, every file's size and time, is the cache key)."""
    paths = {module_name(root / rel, root): (root / rel, size, t) for rel, size, t in signature}
    known = frozenset(paths)
    graph: dict[str, tuple[str, frozenset[str]]] = {}
    for module, (path, size, mtime) in paths.items():
        digest_, imports = _module(path, size, mtime, known)
        graph[module] = (digest_, imports - {module})
    return graph


def package_graph(root: Path | None = None) -> dict[str, tuple[str, frozenset[str]]]:
    """The import graph of the package at ``root`` (default :data:`PACKAGE_ROOT`), read
    again whenever a file's size or modification time changes."""
    root = (root or PACKAGE_ROOT).resolve()
    entries = []
    for folder, dirs, files in os.walk(root):
        dirs[:] = sorted(d for d in dirs if d != "__pycache__")
        rel = os.path.relpath(folder, root)
        for name in sorted(f for f in files if f.endswith(".py")):
            st = os.stat(os.path.join(folder, name))
            path = name if rel == "." else f"{rel}/{name}"
            entries.append((path.replace(os.sep, "/"), st.st_size, st.st_mtime_ns))
    return _graph(root, tuple(entries))


def closure(modules: Iterable[str], root: Path | None = None) -> set[str]:
    """``modules`` and every package module they import, transitively."""
    graph = package_graph(root)
    seen: set[str] = set()
    todo = list(modules)
    while todo:
        module = todo.pop()
        if module in seen:
            continue
        if module not in graph:
            raise KeyError(f"no module {module!r} in the package at {root or PACKAGE_ROOT}")
        seen.add(module)
        todo.extend(graph[module][1] - seen)
    return seen


def code_hash(*modules: str, root: Path | None = None) -> str:
    """A short hash of the source of ``modules`` and of everything they import."""
    graph = package_graph(root)
    files = sorted((m, graph[m][0]) for m in closure(modules, root))
    return hashlib.sha256(repr(files).encode()).hexdigest()[:16]


def notebook_modules(sources: Iterable[str]) -> set[str]:
    """The package modules that notebook code cells import (``sources``: the cells'
    text); IPython magics and shell lines are skipped. A cell that still does not
    parse makes the notebook depend on the whole package."""
    known = set(package_graph())
    found: set[str] = set()
    for source in sources:
        lines = [
            "" if line.lstrip().startswith(("%", "!")) else line for line in source.splitlines()
        ]
        try:
            found |= imported_modules(ast.parse("\n".join(lines)), known)
        except SyntaxError:
            logger.debug("a notebook cell does not parse; depending on the whole package")
            return known
    return found


def step_hash(code: Iterable[str], inputs: Mapping[str, Any]) -> str:
    """The identity of a step's output: its ``inputs`` (settings, and the hashes of the
    steps it reads) and the source of the ``code`` modules that make it."""
    return digest({"inputs": dict(inputs), "code": code_hash(*sorted(code))})


# Stamps ------------------------------------------------------------------------------


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
    try:
        data = json.loads(stamp_path(output).read_text())
        return Stamp(hash=str(data["hash"]), complete=bool(data["complete"]), inputs=data["inputs"])
    except (OSError, ValueError, KeyError, TypeError):
        return None


def write_stamp(output: Path, hash_: str, inputs: Mapping[str, Any], *, complete: bool) -> None:
    """Write the stamp beside ``output`` atomically."""
    record = {
        "hash": hash_,
        "complete": complete,
        "written_at": datetime.now(timezone.utc).isoformat(timespec="seconds"),
        "inputs": dict(inputs),
    }
    write_json(stamp_path(output), record, sort_keys=True, default=str)


def is_current(output: Path, hash_: str) -> bool:
    """True when ``output`` exists and its stamp says it finished from inputs ``hash_``."""
    stamp = read_stamp(output)
    return output.exists() and stamp is not None and stamp.complete and stamp.hash == hash_


# Steps -------------------------------------------------------------------------------

Resumable = bool | Callable[[Stamp | None], bool]


@dataclass(frozen=True)
class Step:
    """One output and how to make it.

    Attributes:
        name: the step's name in the workspace (``run/unet_k1``); its lock's too.
        output: the file or folder made.
        code: the modules that make it (their imports count too).
        inputs: its settings and the hashes of the steps it reads (JSON-ready); the
            stamp records them.
        make: makes ``output`` (called under the lock, only when it is not current).
        resumable: whether an existing, not current output is kept for ``make`` to
            continue or replace (True), removed first (False), or decided from its
            stamp (a function of the stamp, ``None`` when there is none).
        also: other files the step writes, which must exist for it to be current.
        what: a short description for the log ("training unet_k1").
    """

    name: str
    output: Path
    code: tuple[str, ...]
    inputs: Mapping[str, Any]
    make: Callable[[], object] = field(compare=False)
    resumable: Resumable = field(default=False, compare=False)
    also: tuple[Path, ...] = ()
    what: str = ""

    @property
    def hash(self) -> str:
        return step_hash(self.code, self.inputs)

    def current(self) -> bool:
        """True when the output (and ``also``) exist and finished from ``hash``."""
        return is_current(self.output, self.hash) and all(p.exists() for p in self.also)


def ensure(step: Step, lock_dir: Path) -> Path:
    """Make ``step``'s output unless it is current; returns the output path."""
    if step.current():
        return step.output
    lock = lock_dir / f"{step.name.replace('/', '_')}.lock"
    with hold_file_lock(lock, step.name, wait=True):
        if step.current():  # made by a concurrent job while this one waited
            return step.output
        stamp = read_stamp(step.output)
        keep = step.resumable(stamp) if callable(step.resumable) else step.resumable
        if step.output.exists() and not keep:
            # Made from other inputs: continuing would mix two experiments.
            if step.output.is_dir():
                shutil.rmtree(step.output)
            else:
                step.output.unlink()
        hash_ = step.hash
        write_stamp(step.output, hash_, step.inputs, complete=False)
        start = time.perf_counter()
        what = step.what or f"making {step.output}"
        logger.info("%s ...", what)
        step.make()
        logger.info("%s: done in %.1f s", what, time.perf_counter() - start)
        write_stamp(step.output, hash_, step.inputs, complete=True)
    return step.output
