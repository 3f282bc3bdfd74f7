"""A pytest plugin for ``slicelib verify``: glued wall-clock values left out of nbval's
comparison.

A glued value's output holds only the value (``3.52``); its name (``k1_unet_ms``)
lives in the output's metadata, which nbval does not compare and its regex sanitizer
does not see. Lines ``glue: REGEX`` of the sanitizer file name the glued values that
are wall clock; their outputs are compared as a placeholder on both sides.
"""

from __future__ import annotations

import re
from pathlib import Path
from typing import Any

import pytest

PLACEHOLDER = "WALL-CLOCK"


def glue_patterns(text: str) -> list[re.Pattern[str]]:
    """The ``glue: REGEX`` lines of a sanitizer file."""
    return [re.compile(m) for m in re.findall(r"^glue: (.*)$", text, flags=re.MULTILINE)]


def blank_glued(outputs: list[Any], patterns: list[re.Pattern[str]]) -> list[Any]:
    """``outputs`` with the data of each glued output whose name matches replaced."""
    blanked = []
    for output in outputs:
        name = ((output.get("metadata") or {}).get("scrapbook") or {}).get("name")
        if name and any(p.search(name) for p in patterns) and "data" in output:
            output = {**output, "data": dict.fromkeys(output["data"], PLACEHOLDER)}
        blanked.append(output)
    return blanked


def pytest_configure(config: pytest.Config) -> None:
    from nbval.plugin import IPyNbCell

    path = getattr(config.option, "nbval_sanitize_with", None)
    patterns = glue_patterns(Path(path).read_text()) if path else []
    if not patterns:
        return
    compare = IPyNbCell.compare_outputs

    def compare_outputs(self: Any, test: Any, ref: Any, skip_compare: Any = None) -> bool:
        return compare(self, blank_glued(test, patterns), blank_glued(ref, patterns), skip_compare)

    IPyNbCell.compare_outputs = compare_outputs  # type: ignore[method-assign]
