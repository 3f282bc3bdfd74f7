"""The book's figures: families, epoch axes, gains over the baseline."""

from __future__ import annotations

import numpy as np
import pandas as pd
import pytest

from slicelib.study import figures


def test_method_families_group_in_order() -> None:
    methods = ["linear", "unet", "ddpm_ancestral", "cnn", "mcnet", "flow", "refine_mean2"]
    assert figures.method_families(methods) == [
        ("classical interpolation", ["linear", "flow"]),
        ("deterministic networks", ["unet", "cnn"]),
        ("motion-compensated network (extension)", ["mcnet"]),
        ("diffusion (DDPM)", ["ddpm_ancestral"]),
        ("other", ["refine_mean2"]),
    ]


@pytest.mark.parametrize(("epochs", "ticks"), [([1], [1]), ([1, 2, 3], [1, 2, 3])])
def test_epoch_ticks_are_integers(epochs: list[int], ticks: list[int]) -> None:
    fig = figures.StudyFigure()
    ax = fig.subplots()
    ax.plot(epochs, np.ones(len(epochs)))
    figures.epoch_axis(ax, epochs)
    fig.canvas.draw()
    shown = [t for t in ax.get_xticks() if ax.get_xlim()[0] <= t <= ax.get_xlim()[1]]
    assert all(float(t).is_integer() for t in shown)
    assert set(ticks) <= set(int(t) for t in shown)


def test_gains_are_paired_differences_on_shared_slices() -> None:
    """The gains the book plots and tables are the summary's: per patient, on the slices
    both methods scored."""
    from slicelib.results import Results
    from slicelib.stats import summarize
    from slicelib.study.analysis import gain_table

    rows = pd.DataFrame(
        {
            "method": ["linear"] * 4 + ["unet"] * 4 + ["ddpm"] * 2,
            "patient_id": ["a", "a", "b", "b"] * 2 + ["a", "b"],
            "slice_index": [1, 2, 1, 2] * 2 + [1, 1],
            "psnr": [20, 22, 24, 26, 21, 24, 24, 27, 10, 14],
            "ssim": np.linspace(0.5, 0.9, 10),
        }
    ).assign(ssim_gauss=0.5, mae=0.1, ms_per_slice=1.0)
    summary = summarize(rows).set_index("method")
    assert summary.loc["unet", "psnr_gain_db"] == pytest.approx(1.0)  # (1 + 2 + 0 + 1) / 4
    assert summary.loc["ddpm", "psnr_gain_db"] == pytest.approx(-10.0)  # (10-20 + 14-24) / 2
    # two patients are below the minimum for an interval: the gain is shown without one
    assert np.isnan(summary.loc["unet", "psnr_gain_ci_low"])
    res = Results(rows=rows, summary=summary.reset_index(), info={}, k=1)
    table = gain_table([res])
    assert list(table.index) == ["linear", "U-Net", "DDPM"]
    assert table.loc["U-Net", "k=1: gain (dB)"] == "+1.00"
    assert table.loc["U-Net", "k=1: 95 % CI"] == "-"


def test_summary_states_the_numbers_drawn() -> None:
    fig = figures.StudyFigure(figsize=(2, 1), dpi=100)
    ax, empty = fig.subplots(1, 2)
    ax.plot([0.0, 0.0], [-1e-12, 0.0])  # rounds to 0, not "-0" or "-2.5e-13"
    ax.imshow(np.full((2, 2), np.nan))
    ax.hlines([1.0], 0, 2)
    ax.set_title("left", loc="left")
    fig.suptitle("both")
    lines = figures.figure_summary(fig).splitlines()
    assert lines[0] == "<StudyFigure size 200x100 with 2 Axes>" and lines[1] == "title: both"
    assert lines[2] == (
        "axes 1 ('left'): 1 Line2D: 4 numbers, mean 0, std 0; "
        "1 AxesImage: 4 numbers, no finite value; 1 LineCollection: 4 numbers, mean 1, std 0.7071"
    )
    assert len(lines) == 3  # the empty axes, untitled, are left out
    assert repr(fig) == figures.figure_summary(fig)


def test_central_keeps_the_middle() -> None:
    image = np.arange(100.0).reshape(10, 10)
    assert figures.central(image, 1.0).shape == (10, 10)
    middle = figures.central(image, 0.6)
    assert middle.shape == (6, 6) and middle[0, 0] == image[2, 2]


def test_comparison_figure_one_family_per_figure() -> None:
    from slicelib.evaluate import SlicePredictions, SliceRef

    target = np.full((1, 8, 8), 0.5, dtype=np.float32)
    predictions = {m: target + d for m, d in (("linear", 0.1), ("unet", 0.05), ("flow", 0.2))}
    ref = SliceRef("P1", 4, 0.5)
    preds = SlicePredictions([ref], target[:, None].repeat(2, 1), target, predictions)
    fig = figures.comparison_figure(preds, list(predictions), 1.0, family="classical interpolation")
    assert fig.get_suptitle().startswith("classical interpolation: Patient P1, slice 4")
    titles = [ax.get_title() for ax in fig.axes]
    assert titles[0] == "ground truth" and titles[1].startswith("linear\n20.00 dB, ")
    assert titles[2] == "optical flow\n" + figures.scores(predictions["flow"][0], target[0])
    assert "U-Net" not in " ".join(titles)
    with pytest.raises(ValueError, match="no method of family"):
        figures.comparison_figure(preds, ["unet"], 1.0, family="classical interpolation")
