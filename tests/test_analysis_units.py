"""The study's analyses on small synthetic tables: each number, table cell and sentence
follows the rows it is given."""

from __future__ import annotations

import math
from types import SimpleNamespace

import numpy as np
import pandas as pd
import pytest

from slicelib import original
from slicelib.config import PAPER, PAPER_EPOCHS, EvalConfig
from slicelib.errors import SlicelibError
from slicelib.methods import ANCESTRAL
from slicelib.results import Results
from slicelib.stats import MIN_TEST_PATIENTS, summarize
from slicelib.study import analysis

PATIENTS = [f"P{p}" for p in range(MIN_TEST_PATIENTS)]  # enough for intervals and p
SLICES = (3, 4, 5)


def per_slice(base: dict[str, float], k: int = 1, ssim: dict[str, float] | None = None,
              ms: dict[str, float] | None = None) -> pd.DataFrame:  # fmt: skip
    """Rows of every method on every patient's ``SLICES``: PSNR is the method's ``base``
    plus an offset per patient and slice that all methods share, and a small spread."""
    rows = []
    for j, patient in enumerate(PATIENTS):
        for s in SLICES:
            for m, level in base.items():
                spread = 0.01 * ((7 * j + 3 * s + len(m)) % 5)
                rows.append({"method": m, "patient_id": patient, "slice_index": s,
                             "position": s / 10, "k": k, "psnr": level + j + 0.1 * s + spread,
                             "ssim": (ssim or {}).get(m, 0.5), "ssim_gauss": 0.5, "mae": 0.1,
                             "ms_per_slice": (ms or {}).get(m, 1.0)})  # fmt: skip
    return pd.DataFrame(rows)


def results(rows: pd.DataFrame, k: int = 1, reference: str = "linear") -> Results:
    return Results(rows=rows, summary=summarize(rows, reference=reference), info={}, k=k)


def paired_gain(rows: pd.DataFrame, method: str, other: str) -> float:
    """Mean over patients of the per-patient mean PSNR difference (all slices shared)."""
    means = rows.groupby(["method", "patient_id"])["psnr"].mean().unstack("method")
    return float((means[method] - means[other]).mean())


# The cohort and k=1 against k=2 -------------------------------------------------------


def test_cohort_and_difficulty_numbers_read_their_tables() -> None:
    splits = ("train", "val", "test")
    cohort = pd.DataFrame(
        {
            col: {"patients": 10 + i, "volumes": 20 + i, "slices": 300 + i, "triplets k=1": 40 + i,
                  "triplets k=2": 30 + i, "triplets, common to k=1 and k=2": 25 + i}
            for i, col in enumerate((*splits, "total"))
        }
    )  # fmt: skip
    cache = SimpleNamespace(config=SimpleNamespace(size=64))
    numbers = analysis.cohort_numbers(cohort, {"series": 9, "series_included": 7}, cache)
    assert numbers["series_scanned"] == 9 and numbers["series_included"] == 7
    assert numbers["image_size"] == 64 and numbers["cohort_slices"] == 303
    assert [numbers[f"{s}_patients"] for s in splits] == [10, 11, 12]
    assert numbers["val_triplets_k1"] == 41 and numbers["test_triplets_common"] == 27
    difficulty = pd.DataFrame({"PSNR (dB)": [28.5, 24.0], "SSIM": [0.8, 0.6]}, index=[1, 2])
    assert analysis.difficulty_numbers(difficulty) == {
        "linear_k1_psnr": 28.5, "linear_k1_ssim": 0.8, "linear_k2_psnr": 24.0, "linear_k2_ssim": 0.6
    }  # fmt: skip


def test_k_comparison_pairs_the_methods_scored_at_both_k() -> None:
    k1 = results(per_slice({"linear": 30, "unet": 32, "flow": 31}, 1, {"linear": 0.8, "unet": 0.9}))
    k2 = results(per_slice({"linear": 25, "unet": 26}, 2, {"linear": 0.5, "unet": 0.6}))
    table, mean_gain = analysis.k_comparison(k1, k2, ["linear", "unet", "flow"])
    assert list(table.index) == ["linear", "U-Net"]  # flow was not scored at k=2
    assert table.loc["linear", "SSIM gain of k=1"] == "+60.0 %"
    assert table.loc["U-Net", "SSIM k=2"] == "0.600"
    assert table.loc["U-Net", "PSNR gain of k=1 (dB)"] == "+6.00"
    assert mean_gain == pytest.approx(50.0)  # the deterministic models only: the U-Net
    numbers = analysis.k_numbers(k1, k2, mean_gain)
    assert numbers["common_slices"] == len(PATIENTS) * len(SLICES)
    assert numbers["common_unet_ssim_k1"] == pytest.approx(0.9)
    assert "common_flow_ssim_k1" not in numbers
    with pytest.raises(SlicelibError, match="both k=1 and k=2"):
        analysis.k_comparison(k1, k2, ["flow"])


def test_binned_means_per_bin_centre() -> None:
    rows = pd.DataFrame(
        {"method": ["a"] * 4 + ["b"] * 2, "position": [0.1, 0.2, 0.6, 0.9, 0.1, 0.9],
         "psnr": [10.0, 20.0, 30.0, 50.0, 1.0, 3.0]}
    )  # fmt: skip
    table = analysis.binned(rows, "position", np.array([0.0, 0.5, 1.0]))
    assert list(table.index) == [0.25, 0.75]
    assert table.loc[0.25, "a"] == 15.0 and table.loc[0.75, "a"] == 40.0
    assert table.loc[0.75, "b"] == 3.0


def test_input_change_is_the_difference_of_the_two_inputs() -> None:
    volume = np.arange(8, dtype=np.float32)[:, None, None] * np.ones((1, 2, 2))  # slice i = i
    cache = SimpleNamespace(volume=lambda pid: volume * (2 if pid == "B" else 1))
    rows = pd.DataFrame(
        {"patient_id": ["A", "B", "A"], "slice_index": [3, 3, 4], "k": [1, 2, 2]},
        index=[10, 5, 7],  # positions, not labels, place each value
    )
    assert analysis.input_change(cache, rows).tolist() == [2.0, 8.0, 4.0]


def test_change_correlation_follows_the_ranks() -> None:
    change = [0.1, 0.2, 0.3, 0.4]
    rows = pd.DataFrame(
        {"method": ["linear"] * 4 + ["unet"] * 2, "k": 1, "input_change": change + [0.1, 0.2],
         "psnr": [30.0, 29.0, 25.0, 20.0, 1.0, 2.0], "ssim": [0.1, 0.2, 0.3, 0.9, 0.1, 0.2]}
    )  # fmt: skip
    table = analysis.change_correlation(rows, ["linear", "unet"])
    assert list(table.index) == [("linear", 1)]  # two U-Net slices: too few for a rank
    assert table.loc[("linear", 1), "Spearman rho, change vs PSNR"] == "-1.00"
    assert table.loc[("linear", 1), "Spearman rho, change vs SSIM"] == "1.00"
    numbers = analysis.change_numbers(rows)
    assert numbers["change_k1_mean"] == pytest.approx(np.mean(change + [0.1, 0.2]))
    assert numbers["change_rho_linear_k1"] == pytest.approx(-1.0)
    assert "change_rho_unet_k1" not in numbers and math.isnan(numbers["change_k2_mean"])


def test_pick_slices_keeps_to_slices_every_method_scored() -> None:
    rows = pd.DataFrame(
        {"method": ["linear"] * 6 + ["unet"] * 4,
         "patient_id": ["A"] * 5 + ["B"] + ["A"] * 3 + ["B"],
         "slice_index": [1, 2, 3, 4, 5, 1, 1, 2, 3, 1]}
    ).assign(position=lambda f: f["slice_index"] / 5)  # fmt: skip
    assert analysis.pick_slices(rows, [0.0, 0.5, 1.0]) == [("A", 1), ("A", 2), ("A", 3)]
    assert analysis.pick_slices(rows, [1.0], patient="B") == [("B", 1)]
    with pytest.raises(SlicelibError, match="no evaluated test slice"):
        analysis.pick_slices(rows, [0.5], patient="C")


# The DDPM -----------------------------------------------------------------------------


def test_ddpm_losses_beside_the_supplement() -> None:
    listed = sorted(original.DDPM_LOSSES)
    epochs = [*listed[:-1], listed[-1] + 5]  # every listed epoch but the last, and a later one
    val = [0.5 - 0.01 * i for i in range(len(epochs))]
    val[1] = 0.1  # the best epoch
    history = pd.DataFrame({"epoch": epochs, "train_loss": np.linspace(0.6, 0.2, len(epochs)),
                            "val_loss": val})  # fmt: skip
    table, present, absent = analysis.ddpm_loss_table(history)
    assert present == listed[:-1] and absent == listed[-1:]
    assert list(table.index) == epochs
    assert table.loc[epochs[1], "val loss"] == "0.1000 (best)"
    assert table.loc[epochs[-1], "original train loss"] == "-"  # not listed
    theirs = table["original val loss"].str.endswith("(best)")
    assert list(table.index[theirs]) == [e for e in present if e == original.DDPM_BEST_EPOCH]
    numbers = analysis.ddpm_epoch_numbers(history, present, absent)
    assert numbers["ddpm_best_epoch"] == epochs[1] and numbers["ddpm_epochs"] == len(epochs)
    assert numbers["ddpm_epochs_absent"] == str(listed[-1])
    assert numbers["ddpm_last_val_loss"] == pytest.approx(val[-1])


def test_variability_of_drawn_samples() -> None:
    target = np.full((16, 16), 0.5, dtype=np.float32)
    samples = np.stack([target + d for d in (0.0, 0.1, 0.2)]).astype(np.float32)
    drawn = analysis.Samples(samples, target, target + 0.05, np.array([40.0, 20.0, 14.0]),
                             np.array([1.0, 0.9, 0.8]))  # fmt: skip
    numbers = analysis.variability_numbers(drawn)
    assert numbers["samples_n"] == 3 and numbers["samples_psnr_max"] == 40.0
    assert numbers["samples_pixel_std"] == pytest.approx(np.std([0.0, 0.1, 0.2]), abs=1e-6)
    table = analysis.variability_table(drawn)
    assert list(table.index) == ["sample 1", "sample 2", "sample 3", "std over samples",
                                 "mean of the samples", "linear"]  # fmt: skip
    assert table.loc["linear", "PSNR (dB)"] == pytest.approx(26.02, abs=0.01)  # |error| 0.05
    assert table.loc["std over samples", "SSIM"] == round(float(np.std([1.0, 0.9, 0.8])), 3)


def test_samplers_and_timing_beside_the_original() -> None:
    base = {"linear": 30.0, "unet": 32.0, ANCESTRAL: 25.0, "ddpm_ddim10": 27.0, "ddpm_ddim50": 26.0}
    ms = {"linear": 1.0, "unet": 4.0, ANCESTRAL: 200.0, "ddpm_ddim10": 20.0, "ddpm_ddim50": 90.0}
    res = results(per_slice(base, ms=ms))
    numbers = analysis.sampler_numbers(res)
    assert numbers["ddim_best"] == "DDPM, DDIM 10 steps"
    assert float(numbers["ddpm_unet_ratio"]) == pytest.approx(50.0)
    assert numbers["ddpm_slices"] == len(PATIENTS) * len(SLICES)
    assert numbers["sampler_sentence"].startswith("Ancestral sampling scores -2.00 dB against")
    table = analysis.sampler_table(res)
    assert list(table.index)[-2:] == ["linear", "U-Net"]
    assert table.loc["DDPM, DDIM 10 steps", "PSNR vs linear (dB)"] == "-3.00"
    timing = analysis.timing_table(res)
    assert "linear" not in timing.index
    assert timing.loc["DDPM, ancestral", "original (ms, its GPU)"] == "300"
    assert timing.loc["U-Net", "original (ms, its GPU)"] == "3-5"
    assert timing.loc["DDPM, DDIM 10 steps", "original (ms, its GPU)"] == "-"
    none = analysis.sampler_numbers(results(per_slice({"linear": 30.0, "unet": 31.0})))
    assert none == {
        "sampler_sentence": "This run scored no DDIM variant beside ancestral sampling."
    }


# The real-anatomy arm -----------------------------------------------------------------


def test_gains_over_linear_and_flow() -> None:
    rows = per_slice({"linear": 30.0, "flow": 31.0, "mcnet": 31.5, "nearest": 28.0})
    res = results(rows)
    numbers = analysis.gain_numbers([res])
    assert numbers["real_k1_flow_gain"] == pytest.approx(paired_gain(rows, "flow", "linear"))
    lo, hi = numbers["real_k1_flow_lo"], numbers["real_k1_flow_hi"]
    assert lo < numbers["real_k1_flow_gain"] < hi
    assert numbers["real_k1_subjects"] == len(PATIENTS) and "real_p_floor_note" in numbers
    table = analysis.gain_table([res])
    assert list(table.index) == ["linear", "optical flow", "motion-compensated CNN", "nearest"]
    assert table.iloc[0]["k=1: gain (dB)"].startswith("0 (PSNR")
    assert table.loc["optical flow", "k=1: gain (dB)"] == f"{numbers['real_k1_flow_gain']:+.2f}"
    flow = analysis.over_flow([res])
    assert flow["real_k1_mcnet_over_flow"] == pytest.approx(paired_gain(rows, "mcnet", "flow"))
    assert set(flow) == {f"real_k1_mcnet_over_flow{s}" for s in ("", "_lo", "_hi", "_p")}
    assert analysis.over_flow([results(per_slice({"linear": 30.0, "mcnet": 31.0}))]) == {}
    gains = analysis.subject_gains(res)
    mine = gains[(gains["method"] == "mcnet") & (gains["patient_id"] == "P2")]["gain_db"]
    p2 = rows[rows["patient_id"] == "P2"].pivot(
        index="slice_index", columns="method", values="psnr"
    )
    assert mine.item() == pytest.approx((p2["mcnet"] - p2["linear"]).mean())


@pytest.mark.parametrize(("filter_gain", "passed"), [(0.9, True), (0.5, False)])
def test_headroom_and_the_filter_check(filter_gain: float, passed: bool) -> None:
    base = {"linear": 30.0, "ls_filter": 31.0, "filter": 30.0 + filter_gain, "oracle_tile": 33.0}
    heads = [results(per_slice(base, k), k) for k in (1, 2)]
    numbers = analysis.headroom_numbers(heads)
    assert numbers["real_headroom_oracle_tile_k2"] == pytest.approx(3.0, abs=0.05)
    assert {"real_headroom_ls_filter_k1_lo", "real_headroom_filter_k1_hi"} <= set(numbers)
    check = analysis.filter_check(heads)
    share = 100 * numbers["real_headroom_filter_k1"] / numbers["real_headroom_ls_filter_k1"]
    assert check["real_filter_share_k1"] == pytest.approx(share)
    assert ("learns what a linear predictor can" in check["real_filter_sentence"]) == passed
    assert ("below the 80 %" in check["real_filter_sentence"]) != passed
    table = analysis.gain_table(heads, analysis.HEADROOM_LABELS)
    assert table.index.name == "reference" and "k=1: p" not in table.columns
    assert list(table.index) == [analysis.HEADROOM_LABELS[m] for m in base if m != "linear"]
    no_filter = [results(per_slice({"linear": 30.0, "ls_filter": 31.0}))]
    assert analysis.filter_check(no_filter) == {
        "real_filter_sentence": "This run does not train the 9 x 9 filter."
    }


def runs_table() -> pd.DataFrame:
    """Two epochs of a U-Net and a CNN at k=1, as :func:`analysis.training_runs` gives them."""
    return pd.DataFrame(
        {"model": ["unet", "unet", "cnn", "cnn"], "k": 1, "epoch": [1, 2, 1, 2],
         "val_gain_db": [0.2, 0.5, -0.1, 0.0], "steps": [10, 20, 10, 20],
         "samples": [40, 80, 40, 80], "crop": 32, "seconds": [1.0, 2.5, 1.0, 2.0]}
    )  # fmt: skip


def test_budget_table_and_numbers() -> None:
    runs = runs_table()
    table = analysis.budget_table(runs, study=None)  # type: ignore[arg-type]
    assert list(table.index) == ["U-Net, k=1", "CNN (EDSR), k=1"]
    assert table.loc["U-Net, k=1", "change over the last epoch (dB)"] == "+0.30"
    assert table.loc["CNN (EDSR), k=1", "training samples"] == 80
    numbers = analysis.budget_numbers(runs)
    paper = original.REPORTED_COHORT["train triplets"] * PAPER_EPOCHS["unet"]
    assert numbers["real_runs"] == 2 and numbers["real_samples"] == 80
    assert numbers["real_max_last_change"] == "0.30 dB"
    assert float(numbers["real_train_seconds"]) == pytest.approx(4.5)
    assert numbers["real_budget_ratio"] == pytest.approx(
        paper * PAPER.prepare.size**2 / (80 * 32**2)
    )
    assert numbers["real_samples_text"] == "U-Net 80, CNN (EDSR) 80"
    one_epoch = analysis.budget_numbers(runs[runs["epoch"] == 2])
    assert one_epoch["real_max_last_change"] == "not measured (one epoch per run)"


def budget_rows(gains: dict[tuple[str, int], list[float]]) -> pd.DataFrame:
    """The budget step's rows: per run (model, samples), linear and the model on one slice
    per patient, the model's PSNR the patient's gain over linear."""
    rows = []
    for (model, samples), per_patient in gains.items():
        for patient, gain in zip(PATIENTS, per_patient):
            for method, psnr in (("linear", 30.0), (model, 30.0 + gain)):
                rows.append({"run": f"{model}_{samples}", "model": model, "samples": samples,
                             "method": method, "patient_id": patient, "slice_index": 1,
                             "psnr": psnr, "seconds": samples / 100})  # fmt: skip
    return pd.DataFrame(rows)


def test_budget_curve_and_its_sentence() -> None:
    rising = [0.5, 0.6, 0.4, 0.5, 0.55, 0.45]
    rows = budget_rows(
        {("unet", 640): rising, ("unet", 1280): [g + 1.0 + 0.01 * i for i, g in enumerate(rising)],
         ("mcnet", 100): [1.0] * 6, ("mcnet", 200): [1.0, 1.1, 0.9, 1.0, 1.05, 0.95]}
    )  # fmt: skip
    cfg = EvalConfig()
    curve = analysis.budget_curve(rows, cfg)
    assert list(curve["model"]) == ["mcnet", "mcnet", "unet", "unet"]
    assert list(curve["samples"]) == [100, 200, 640, 1280]
    assert curve["gain"].iloc[2] == pytest.approx(np.mean(rising))
    assert ((curve["lo"] <= curve["gain"]) & (curve["gain"] <= curve["hi"])).all()
    assert analysis.budget_points(curve) == (
        "motion-compensated CNN: 100 and 200 samples; U-Net: 640 and 1,280 samples"
    )
    table = analysis.curve_table(curve)
    assert table.loc[("U-Net", "1,280"), "subjects"] == len(PATIENTS)
    sentence = analysis.budget_sentence(rows, curve, {"flow": 0.5, "oracle": 2.0}, cfg)
    stopped, learning = sentence.split(". The ")
    assert stopped.startswith("The motion-compensated CNN had stopped gaining")
    assert "at or above flow (+0.50 dB) and below oracle (+2.00 dB)" in stopped
    assert learning.startswith("U-Net was still learning: from 640 to 1,280 training samples")
    assert learning.endswith("not learned yet.")
    empty = rows.iloc[:0]
    assert analysis.budget_sentence(empty, curve.iloc[:0], {}, cfg) == (
        "This run trains no budget curve."
    )
    assert analysis.budget_points(analysis.budget_curve(empty, cfg)) == "none"


def test_marked_verdicts_carry_the_real_note() -> None:
    table = pd.DataFrame(
        {"original": ["o"], "this run": ["t"], "margin": ["m"], "rule": ["r"],
         "verdict": ["reproduced"], "extra": [1]}, index=["claim"]
    )  # fmt: skip
    marked = analysis.marked_verdicts(table)
    assert list(marked.columns) == ["original", "this run", "margin", "rule", "verdict"]
    assert marked.loc["claim", "verdict"].startswith("reproduced")
    assert marked.loc["claim", "verdict"].endswith(analysis.REAL_NOTE)
