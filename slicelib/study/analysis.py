"""Analyses the notebooks show beyond the evaluation's summary: the demo cohort's
calibration, the k=1 against k=2 comparison, error against position and against
anatomical change, the DDPM's loss table and its sample-to-sample variability."""

from __future__ import annotations

import dataclasses
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any

import numpy as np
import pandas as pd

from slicelib import original
from slicelib.errors import SlicelibError
from slicelib.methods import family_of, is_ddim, method_label
from slicelib.study.labels import fmt

if TYPE_CHECKING:
    from slicelib.config import EvalConfig
    from slicelib.data.cache import Cache
    from slicelib.results import Results

# The synthetic cohort's calibration targets (linear at k=1 and k=2, 256x256).
DIFFICULTY_TARGETS: dict[int, dict[str, tuple[float, float]]] = {
    1: {"ssim": (0.78, 0.88), "psnr": (25.0, 30.0)},
    2: {"ssim": (0.50, 0.70)},
}


def linear_difficulty(cache: Cache, cfg: EvalConfig, ks: Sequence[int] = (1, 2)) -> pd.DataFrame:
    """Linear interpolation on the test split at each k (numbers) beside the original's
    linear baseline and the synthetic cohort's calibration targets (text)."""
    from slicelib.evaluate import evaluate

    rows = []
    for k in ks:
        ev = evaluate(cache, k, dataclasses.replace(cfg, common=False), methods=["linear"],
                      progress=False)  # fmt: skip
        r = ev.summary[ev.summary["method"] == "linear"].to_dict("records")[0]
        claimed = original.reported("linear", k)
        target = DIFFICULTY_TARGETS.get(k, {})
        rows.append(
            {
                "k": k,
                "test slices": int(r["n_slices"]),
                "PSNR (dB)": float(r["psnr_mean"]),
                "SSIM": float(r["ssim_mean"]),
                "SSIM Gaussian": float(r["ssim_gauss_mean"]),
                "original PSNR": fmt(claimed.psnr) if claimed else "not reported",
                "original SSIM": fmt(claimed.ssim, 3) if claimed else "not reported",
                "calibration target PSNR": _span(target.get("psnr"), 0),
                "calibration target SSIM": _span(target.get("ssim"), 2),
            }
        )
    return pd.DataFrame(rows).set_index("k")


def _span(bounds: tuple[float, float] | None, digits: int) -> str:
    return "-" if bounds is None else f"{bounds[0]:.{digits}f}-{bounds[1]:.{digits}f}"


def k_comparison(
    common1: Results, common2: Results, methods: Sequence[str]
) -> tuple[pd.DataFrame, float]:
    """k=1 against k=2 on the same slices: SSIM and PSNR of each method at both k and
    the relative SSIM gain of k=1. Returns the table and the mean gain (in %) of the
    ``methods`` that are deterministic models."""
    from slicelib.study.labels import DETERMINISTIC_MODELS

    rows, gains = [], []
    for method in methods:
        if method not in common1.methods or method not in common2.methods:
            continue
        a, b = common1.row(method), common2.row(method)
        gain = 100.0 * (a["ssim_mean"] / b["ssim_mean"] - 1.0)
        if method in DETERMINISTIC_MODELS:
            gains.append(gain)
        rows.append(
            {
                "method": method_label(method),
                "slices": int(a["n_slices"]),
                "SSIM k=1": fmt(a["ssim_mean"], 3),
                "SSIM k=2": fmt(b["ssim_mean"], 3),
                "SSIM gain of k=1": f"{gain:+.1f} %",
                "PSNR k=1 (dB)": fmt(a["psnr_mean"]),
                "PSNR k=2 (dB)": fmt(b["psnr_mean"]),
                "PSNR gain of k=1 (dB)": f"{a['psnr_mean'] - b['psnr_mean']:+.2f}",
            }
        )
    if not rows:
        raise SlicelibError("no method was evaluated at both k=1 and k=2")
    mean_gain = float(np.mean(gains)) if gains else float("nan")
    return pd.DataFrame(rows).set_index("method"), mean_gain


def input_change(cache: Cache, rows: pd.DataFrame) -> np.ndarray:
    """Per row (patient_id, slice_index, k): the mean absolute difference between the
    two inputs S_{i-k} and S_{i+k}, a measure of how much the anatomy changes
    across the gap (0 = identical inputs)."""
    out = np.empty(len(rows), dtype=np.float64)
    for pid, group in rows.groupby("patient_id", sort=False):
        volume = np.asarray(cache.volume(str(pid)), dtype=np.float32)
        for pos, (i, k) in zip(
            rows.index.get_indexer(group.index), zip(group["slice_index"], group["k"])
        ):
            out[pos] = float(np.abs(volume[int(i) - int(k)] - volume[int(i) + int(k)]).mean())
    return out


def binned(
    rows: pd.DataFrame, column: str, edges: np.ndarray, metric: str = "psnr"
) -> pd.DataFrame:
    """Mean ``metric`` per method in bins of ``column`` (rows: bin centre; columns: method)."""
    centres = (edges[:-1] + edges[1:]) / 2
    bins = pd.cut(rows[column], list(edges), labels=list(centres), include_lowest=True)
    table = rows.assign(bin=bins).pivot_table(
        index="bin", columns="method", values=metric, aggfunc="mean", observed=False
    )
    table.index = table.index.astype(float)
    return table


def change_correlation(rows: pd.DataFrame, methods: Sequence[str]) -> pd.DataFrame:
    """Spearman correlation between input change and PSNR (and SSIM) per method and k."""
    from scipy.stats import spearmanr

    out = []
    for (method, k), group in rows.groupby(["method", "k"], sort=False):
        if method not in methods or len(group) < 3:
            continue
        rho_psnr = spearmanr(group["input_change"], group["psnr"]).statistic
        rho_ssim = spearmanr(group["input_change"], group["ssim"]).statistic
        out.append(
            {
                "method": method_label(str(method)),
                "k": int(str(k)),
                "slices": len(group),
                "Spearman rho, change vs PSNR": fmt(rho_psnr, 2),
                "Spearman rho, change vs SSIM": fmt(rho_ssim, 2),
            }
        )
    return pd.DataFrame(out).set_index(["method", "k"])


def ddpm_loss_table(history: pd.DataFrame) -> tuple[pd.DataFrame, list[int], list[int]]:
    """The DDPM's train and validation loss at the epochs supplement 4.1 lists, beside
    its values. Returns the table, the listed epochs this run has and those it lacks."""
    by_epoch = history.set_index("epoch")
    present = [e for e in original.DDPM_LOSSES if e in by_epoch.index]
    absent = [e for e in original.DDPM_LOSSES if e not in by_epoch.index]
    best = int(by_epoch.index.to_numpy()[int(np.argmin(by_epoch["val_loss"].to_numpy()))])
    rows = []
    for epoch in present:
        train, val = original.DDPM_LOSSES[epoch]
        rows.append(
            {
                "epoch": epoch,
                "train loss": fmt(by_epoch.loc[epoch, "train_loss"], 4),
                "val loss": fmt(by_epoch.loc[epoch, "val_loss"], 4)
                + (" (best)" if epoch == best else ""),
                "original train loss": fmt(train, 4),
                "original val loss": fmt(val, 4)
                + (" (best)" if epoch == original.DDPM_BEST_EPOCH else ""),
            }
        )
    last = int(by_epoch.index.to_numpy().max())
    if last not in present:
        rows.append(
            {
                "epoch": last,
                "train loss": fmt(by_epoch.loc[last, "train_loss"], 4),
                "val loss": fmt(by_epoch.loc[last, "val_loss"], 4)
                + (" (best)" if last == best else ""),
                "original train loss": "-",
                "original val loss": "-",
            }
        )
    return pd.DataFrame(rows).set_index("epoch"), present, absent


def pick_slices(
    rows: pd.DataFrame, positions: Sequence[float], patient: str | None = None
) -> list[tuple[str, int]]:
    """Slices of one test patient (default: the first with the most evaluated slices)
    nearest each relative ``position`` in the volume (0 = first slice, 1 = last),
    among those every method was scored on."""
    counts = rows.groupby(["patient_id", "slice_index"]).size()
    everywhere = counts[counts == rows["method"].nunique()].reset_index()
    if everywhere.empty:
        everywhere = counts.reset_index()
    if patient is None:
        patient = str(everywhere["patient_id"].value_counts().idxmax())
    mine = rows[rows["patient_id"] == patient].drop_duplicates("slice_index")
    mine = mine[
        mine["slice_index"].isin(everywhere["slice_index"][everywhere["patient_id"] == patient])
    ]
    if mine.empty:
        raise SlicelibError(f"patient {patient!r} has no evaluated test slice")
    where = mine["position"].to_numpy()
    indices = mine["slice_index"].to_numpy()
    return [(patient, int(indices[int(np.argmin(np.abs(where - p)))])) for p in positions]


@dataclass(frozen=True)
class Samples:
    """Several ancestral DDPM samples of one slice: ``samples`` (n, H, W) in [0, 1],
    ``target`` and ``linear`` (H, W), and each sample's PSNR and SSIM."""

    samples: np.ndarray
    target: np.ndarray
    linear: np.ndarray
    psnr: np.ndarray
    ssim: np.ndarray


def ddpm_samples(
    run_dir: Path, cache: Cache, k: int, slice_: tuple[str, int], n: int, *, seed: int,
    device: str = "auto",
) -> Samples:  # fmt: skip
    """``n`` ancestral samples of the DDPM run in ``run_dir`` for one test slice."""
    import torch

    from slicelib.baselines import linear, neighbours
    from slicelib.checkpoint import Predictor, load_run
    from slicelib.metrics import psnr, ssim

    run = load_run(run_dir, device=device, k=k, image_size=int(cache.config.size))
    volume = np.asarray(cache.volume(slice_[0]), dtype=np.float32)
    nb = neighbours(volume, slice_[1], k)
    inputs = torch.from_numpy(np.stack([nb.before, nb.after])[None])
    stack = Predictor(run, sampler="ancestral", samples=n, seed=seed).stack(inputs)
    samples = stack[:, 0, 0].cpu().numpy().astype(np.float32)
    target = volume[slice_[1]]
    return Samples(
        samples=samples,
        target=target,
        linear=linear(nb.before, nb.after),
        psnr=np.array([psnr(s, target, 1.0) for s in samples]),
        ssim=np.array([ssim(s, target, 1.0) for s in samples]),
    )


def sampler_table(res: Results) -> pd.DataFrame:
    """The DDPM's sampling variants beside linear and the U-Net: PSNR, SSIM, time."""
    from slicelib.study.labels import fmt_ci, fmt_pm, fmt_signed

    names = [m for m in res.methods if family_of(m) == "ddpm"]
    names += [m for m in ("linear", "unet") if m in res.methods]
    rows = []
    for name in names:
        r = res.row(name)
        rows.append(
            {
                "method": method_label(name),
                "slices": int(r["n_slices"]),
                "PSNR (dB)": fmt_pm(r["psnr_mean"], r["psnr_std"]),
                "SSIM": fmt_pm(r["ssim_mean"], r["ssim_std"], 3),
                "PSNR vs linear (dB)": fmt_signed(r.get("psnr_gain_db")),
                # Paired over patients on the slices this method scored.
                "PSNR vs linear 95% CI": fmt_ci(
                    r.get("psnr_gain_ci_low"), r.get("psnr_gain_ci_high")
                ),
                "ms per slice": fmt(r["ms_per_slice"], 1),
            }
        )
    return pd.DataFrame(rows).set_index("method")


def cohort_numbers(
    cohort: pd.DataFrame, scan_summary: dict[str, Any], cache: Cache
) -> dict[str, Any]:
    """Cohort figures for the prose (from :func:`slicelib.study.tables.cohort_table`)."""
    values: dict[str, Any] = {
        "series_scanned": int(scan_summary.get("series", 0)),
        "series_included": int(scan_summary.get("series_included", 0)),
        "image_size": int(cache.config.size),
    }
    table = {str(row): {str(c): v for c, v in cols.items()} for row, cols in cohort.iterrows()}

    def cell(row: str, col: str) -> int:
        return int(table[row][col])

    for row in ("patients", "volumes", "slices"):
        values[f"cohort_{row}"] = cell(row, "total")
    for split in ("train", "val", "test"):
        values[f"{split}_patients"] = cell("patients", split)
        values[f"{split}_triplets_k1"] = cell("triplets k=1", split)
    values["test_triplets_k2"] = cell("triplets k=2", "test")
    values["test_triplets_common"] = cell("triplets, common to k=1 and k=2", "test")
    return values


def difficulty_numbers(difficulty: pd.DataFrame) -> dict[str, Any]:
    """The linear baseline of this cohort for the prose: ``linear_k<k>_{psnr,ssim}``."""
    values: dict[str, Any] = {}
    for k in difficulty.index:
        values[f"linear_k{k}_psnr"] = float(difficulty.loc[k, "PSNR (dB)"])
        values[f"linear_k{k}_ssim"] = float(difficulty.loc[k, "SSIM"])
    return values


def k_numbers(common1: Results, common2: Results, mean_gain: float) -> dict[str, Any]:
    """The k comparison for the prose: the mean SSIM gain of k=1 over k=2 of the
    deterministic models, the common slices, and each method's SSIM at both k."""
    values: dict[str, Any] = {
        "k_ssim_gain_pct": mean_gain,
        "k_ssim_gain_claimed_pct": original.K1_OVER_K2_SSIM_GAIN_PCT,
        "common_slices": int(common1.summary["n_slices"].max()),
    }
    for method in common1.methods:
        if method in common2.methods:
            values[f"common_{method}_ssim_k1"] = common1.row(method)["ssim_mean"]
            values[f"common_{method}_ssim_k2"] = common2.row(method)["ssim_mean"]
    return values


def change_numbers(rows: pd.DataFrame) -> dict[str, Any]:
    """Input change for the prose: its mean at each k and, for linear and the U-Net,
    the Spearman correlation with PSNR at each k."""
    from scipy.stats import spearmanr

    values: dict[str, Any] = {}
    for k in (1, 2):
        at_k = rows[rows["k"] == k]
        values[f"change_k{k}_mean"] = float(at_k["input_change"].mean())
        for method in ("linear", "unet"):
            group = at_k[at_k["method"] == method]
            if len(group) >= 3:
                rho = spearmanr(group["input_change"], group["psnr"]).statistic
                values[f"change_rho_{method}_k{k}"] = float(rho)
    return values


def ddpm_epoch_numbers(
    history: pd.DataFrame, present: list[int], absent: list[int]
) -> dict[str, Any]:
    """Which of the supplement's epochs this DDPM run has, for the prose."""
    return {
        "ddpm_epochs": int(len(history)),
        "ddpm_epochs_present": ", ".join(str(e) for e in present) or "none",
        "ddpm_epochs_absent": ", ".join(str(e) for e in absent) or "none",
        "ddpm_best_epoch": int(
            history["epoch"].to_numpy()[int(np.argmin(history["val_loss"].to_numpy()))]
        ),
        "ddpm_first_train_loss": float(history["train_loss"].iloc[0]),
        "ddpm_last_train_loss": float(history["train_loss"].iloc[-1]),
        "ddpm_first_val_loss": float(history["val_loss"].iloc[0]),
        "ddpm_last_val_loss": float(history["val_loss"].iloc[-1]),
    }


def variability_table(drawn: Samples) -> pd.DataFrame:
    """Each sample's PSNR and SSIM, and their spread, beside linear on the same slice."""
    from slicelib.metrics import psnr, ssim

    rows = [
        {"sample": f"sample {i + 1}", "PSNR (dB)": drawn.psnr[i], "SSIM": drawn.ssim[i]}
        for i in range(len(drawn.samples))
    ]
    mean = drawn.samples.mean(axis=0)
    rows += [
        {"sample": "std over samples", "PSNR (dB)": drawn.psnr.std(), "SSIM": drawn.ssim.std()},
        {
            "sample": "mean of the samples",
            "PSNR (dB)": psnr(mean, drawn.target, 1.0),
            "SSIM": ssim(mean, drawn.target, 1.0),
        },
        {
            "sample": "linear",
            "PSNR (dB)": psnr(drawn.linear, drawn.target, 1.0),
            "SSIM": ssim(drawn.linear, drawn.target, 1.0),
        },
    ]
    return pd.DataFrame(rows).set_index("sample").round({"PSNR (dB)": 2, "SSIM": 3})


def variability_numbers(drawn: Samples) -> dict[str, Any]:
    return {
        "samples_n": int(len(drawn.samples)),
        "samples_psnr_min": float(drawn.psnr.min()),
        "samples_psnr_max": float(drawn.psnr.max()),
        "samples_psnr_std": float(drawn.psnr.std()),
        "samples_pixel_std": float(drawn.samples.std(axis=0).mean()),
    }


def sampler_numbers(res: Results, **kwargs: Any) -> dict[str, Any]:
    """The DDPM's samplers for the prose: ancestral and the best DDIM variant, and
    ``sampler_sentence``: which of the two scores higher PSNR, paired over patients
    on the slices both scored (``kwargs`` go to :func:`slicelib.stats.compare`)."""
    from slicelib.stats import compare
    from slicelib.study.prose import comparison_sentence

    values: dict[str, Any] = {
        "sampler_sentence": "This run scored no DDIM variant beside ancestral sampling."
    }
    ddim = [m for m in res.methods if is_ddim(m)]
    if "ddpm_ancestral" in res.methods:
        anc = res.row("ddpm_ancestral")
        values.update(
            ddpm_ancestral_psnr=anc["psnr_mean"],
            ddpm_ancestral_ssim=anc["ssim_mean"],
            ddpm_ancestral_ms=anc["ms_per_slice"],
            ddpm_slices=int(anc["n_slices"]),
        )
    if ddim:
        best = max(ddim, key=lambda m: res.row(m)["psnr_mean"])
        values.update(
            ddim_best=method_label(best),
            ddim_best_psnr=res.row(best)["psnr_mean"],
            ddim_best_ssim=res.row(best)["ssim_mean"],
            ddim_best_ms=res.row(best)["ms_per_slice"],
        )
        if "ddpm_ancestral" in res.methods:
            c = compare(res.rows, "ddpm_ancestral", best, "psnr", **kwargs)
            values["sampler_sentence"] = comparison_sentence(
                c, "Ancestral sampling", f"the best DDIM variant ({method_label(best)})", " dB"
            )
    if "unet" in res.methods and "ddpm_ancestral" in res.methods:
        unet = res.row("unet")["ms_per_slice"]
        values["unet_ms"] = unet
        values["ddpm_unet_ratio"] = res.row("ddpm_ancestral")["ms_per_slice"] / unet
    return values


def timing_table(res: Results) -> pd.DataFrame:
    """Time per slice of the DDPM's samplers and the deterministic models, beside the
    original's 300 ms against 3-5 ms."""
    from slicelib.study.labels import DETERMINISTIC_MODELS

    names = [m for m in res.methods if family_of(m) == "ddpm" or m in DETERMINISTIC_MODELS]
    low, high = original.DETERMINISTIC_MS_PER_SLICE
    rows = []
    for name in names:
        r = res.row(name)
        claimed = (
            f"{original.DDPM_MS_PER_SLICE:.0f}"
            if name == "ddpm_ancestral"
            else (f"{low:.0f}-{high:.0f}" if name in DETERMINISTIC_MODELS else "-")
        )
        rows.append(
            {
                "method": method_label(name),
                "device": r.get("device", "-"),
                "ms per slice": fmt(r["ms_per_slice"], 1),
                "original (ms, its GPU)": claimed,
            }
        )
    return pd.DataFrame(rows).set_index("method")
