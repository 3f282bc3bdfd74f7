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
    """A matplotlib Figure that notebooks display as a PNG without pyplot."""

    def _repr_png_(self) -> bytes:
        import io

        buffer = io.BytesIO()
        self.savefig(buffer, format="png", dpi=DPI, bbox_inches="tight")
        return buffer.getvalue()


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
