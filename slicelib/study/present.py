"""How the book shows numbers: formats (each written once), tables of display strings,
sentences and glue. A sentence that compares numbers chooses its words from them, so that it
cannot contradict the numbers beside it when a run changes; notebooks glue it whole with
:func:`glue_values` and chapters cite it with ``{glue:text}``: no number in the prose is typed.
"""

from __future__ import annotations

import dataclasses
import math
from collections.abc import Callable, Mapping
from typing import TYPE_CHECKING, Any

import numpy as np
import pandas as pd

from slicelib import methods, original
from slicelib.config import PAPER, ModelConfig, TrainConfig
from slicelib.methods import ANCESTRAL, DETERMINISTIC_MODELS, method_label
from slicelib.stats import EXACT_MAX_PATIENTS, MIN_TEST_PATIENTS, Comparison, p_floor

if TYPE_CHECKING:
    from slicelib.data.cache import Cache
    from slicelib.results import Results
    from slicelib.study.workspace import Study

# Formats ------------------------------------------------------------------------------


def missing(value: Any) -> bool:
    return value is None or (isinstance(value, float) and math.isnan(value))


def fmt(value: Any, digits: int = 2) -> str:
    """A number with ``digits`` decimals; "-" for a missing one, as every ``fmt_*``."""
    return "-" if missing(value) else f"{float(value):.{digits}f}"


def fmt_signed(value: Any, digits: int = 2, unit: str = "") -> str:
    return "-" if missing(value) else f"{float(value):+.{digits}f}{unit}"


def fmt_int(value: Any) -> str:
    return "-" if missing(value) else f"{int(value):,}"


def fmt_pm(mean: Any, std: Any, digits: int = 2) -> str:
    return "-" if missing(mean) else f"{fmt(mean, digits)} ± {fmt(std, digits)}"


def fmt_ci(low: Any, high: Any, digits: int = 2) -> str:
    return "-" if missing(low) or missing(high) else f"[{fmt(low, digits)}, {fmt(high, digits)}]"


# Below this a p-value is a bound: more digits would claim a precision that a test over a
# few patients does not have.
P_FLOOR = 0.001


def fmt_p(value: Any) -> str:
    """A p-value for a table cell: "0.031", "0.42", or "< 0.001" below :data:`P_FLOOR`."""
    if missing(value):
        return "-"
    return f"< {P_FLOOR:g}" if float(value) < P_FLOOR else f"{float(value):.2g}"


def p_text(value: Any, n_patients: int | None = None) -> str:
    """A p-value in a sentence, "p = 0.031" or "p < 0.001"; with ``n_patients``, the
    sign-flip test's floor beside it: "..., the floor for 6 patients" or "p = 0.42, floor
    0.031 with 6 patients"."""
    text = fmt_p(value)
    text = f"p {text}" if text.startswith("<") else f"p = {text}"
    if n_patients is None or missing(value):
        return text
    floor = p_floor(n_patients)
    who = plural(n_patients, "patient")
    if float(value) <= floor:
        return f"{text}, the floor for {who}"
    return f"{text}, floor {fmt_p(floor)} with {who}"


def p_floor_note(n_patients: int) -> str:
    """What the sign-flip p-values over ``n_patients`` paired patients can show: the
    smallest p the test can give, and that they are unadjusted."""
    floor = f"{p_floor(n_patients):.2g}"
    if n_patients <= EXACT_MAX_PATIENTS:
        floor = f"2/2^{n_patients} = {floor}"
    text = (
        f"With {plural(n_patients, 'patient')} the sign-flip test cannot give a p below "
        f"{floor} (the p floor), however large and consistent the difference"
    )
    if n_patients < MIN_TEST_PATIENTS:
        return f"{text}; below {MIN_TEST_PATIENTS} patients no comparison is tested."
    return (
        f"{text}; each p is for one comparison, unadjusted, and says whether a difference "
        "is consistent across patients, not whether it matters (the verdicts judge that "
        "against margins)."
    )


def fmt_tesla(value: Any) -> str:
    """A field strength to the half tesla, as scanners are named: "3 T" for 2.89362,
    "1.5 T"; gauss converted."""
    from slicelib.data.criteria import field_strength_tesla

    if missing(value):
        return "-"
    tesla = field_strength_tesla(float(value))
    assert tesla is not None
    return f"{round(tesla * 2) / 2:g} T"


def wall_clock(value: Any, digits: int, unit: str) -> str:
    """Every timing a notebook prints, with its unit ("3.5 s", "2.5 /s", "12.3×"), which
    marks it as wall clock for ``make verify``'s sanitizer (``.nbval-sanitize.cfg``)."""
    return f"{fmt(value, digits)}{unit}"


# What a glued wall-clock value's text ends with; ``.nbval-sanitize.cfg`` matches it.
WALL_CLOCK_MARK = " # wall clock"


class WallClock(float):
    """A measured time, rate or ratio to glue: glued as "3.52 # wall clock" (a Python
    comment), which ``{glue:text}`` still formats as a number and ``make verify``'s
    sanitizer leaves out. Results are glued as plain numbers."""

    def __repr__(self) -> str:
        return f"{float(self)!r}{WALL_CLOCK_MARK}"


# What the qualitative figures show: every method, or a short list for Fig. 2.
FIGURE_METHODS: tuple[str, ...] = (*methods.CLASSICAL, *DETERMINISTIC_MODELS, "mcnet", ANCESTRAL)
SHORT_FIGURE_METHODS: tuple[str, ...] = ("linear", "flow", "unet", "gan_improved", ANCESTRAL)


def figure_methods(available: Any, short: bool = False) -> list[str]:
    """The methods among ``available`` that a figure shows, in the book's order; the full
    list adds the DDPM's DDIM variant with the most steps."""
    names = list(available)
    wanted = list(SHORT_FIGURE_METHODS if short else FIGURE_METHODS)
    if not short:
        ddim = [m for m in names if methods.is_ddim(m)]
        steps = {m: int(getattr(methods.method_spec(m), "steps", 0) or 0) for m in ddim}
        wanted += sorted(ddim, key=steps.__getitem__)[-1:]
    return [m for m in wanted if m in names]


# Sentences ----------------------------------------------------------------------------


def plural(n: int, noun: str) -> str:
    """ "1 patient", "6 patients"."""
    return f"{n:,} {noun}" if n == 1 else f"{n:,} {noun}s"


def finite(value: Any) -> bool:
    """Whether ``value`` is a finite int or float."""
    return isinstance(value, (int, float)) and math.isfinite(float(value))


def word_list(items: list[str]) -> str:
    """ "a", "a and b", "a, b and c"."""
    return items[0] if len(items) == 1 else ", ".join(items[:-1]) + " and " + items[-1]


def uncertainty_sentence(summary: pd.DataFrame, labels: Mapping[str, str]) -> str:
    """Which estimator is better calibrated (lower ENCE), which ranks errors better (higher
    Spearman), and how the predicted std compares with the error. ``summary``: indexed by
    estimator, columns ``ence``, ``spearman``, ``std_mean`` and ``mae_mean``."""
    names = list(summary.index)
    ence, rho = (
        {n: float(v) for n, v in zip(names, summary[c]) if finite(v)} for c in ("ence", "spearman")
    )
    best = min(ence, key=ence.__getitem__) if len(ence) >= 2 else None
    parts: list[str] = []
    if best is not None:
        others = ", ".join(f"{labels[n]} {ence[n]:.3f}" for n in names if n != best and n in ence)
        parts.append(
            f"The better calibrated estimator by ENCE (lower is better) is the {labels[best]} "
            f"({ence[best]:.3f}, against {others})."
        )
    if len(rho) >= 2:
        top = max(rho, key=rho.__getitem__)
        others = ", ".join(f"{labels[n]} {rho[n]:.3f}" for n in names if n != top)
        agree = "the same estimator" if top == best else f"the {labels[top]}"
        parts.append(
            f"The one whose predicted standard deviation ranks the errors better (higher "
            f"Spearman correlation) is {agree} ({rho[top]:.3f}, against {others})."
        )
    for n in names if {"std_mean", "mae_mean"} <= set(summary.columns) else []:
        std, err = float(summary.loc[n, "std_mean"]), float(summary.loc[n, "mae_mean"])
        if not (finite(std) and finite(err)) or err <= 0:
            continue
        relation = "at least as large as"
        if std < err:
            relation = f"{err / std:.0f} times smaller than" if std > 0 else "zero against"
        parts.append(
            f"For the {labels[n]}, the mean predicted standard deviation ({std:.4f}) is "
            f"{relation} the mean absolute error ({err:.4f})."
        )
    return " ".join(parts) if parts else "Neither estimator gives a finite calibration."


def hardest_position_sentence(table: pd.DataFrame, method: str, k: int) -> str:
    """Where in the volume ``method`` scores lowest: ``table`` is indexed by bin centre of
    relative position in [0, 1], a PSNR column per method."""
    column = table[method].dropna() if method in table.columns else pd.Series(dtype=float)
    if column.empty:
        return f"No position bin has a score for {method_label(method)} at k={k}."
    centre = float(column.idxmin())  # type: ignore[arg-type]  # bin centres are floats
    if centre < 0.25 or centre > 0.75:
        where = "near an end of the volume (apex or base)"
    else:
        where = "in the middle part of the volume, not at its ends"
    return (
        f"In this run the {method_label(method)}'s lowest mean PSNR at k={k} "
        f"({float(column.min()):.2f} dB) is in the bin centred at relative position "
        f"{centre:.2f}, {where}."
    )


def relative_gain_sentence(gain_pct: float, better: str, worse: str, metric: str) -> str:
    """ "x % more SSIM at k=1 than at k=2", or "x % less" when the gain is negative."""
    word = "more" if gain_pct >= 0 else "less"
    return f"{abs(gain_pct):.1f} % {word} {metric} at {better} than at {worse}"


def subset_note(summary: pd.DataFrame) -> str:
    """A footnote for the methods scored on fewer slices than the others (``summary``:
    ``method`` and ``n_slices`` columns)."""
    counts = summary.set_index("method")["n_slices"].astype(int)
    full = int(counts.max())
    fewer = counts[counts < full]
    if fewer.empty:
        return f"Every method is scored on the same {full:,} test slices."
    names = ", ".join(f"{method_label(str(m))} ({int(n):,})" for m, n in fewer.items())
    return (
        f"Not every method is scored on all {full:,} test slices: {names}. Their "
        "gain over linear interpolation and their p-values compare them on those "
        "shared slices only, so their rows are not comparable number for number with "
        "the others."
    )


def comparison_sentence(
    c: Comparison, what: str, other: str, unit: str = "", digits: int = 2
) -> str:
    """``what`` against ``other`` paired over patients (:func:`slicelib.stats.compare`):
    "A scores +1.23 dB against B (95 % CI [+0.50, +2.00], p = 0.031, ...): higher", "lower"
    only when the interval lies wholly on one side of 0, else "no difference this run
    resolves"; the reason when there are too few patients."""
    gain = fmt_signed(c.gain, digits, unit)
    if not finite(c.gain):
        return f"{what} and {other} share no scored slice."
    if not c.tested:
        who = plural(c.n_patients, "patient")
        return f"{what} scores {gain} against {other} ({who}: {c.test})."
    verdict = (
        "higher" if c.above_zero else "lower" if c.below_zero else "no difference this run resolves"
    )
    interval = f"[{c.ci_low:+.{digits}f}, {c.ci_high:+.{digits}f}]"
    return (
        f"{what} scores {gain} against {other} ({100 * c.confidence:.0f} % CI {interval}, "
        f"{p_text(c.p_value, c.n_patients)}): {verdict}."
    )


def plain(value: Any) -> Any:
    """``value`` as a plain int, float or str (the book cannot format ``np.float64(...)``)."""
    if isinstance(value, bool):
        return str(value).lower()
    if hasattr(value, "item") and callable(value.item):
        value = value.item()
    if isinstance(value, float) and not math.isfinite(value):
        return "n/a"
    return value if isinstance(value, (int, float, str)) else str(value)


def glue_values(values: Mapping[str, Any]) -> None:
    """Glue each value under its key, without displaying it."""
    from myst_nb import glue

    for key, value in values.items():
        glue(key, plain(value), display=False)


# Tables -------------------------------------------------------------------------------


# Each model's training loss (``L1`` stands for the run's reconstruction loss).
LOSSES: dict[str, str] = {
    "cnn": "L1",
    "unet": "L1",
    "gan": "L1 + 0.001 adversarial",
    "gan_improved": "L1 + 0.01 adversarial + 0.1 feature matching",
    "ddpm": "MSE on the noise",
    "mcnet": "MSE, a correction of the flow estimate",
}


def _vs_linear(r: Mapping[Any, Any], metric: str, digits: int = 2) -> tuple[str, str]:
    """A summary row's 95 % CI of the gain over linear on ``metric``, and its p-value (or
    why there is none)."""
    ci = fmt_ci(r.get(f"{metric}_gain_ci_low"), r.get(f"{metric}_gain_ci_high"), digits)
    p, test = r.get(f"p_{metric}_vs_linear"), r.get("test_vs_linear")
    return ci, test if missing(p) and isinstance(test, str) and test else fmt_p(p)


def results_table(res: Results) -> pd.DataFrame:
    """Every method at one k: PSNR and both SSIMs over slices with their std; over patients
    the 95 % CI of each mean, the paired gain over linear with its CI, and sign-flip p
    against linear. (No p against the best method: a winner picked from the same data is no
    hypothesis set before the run.)"""
    rows = []
    for r in res.summary.to_dict("records"):
        (psnr_ci, psnr_p), (ssim_ci, ssim_p) = _vs_linear(r, "psnr"), _vs_linear(r, "ssim", 3)
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
                "PSNR vs linear 95% CI": psnr_ci,
                "PSNR vs linear (%)": fmt_signed(r.get("psnr_gain_pct"), 1, " %"),
                "SSIM vs linear": fmt_signed(r.get("ssim_gain"), 3),
                "SSIM vs linear 95% CI": ssim_ci,
                "p vs linear (PSNR)": psnr_p,
                "p vs linear (SSIM)": ssim_p,
            }
        )
    return pd.DataFrame(rows).set_index("method")


def inference_table(res: Results, reference: str = "unet") -> pd.DataFrame:
    """Inference time per slice of every method (after warm-up), on the device it ran."""
    ref = res.summary.set_index("method")["ms_per_slice"].get(reference)
    rows = []
    for r in res.summary.to_dict("records"):
        ratio = r["ms_per_slice"] / ref if ref else math.nan
        # decimals that show two significant digits (at least one)
        digits = max(1, 1 - math.floor(math.log10(abs(ratio)))) if finite(ratio) and ratio else 1
        rows.append(
            {
                "method": method_label(r["method"]),
                "device": r.get("device", "-"),
                "ms per slice": wall_clock(r["ms_per_slice"], 2, " ms"),
                f"x {method_label(reference)}": wall_clock(ratio, digits, "×") if ref else "-",
            }
        )
    return pd.DataFrame(rows).set_index("method")


# The components the architecture table counts beside the CNNs: name, model, part.
_COMPONENTS: tuple[tuple[str, str, str], ...] = (
    ("U-Net", "unet", "generator"),
    ("GAN generator (the CNN)", "gan", "generator"),
    ("GAN discriminator (PatchGAN)", "gan", "discriminator"),
    ("improved GAN generator", "gan_improved", "generator"),
    ("improved GAN discriminator", "gan_improved", "discriminator"),
    ("DDPM denoiser", "ddpm", "denoiser"),
)


def architecture_table(preset_model: ModelConfig, trained_convs: int) -> pd.DataFrame:
    """Parameter counts from the code at the paper's settings beside the supplement's,
    both CNN block variants (``trained_convs``: those of the CNN this run trained), and the
    counts at the preset's settings."""
    from slicelib.models import parameter_counts

    paper = parameter_counts(PAPER.model, variants=True)
    ours = parameter_counts(preset_model, variants=True)
    blocks = {n: dataclasses.replace(PAPER.model, cnn_convs_per_block=n) for n in (1, 2)}
    cnn = {n: parameter_counts(cfg)["cnn"]["generator"] for n, cfg in blocks.items()}

    def supplement(model: str, part: str) -> tuple[str, str]:
        """The supplement's count of ``model``'s ``part``, and whether the code's matches."""
        entry = next((e for e in original.REPORTED_MODELS if e.model == model), None)
        if entry is None:
            return "-", "-"
        stated = entry.parameters.get(part)
        if stated is None:
            return "not stated", "-"
        count = paper[model][part]
        if entry.approximate:
            tol = original.APPROXIMATE_TOLERANCE.get(model, 0.05)
            ok = abs(count - stated) <= tol * stated
            return f"about {stated / 1e6:.1f} M", "yes" if ok else "no"
        return f"{stated:,}", "yes" if count == stated else "no"

    rows = []
    for n, kind, stated in (
        (1, "one conv", supplement("cnn", "generator")),
        (2, "conv-ReLU-conv as the text says", ("297,217 (fits one conv per block)", "no")),
    ):
        here = trained_convs == n
        name = f"CNN, 8 blocks of {kind} ({'trained here' if here else 'not trained here'})"
        rows.append((name, fmt_int(cnn[n]), *stated, fmt_int(cnn[n] if here else None)))
    for name, model, part in _COMPONENTS:
        count, preset = fmt_int(paper[model][part]), fmt_int(ours[model][part])
        rows.append((name, count, *supplement(model, part), preset))
    columns = ["component", "parameters (paper settings)", "supplement", "matches", "this preset"]
    return pd.DataFrame(rows, columns=columns).set_index("component")


# A check of the code against the paper's text: matches or differs, never a finding.
MATCHES, DIFFERS = "matches", "differs"


def code_checks_table(architecture: pd.DataFrame) -> pd.DataFrame:
    """The checks of the code against the paper's text, apart from the claims: each row of
    :func:`architecture_table` whose count the supplement states, and whether it matches."""
    stated = architecture[architecture["matches"].isin(["yes", "no"])]
    return pd.DataFrame(
        {
            "supplement": stated["supplement"],
            "this code (paper settings)": stated["parameters (paper settings)"],
            "verdict": stated["matches"].map({"yes": MATCHES, "no": DIFFERS}),
        }
    ).rename_axis("parameters of")


def unet_parts_table() -> pd.DataFrame:
    """The U-Net's parameters by part (paper settings) beside the supplement's."""
    from slicelib.models import parameter_counts

    parts = parameter_counts(PAPER.model, variants=True)["unet_parts"]
    stated = {"encoder": 259_584, "bottleneck": 885_248, "decoder": 717_376, "final": 65}
    rows = [
        (
            name,
            f"{count:,}",
            fmt_int(stated.get(name)),
            "yes" if stated.get(name) == count else "no",
        )
        for name, count in parts.items()
    ]
    columns = ["part", "this code", "supplement 2.2", "matches"]
    return pd.DataFrame(rows, columns=columns).set_index("part")


def training_table(study: Study) -> pd.DataFrame:
    """Every run of the study: its settings and how training went, beside the supplement's."""
    rows = []
    for model, k in study.runs():
        cfg = study.train_config(model, k)
        history = study.history(model, k)
        # None for an extension of the original (the motion-compensated CNN)
        paper = next((e for e in original.REPORTED_MODELS if e.model == model), None)
        rows.append(
            {
                "model": method_label(model),
                "k": k,
                "epochs": cfg.epochs,
                "batch": cfg.batch_size,
                "learning rate": f"{cfg.lr:g}",
                "loss": LOSSES[model].replace("L1", cfg.loss.upper(), 1),
                "crop": cfg.crop or "whole slice",
                "steps per epoch": cfg.steps_per_epoch or "all",
                "best epoch": best_epoch(history, cfg),
                "s per epoch": wall_clock(history["seconds"].mean(), 1, " s"),
                "samples/s": wall_clock(history["samples_per_s"].mean(), 1, " /s"),
                "supplement: epochs, batch": f"{paper.epochs}, {paper.batch_size}"
                if paper
                else "-",
                "supplement: min per epoch": fmt(paper.minutes_per_epoch if paper else None, 0),
                "supplement: best epoch": paper.best_epoch if paper and k == 1 else "-",
            }
        )
    return pd.DataFrame(rows).set_index(["model", "k"])


def _selection(cfg: TrainConfig) -> tuple[str, Callable[[pd.DataFrame], int]]:
    """How a run chooses its best epoch (:mod:`slicelib.objectives`): in words, and the
    position in its history of the epoch it keeps."""
    from slicelib.objectives import keeps_last, selects_on_loss

    if keeps_last(cfg):
        return "the last: the learning rate decays over the run", lambda h: len(h) - 1
    if selects_on_loss(cfg):
        return "lowest validation loss", lambda h: int(np.argmin(h["val_loss"].to_numpy()))
    return "highest validation SSIM", lambda h: int(np.argmax(h["val_ssim"].to_numpy()))


def best_epoch(history: pd.DataFrame, cfg: TrainConfig) -> int:
    """The epoch the run kept as best (:func:`selection_rule`)."""
    return int(history["epoch"].to_numpy()[_selection(cfg)[1](history)])


def selection_rule(cfg: TrainConfig) -> str:
    """How the run chose its best epoch, in words."""
    return _selection(cfg)[0]


def run_table(study: Study, model: str, k: int) -> pd.DataFrame:
    """One run at a glance: settings, best epoch, time per epoch, throughput."""
    from slicelib.models import build_generator, count_parameters

    cfg = study.train_config(model, k)  # type: ignore[arg-type]
    history = study.history(model, k)  # type: ignore[arg-type]
    best = best_epoch(history, cfg)
    chosen = history.set_index("epoch").loc[best]
    params = count_parameters(build_generator(model, cfg.model_cfg))
    items = {
        "model": method_label(model),
        "k": k,
        "parameters (generator or denoiser)": f"{params:,}",
        "epochs": cfg.epochs,
        "batch size": cfg.batch_size,
        "training crop": cfg.crop or "whole slice",
        "steps per epoch": cfg.steps_per_epoch or "one pass over the training triplets",
        "best epoch": f"{best} ({selection_rule(cfg)})",
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
    out = history.set_index("epoch")[list(columns)]
    out = out.round({"train_loss": 4, "val_loss": 4, "val_psnr": 2, "val_ssim": 4})
    out["seconds"] = [wall_clock(v, 1, " s") for v in out["seconds"]]
    out["samples_per_s"] = [wall_clock(v, 1, " /s") for v in out["samples_per_s"]]
    return out.rename(columns=columns)


def _yes_no(value: Any) -> str:
    """A flag of the scan table (a bool, or its text after a CSV round trip)."""
    return "yes" if str(value).strip().lower() in ("true", "1", "yes") else "no"


# The scan table's columns in order: header (None: as named) and cell format (None: as read).
SCAN_COLUMNS: dict[str, tuple[str | None, Callable[[Any], str] | None]] = {
    "patient_id": (None, None),
    "series_description": ("series", None),
    "manufacturer": (None, None),
    "field_strength": ("field strength", fmt_tesla),
    "orientation": (None, None),
    "slice_thickness": ("slice thickness", lambda v: "-" if missing(v) else f"{float(v):g} mm"),
    "n_slices": ("slices", fmt_int),
    "included": (None, _yes_no),
    "selected": (None, _yes_no),
    "reason": (None, None),
}


def scan_table(frame: pd.DataFrame, limit: int | None = None) -> pd.DataFrame:
    """The scan, one row per series: what it is, whether it was included, and why not; with
    ``limit``, the selected series first, and at most ``limit`` rows."""
    out = frame[[c for c in SCAN_COLUMNS if c in frame.columns]].copy()
    out["reason"] = out["reason"].fillna("")
    if limit is not None and len(out) > limit:
        order = np.argsort(~out["selected"].astype(bool).to_numpy(), kind="stable")
        out = out.iloc[order[:limit]]
    for column, (_, format_) in SCAN_COLUMNS.items():
        if format_ is not None and column in out.columns:
            out[column] = [format_(v) for v in out[column]]
    headers = {column: header for column, (header, _) in SCAN_COLUMNS.items() if header}
    return out.set_index("patient_id").rename(columns=headers).rename_axis("patient")


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
    """Supplement 1.3 for this cohort: patients, volumes, slices and triplets (per k, and on
    the common slices) per split, beside the original's numbers."""
    from slicelib.data.triplets import evaluable_indices

    splits = ("train", "val", "test")
    table: dict[str, dict[str, int]] = {}
    for split in splits:
        entries = cache.entries(split)
        slices = [int(e.n_slices) for e in entries]
        col = {"patients": len({e.patient_id for e in entries}), "volumes": len(entries)}
        col["slices"] = sum(slices)
        for k in ks:
            col[f"triplets k={k}"] = sum(len(evaluable_indices(n, k)) for n in slices)
        common = sum(len(evaluable_indices(n, 1, common=True)) for n in slices)
        table[split] = {**col, "triplets, common to k=1 and k=2": common}
    out = pd.DataFrame(table)
    out["total"] = out.sum(axis=1)
    reported = {key: fmt_int(n) for key, n in original.REPORTED_COHORT.items()}
    triplets = " / ".join(reported[f"{s} triplets"] for s in splits)
    reported |= {
        "triplets k=1": f"{triplets} (train / val / test)",
        "triplets, common to k=1 and k=2": f"{reported['test triplets']} (test)",
    }
    out["original (supplement 1.3)"] = [reported.get(str(i), "-") for i in out.index]
    return out


def result_numbers(results: list[Results]) -> dict[str, Any]:
    """Numbers of the results for the prose: ``k<k>_<method>_{psnr,ssim,ssim_gauss,gain_db,
    gain_pct,gain_ci,p_linear,inference,ms}``, ``k<k>_{slices,patients,best,p_floor_note}``,
    ``p_floor`` / ``p_floor_note`` of the first k and ``min_test_patients``."""
    values: dict[str, Any] = {}
    for res in results:
        k = res.k
        for r in res.summary.to_dict("records"):
            key = f"k{k}_{r['method']}"
            p = r.get("p_psnr_vs_linear")
            for metric in ("psnr", "ssim", "ssim_gauss"):
                values[f"{key}_{metric}"] = r[f"{metric}_mean"]
            for gain in ("gain_db", "gain_pct"):
                values[f"{key}_{gain}"] = r.get(f"psnr_{gain}")
            values[f"{key}_gain_ci"], values[f"{key}_p_linear"] = _vs_linear(r, "psnr")
            values[f"{key}_inference"] = (
                str(r.get("test_vs_linear") or "no test")
                if missing(p)
                else f"95 % CI of the gain {values[f'{key}_gain_ci']} dB, "
                f"{p_text(p, int(r['n_patients_vs_linear']))}"
            )
            values[f"{key}_ms"] = WallClock(r["ms_per_slice"])
        values[f"k{k}_slices"] = int(res.summary["n_slices"].max())
        values[f"k{k}_patients"] = int(res.summary["n_patients"].max())
        values[f"k{k}_best"] = method_label(str(res.summary["best_psnr"].iloc[0]))
        values[f"k{k}_p_floor_note"] = p_floor_note(values[f"k{k}_patients"])
        values.setdefault("p_floor_note", values[f"k{k}_p_floor_note"])
        values.setdefault("p_floor", p_floor(values[f"k{k}_patients"]))
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
        "params_mcnet": f"{counts['mcnet']['generator']:,}",
    }


def training_numbers(study: Study) -> dict[str, Any]:
    """Training figures for the prose: ``train_<model>_k<k>_{epochs,best,s_per_epoch,
    samples_per_s}``, ``train_{total_minutes,runs,lr,budget_sentence}``."""
    values: dict[str, Any] = {}
    total = 0.0
    for model, k in study.runs():
        history = study.history(model, k)
        key = f"train_{model}_k{k}"
        values[f"{key}_epochs"] = int(len(history))
        values[f"{key}_best"] = best_epoch(history, study.train_config(model, k))
        values[f"{key}_s_per_epoch"] = WallClock(history["seconds"].mean())
        values[f"{key}_samples_per_s"] = WallClock(history["samples_per_s"].mean())
        total += float(history["seconds"].sum())
    values["train_total_minutes"] = WallClock(total / 60.0)
    values["train_runs"] = len(study.runs())
    values["train_lr"] = lr_text(study.train_config(*study.runs()[0]).lr)
    values["train_budget_sentence"] = budget_sentence(study)
    return values


def lr_text(lr: float) -> str:
    """A learning rate as the book writes it: "1e-3" for 0.001, "2.5e-4"."""
    mantissa, exponent = f"{lr:e}".split("e")
    return f"{float(mantissa):g}e{int(exponent)}"


def budget_sentence(study: Study) -> str:
    """The runs' optimisation budget in words: one sentence when every network has the same
    (epochs x steps x batch), else one clause per model."""
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
