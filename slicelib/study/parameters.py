"""Notebook parameters: their types, checked in one place.

Every notebook starts with a papermill ``parameters`` cell of plain values and
turns them into a typed :class:`~slicelib.study.workspace.Study` in the next
cell. The runner checks the values it injects against the same table, so that a
wrong type stops with one line naming the notebook and the parameter.
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

from slicelib.errors import SlicelibError

# name -> accepted Python types (``type(None)`` for an optional value).
PARAMETER_TYPES: dict[str, tuple[type, ...]] = {
    "preset": (str,),
    "out_dir": (str, type(None)),
    "data_root": (str, type(None)),
    "model": (str,),
    "k": (int,),
    "device": (str,),
    "seed": (int,),
    "samples": (int,),
    "zoom": (float, int),
}

# Parameters the runner sets itself, for every notebook that declares them.
RUNNER_PARAMETERS: tuple[str, ...] = ("preset", "out_dir", "data_root")
# Parameters the runner sets per copy of the train notebook.
TRAIN_PARAMETERS: tuple[str, ...] = ("model", "k")


def _type_names(types: tuple[type, ...]) -> str:
    names = ["None" if t is type(None) else t.__name__ for t in types]
    return " or ".join(names)


def check_parameter(notebook: str, name: str, value: Any) -> None:
    """Raise a one-line :class:`SlicelibError` unless ``value`` has ``name``'s type.

    ``bool`` is not accepted where an ``int`` is expected; an ``int`` is accepted
    where a ``float`` is.
    """
    types = PARAMETER_TYPES.get(name)
    if types is None:
        raise SlicelibError(
            f"notebook {notebook!r}: unknown parameter {name!r} "
            f"(known: {', '.join(sorted(PARAMETER_TYPES))})"
        )
    ok = isinstance(value, types) and not (isinstance(value, bool) and bool not in types)
    if not ok:
        raise SlicelibError(
            f"notebook {notebook!r}: parameter {name!r} must be {_type_names(types)} "
            f"(got {type(value).__name__} {value!r})"
        )


def check_parameters(notebook: str, values: Mapping[str, Any]) -> dict[str, Any]:
    """Check every parameter of ``notebook``; returns them as a plain dict."""
    for name, value in values.items():
        check_parameter(notebook, name, value)
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
