"""Notebook parameters: read from the notebooks themselves, checked in one place.

Every notebook starts with a papermill ``parameters`` cell of annotated values with
inline help (``k: int = 1  # the neighbour distance``), which is what
``papermill --help-notebook`` shows. :func:`notebook_parameters` reads that cell with
:func:`papermill.inspect_notebook`; the runner checks the values it injects, and
:meth:`~slicelib.study.workspace.Study.from_notebook` the values a notebook received,
against those annotations, so that a wrong type stops with one line naming the
notebook and the parameter.
"""

from __future__ import annotations

import ast
import functools
import re
from collections.abc import Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from slicelib.errors import SlicelibError

# Parameters the runner sets itself, for every notebook that declares them.
RUNNER_PARAMETERS: tuple[str, ...] = ("preset", "out_dir", "data_root")
# Parameters the runner sets per copy of the train notebook.
TRAIN_PARAMETERS: tuple[str, ...] = ("model", "k")

# The annotations a parameters cell may use. papermill reads ``Optional[str]`` but not
# ``str | None`` (its pattern stops at ``|``), so optional values are ``Optional[...]``.
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
    """The parameters of the notebook at ``source``, in the order they are declared.

    Raises a one-line :class:`SlicelibError` when the notebook has no ``parameters``
    cell or a default is not a plain literal.
    """
    return dict(_read_parameters(Path(source).resolve(), Path(source).stat().st_mtime_ns))


@functools.lru_cache(maxsize=64)
def _read_parameters(source: Path, mtime_ns: int) -> tuple[tuple[str, NotebookParameter], ...]:
    import nbformat
    import papermill

    nb = nbformat.read(source, as_version=4)
    if not any("parameters" in c.metadata.get("tags", []) for c in nb.cells):
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
    """Raise a one-line :class:`SlicelibError` unless ``value`` has ``parameter``'s type.

    ``bool`` is not accepted where an ``int`` is expected; an ``int`` is accepted
    where a ``float`` is.
    """
    types = parameter.types
    if float in types:
        types = (*types, int)
    ok = isinstance(value, types) and not (isinstance(value, bool) and bool not in types)
    if not ok:
        raise SlicelibError(
            f"notebook {notebook!r}: parameter {parameter.name!r} must be "
            f"{parameter.annotation} (got {type(value).__name__} {value!r})"
        )


def check_parameters(
    notebook: str, values: Mapping[str, Any], source: Path | None = None
) -> dict[str, Any]:
    """Check every value against the parameters of ``notebook``; returns them as a dict.

    ``source`` is the notebook file (default: ``notebooks/<notebook>.ipynb`` of the
    checkout, see :func:`~slicelib.study.book.find_source_root`).
    """
    if source is None:
        from slicelib.study.book import find_source_root

        source = find_source_root() / "notebooks" / f"{notebook}.ipynb"
    declared = notebook_parameters(source)
    for name, value in values.items():
        if name not in declared:
            raise SlicelibError(
                f"notebook {notebook!r}: unknown parameter {name!r} (known: {', '.join(declared)})"
            )
        check_parameter(notebook, declared[name], value)
    return dict(values)


def parse_assignment(text: str) -> tuple[str | None, str, Any]:
    """Parse ``[NOTEBOOK.]NAME=VALUE`` from the command line.

    VALUE is read as YAML (``3`` is an int, ``0.5`` a float, ``null`` None, ``cuda``
    a string), as papermill's ``-y`` reads it. Returns (notebook or None, name, value).
    """
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
