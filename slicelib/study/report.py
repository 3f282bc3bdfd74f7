"""Numbers for the book's prose: glued in the notebooks with myst-nb, referenced in the
chapters with ``{glue:text}``, so that no number in the prose is typed by hand."""

from __future__ import annotations

import math
from collections.abc import Mapping
from typing import Any


def plain(value: Any) -> Any:
    """``value`` as a plain Python int, float or str (numpy scalars would be glued as
    ``np.float64(...)``, which the book cannot format)."""
    if isinstance(value, bool):
        return str(value).lower()
    if hasattr(value, "item") and callable(value.item):
        value = value.item()
    if isinstance(value, float) and not math.isfinite(value):
        return "n/a"
    if isinstance(value, (int, float, str)):
        return value
    return str(value)


def glue_values(values: Mapping[str, Any]) -> None:
    """Glue each value under its key, without displaying it."""
    from myst_nb import glue

    for key, value in values.items():
        glue(key, plain(value), display=False)
