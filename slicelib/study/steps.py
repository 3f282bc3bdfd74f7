"""One study step: an output made once, stamped by the hash of what made it.

A step's identity (:func:`step_hash`) is its ``inputs`` (its settings and the hashes of
the steps it reads) and the source of its ``code``: the named modules and every
``slicelib`` module they import, at the top of a file or inside a function (read with
:mod:`ast`; nothing is imported). Editing ``slicelib/models/unet.py`` therefore re-makes
every run and results file and leaves the cohort, scan and cache alone.

:func:`ensure` makes a step unless its output exists and its stamp (``<output>.step.json``)
says it finished from the same hash: under the step's lock (concurrent jobs sharing a
folder make it once) it looks again, clears what cannot be continued, stamps the output
unfinished, makes it and stamps it finished.
"""

from __future__ import annotations

import ast
import hashlib
import json
import logging
import shutil
import time
from collections.abc import Callable, Iterable, Iterator, Mapping
from contextlib import contextmanager
from contextvars import ContextVar
from dataclasses import dataclass, field
from datetime import UTC, datetime
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


def imported_modules(tree: ast.AST, known: Iterable[str]) -> set[str]:
    """The ``known`` modules that ``tree`` imports anywhere, with their parent packages
    (importing a module runs their ``__init__``)."""
    found: set[str] = set()
    for node in ast.walk(tree):
        if isinstance(node, ast.Import):
            found.update(alias.name for alias in node.names)
        elif isinstance(node, ast.ImportFrom) and node.module and node.level == 0:
            found.add(node.module)
            found.update(f"{node.module}.{alias.name}" for alias in node.names)
    names = [name.split(".") for name in found]
    parents = {".".join(p[:end]) for p in names if p[0] == PACKAGE for end in range(1, len(p) + 1)}
    return parents & set(known)


@lru_cache(maxsize=4096)
def _module(
    path: Path, size: int, mtime_ns: int, known: frozenset[str]
) -> tuple[str, frozenset[str]]:
    """(code hash, the ``known`` modules it imports) of one file, cached by its size and
    modification time. The hash is of the syntax tree: an edited comment or a reformatted
    line changes no step, an edited docstring or statement does."""
    data = path.read_bytes()
    try:
        tree = ast.parse(data, filename=str(path))
    except SyntaxError:  # the step fails anyway; meanwhile it depends on the whole package
        return hashlib.sha256(data).hexdigest(), known
    code = ast.dump(tree).encode()
    return hashlib.sha256(code).hexdigest(), frozenset(imported_modules(tree, known))


def package_graph(root: Path | None = None) -> dict[str, tuple[str, frozenset[str]]]:
    """``{module: (code hash, the modules it imports)}`` of the package at ``root``."""
    root = (root or PACKAGE_ROOT).resolve()
    paths = {}
    for path in sorted(root.rglob("*.py")):
        parts = [PACKAGE, *path.relative_to(root).with_suffix("").parts]  # slicelib.data.scan
        paths[".".join(parts[:-1] if parts[-1] == "__init__" else parts)] = path
    known = frozenset(paths)
    graph = {}
    for module, path in paths.items():
        st = path.stat()
        code, imports = _module(path, st.st_size, st.st_mtime_ns, known)
        graph[module] = (code, imports - {module})
    return graph


def closure(modules: Iterable[str], root: Path | None = None) -> set[str]:
    """``modules`` and every package module they import, transitively."""
    return _closure(modules, package_graph(root), root)


def _closure(
    modules: Iterable[str], graph: Mapping[str, tuple[str, frozenset[str]]], root: Path | None
) -> set[str]:
    seen: set[str] = set()
    todo = list(modules)
    while todo:
        module = todo.pop()
        if module not in graph:
            raise KeyError(f"no module {module!r} in the package at {root or PACKAGE_ROOT}")
        if module not in seen:
            seen.add(module)
            todo.extend(graph[module][1] - seen)
    return seen


# Code hashes by (modules, root) while a :func:`package_snapshot` is open.
_SNAPSHOT: ContextVar[dict[tuple[Any, ...], str] | None] = ContextVar("snapshot", default=None)


@contextmanager
def package_snapshot() -> Iterator[None]:
    """Within the block each set of modules is hashed once, the package read once for it:
    for code that hashes every step of a study at one moment (a check of what is current),
    during which no file of the package changes."""
    token = _SNAPSHOT.set({})
    try:
        yield
    finally:
        _SNAPSHOT.reset(token)


def code_hash(*modules: str, root: Path | None = None) -> str:
    """A short hash of the source of ``modules`` and of everything they import."""
    memo, key = _SNAPSHOT.get(), (modules, root)
    if memo is not None and key in memo:
        return memo[key]
    graph = package_graph(root)
    files = sorted((m, graph[m][0]) for m in _closure(modules, graph, root))
    value = hashlib.sha256(repr(files).encode()).hexdigest()[:16]
    if memo is not None:
        memo[key] = value
    return value


def notebook_modules(sources: Iterable[str]) -> set[str]:
    """The package modules that notebook code cells (``sources``) import, IPython magics
    and shell lines skipped; a cell that still does not parse gives the whole package."""
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
    """The identity of a step's output: its ``inputs`` and the source of its ``code``."""
    return digest({"inputs": dict(inputs), "code": code_hash(*sorted(code))})


def stamp_path(output: Path) -> Path:
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
        "written_at": datetime.now(UTC).isoformat(timespec="seconds"),
        "inputs": dict(inputs),
    }
    write_json(stamp_path(output), record, sort_keys=True, default=str)


def is_current(output: Path, hash_: str) -> bool:
    """True when ``output`` exists and its stamp says it finished from inputs ``hash_``."""
    stamp = read_stamp(output)
    return output.exists() and stamp is not None and stamp.complete and stamp.hash == hash_


@dataclass(frozen=True)
class Step:
    """One output (``output``, with the files ``also``) and how to make it.

    ``name`` names the step and its lock (``run/unet_k1``); ``code``: the modules that make
    it; ``inputs``: its settings and the hashes of the steps it reads (JSON-ready, recorded
    in the stamp); ``make`` is called under the lock when the output is not current;
    ``resumable``: whether an existing output that is not current is kept for ``make`` to
    continue or replace (True) or removed first (False), or a function of its stamp
    (``None`` when there is none) that decides; ``what``: the log's description.
    """

    name: str
    output: Path
    code: tuple[str, ...]
    inputs: Mapping[str, Any]
    make: Callable[[], object] = field(compare=False)
    resumable: bool | Callable[[Stamp | None], bool] = field(default=False, compare=False)
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
    with hold_file_lock(lock_dir / f"{step.name.replace('/', '_')}.lock", step.name, wait=True):
        if step.current():  # made by a concurrent job while this one waited
            return step.output
        stamp = read_stamp(step.output)
        keep = step.resumable(stamp) if callable(step.resumable) else step.resumable
        if step.output.exists() and not keep:  # continuing would mix two experiments
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
