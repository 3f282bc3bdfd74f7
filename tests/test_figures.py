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
