"""The book's figures: families, epoch axes, gains over the baseline."""

from __future__ import annotations

from types import SimpleNamespace

import numpy as np
import pandas as pd
import pytest

from slicelib.study import figures


def test_method_families_group_in_order() -> None:
    methods = ["linear", "unet", "ddpm_ancestral", "cnn", "flow", "refine_mean2"]
    assert figures.method_families(methods) == [
        ("classical interpolation", ["linear", "flow"]),
        ("deterministic networks", ["unet", "cnn"]),
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
    rows = pd.DataFrame(
        {
            "method": ["linear"] * 4 + ["unet"] * 4 + ["ddpm"] * 2,
            "patient_id": ["a", "a", "b", "b"] * 2 + ["a", "b"],
            "slice_index": [1, 2, 1, 2] * 2 + [1, 1],
            "psnr": [20, 22, 24, 26, 21, 24, 24, 27, 10, 14],
            "ssim": np.linspace(0.5, 0.9, 10),
        }
    )
    res = SimpleNamespace(rows=rows, methods=["linear", "unet", "ddpm"], k=1)
    table = figures.gains(res, "psnr")  # type: ignore[arg-type]
    assert list(table.index) == ["unet", "ddpm"]
    assert table.loc["unet", "gain"] == pytest.approx(1.0)  # (1 + 2 + 0 + 1) / 4
    assert table.loc["ddpm", "gain"] == pytest.approx(-10.0)  # (10-20 + 14-24) / 2
    assert table.loc["ddpm", "n_slices"] == 2
    # two patients are below the minimum for an interval: the gain is shown without one
    assert np.isnan(table.loc["unet", "low"]) and np.isnan(table.loc["unet", "high"])
    fig = figures.method_gains([res, SimpleNamespace(**{**vars(res), "k": 2})], res.methods)  # type: ignore[list-item]
    assert len(fig.axes) == 2
