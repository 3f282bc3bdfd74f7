"""The DDPM schedule ablation's table and sentences follow its paired comparisons."""

from __future__ import annotations

import dataclasses

import numpy as np
import pandas as pd
import pytest

from slicelib.config import DiffusionConfig
from slicelib.study import Study
from slicelib.study import analysis as ablation


def ablation_rows(gains: dict[str, float], patients: int = 6) -> pd.DataFrame:
    """Ancestral and DDIM rows of the original and each variant: a variant's ancestral
    PSNR is the original's plus its gain (with a little per-patient spread)."""
    rng = np.random.default_rng(0)
    rows = []
    for p in range(patients):
        base = 15.0 + p
        for variant, gain in {"original": 0.0, **gains}.items():
            spread = 0.1 * rng.standard_normal() if gain else 0.0
            for method, offset in (("ddpm_ancestral", 0.0), ("ddpm_ddim25", -1.0)):
                rows.append(
                    {
                        "variant": variant,
                        "method": method,
                        "patient_id": f"P{p}",
                        "slice_index": 5,
                        "psnr": base + offset + gain + spread,
                        "ssim": 0.5,
                    }
                )
    return pd.DataFrame(rows)


DIFFUSIONS = {
    "original": DiffusionConfig(),
    "cosine": DiffusionConfig(schedule="cosine"),
    "rescaled": DiffusionConfig(rescale=True),
}


def test_table_has_one_row_per_variant_with_the_schedule_end() -> None:
    rows = ablation_rows({"cosine": 2.0, "rescaled": 0.0})
    table = ablation.ablation_table(rows, DIFFUSIONS)
    assert list(table.index) == [ablation.variant_label(v) for v in DIFFUSIONS]
    # the original's linear schedule leaves 0.60 of x_0 at T=100; the cosine none
    assert table.loc[ablation.variant_label("original"), "x_T"] == "0.60 x_0 + 0.80 noise"
    assert table.loc[ablation.variant_label("cosine"), "x_T"] == "0.00 x_0 + 1.00 noise"
    gain = table.loc[ablation.variant_label("cosine"), "ancestral PSNR vs original (dB)"]
    assert abs(float(gain) - 2.0) < 0.1
    assert table.loc[ablation.variant_label("original"), "p"] == "-"
    assert "DDPM, DDIM 25 steps: PSNR (dB)" in table.columns


@pytest.mark.parametrize(
    ("gains", "patients", "finding"),
    [
        ({"cosine": 2.0, "rescaled": 0.0}, 6, "supports the schedule explanation"),
        ({"cosine": -2.0, "rescaled": 0.0}, 6, "does not support the schedule explanation: the"),
        ({"cosine": 0.0, "rescaled": 0.0}, 6, "no variant changed"),
        ({"cosine": 2.0, "rescaled": 2.0}, 3, "not tested"),
    ],
)
def test_summary_follows_the_intervals(
    gains: dict[str, float], patients: int, finding: str
) -> None:
    numbers = ablation.ablation_numbers(ablation_rows(gains, patients))
    assert finding in numbers["abl_summary"]
    assert numbers["abl_variants"] == 2
    assert numbers["abl_sentences"].startswith("With the cosine schedule, ancestral sampling")


def test_no_ablation_says_so() -> None:
    numbers = ablation.ablation_numbers(pd.DataFrame(columns=["variant", "method"]))
    assert numbers["abl_variants"] == 0 and "not tested" in numbers["abl_summary"]


def test_demo_and_smoke_ablate_the_schedule_only(tmp_path) -> None:
    for preset in ("demo", "smoke"):
        study = Study(preset, tmp_path / preset)
        configs = study.ablation_configs()
        assert set(configs) == {"cosine", "rescaled"}
        base = study.train_config("ddpm", 1)
        for cfg in configs.values():
            assert cfg.diffusion != base.diffusion
            assert cfg == dataclasses.replace(base, diffusion=cfg.diffusion)
    assert Study("paper", tmp_path / "paper").ablation_configs() == {}
