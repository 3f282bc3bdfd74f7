"""How methods and numbers read in the book's tables."""

from __future__ import annotations

import math
from typing import Any

from slicelib.config import ModelName
from slicelib.methods import CLASSICAL, is_ddim, method_spec

DETERMINISTIC_MODELS: tuple[ModelName, ...] = ("cnn", "unet", "gan", "gan_improved")


def missing(value: Any) -> bool:
    return value is None or (isinstance(value, float) and math.isnan(value))


def fmt(value: Any, digits: int = 2) -> str:
    """A number with ``digits`` decimals; "-" for a missing one."""
    return "-" if missing(value) else f"{float(value):.{digits}f}"


def fmt_pm(mean: Any, std: Any, digits: int = 2) -> str:
    """ "mean ± std"."""
    if missing(mean):
        return "-"
    return f"{float(mean):.{digits}f} ± {fmt(std, digits)}"


def fmt_ci(low: Any, high: Any, digits: int = 2) -> str:
    """ "[low, high]"."""
    if missing(low) or missing(high):
        return "-"
    return f"[{float(low):.{digits}f}, {float(high):.{digits}f}]"


# Below this a p-value is written as a bound: more digits would claim a precision
# that a test over a few patients (or a bootstrap) does not have.
P_FLOOR = 0.001


def fmt_p(value: Any) -> str:
    """A p-value for a table cell: "0.031", "0.42", or "< 0.001" below :data:`P_FLOOR`."""
    if missing(value):
        return "-"
    value = float(value)
    return f"< {P_FLOOR:g}" if value < P_FLOOR else f"{value:.2g}"


def p_text(value: Any) -> str:
    """A p-value in a sentence: "p = 0.031" or "p < 0.001" ("p -" when missing)."""
    text = fmt_p(value)
    return f"p {text}" if text.startswith("<") else f"p = {text}"


def fmt_tesla(value: Any) -> str:
    """A field strength as scanners are named: "3 T", "1.5 T" (2.89362 reads "3 T",
    gauss converted); "-" when missing."""
    from slicelib.data.criteria import field_strength_tesla

    if missing(value):
        return "-"
    tesla = field_strength_tesla(float(value))
    assert tesla is not None
    # nominal strengths are whole or half tesla
    return f"{round(tesla * 2) / 2:g} T"


def fmt_signed(value: Any, digits: int = 2, unit: str = "") -> str:
    return "-" if missing(value) else f"{float(value):+.{digits}f}{unit}"


def fmt_int(value: Any) -> str:
    return "-" if missing(value) else f"{int(value):,}"


# What the qualitative figures show: every method, or a short list for Fig. 2.
FIGURE_METHODS: tuple[str, ...] = (*CLASSICAL, *DETERMINISTIC_MODELS, "ddpm_ancestral")
SHORT_FIGURE_METHODS: tuple[str, ...] = ("linear", "flow", "unet", "gan_improved", "ddpm_ancestral")


def figure_methods(available: Any, short: bool = False) -> list[str]:
    """The methods a figure shows, among ``available`` (names), in the book's order;
    the DDPM's DDIM variant with the most steps is added to the full list."""
    names = list(available)
    wanted = list(SHORT_FIGURE_METHODS if short else FIGURE_METHODS)
    if not short:
        ddim = sorted(
            (m for m in names if is_ddim(m)),
            key=lambda m: int(getattr(method_spec(m), "steps", 0) or 0),
        )
        wanted += ddim[-1:]
    return [m for m in wanted if m in names]
