"""What the book's figures share; each is drawn in the notebook that shows it, at the width
the book shows it (``PAGE_WIDTH``), as a :class:`StudyFigure` (a PNG without pyplot). Every
colour that encodes a value has a colour bar; panels share an error scale only within a
method family. The comparison of methods on one slice, shown by two notebooks, lives here."""

from __future__ import annotations

import io
from collections.abc import Sequence
from typing import TYPE_CHECKING, Any

import numpy as np
import pandas as pd
from matplotlib.collections import LineCollection, PathCollection
from matplotlib.figure import Figure
from matplotlib.image import AxesImage
from matplotlib.lines import Line2D
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
    if isinstance(artist, Line2D):
        return np.asarray(artist.get_xydata(), dtype=float)
    if isinstance(artist, AxesImage):
        return np.ma.filled(np.ma.asarray(artist.get_array(), dtype=float), np.nan)
    if isinstance(artist, LineCollection):
        return np.concatenate([np.zeros(0)] + [np.ravel(s) for s in artist.get_segments()])
    if isinstance(artist, PathCollection):
        return np.asarray(artist.get_offsets(), dtype=float)
    return None


def _described(kind: str, arrays: list[np.ndarray]) -> str:
    """ "2 Line2D: 8 numbers, mean m, std s" (finite values, :data:`SUMMARY_DIGITS` digits)."""
    values = np.concatenate(arrays)
    finite, head = values[np.isfinite(values)], f"{len(arrays)} {kind}: {values.size} numbers"
    if not finite.size:
        return f"{head}, no finite value"
    # rounded first: no "-0" for a value that rounds to zero
    mean, std = (float(np.round(v, 9)) + 0.0 for v in (finite.mean(), finite.std()))
    return f"{head}, mean {mean:.{SUMMARY_DIGITS}g}, std {std:.{SUMMARY_DIGITS}g}"


def figure_summary(fig: Figure) -> str:
    """A figure as text: its size, then per axes its title and, per kind of artist, how
    many numbers it draws with their mean and standard deviation: the figure's ``text/plain``
    output, which ``make verify`` (nbval) compares where the PNG's pixels may differ."""
    width, height = (float(v) * fig.dpi for v in fig.get_size_inches())
    lines = [f"<{type(fig).__name__} size {width:g}x{height:g} with {len(fig.axes)} Axes>"]
    if fig.get_suptitle():
        lines.append(f"title: {fig.get_suptitle()}")
    for index, ax in enumerate(fig.axes):
        titles = (ax.get_title(loc) for loc in ("left", "center", "right"))
        title = " / ".join(t for t in titles if t)
        drawn: dict[str, list[np.ndarray]] = {}
        for artist in ax.get_children():
            numbers = _drawn_numbers(artist)
            if numbers is not None and numbers.size:
                drawn.setdefault(type(artist).__name__, []).append(numbers.ravel())
        parts = [_described(kind, arrays) for kind, arrays in drawn.items()]
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
        ax.set(xticks=[], yticks=[])
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
    groups = [
        (name, [m for m in methods if (m in members if members else family_of(m) == "ddpm")])
        for name, members in FAMILIES
    ]
    placed = {m for _, chosen in groups for m in chosen}
    groups.append(("other", [m for m in methods if m not in placed]))
    return [(name, chosen) for name, chosen in groups if chosen]


def comparison_figure(
    preds: SlicePredictions,
    methods: Sequence[str],
    zoom: float,
    index: int = 0,
    family: str | None = None,
) -> StudyFigure:
    """Supplement Fig. 1 for one ``family`` of :func:`method_families` (None: every method,
    for a short list): the zoomed ground truth and each method's prediction with its PSNR
    and SSIM (top), their absolute errors on one colour scale with its colour bar (bottom)."""
    shown = list(methods) if family is None else dict(method_families(methods)).get(family, [])
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
        error = central(errors[method], zoom)
        image = axes[1, col].imshow(error, cmap=ERROR_CMAP, vmin=0, vmax=vmax)
    fig.colorbar(image, ax=axes[1, 1:].tolist(), shrink=0.85, label="|error|")
    ref, heading = preds.slices[index], f"{family}: " if family else ""
    where = f"Patient {ref.patient_id}, slice {ref.slice_index} (centre {zoom:.0%} of the field)"
    fig.suptitle(heading + where, fontsize=9)
    return fig
