"""The book's tables, as pandas DataFrames of display strings (numbers formatted once,
here, so that every notebook shows them alike)."""

from __future__ import annotations

import dataclasses
from typing import TYPE_CHECKING, Any

import numpy as np
import pandas as pd

from slicelib.config import PAPER, ModelConfig
from slicelib.methods import method_label
from slicelib.original import APPROXIMATE_TOLERANCE, REPORTED_COHORT, reported_model
from slicelib.stats import MIN_TEST_PATIENTS
from slicelib.study.labels import (
    fmt,
    fmt_ci,
    fmt_int,
    fmt_p,
    fmt_pm,
    fmt_signed,
    fmt_tesla,
    missing,
    p_text,
)

if TYPE_CHECKING:
    from slicelib.data.cache import Cache
    from slicelib.results import Results
    from slicelib.study.workspace import Study

LOSSES: dict[str, str] = {
    "cnn": "L1",
    "unet": "L1",
    "gan": "L1 + 0.001 adversarial",
    "gan_improved": "L1 + 0.01 adversarial + 0.1 feature matching",
    "ddpm": "MSE on the noise",
}

SCAN_COLUMNS: tuple[str, ...] = (
    "patient_id",
    "series_description",
    "manufacturer",
    "field_strength",
    "orientation",
    "slice_thickness",
    "n_slices",
    "included",
    "selected",
    "reason",
)
SCAN_HEADERS: dict[str, str] = {
    "series_description": "series",
    "field_strength": "field strength",
    "slice_thickness": "slice thickness",
    "n_slices": "slices",
}


def _p_or_reason(p: Any, test: Any) -> str:
    """A p-value, or why there is none ("too few patients to test")."""
    if missing(p) and isinstance(test, str) and test:
        return test
    return fmt_p(p)


def results_table(res: Results) -> pd.DataFrame:
    """Every method at one k. Description over slices: PSNR and both SSIMs with their
    std. Inference over patients (:mod:`slicelib.stats`): the 95 % CI of each mean,
    the paired gain over linear with its 95 % CI, and sign-flip p-values against
    linear and against the best; "too few patients to test" where there are none."""
    best = res.summary["best_psnr"].iloc[0]
    rows = []
    for r in res.summary.to_dict("records"):
        rows.append(
            {
                "method": method_label(r["method"]),
                "patients": int(r["n_patients"]),
                "slices": int(r["n_slices"]),
                "PSNR (dB)": fmt_pm(r["psnr_mean"], r["psnr_std"]),
                "PSNR 95% CI": fmt_ci(r["psnr_ci_low"], r["psnr_ci_high"]),
                "SSIM": fmt_pm(r["ssim_mean"], r["ssim_std"], 3),
                "SSIM 95% CI": fmt_ci(r["ssim_ci_low"], r["ssim_ci_high"], 3),
                "SSIM Gaussian": fmt_pm(r["ssim_gauss_mean"], r["ssim_gauss_std"], 3),
                "PSNR vs linear (dB)": fmt_signed(r.get("psnr_gain_db")),
                "PSNR vs linear 95% CI": fmt_ci(
                    r.get("psnr_gain_ci_low"), r.get("psnr_gain_ci_high")
                ),
                "PSNR vs linear (%)": fmt_signed(r.get("psnr_gain_pct"), 1, " %"),
                "SSIM vs linear": fmt_signed(r.get("ssim_gain"), 3),
                "SSIM vs linear 95% CI": fmt_ci(
                    r.get("ssim_gain_ci_low"), r.get("ssim_gain_ci_high"), 3
                ),
                "p vs linear (PSNR)": _p_or_reason(
                    r.get("p_psnr_vs_linear"), r.get("test_vs_linear")
                ),
                "p vs linear (SSIM)": _p_or_reason(
                    r.get("p_ssim_vs_linear"), r.get("test_vs_linear")
                ),
                f"p vs best ({method_label(best)}, PSNR)": _p_or_reason(
                    r.get("p_psnr_vs_best"), r.get("test_vs_best")
                ),
            }
        )
    return pd.DataFrame(rows).set_index("method")


def wall_clock(value: Any, digits: int, unit: str) -> str:
    """A measured time or rate with its unit ("3.5 s", "2.5 /s", "1.23 ms", "12.3×"):
    the unit marks it as wall clock, which ``make verify``'s sanitizer leaves out of
    the comparison (it differs from run to run)."""
    return f"{fmt(value, digits)}{unit}"


def inference_table(res: Results, reference: str = "unet") -> pd.DataFrame:
    """Inference time per slice of every method (after warm-up), on the device it ran."""
    ref = res.summary.set_index("method")["ms_per_slice"].get(reference)
    rows = []
    for r in res.summary.to_dict("records"):
        rows.append(
            {
                "method": method_label(r["method"]),
                "device": r.get("device", "-"),
                "ms per slice": wall_clock(r["ms_per_slice"], 2, " ms"),
                f"x {method_label(reference)}": (
                    wall_clock(r["ms_per_slice"] / ref, 1, "×") if ref else "-"
                ),
            }
        )
    return pd.DataFrame(rows).set_index("method")


def architecture_table(preset_model: ModelConfig, trained_convs: int) -> pd.DataFrame:
    """Parameter counts from the code at the paper's settings beside the supplement's,
    both CNN block variants, and the counts at the preset's settings when they differ.

    ``trained_convs``: convolutions per residual block of the CNN this run trained.
    """
    from slicelib.models import parameter_counts

    paper = parameter_counts(PAPER.model, variants=True)
    ours = parameter_counts(preset_model, variants=True)
    one = dataclasses.replace(PAPER.model, cnn_convs_per_block=1)
    two = dataclasses.replace(PAPER.model, cnn_convs_per_block=2)
    cnn_one = parameter_counts(one)["cnn"]["generator"]
    cnn_two = parameter_counts(two)["cnn"]["generator"]

    def supplement(model: str, part: str) -> tuple[str, str]:
        try:
            entry = reported_model(model)
        except KeyError:
            return "-", "-"
        stated = entry.parameters.get(part)
        if stated is None:
            return "not stated", "-"
        count = paper[model][part]
        if entry.approximate:
            tol = APPROXIMATE_TOLERANCE.get(model, 0.05)
            ok = abs(count - stated) <= tol * stated
            return f"about {stated / 1e6:.1f} M", "yes" if ok else "no"
        return f"{stated:,}", "yes" if count == stated else "no"

    rows: list[dict[str, Any]] = []

    def add(name: str, model: str, part: str, paper_count: int, preset_count: int) -> None:
        stated, match = supplement(model, part)
        rows.append(
            {
                "component": name,
                "parameters (paper settings)": f"{paper_count:,}",
                "supplement": stated,
                "matches": match,
                "this preset": f"{preset_count:,}",
            }
        )

    trained = "trained here" if trained_convs == 1 else "not trained here"
    add(f"CNN, 8 blocks of one conv ({trained})", "cnn", "generator", cnn_one, cnn_one)
    rows[-1]["supplement"], rows[-1]["matches"] = supplement("cnn", "generator")
    if trained_convs != 1:
        rows[-1]["this preset"] = "-"
    trained = "trained here" if trained_convs == 2 else "not trained here"
    rows.append(
        {
            "component": f"CNN, 8 blocks of conv-ReLU-conv as the text says ({trained})",
            "parameters (paper settings)": f"{cnn_two:,}",
            "supplement": "297,217 (fits one conv per block)",
            "matches": "no",
            "this preset": f"{cnn_two:,}" if trained_convs == 2 else "-",
        }
    )
    add("U-Net", "unet", "generator", paper["unet"]["generator"], ours["unet"]["generator"])
    add(
        "GAN generator (the CNN)", "gan", "generator", paper["gan"]["generator"],
        ours["gan"]["generator"],
    )  # fmt: skip
    add(
        "GAN discriminator (PatchGAN)", "gan", "discriminator", paper["gan"]["discriminator"],
        ours["gan"]["discriminator"],
    )  # fmt: skip
    add(
        "improved GAN generator", "gan_improved", "generator",
        paper["gan_improved"]["generator"], ours["gan_improved"]["generator"],
    )  # fmt: skip
    add(
        "improved GAN discriminator", "gan_improved", "discriminator",
        paper["gan_improved"]["discriminator"], ours["gan_improved"]["discriminator"],
    )  # fmt: skip
    add("DDPM denoiser", "ddpm", "denoiser", paper["ddpm"]["denoiser"], ours["ddpm"]["denoiser"])
    return pd.DataFrame(rows).set_index("component")


def unet_parts_table() -> pd.DataFrame:
    """The U-Net's parameters by part (paper settings) beside the supplement's."""
    from slicelib.models import parameter_counts

    parts = parameter_counts(PAPER.model, variants=True)["unet_parts"]
    stated = {"encoder": 259_584, "bottleneck": 885_248, "decoder": 717_376, "final": 65}
    rows = [
        {
            "part": name,
            "this code": f"{count:,}",
            "supplement 2.2": fmt_int(stated.get(name)),
            "matches": "yes" if stated.get(name) == count else "no",
        }
        for name, count in parts.items()
    ]
    return pd.DataFrame(rows).set_index("part")


def training_table(study: Study) -> pd.DataFrame:
    """Every run of the study: its settings and how training went, beside the
    supplement's epochs, batch size, minutes per epoch and best epoch."""
    rows = []
    for model, k in study.runs():
        cfg = study.train_config(model, k)
        history = study.history(model, k)
        best = best_epoch(history, model)
        paper = reported_model(model)
        rows.append(
            {
                "model": method_label(model),
                "k": k,
                "epochs": cfg.epochs,
                "batch": cfg.batch_size,
                "learning rate": f"{cfg.lr:g}",
                "loss": LOSSES[model],
                "crop": cfg.crop or "whole slice",
                "steps per epoch": cfg.steps_per_epoch or "all",
                "best epoch": best,
                "s per epoch": wall_clock(history["seconds"].mean(), 1, " s"),
                "samples/s": wall_clock(history["samples_per_s"].mean(), 1, " /s"),
                "supplement: epochs, batch": f"{paper.epochs}, {paper.batch_size}",
                "supplement: min per epoch": fmt(paper.minutes_per_epoch, 0),
                "supplement: best epoch": paper.best_epoch if k == 1 else "-",
            }
        )
    return pd.DataFrame(rows).set_index(["model", "k"])


def best_epoch(history: pd.DataFrame, model: str) -> int:
    """The epoch the run kept as best: highest validation SSIM (DDPM: lowest val loss)."""
    epochs = history["epoch"].to_numpy()
    if model == "ddpm":
        return int(epochs[int(np.argmin(history["val_loss"].to_numpy()))])
    return int(epochs[int(np.argmax(history["val_ssim"].to_numpy()))])


def run_table(study: Study, model: str, k: int) -> pd.DataFrame:
    """One run at a glance: settings, best epoch, time per epoch, throughput."""
    from slicelib.models import build_generator, count_parameters

    cfg = study.train_config(model, k)  # type: ignore[arg-type]
    history = study.history(model, k)  # type: ignore[arg-type]
    best = best_epoch(history, model)
    chosen = history.set_index("epoch").loc[best]
    params = count_parameters(build_generator(model, cfg.model_cfg))
    criterion = "lowest validation loss" if model == "ddpm" else "highest validation SSIM"
    items = {
        "model": method_label(model),
        "k": k,
        "parameters (generator or denoiser)": f"{params:,}",
        "epochs": cfg.epochs,
        "batch size": cfg.batch_size,
        "training crop": cfg.crop or "whole slice",
        "steps per epoch": cfg.steps_per_epoch or "one pass over the training triplets",
        "best epoch": f"{best} ({criterion})",
        "validation PSNR at best (dB)": fmt(chosen["val_psnr"], 2),
        "validation SSIM at best (Gaussian)": fmt(chosen["val_ssim"], 3),
        "seconds per epoch (mean)": wall_clock(history["seconds"].mean(), 1, " s"),
        "training samples/s (mean)": wall_clock(history["samples_per_s"].mean(), 1, " /s"),
    }
    return pd.DataFrame({"value": [str(v) for v in items.values()]}, index=list(items))


def history_table(history: pd.DataFrame) -> pd.DataFrame:
    """The per-epoch history with readable columns."""
    columns = {
        "train_loss": "train loss",
        "val_loss": "val loss",
        "val_psnr": "val PSNR (dB)",
        "val_ssim": "val SSIM (Gaussian)",
        "seconds": "seconds",
        "samples_per_s": "samples/s",
    }
    out = history.set_index("epoch")[list(columns)].rename(columns=columns)
    out = out.round({"train loss": 4, "val loss": 4, "val PSNR (dB)": 2, "val SSIM (Gaussian)": 4})
    out["seconds"] = [wall_clock(v, 1, " s") for v in out["seconds"]]
    out["samples/s"] = [wall_clock(v, 1, " /s") for v in out["samples/s"]]
    return out


def _yes_no(value: Any) -> str:
    """A flag of the scan table (a bool, or its text after a CSV round trip)."""
    return "yes" if str(value).strip().lower() in ("true", "1", "yes") else "no"


def scan_table(frame: pd.DataFrame, limit: int | None = None) -> pd.DataFrame:
    """The scan, one row per series: what it is, whether it was included, and why not.

    With ``limit``, the selected series come first and the table stops after
    ``limit`` rows (the full table is the study's ``scan.csv``).
    """
    columns = [c for c in SCAN_COLUMNS if c in frame.columns]
    out = frame[columns].copy()
    out["reason"] = out["reason"].fillna("")
    if limit is not None and len(out) > limit:
        order = np.argsort(~out["selected"].astype(bool).to_numpy(), kind="stable")
        out = out.iloc[order[:limit]]
    formats = {
        "field_strength": fmt_tesla,
        "slice_thickness": lambda v: "-" if missing(v) else f"{float(v):g} mm",
        "n_slices": fmt_int,
        "included": _yes_no,
        "selected": _yes_no,
    }
    for column, format_ in formats.items():
        if column in out.columns:
            out[column] = [format_(v) for v in out[column]]
    return out.set_index("patient_id").rename(columns=SCAN_HEADERS).rename_axis("patient")


def exclusion_table(frame: pd.DataFrame) -> pd.DataFrame:
    """How many series each criterion excluded, with one example reason."""
    excluded = frame[~frame["included"].astype(bool)]
    if excluded.empty:
        return pd.DataFrame({"series": [], "example": []})
    key = "criterion" if "criterion" in excluded.columns else "reason"
    grouped = excluded.groupby(key, sort=False)
    out = pd.DataFrame({"series": grouped.size(), "example": grouped["reason"].first()})
    return out.sort_values("series", ascending=False)


def cohort_table(cache: Cache, ks: tuple[int, ...] = (1, 2)) -> pd.DataFrame:
    """Supplement 1.3 for this cohort: patients, volumes, slices and triplets per split
    (per k, and on the common slices), beside the original's numbers."""
    from slicelib.data.dataset import evaluable_indices

    splits = ("train", "val", "test")
    table: dict[str, dict[str, int]] = {}
    for split in splits:
        entries = cache.entries(split)
        col = {
            "patients": len({e.patient_id for e in entries}),
            "volumes": len(entries),
            "slices": sum(int(e.n_slices) for e in entries),
        }
        for k in ks:
            col[f"triplets k={k}"] = sum(
                len(evaluable_indices(int(e.n_slices), k)) for e in entries
            )
        col["triplets, common to k=1 and k=2"] = sum(
            len(evaluable_indices(int(e.n_slices), 1, common=True)) for e in entries
        )
        table[split] = col
    out = pd.DataFrame(table)
    out["total"] = out.sum(axis=1)
    triplets = " / ".join(fmt_int(REPORTED_COHORT[f"{s} triplets"]) for s in splits)
    original = {
        "patients": fmt_int(REPORTED_COHORT["patients"]),
        "volumes": fmt_int(REPORTED_COHORT["volumes"]),
        "slices": fmt_int(REPORTED_COHORT["slices"]),
        "triplets k=1": f"{triplets} (train / val / test)",
        "triplets, common to k=1 and k=2": f"{fmt_int(REPORTED_COHORT['test triplets'])} (test)",
    }
    out["original (supplement 1.3)"] = [original.get(str(i), "-") for i in out.index]
    return out


def result_numbers(results: list[Results]) -> dict[str, Any]:
    """Numbers of the results for the prose: ``k<k>_<method>_{psnr,ssim,ssim_gauss,
    gain_pct,gain_db,gain_ci,p_linear,ms}``, ``k<k>_slices``, ``k<k>_best`` (its label)."""
    values: dict[str, Any] = {}
    for res in results:
        k = res.k
        for r in res.summary.to_dict("records"):
            m = r["method"]
            values[f"k{k}_{m}_psnr"] = r["psnr_mean"]
            values[f"k{k}_{m}_ssim"] = r["ssim_mean"]
            values[f"k{k}_{m}_ssim_gauss"] = r["ssim_gauss_mean"]
            values[f"k{k}_{m}_gain_db"] = r.get("psnr_gain_db")
            values[f"k{k}_{m}_gain_pct"] = r.get("psnr_gain_pct")
            values[f"k{k}_{m}_gain_ci"] = fmt_ci(
                r.get("psnr_gain_ci_low"), r.get("psnr_gain_ci_high")
            )
            values[f"k{k}_{m}_p_linear"] = _p_or_reason(
                r.get("p_psnr_vs_linear"), r.get("test_vs_linear")
            )
            tested = not missing(r.get("p_psnr_vs_linear"))
            values[f"k{k}_{m}_inference"] = (
                f"95 % CI of the gain {values[f'k{k}_{m}_gain_ci']} dB, "
                f"{p_text(r.get('p_psnr_vs_linear'))}"
                if tested
                else str(r.get("test_vs_linear") or "no test")
            )
            values[f"k{k}_{m}_ms"] = r["ms_per_slice"]
        values[f"k{k}_slices"] = int(res.summary["n_slices"].max())
        values[f"k{k}_patients"] = int(res.summary["n_patients"].max())
        values[f"k{k}_best"] = method_label(str(res.summary["best_psnr"].iloc[0]))
    values["min_test_patients"] = MIN_TEST_PATIENTS
    return values


def parameter_numbers() -> dict[str, Any]:
    """Parameter counts at the paper's settings for the prose (formatted with commas)."""
    from slicelib.models import parameter_counts

    counts = parameter_counts(PAPER.model, variants=True)
    return {
        "params_cnn": f"{counts['cnn']['generator']:,}",
        "params_cnn_two_conv": f"{counts['cnn_two_conv']['generator']:,}",
        "params_unet": f"{counts['unet']['generator']:,}",
        "params_gan_disc": f"{counts['gan']['discriminator']:,}",
        "params_gan_improved": f"{counts['gan_improved']['generator']:,}",
        "params_gan_improved_disc": f"{counts['gan_improved']['discriminator']:,}",
        "params_ddpm": f"{counts['ddpm']['denoiser'] / 1e6:.1f} M",
    }


def training_numbers(study: Study) -> dict[str, Any]:
    """Training figures for the prose: per run ``train_<model>_k<k>_{epochs,best,
    s_per_epoch,samples_per_s}``, and the total training time in minutes."""
    values: dict[str, Any] = {}
    total = 0.0
    for model, k in study.runs():
        history = study.history(model, k)
        key = f"train_{model}_k{k}"
        values[f"{key}_epochs"] = int(len(history))
        values[f"{key}_best"] = best_epoch(history, model)
        values[f"{key}_s_per_epoch"] = float(history["seconds"].mean())
        values[f"{key}_samples_per_s"] = float(history["samples_per_s"].mean())
        total += float(history["seconds"].sum())
    values["train_total_minutes"] = total / 60.0
    values["train_runs"] = len(study.runs())
    values["train_lr"] = lr_text(study.train_config(*study.runs()[0]).lr)
    values["train_budget_sentence"] = budget_sentence(study)
    return values


def lr_text(lr: float) -> str:
    """A learning rate as the book writes it: "1e-3" for 0.001, "2.5e-4"."""
    mantissa, exponent = f"{lr:e}".split("e")
    return f"{float(mantissa):g}e{int(exponent)}"


def budget_sentence(study: Study) -> str:
    """The optimisation budget of the study's runs, in words: one sentence when
    every network has the same (epochs x steps x batch), else one clause per model."""
    from slicelib.study.prose import plural

    budgets: dict[str, tuple[int, int | None, int]] = {}
    for model, k in study.runs():
        cfg = study.train_config(model, k)
        budgets.setdefault(model, (cfg.epochs, cfg.steps_per_epoch, cfg.batch_size))

    def words(epochs: int, steps: int | None, batch: int) -> str:
        if steps is None:
            return (
                f"{plural(epochs, 'epoch')} of one pass over the training triplets in "
                f"batches of {batch}"
            )
        return (
            f"{plural(epochs, 'epoch')} of {plural(steps, 'step')} in batches of {batch} "
            f"({plural(epochs * steps, 'step')}, {epochs * steps * batch:,} training samples)"
        )

    if len(set(budgets.values())) == 1:
        return f"Every network trained for {words(*next(iter(budgets.values())))}."
    clauses = "; ".join(f"{method_label(m)}: {words(*b)}" for m, b in budgets.items())
    return f"The networks' budgets differ: {clauses}."
