"""The real-anatomy arm: the study's relative claims on real MRI that ships with the project.

The synthetic cohort runs every experiment end to end, but it was made to look like
the task. This arm asks the central questions (do networks beat linear interpolation
at k=1, and at k=2?) on the repository's IXI T1 subset (:data:`REAL_DATA`): real
head MRI of healthy adults, another organ and contrast than the original's prostate
T2, with slices resampled from 1.2 mm to 2 mm. It is a second :class:`Study` (the
``real`` preset) in ``<out>/real`` of the main study's workspace; its notebook is
``notebooks/real_anatomy.ipynb``.

Beside the evaluation it measures the headroom (:mod:`slicelib.headroom`): how much
the best linear filter of the two neighbours and two oracle blends gain over linear
interpolation on the same slices, so that "nothing to learn" can be told from "not
learned yet".
"""

from __future__ import annotations

import logging
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd

from slicelib import original
from slicelib.config import MODEL_NAMES, PAPER, PAPER_EPOCHS, ModelName, get_preset
from slicelib.data.cache import Cache
from slicelib.data.dataset import TripletDataset
from slicelib.data.triplets import evaluable_indices
from slicelib.headroom import (
    DEFAULT_TAPS,
    apply_linear_filter,
    fit_linear_filter,
    oracle_blend,
    slice_psnr,
)
from slicelib.io import atomic_write
from slicelib.methods import method_label
from slicelib.results import Results
from slicelib.stats import Comparison, Inference, compare, infer_mean
from slicelib.study.figures import ERROR_CMAP, PAGE_WIDTH, StudyFigure, _figure
from slicelib.study.labels import fmt_ci, fmt_p, fmt_signed
from slicelib.study.stamps import digest
from slicelib.study.step import Step, ensure
from slicelib.study.workspace import Study

logger = logging.getLogger(__name__)

# Where the real data lives in a checkout, and the arm's folder in a study's workspace.
REAL_DATA = Path("data") / "ixi-t1-2mm"
WORKSPACE = "real"
# Headroom references, in the order the book shows them: name -> oracle block (None:
# the fitted linear filter).
HEADROOM: dict[str, int | None] = {"filter": None, "oracle_tile": 8, "oracle_pixel": 1}
# Training pixels per slice in the filter's normal equations: 512 of each of the ~3,400
# training slices fix its 163 unknowns and take a quarter of the default's time.
HEADROOM_PIXELS_PER_SLICE = 512
HEADROOM_LABELS: dict[str, str] = {
    "filter": f"best {DEFAULT_TAPS}x{DEFAULT_TAPS} linear filter (fitted on training subjects)",
    "oracle_tile": "oracle blend per 8x8 tile (bound)",
    "oracle_pixel": "oracle blend per pixel (bound)",
}


def real_data_root(source_root: Path) -> Path | None:
    """The checkout's real cohort, or None when the checkout does not carry it."""
    root = source_root / REAL_DATA
    return root if root.is_dir() and any(root.glob("*.nii*")) else None


def real_study(
    preset: str, study_out: str | Path, data_root: str | Path, *, device: str = "auto"
) -> Study:
    """The real arm of the study in ``study_out``: preset ``preset`` (e.g. ``real``) on
    ``data_root``, in ``<study_out>/real``."""
    return Study(get_preset(preset), Path(study_out) / WORKSPACE, data_root, device=device)


# Headroom -------------------------------------------------------------------------------


def _stacks(
    cache: Cache, refs: Sequence[tuple[str, int]], k: int
) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """(before, after, target) float32 stacks (N, H, W) of ``refs``."""
    by_patient: dict[str, list[int]] = {}
    for pid, i in refs:
        by_patient.setdefault(pid, []).append(i)
    parts: list[list[np.ndarray]] = [[], [], []]
    for pid, idx in by_patient.items():
        vol = np.asarray(cache.volume(pid), dtype=np.float32)
        index = np.asarray(idx)
        for part, arr in zip(parts, (vol[index - k], vol[index + k], vol[index])):
            part.append(arr)
    before, after, target = (np.concatenate(p) for p in parts)
    return before, after, target


def _training_refs(cache: Cache, k: int) -> list[tuple[str, int]]:
    return [
        (e.patient_id, int(i))
        for e in cache.entries("train")
        for i in evaluable_indices(int(e.n_slices), k)
    ]


def headroom(study: Study, ks: Sequence[int] = (1, 2)) -> pd.DataFrame:
    """Per test subject and k, each :data:`HEADROOM` reference's mean PSNR and its gain
    over linear interpolation, on the slices the evaluation scores
    (``<workspace>/results/headroom.csv``, made once per cache and settings).

    Columns: ``k, predictor, patient_id, psnr, linear_psnr, gain_db``.
    """
    from slicelib.evaluate import select_slices

    cfg = study.preset.eval
    csv = study.results_dir / "headroom.csv"
    inputs = {
        "cache": study.cache_hash(),
        "ks": list(ks),
        "taps": DEFAULT_TAPS,
        "pixels_per_slice": HEADROOM_PIXELS_PER_SLICE,
        "predictors": HEADROOM,
        "slices_per_patient": cfg.slices_per_patient,
        "seed": cfg.seed,
    }

    def make() -> None:
        cache = study.cache()
        rows: list[pd.DataFrame] = []
        for k in ks:
            train_before, train_after, train_target = _stacks(cache, _training_refs(cache, k), k)
            filt = fit_linear_filter(
                train_before, train_after, train_target, pixels_per_slice=HEADROOM_PIXELS_PER_SLICE,
                seed=cfg.seed,
            )  # fmt: skip
            del train_before, train_after, train_target
            refs = select_slices(cache, k, per_patient=cfg.slices_per_patient)
            before, after, target = _stacks(cache, [(r.patient_id, r.slice_index) for r in refs], k)
            subject = np.array([r.patient_id for r in refs])
            linear = slice_psnr(0.5 * (before + after), target)
            for name, block in HEADROOM.items():
                if block is None:
                    pred = apply_linear_filter(filt, before, after)
                else:
                    pred = oracle_blend(before, after, target, block=block)
                frame = (
                    pd.DataFrame(
                        {"patient_id": subject, "psnr": slice_psnr(pred, target), "linear": linear}
                    )
                    .groupby("patient_id", sort=True)[["psnr", "linear"]]
                    .mean()
                )
                frame = frame.rename(columns={"linear": "linear_psnr"}).reset_index()
                frame.insert(0, "predictor", name)
                frame.insert(0, "k", k)
                frame["gain_db"] = frame["psnr"] - frame["linear_psnr"]
                rows.append(frame)
        table = pd.concat(rows, ignore_index=True)
        study.results_dir.mkdir(parents=True, exist_ok=True)
        atomic_write(csv, lambda tmp: table.to_csv(tmp, index=False))

    step = Step("headroom", csv, digest(inputs), inputs, make, what="measuring the headroom")
    ensure(step, study.lock_dir)
    return pd.read_csv(csv, dtype={"patient_id": str})


def headroom_table(frame: pd.DataFrame, study: Study) -> pd.DataFrame:
    """Each reference's gain over linear at each k: mean over test subjects with its
    95 % bootstrap interval over subjects, sign-flip p and the number of subjects."""
    rows = []
    for name in HEADROOM:
        row: dict[str, Any] = {"reference": HEADROOM_LABELS[name]}
        for k, part in frame[frame["predictor"] == name].groupby("k", sort=True):
            inf = _infer(part["gain_db"].to_numpy(), study)
            row[f"k={k}: gain (dB)"] = fmt_signed(inf.mean)
            row[f"k={k}: 95 % CI"] = fmt_ci(inf.ci_low, inf.ci_high)
            row[f"k={k}: subjects"] = inf.n_patients
        rows.append(row)
    return pd.DataFrame(rows).set_index("reference")


def _infer(values: np.ndarray, study: Study) -> Inference:
    cfg = study.preset.eval
    return infer_mean(values, n_boot=cfg.bootstrap, seed=cfg.seed)


def headroom_numbers(frame: pd.DataFrame, study: Study) -> dict[str, Any]:
    """``real_headroom_<predictor>_k<k>`` (mean gain, dB), with ``_lo``/``_hi``."""
    values: dict[str, Any] = {}
    for (name, k), part in frame.groupby(["predictor", "k"], sort=True):
        inf = _infer(part["gain_db"].to_numpy(), study)
        key = f"real_headroom_{name}_k{k}"
        values.update({key: inf.mean, f"{key}_lo": inf.ci_low, f"{key}_hi": inf.ci_high})
    return values


# Results -------------------------------------------------------------------------------


def comparisons(res: Results, study: Study, reference: str = "linear") -> list[Comparison]:
    """Every method of ``res`` against ``reference`` on PSNR, paired by subject."""
    cfg = study.preset.eval
    return [
        compare(res.rows, m, reference, "psnr", n_boot=cfg.bootstrap, seed=cfg.seed)
        for m in res.methods
        if m != reference
    ]


def gain_table(results: Sequence[Results], study: Study) -> pd.DataFrame:
    """Each method's PSNR gain over linear at each k: mean over test subjects of the
    paired per-subject difference, its 95 % interval, the sign-flip p and the number of
    subjects; linear's own mean PSNR heads each column."""
    rows: dict[str, dict[str, Any]] = {}
    for res in results:
        k = res.k
        linear = res.row("linear")["psnr_mean"]
        rows.setdefault("linear", {"method": method_label("linear")})
        rows["linear"].update(
            {f"k={k}: gain (dB)": f"0 (PSNR {linear:.2f} dB)", f"k={k}: 95 % CI": "-",
             f"k={k}: p": "-", f"k={k}: subjects": str(int(res.row("linear")["n_patients"]))}
        )  # fmt: skip
        for c in comparisons(res, study):
            row = rows.setdefault(c.method, {"method": method_label(c.method)})
            row.update(
                {
                    f"k={k}: gain (dB)": fmt_signed(c.gain),
                    f"k={k}: 95 % CI": fmt_ci(c.ci_low, c.ci_high),
                    f"k={k}: p": fmt_p(c.p_value),
                    f"k={k}: subjects": str(c.n_patients),
                }
            )
    return pd.DataFrame(list(rows.values())).fillna("-").set_index("method")


def gain_numbers(results: Sequence[Results], study: Study) -> dict[str, Any]:
    """``real_k<k>_<method>_gain`` (dB) with ``_lo``, ``_hi``, ``_p``; ``real_k<k>_linear_psnr``,
    ``real_k<k>_subjects``, ``real_k<k>_slices``."""
    values: dict[str, Any] = {}
    for res in results:
        k = res.k
        values[f"real_k{k}_linear_psnr"] = res.row("linear")["psnr_mean"]
        values[f"real_k{k}_subjects"] = int(res.row("linear")["n_patients"])
        values[f"real_k{k}_slices"] = int(res.row("linear")["n_slices"])
        for c in comparisons(res, study):
            key = f"real_k{k}_{c.method}"
            values.update(
                {
                    f"{key}_gain": c.gain,
                    f"{key}_lo": c.ci_low,
                    f"{key}_hi": c.ci_high,
                    f"{key}_p": fmt_p(c.p_value),
                }
            )
    return values


def subject_gains(res: Results, reference: str = "linear") -> pd.DataFrame:
    """Per subject and method: mean PSNR gain over ``reference`` on the slices both scored
    (columns ``patient_id, method, gain_db``)."""
    rows = res.rows[["method", "patient_id", "slice_index", "psnr"]]
    ref = rows[rows["method"] == reference].drop(columns="method")
    both = rows[rows["method"] != reference].merge(
        ref, on=["patient_id", "slice_index"], suffixes=("", "_ref")
    )
    both["gain_db"] = both["psnr"] - both["psnr_ref"]
    return both.groupby(["patient_id", "method"], sort=False)["gain_db"].mean().reset_index()


def subject_gain_figure(results: Sequence[Results], reference: str = "linear") -> StudyFigure:
    """One dot per test subject: each method's PSNR gain over ``reference``, at each k
    (one panel per k, shared axis); the bar is the mean over subjects."""
    fig = StudyFigure(figsize=(PAGE_WIDTH, 3.0), layout="constrained")
    axes = np.atleast_1d(fig.subplots(1, len(results), sharey=True, squeeze=False)[0])
    rng = np.random.default_rng(0)  # horizontal jitter only, so dots do not overlap
    for ax, res in zip(axes, results):
        gains = subject_gains(res, reference)
        methods = [m for m in res.methods if m != reference]
        for x, m in enumerate(methods):
            g = gains.loc[gains["method"] == m, "gain_db"].to_numpy()
            ax.scatter(x + rng.uniform(-0.15, 0.15, g.size), g, s=12, alpha=0.7, color="C0")
            ax.hlines(g.mean(), x - 0.3, x + 0.3, color="black", linewidth=1.5)
        ax.axhline(0.0, color="grey", linestyle="--", linewidth=1)
        ax.set_xticks(range(len(methods)), [method_label(m) for m in methods], rotation=30)
        ax.set_title(f"k={res.k} ({gains['patient_id'].nunique()} subjects)")
    axes[0].set_ylabel(f"PSNR gain over {method_label(reference)} (dB)")
    return fig


def error_panels(
    predictions: Mapping[int, Any], methods: Sequence[str], zoom_box: tuple[slice, slice]
) -> StudyFigure:
    """One row per k: the target, then each method's prediction, then each method's
    absolute error (one colour scale per row, with its colour bar).

    ``predictions``: k -> :class:`~slicelib.evaluate.SlicePredictions` of one slice."""
    cols = 1 + 2 * len(methods)
    fig, axes = _figure(len(predictions), cols, width=PAGE_WIDTH / cols, height=PAGE_WIDTH / cols)
    for row, (k, preds) in enumerate(sorted(predictions.items())):
        target = preds.targets[0][zoom_box]
        axes[row, 0].imshow(target, cmap="gray", vmin=0, vmax=1)
        axes[row, 0].set_title(f"target, k={k}", fontsize=8)
        errors = [np.abs(preds.predictions[m][0][zoom_box] - target) for m in methods]
        top = float(max(e.max() for e in errors)) or 1.0
        image = None
        for j, (m, err) in enumerate(zip(methods, errors)):
            pred = preds.predictions[m][0][zoom_box]
            psnr = float(slice_psnr(preds.predictions[m][:1], preds.targets[:1])[0])
            axes[row, 1 + j].imshow(pred, cmap="gray", vmin=0, vmax=1)
            axes[row, 1 + j].set_title(f"{method_label(m)}\n{psnr:.2f} dB", fontsize=8)
            image = axes[row, 1 + len(methods) + j].imshow(err, cmap=ERROR_CMAP, vmin=0, vmax=top)
            axes[row, 1 + len(methods) + j].set_title(f"|error| {method_label(m)}", fontsize=8)
        if image is not None:
            fig.colorbar(image, ax=list(axes[row, 1 + len(methods) :]), shrink=0.8)
    return fig


# Training -------------------------------------------------------------------------------


def _val_linear(cache: Cache, k: int, max_slices: int | None) -> float:
    """Linear interpolation's mean PSNR on the validation slices a run validates on."""
    data = TripletDataset(cache, "val", k, max_slices=max_slices)
    items = [data[i] for i in range(len(data))]
    pred = np.stack([it.inputs.mean(dim=0).numpy() for it in items])
    target = np.stack([it.target[0].numpy() for it in items])
    return float(slice_psnr(pred, target).mean())


def training_runs(study: Study) -> pd.DataFrame:
    """One row per epoch of every run: validation PSNR gain over linear on the same
    validation slices, and the run's budget (``model, k, epoch, val_gain_db, steps,
    samples, seconds``; steps, samples and seconds are cumulative)."""
    cache = study.cache()
    frames = []
    for model, k in study.runs():
        cfg = study.train_config(model, k)
        history = study.history(model, k)
        linear = _val_linear(cache, k, cfg.val_max_slices)
        steps = cfg.steps_per_epoch or len(TripletDataset(cache, "train", k)) // cfg.batch_size
        frames.append(
            pd.DataFrame(
                {
                    "model": model,
                    "k": k,
                    "epoch": history["epoch"],
                    "val_gain_db": history["val_psnr"] - linear,
                    "steps": history["epoch"] * steps,
                    "samples": history["epoch"] * steps * cfg.batch_size,
                    "seconds": history["seconds"].cumsum(),
                }
            )
        )
    return pd.concat(frames, ignore_index=True)


def budget_table(runs: pd.DataFrame, study: Study) -> pd.DataFrame:
    """Per run: steps, crop, samples, wall seconds, the validation gain over linear at the
    last epoch and its change over the last epoch (how far from flat)."""
    crop = study.preset.crop or study.preset.prepare.size
    rows = []
    for (model, k), part in runs.groupby(["model", "k"], sort=False):
        last = part.iloc[-1]
        change = last["val_gain_db"] - part.iloc[-2]["val_gain_db"] if len(part) > 1 else np.nan
        rows.append(
            {
                "run": f"{method_label(str(model))}, k={k}",
                "steps": int(last["steps"]),
                "crop (px)": crop,
                "training samples": int(last["samples"]),
                "seconds": round(float(last["seconds"]), 1),
                "val gain, last epoch (dB)": fmt_signed(last["val_gain_db"]),
                "change over the last epoch (dB)": fmt_signed(change),
            }
        )
    return pd.DataFrame(rows).set_index("run")


def budget_numbers(runs: pd.DataFrame, study: Study) -> dict[str, Any]:
    """``real_steps``, ``real_samples``, ``real_train_seconds`` (all runs),
    ``real_max_last_change`` (largest change of validation gain over the last epoch,
    text with its unit), ``real_paper_samples`` (the original U-Net's training
    triplets times epochs, at 256 px) and ``real_budget_ratio`` (its training pixels
    over one run's here)."""
    crop = study.preset.crop or study.preset.prepare.size
    paper_samples = original.REPORTED_COHORT["train triplets"] * PAPER_EPOCHS["unet"]
    lasts = runs.groupby(["model", "k"], sort=False).tail(1)
    changes = runs.groupby(["model", "k"], sort=False)["val_gain_db"].apply(
        lambda g: g.iloc[-1] - g.iloc[-2] if len(g) > 1 else np.nan
    )
    samples = int(lasts["samples"].max())
    return {
        "real_runs": len(lasts),
        "real_steps": int(lasts["steps"].max()),
        "real_samples": samples,
        "real_crop": crop,
        "real_train_seconds": float(lasts["seconds"].sum()),
        "real_max_last_change": (
            f"{float(changes.abs().max()):.2f} dB"
            if changes.notna().any()
            else "not measured (one epoch per run)"
        ),
        "real_paper_samples": paper_samples,
        "real_budget_ratio": paper_samples * PAPER.prepare.size**2 / (samples * crop**2),
    }


def run_models(study: Study) -> list[ModelName]:
    """The networks the arm trains at every k of its preset."""
    return [m for m in study.preset.models if all(m in study.models_at(k) for k in study.preset.ks)]


def untrained_models(study: Study) -> list[ModelName]:
    """The study's networks that this arm's preset does not train at every k."""
    trained = run_models(study)
    return [m for m in MODEL_NAMES if m not in trained]


# The networks the example panels show (when trained): the two the arm's preset trains.
PANEL_MODELS: tuple[ModelName, ...] = ("cnn", "unet")


def panel_models(study: Study) -> list[ModelName]:
    return [m for m in run_models(study) if m in PANEL_MODELS]


def validation_gain_figure(runs: pd.DataFrame) -> StudyFigure:
    """Validation PSNR gain over linear interpolation per epoch, one line per run: a
    curve still rising at its last epoch was stopped by the budget, not by learning."""
    from slicelib.study.figures import epoch_axis

    fig = StudyFigure(figsize=(PAGE_WIDTH / 2, 2.6), layout="constrained")
    ax = fig.subplots()
    for (model, k), part in runs.groupby(["model", "k"], sort=False):
        style = "-" if k == 1 else "--"
        ax.plot(part["epoch"], part["val_gain_db"], style, marker="o", markersize=3,
                label=f"{method_label(str(model))}, k={k}")  # fmt: skip
    ax.axhline(0.0, color="grey", linewidth=0.8)
    epoch_axis(ax, runs["epoch"])
    ax.set_ylabel("val. PSNR gain over linear (dB)")
    ax.legend(fontsize=7)
    return fig


# The note every verdict of this arm carries: what the cohort is, so that no verdict
# reads as a test of the original's prostate data.
REAL_NOTE = "real data of another organ and contrast (IXI T1 head), resampled slices"


def marked_verdicts(table: pd.DataFrame) -> pd.DataFrame:
    """The claims table of this arm, data-derived rows only, each verdict marked with
    :data:`REAL_NOTE` (facts of the code are shown with the synthetic arm)."""
    from slicelib.study.claims import CODE_FACT, NOTE_SEPARATOR

    rows = table[~table["verdict"].str.endswith(CODE_FACT)].copy()
    rows["verdict"] = rows["verdict"] + NOTE_SEPARATOR + REAL_NOTE
    return rows[["original", "this run", "rule", "verdict"]]
