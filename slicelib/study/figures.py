"""The book's figures (matplotlib). Each function returns a Figure; notebooks show it.

Figures are drawn at the width the book shows them (``PAGE_WIDTH`` inches), so that
their text is legible without zooming; every colour that encodes a value has a
colour bar; panels share a colour scale only within a method family, whose errors
are alike.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from typing import TYPE_CHECKING, Any

import numpy as np
import pandas as pd
from matplotlib.figure import Figure
from matplotlib.ticker import MaxNLocator

from slicelib.methods import CLASSICAL, family_of, method_label
from slicelib.study.labels import DETERMINISTIC_MODELS

if TYPE_CHECKING:
    from slicelib.data.cache import Cache
    from slicelib.evaluate import SlicePredictions
    from slicelib.results import Results
    from slicelib.study.analysis import Samples

ERROR_CMAP = "inferno"
DPI = 110
# The width of the book's text column, in inches at DPI: figures are drawn at it.
PAGE_WIDTH = 7.5
# The method families of Fig. 1; each gets its own error colour scale.
FAMILIES: tuple[tuple[str, tuple[str, ...]], ...] = (
    ("classical interpolation", CLASSICAL),
    ("deterministic networks", DETERMINISTIC_MODELS),
    ("diffusion (DDPM)", ()),  # every method of the DDPM family
)


class StudyFigure(Figure):
    """A matplotlib Figure that notebooks display as a PNG without pyplot."""

    def _repr_png_(self) -> bytes:
        import io

        buffer = io.BytesIO()
        self.savefig(buffer, format="png", dpi=DPI, bbox_inches="tight")
        return buffer.getvalue()


def _figure(
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


def _zoom(image: np.ndarray, zoom: float) -> np.ndarray:
    """The central ``zoom`` fraction of an image (H, W) along each side."""
    h, w = image.shape
    dh, dw = int(round(h * (1 - zoom) / 2)), int(round(w * (1 - zoom) / 2))
    return image[dh : h - dh or None, dw : w - dw or None]


def example_slices(
    cache: Cache, patient: str, positions: Sequence[float] = (0.2, 0.4, 0.6, 0.8)
) -> StudyFigure:
    """Axial slices of one volume at relative ``positions``, and a sagittal reformat
    through the volume's centre (through-plane resolution shows there)."""
    volume = np.asarray(cache.volume(patient), dtype=np.float32)
    n = volume.shape[0]
    fig, axes = _figure(1, len(positions) + 1, 2.4, 2.6)
    for ax, position in zip(axes[0], positions):
        index = int(round(position * (n - 1)))
        ax.imshow(volume[index], cmap="gray", vmin=0, vmax=1)
        ax.set_title(f"slice {index} of {n}", fontsize=9)
    sagittal = volume[:, :, volume.shape[2] // 2]
    ax = axes[0, -1]
    ax.imshow(sagittal, cmap="gray", vmin=0, vmax=1, aspect=volume.shape[1] / n)
    ax.set_title("sagittal reformat", fontsize=9)
    fig.suptitle(f"Patient {patient}", fontsize=10)
    return fig


def training_curves(history: pd.DataFrame, best_epoch: int, title: str) -> StudyFigure:
    """Training and validation loss, validation PSNR and SSIM per epoch."""
    fig = StudyFigure(figsize=(PAGE_WIDTH, 2.6), layout="constrained")
    loss, psnr, ssim = fig.subplots(1, 3)
    epochs = history["epoch"]
    loss.plot(epochs, history["train_loss"], "o-", label="train")
    loss.plot(epochs, history["val_loss"], "s-", label="validation")
    loss.set_title("loss")
    loss.legend(fontsize=7)
    psnr.plot(epochs, history["val_psnr"], "o-")
    psnr.set_title("validation PSNR (dB)")
    ssim.plot(epochs, history["val_ssim"], "o-")
    ssim.set_title("validation SSIM (Gaussian)")
    for ax in (loss, psnr, ssim):
        ax.axvline(best_epoch, color="grey", linestyle=":", label="best")
        epoch_axis(ax, epochs)
        ax.grid(alpha=0.3)
        ax.title.set_fontsize(9)
        ax.tick_params(labelsize=7)
    fig.suptitle(title, fontsize=10)
    return fig


def _scores(pred: np.ndarray, target: np.ndarray) -> str:
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
    fig, axes = _figure(2, cols, side, side * 1.12)
    errors = {m: np.abs(preds.predictions[m][index] - target) for m in shown}
    vmax = max(float(np.percentile(e, 99.5)) for e in errors.values()) or 1.0
    axes[0, 0].imshow(_zoom(target, zoom), cmap="gray", vmin=0, vmax=1)
    axes[0, 0].set_title("ground truth", fontsize=8)
    axes[1, 0].axis("off")
    image: Any = None
    for col, method in enumerate(shown, start=1):
        pred = preds.predictions[method][index]
        axes[0, col].imshow(_zoom(pred, zoom), cmap="gray", vmin=0, vmax=1)
        axes[0, col].set_title(f"{method_label(method)}\n{_scores(pred, target)}", fontsize=8)
        image = axes[1, col].imshow(_zoom(errors[method], zoom), cmap=ERROR_CMAP, vmin=0, vmax=vmax)
    fig.colorbar(image, ax=axes[1, 1:].tolist(), shrink=0.85, label="|error|")
    ref = preds.slices[index]
    where = f"Patient {ref.patient_id}, slice {ref.slice_index}"
    heading = f"{family}: " if family else ""
    fig.suptitle(f"{heading}{where} (centre {zoom:.0%} of the field)", fontsize=9)
    return fig


def levels_figure(preds: SlicePredictions, methods: Sequence[str], zoom: float) -> StudyFigure:
    """Supplement Fig. 2: the same comparison at several anatomical levels (one pair of
    rows, predictions and error maps, per level)."""
    levels = len(preds.slices)
    cols = len(methods) + 1
    side = min(PAGE_WIDTH / cols, 1.9)
    fig, axes = _figure(2 * levels, cols, side, side * 1.1)
    for level in range(levels):
        target = preds.targets[level]
        top, bottom = axes[2 * level], axes[2 * level + 1]
        ref = preds.slices[level]
        top[0].imshow(_zoom(target, zoom), cmap="gray", vmin=0, vmax=1)
        top[0].set_title(
            f"truth, slice {ref.slice_index}\n(position {ref.position:.2f})", fontsize=7
        )
        bottom[0].axis("off")
        errors = {m: np.abs(preds.predictions[m][level] - target) for m in methods}
        vmax = max(float(np.percentile(e, 99.5)) for e in errors.values()) or 1.0
        for col, method in enumerate(methods, start=1):
            pred = preds.predictions[method][level]
            top[col].imshow(_zoom(pred, zoom), cmap="gray", vmin=0, vmax=1)
            top[col].set_title(f"{method_label(method)}\n{_scores(pred, target)}", fontsize=7)
            image = bottom[col].imshow(
                _zoom(errors[method], zoom), cmap=ERROR_CMAP, vmin=0, vmax=vmax
            )
        fig.colorbar(image, ax=bottom[1:].tolist(), shrink=0.85, label="|error|")
    return fig


def validation_curves(histories: Mapping[tuple[str, int], pd.DataFrame]) -> StudyFigure:
    """Validation SSIM per epoch of every run: solid k=1, dashed k=2."""
    fig = StudyFigure(figsize=(PAGE_WIDTH, 3.0), layout="constrained")
    ssim_ax, loss_ax = fig.subplots(1, 2)
    colours: dict[str, str] = {}
    epochs: list[int] = []
    for (model, k), history in histories.items():
        colour = colours.setdefault(model, f"C{len(colours)}")
        style = "-" if k == 1 else "--"
        label = f"{method_label(model)}, k={k}"
        epochs += [int(e) for e in history["epoch"]]
        ssim_ax.plot(history["epoch"], history["val_ssim"], style, color=colour, marker="o",
                     markersize=3, label=label)  # fmt: skip
        loss_ax.plot(history["epoch"], history["val_loss"], style, color=colour, marker="o",
                     markersize=3, label=label)  # fmt: skip
    ssim_ax.set_title("validation SSIM (Gaussian)", fontsize=9)
    loss_ax.set_title("validation loss", fontsize=9)
    for ax in (ssim_ax, loss_ax):
        epoch_axis(ax, epochs)
        ax.grid(alpha=0.3)
        ax.tick_params(labelsize=7)
    handles, names = loss_ax.get_legend_handles_labels()
    # Below the panels, so that no line is hidden behind it.
    fig.legend(handles, names, loc="outside lower center", ncol=4, fontsize=7)
    return fig


def binned_curves(
    tables: Mapping[int, pd.DataFrame],
    methods: Sequence[str],
    xlabel: str,
    ylabel: str = "PSNR (dB)",
) -> StudyFigure:
    """One panel per k: a metric per bin (rows) for each method (columns)."""
    fig = StudyFigure(figsize=(PAGE_WIDTH, 3.0), layout="constrained")
    axes = np.atleast_1d(fig.subplots(1, len(tables), sharey=True))
    for ax, (k, table) in zip(axes, tables.items()):
        for method in methods:
            if method in table.columns:
                ax.plot(table.index, table[method], "o-", label=method_label(method))
        ax.set_title(f"k={k}")
        ax.set_xlabel(xlabel)
        ax.grid(alpha=0.3)
    axes[0].set_ylabel(ylabel)
    axes[-1].legend(fontsize=7)
    return fig


def ddpm_figure(linear: np.ndarray, ddpm: np.ndarray, target: np.ndarray) -> StudyFigure:
    """Supplement Fig. 3: linear | DDPM | ground truth | DDPM error map, with scores."""
    fig, axes = _figure(1, 4, PAGE_WIDTH / 4, PAGE_WIDTH / 4 * 1.15)
    axes[0, 0].imshow(linear, cmap="gray", vmin=0, vmax=1)
    axes[0, 0].set_title(f"linear\n{_scores(linear, target)}", fontsize=8)
    axes[0, 1].imshow(ddpm, cmap="gray", vmin=0, vmax=1)
    axes[0, 1].set_title(f"DDPM (ancestral)\n{_scores(ddpm, target)}", fontsize=8)
    axes[0, 2].imshow(target, cmap="gray", vmin=0, vmax=1)
    axes[0, 2].set_title("ground truth", fontsize=8)
    image = axes[0, 3].imshow(np.abs(ddpm - target), cmap=ERROR_CMAP, vmin=0)
    axes[0, 3].set_title("|DDPM - truth|", fontsize=8)
    fig.colorbar(image, ax=axes[0, 3], shrink=0.8, label="|error|")
    return fig


def samples_figure(samples: Samples) -> StudyFigure:
    """Several DDPM samples of one slice with their scores, their per-pixel standard
    deviation, and the ground truth."""
    n = len(samples.samples)
    side = min(PAGE_WIDTH / (n + 2), 2.1)
    fig, axes = _figure(1, n + 2, side, side * 1.15)
    for i in range(n):
        axes[0, i].imshow(samples.samples[i], cmap="gray", vmin=0, vmax=1)
        axes[0, i].set_title(
            f"sample {i + 1}\n{samples.psnr[i]:.2f} dB, {samples.ssim[i]:.3f}", fontsize=7
        )
    image = axes[0, n].imshow(samples.samples.std(axis=0), cmap=ERROR_CMAP, vmin=0)
    axes[0, n].set_title("per-pixel std", fontsize=7)
    fig.colorbar(image, ax=axes[0, n], shrink=0.7, label="std")
    axes[0, n + 1].imshow(samples.target, cmap="gray", vmin=0, vmax=1)
    axes[0, n + 1].set_title("ground truth", fontsize=7)
    return fig


def std_vs_error(std: Mapping[str, np.ndarray], method: str) -> StudyFigure:
    """Per test slice: the mean per-pixel std across DDPM samples against the error of
    their mean (left); the example maps the evaluation kept (right)."""
    fig = StudyFigure(figsize=(PAGE_WIDTH, 2.4), layout="constrained")
    grid = fig.add_gridspec(1, 4)
    ax = fig.add_subplot(grid[0, 0])
    ax.scatter(std[f"{method}/std_mean"], std[f"{method}/abs_err_mean"], s=10)
    ax.set_xlabel("mean per-pixel std", fontsize=8)
    ax.set_ylabel("MAE of the sample mean", fontsize=8)
    ax.tick_params(labelsize=7)
    ax.grid(alpha=0.3)
    if f"{method}/example_mean" in std:
        for col, (key, title) in enumerate(
            (("example_mean", "mean of samples"), ("example_std", "std of samples"),
             ("example_target", "ground truth")), start=1,
        ):  # fmt: skip
            sub = fig.add_subplot(grid[0, col])
            image = std[f"{method}/{key}"][0]
            cmap = ERROR_CMAP if key == "example_std" else "gray"
            shown = sub.imshow(image, cmap=cmap, vmin=0, vmax=None if key == "example_std" else 1)
            if key == "example_std":
                fig.colorbar(shown, ax=sub, shrink=0.8, label="std")
            sub.set_title(title, fontsize=8)
            sub.set_xticks([])
            sub.set_yticks([])
    return fig


def gains(res: Results, metric: str, baseline: str = "linear", seed: int = 0) -> pd.DataFrame:
    """Per method (rows, in ``res.methods`` order, baseline left out): the paired gain
    ``metric(method) - metric(baseline)`` as the mean of per-patient mean differences on
    the slices both scored, with its 95 % bootstrap interval over patients
    (:func:`slicelib.stats.compare`; no interval below the minimum number of patients).

    Columns ``gain, low, high, n_slices``.
    """
    from slicelib.stats import compare

    out = []
    for method in res.methods:
        if method == baseline:
            continue
        c = compare(res.rows, method, baseline, metric, seed=seed)
        out.append({"method": method, "gain": c.gain, "low": c.ci_low, "high": c.ci_high,
                    "n_slices": c.n_slices})  # fmt: skip
    return pd.DataFrame(out).set_index("method")


def method_gains(
    results: Sequence[Results], methods: Sequence[str], baseline: str = "linear"
) -> StudyFigure:
    """The change of PSNR (dB) and SSIM over ``baseline`` per method, one dot with its
    95 % patient-bootstrap interval per k, on the slices each method shares with
    the baseline; the dashed line at 0 is the baseline."""
    shown = [m for m in methods if m != baseline]
    fig = StudyFigure(figsize=(PAGE_WIDTH, 0.42 * len(shown) + 1.1), layout="constrained")
    axes = fig.subplots(1, 2, sharey=True)
    y = np.arange(len(shown))
    offsets = np.linspace(-0.15, 0.15, len(results)) if len(results) > 1 else [0.0]
    markers = ("o", "s", "^", "D")
    for j, res in enumerate(results):
        for ax, metric in zip(axes, ("psnr", "ssim")):
            table = gains(res, metric, baseline).reindex(shown)
            err = np.abs(np.array([table["gain"] - table["low"], table["high"] - table["gain"]]))
            ax.errorbar(table["gain"], y + offsets[j], xerr=err, fmt=markers[j % len(markers)],
                        color=f"C{j}", capsize=2, markersize=4, label=f"k={res.k}")  # fmt: skip
    for ax, title in zip(axes, ("PSNR change (dB)", "SSIM change")):
        ax.axvline(0.0, color="grey", linestyle="--", linewidth=1)
        ax.set_xlabel(f"{title} over {method_label(baseline)}", fontsize=8)
        ax.grid(axis="x", alpha=0.3)
        ax.tick_params(labelsize=7)
    axes[0].set_yticks(y, [method_label(m) for m in shown], fontsize=8)
    axes[0].invert_yaxis()
    axes[1].legend(fontsize=7, loc="best")
    return fig
