"""Hashes of the package source that a study step depends on.

A run, a results file or an executed notebook is current only when the code that
made it is unchanged, so every step hash includes :func:`code_hash` of the modules
the step runs: the module itself and every ``slicelib`` module it imports, directly
or through others, at the top of a file or inside a function (the import graph is
read from the source with :mod:`ast`, nothing is imported). Editing
``slicelib/models/unet.py`` therefore changes the hash of every training run and
results file (``slicelib.train`` and ``slicelib.evaluate`` import the models) and
leaves the cohort, scan and cache alone (``slicelib.data.prepare`` does not).

Each file is hashed by content; the graph is read again whenever a file's size or
modification time changes, so a long-lived process sees edits.
"""

from __future__ import annotations

import ast
import hashlib
import logging
from collections.abc import Iterable
from functools import lru_cache
from pathlib import Path

logger = logging.getLogger(__name__)

PACKAGE = "slicelib"
# The installed (or checked-out) package that the study runs; tests point it at a copy.
PACKAGE_ROOT = Path(__file__).resolve().parents[1]


def module_name(path: Path, root: Path) -> str:
    """``slicelib.models.unet`` for ``<root>/models/unet.py``, ``slicelib.models``
    for ``<root>/models/__init__.py``."""
    parts = [PACKAGE, *path.relative_to(root).with_suffix("").parts]
    if parts[-1] == "__init__":
        parts.pop()
    return ".".join(parts)


def imported_modules(tree: ast.AST, known: Iterable[str]) -> set[str]:
    """The ``slicelib`` modules that ``tree`` imports, anywhere in it.

    ``from slicelib.a import b`` names ``slicelib.a`` and, when ``b`` is a module,
    ``slicelib.a.b``; the parent packages of every module are added too, since
    importing a module runs their ``__init__``.
    """
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
        if parts[0] != PACKAGE:
            continue
        for end in range(1, len(parts) + 1):
            prefix = ".".join(parts[:end])
            if prefix in modules:
                result.add(prefix)
    return result


def _signature(root: Path) -> tuple[tuple[str, int, int], ...]:
    """Every source file under ``root`` with its size and modification time."""
    entries = []
    for path in sorted(root.rglob("*.py")):
        if "__pycache__" not in path.parts:
            st = path.stat()
            entries.append((path.relative_to(root).as_posix(), st.st_size, st.st_mtime_ns))
    return tuple(entries)


@lru_cache(maxsize=4)
def _graph(
    root: Path, signature: tuple[tuple[str, int, int], ...]
) -> dict[str, tuple[str, frozenset[str]]]:
    """``{module: (content hash, modules it imports)}`` of the package at ``root``
    (``signature`` is the cache key: it changes when any file does)."""
    paths = {module_name(root / rel, root): root / rel for rel, _, _ in signature}
    graph: dict[str, tuple[str, frozenset[str]]] = {}
    for module, path in paths.items():
        data = path.read_bytes()
        try:
            imports = imported_modules(ast.parse(data, filename=str(path)), paths)
        except SyntaxError:
            # A file that does not parse makes any step that runs it fail anyway;
            # depending on the whole package keeps its hash honest meanwhile.
            imports = set(paths)
        graph[module] = (hashlib.sha256(data).hexdigest(), frozenset(imports - {module}))
    return graph


def package_graph(root: Path | None = None) -> dict[str, tuple[str, frozenset[str]]]:
    """The import graph of the package at ``root`` (default :data:`PACKAGE_ROOT`)."""
    root = (root or PACKAGE_ROOT).resolve()
    return _graph(root, _signature(root))


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
