"""What the book's figures share; each figure is drawn in the notebook that shows it.

Figures are drawn at the width the book shows them (``PAGE_WIDTH`` inches), so that
their text is legible without zooming, as a :class:`StudyFigure` (a PNG without
pyplot); every colour that encodes a value has a colour bar; panels share a colour
scale only within a method family, whose errors are alike. The comparison of methods
on one slice is shown by two notebooks and lives here.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import TYPE_CHECKING, Any

import numpy as np
import pandas as pd
from matplotlib.figure import Figure
from matplotlib.ticker import MaxNLocator

from slicelib.methods import CLASSICAL, DETERMINISTIC_MODELS, family_of, method_label

if TYPE_CHECKING:
    from slicelib.evaluate import SlicePredictions

ERROR_CMAP = "inferno"
DPI = 110
# The width of the book's text column, in inches at DPI: figures are drawn at it.
PAGE_WIDTH = 7.5
# The method families of Fig. 1; each gets its own error colour scale.
FAMILIES: tuple[tuple[str, tuple[str, ...]], ...] = (
    ("classical interpolation", CLASSICAL),
    ("deterministic networks", DETERMINISTIC_MODELS),
    ("motion-compensated network (extension)", ("mcnet",)),
    ("diffusion (DDPM)", ()),  # every method of the DDPM family
)


class StudyFigure(Figure):
    """A matplotlib Figure that notebooks display as a PNG without pyplot; its text
    form (:func:`figure_summary`) states the numbers it draws."""

    def _repr_png_(self) -> bytes:
        import io

        buffer = io.BytesIO()
        self.savefig(buffer, format="png", dpi=DPI, bbox_inches="tight")
        return buffer.getvalue()

    def __repr__(self) -> str:
        return figure_summary(self)


# Significant digits of a figure's summary: those of the tables' printed numbers.
SUMMARY_DIGITS = 4


def _drawn_numbers(artist: Any) -> np.ndarray | None:
    """The numbers an artist draws: a line's points, an image's pixels, a scatter's
    points, a line collection's segments (error bars, ``hlines``); None for others."""
    from matplotlib.collections import LineCollection, PathCollection
    from matplotlib.image import AxesImage
    from matplotlib.lines import Line2D

    if isinstance(artist, Line2D):
        return np.asarray(artist.get_xydata(), dtype=float)
    if isinstance(artist, AxesImage):
        return np.ma.filled(np.ma.asarray(artist.get_array(), dtype=float), np.nan)
    if isinstance(artist, LineCollection):
        segments = [np.asarray(s, dtype=float).ravel() for s in artist.get_segments()]
        return np.concatenate(segments) if segments else np.zeros(0)
    if isinstance(artist, PathCollection):
        return np.asarray(artist.get_offsets(), dtype=float)
    return None


def _number(value: float) -> str:
    value = float(np.round(value, 9)) + 0.0  # no "-0" for a value that rounds to zero
    return f"{value:.{SUMMARY_DIGITS}g}"


def figure_summary(fig: Figure) -> str:
    """A figure as text: its size, then per axes its title and, per kind of artist, how
    many numbers it draws with their mean and standard deviation.

    The executed notebooks keep it as the figure's ``text/plain`` output beside the
    PNG; ``make verify`` (nbval) compares it, so a figure whose numbers change fails
    the check while the PNG, which nbval does not compare, may differ in its pixels.
    """
    width, height = (float(v) * fig.dpi for v in fig.get_size_inches())
    lines = [f"<{type(fig).__name__} size {width:g}x{height:g} with {len(fig.axes)} Axes>"]
    suptitle = fig.get_suptitle()
    if suptitle:
        lines.append(f"title: {suptitle}")
    for index, ax in enumerate(fig.axes):
        title = " / ".join(t for t in (ax.get_title(loc) for loc in ("left", "center", "right")) if t)
        drawn: dict[str, list[np.ndarray]] = {}
        for artist in ax.get_children():
            numbers = _drawn_numbers(artist)
            if numbers is not None and numbers.size:
                drawn.setdefault(type(artist).__name__, []).append(numbers.ravel())
        parts = []
        for kind, arrays in drawn.items():
            values = np.concatenate(arrays)
            finite = values[np.isfinite(values)]
            stats = (
                f"mean {_number(finite.mean())}, std {_number(finite.std())}"
                if finite.size
                else "no finite value"
            )
            parts.append(f"{len(arrays)} {kind}: {values.size} numbers, {stats}")
        if title or parts:
            heading = f"axes {index + 1}" + (f" ({title!r})" if title else "")
            lines.append(f"{heading}: " + ("; ".join(parts) or "no data"))
    return "\n".join(lines)


def panels(
    rows: int, cols: int, width: float = 2.2, height: float = 2.2
) -> tuple[StudyFigure, np.ndarray]:
    fig = StudyFigure(figsize=(width * cols, height * rows), layout="constrained")
    axes = np.atleast_2d(fig.subplots(rows, cols, squeeze=False))
    for ax in axes.flat:
        ax.set_xticks([])
        ax.set_yticks([])
    return fig, axes


def epoch_axis(ax: Any, epochs: Sequence[int] | np.ndarray | pd.Series) -> None:
    """Integer epoch ticks; a run of one epoch is shown as that single tick, not
    spread over a fractional range."""
    values = np.unique(np.asarray(epochs, dtype=int))
    ax.xaxis.set_major_locator(MaxNLocator(integer=True))
    if values.size == 1:
        ax.set_xticks(values)
        ax.set_xlim(values[0] - 1, values[0] + 1)
    ax.set_xlabel("epoch")


def central(image: np.ndarray, fraction: float) -> np.ndarray:
    """The central ``fraction`` of an image (H, W) along each side."""
    h, w = image.shape
    dh, dw = int(round(h * (1 - fraction) / 2)), int(round(w * (1 - fraction) / 2))
    return image[dh : h - dh or None, dw : w - dw or None]


def scores(pred: np.ndarray, target: np.ndarray) -> str:
    """ "31.20 dB, 0.912": PSNR and SSIM of a prediction (H, W) in [0, 1]."""
    from slicelib.metrics import psnr, ssim

    return f"{psnr(pred, target, 1.0):.2f} dB, {ssim(pred, target, 1.0):.3f}"


def method_families(methods: Sequence[str]) -> list[tuple[str, list[str]]]:
    """``methods`` grouped by family (classical, deterministic networks, diffusion,
    then any other), in the given order; empty families left out."""
    groups: list[tuple[str, list[str]]] = []
    placed: set[str] = set()
    for name, members in FAMILIES:
        chosen = [m for m in methods if (family_of(m) == "ddpm" if not members else m in members)]
        placed |= set(chosen)
        if chosen:
            groups.append((name, chosen))
    others = [m for m in methods if m not in placed]
    if others:
        groups.append(("other", others))
    return groups


def comparison_figure(
    preds: SlicePredictions,
    methods: Sequence[str],
    zoom: float,
    index: int = 0,
    family: str | None = None,
) -> StudyFigure:
    """Supplement Fig. 1, one method family per figure: the zoomed ground truth and
    each method's prediction (top), their absolute error maps (bottom) on the
    family's colour scale with its colour bar, each with PSNR and SSIM.

    ``family`` picks one family of :func:`method_families` by name; None: every
    method on one figure (for a short list). Drawn at page width.
    """
    groups = dict(method_families(methods))
    shown = list(groups.get(family, [])) if family is not None else list(methods)
    if not shown:
        raise ValueError(f"no method of family {family!r} among {list(methods)}")
    target = preds.targets[index]
    cols = len(shown) + 1
    side = min(PAGE_WIDTH / cols, 2.0)
    fig, axes = panels(2, cols, side, side * 1.12)
    errors = {m: np.abs(preds.predictions[m][index] - target) for m in shown}
    vmax = max(float(np.percentile(e, 99.5)) for e in errors.values()) or 1.0
    axes[0, 0].imshow(central(target, zoom), cmap="gray", vmin=0, vmax=1)
    axes[0, 0].set_title("ground truth", fontsize=8)
    axes[1, 0].axis("off")
    image: Any = None
    for col, method in enumerate(shown, start=1):
        pred = preds.predictions[method][index]
        axes[0, col].imshow(central(pred, zoom), cmap="gray", vmin=0, vmax=1)
        axes[0, col].set_title(f"{method_label(method)}\n{scores(pred, target)}", fontsize=8)
        image = axes[1, col].imshow(
            central(errors[method], zoom), cmap=ERROR_CMAP, vmin=0, vmax=vmax
        )
    fig.colorbar(image, ax=axes[1, 1:].tolist(), shrink=0.85, label="|error|")
    ref = preds.slices[index]
    where = f"Patient {ref.patient_id}, slice {ref.slice_index}"
    heading = f"{family}: " if family else ""
    fig.suptitle(f"{heading}{where} (centre {zoom:.0%} of the field)", fontsize=9)
    return fig
