"""Analyses beyond the evaluation's summary, as display tables and dicts of numbers for the
prose: the cohort, k=1 against k=2, the DDPM and its schedule ablation, the real-anatomy arm."""

from __future__ import annotations

import dataclasses
from collections.abc import Sequence
from typing import TYPE_CHECKING, Any

import numpy as np
import pandas as pd
from scipy.stats import spearmanr

from slicelib import original
from slicelib.config import MODEL_NAMES, PAPER, PAPER_EPOCHS, DiffusionConfig, EvalConfig
from slicelib.errors import SlicelibError
from slicelib.methods import ANCESTRAL, DETERMINISTIC_MODELS, family_of, is_ddim, method_label
from slicelib.results import Results
from slicelib.stats import MIN_TEST_PATIENTS, Comparison, compare, infer_mean, summarize
from slicelib.study import present
from slicelib.study.claims import NOTE_SEPARATOR, k_ratio
from slicelib.study.present import WallClock, fmt, fmt_ci, fmt_p, fmt_signed, p_text, wall_clock
from slicelib.study.workspace import ORIGINAL

if TYPE_CHECKING:
    from slicelib.data.cache import Cache
    from slicelib.study.workspace import Study

# The synthetic cohort's calibration targets (linear at k=1 and k=2, 256x256).
DIFFICULTY_TARGETS: dict[int, dict[str, tuple[float, float]]] = {
    1: {"ssim": (0.78, 0.88), "psnr": (25.0, 30.0)},
    2: {"ssim": (0.50, 0.70)},
}


# The cohort ---------------------------------------------------------------------------
def linear_difficulty(cache: Cache, cfg: EvalConfig, ks: Sequence[int] = (1, 2)) -> pd.DataFrame:
    """Linear on the test split per k beside the original's and the calibration targets."""
    from slicelib.evaluate import evaluate

    def span(bounds: tuple[float, float] | None, digits: int) -> str:
        return "-" if bounds is None else f"{bounds[0]:.{digits}f}-{bounds[1]:.{digits}f}"

    cfg, rows = dataclasses.replace(cfg, common=False), []
    for k in ks:
        r = evaluate(cache, k, cfg, methods=["linear"], progress=False).row("linear")
        claimed, target = original.reported("linear", k), DIFFICULTY_TARGETS.get(k, {})
        rows.append({"k": k, "test slices": int(r["n_slices"]), "PSNR (dB)": float(r["psnr_mean"]),
                     "SSIM": float(r["ssim_mean"]), "SSIM Gaussian": float(r["ssim_gauss_mean"]),
                     "original PSNR": fmt(claimed.psnr) if claimed else "not reported",
                     "original SSIM": fmt(claimed.ssim, 3) if claimed else "not reported",
                     "calibration target PSNR": span(target.get("psnr"), 0),
                     "calibration target SSIM": span(target.get("ssim"), 2)})  # fmt: skip
    return pd.DataFrame(rows).set_index("k")


def difficulty_numbers(difficulty: pd.DataFrame) -> dict[str, Any]:
    """``linear_k<k>_{psnr,ssim}``: the linear baseline of this cohort."""
    values: dict[str, Any] = {}
    for k in difficulty.index:
        values[f"linear_k{k}_psnr"] = float(difficulty.loc[k, "PSNR (dB)"])
        values[f"linear_k{k}_ssim"] = float(difficulty.loc[k, "SSIM"])
    return values


def cohort_numbers(
    cohort: pd.DataFrame, scan_summary: dict[str, Any], cache: Cache
) -> dict[str, Any]:
    """Cohort figures for the prose, from :func:`slicelib.study.present.cohort_table`."""
    cell: dict[Any, Any] = cohort.to_dict()  # column -> row -> value
    values: dict[str, Any] = {
        "series_scanned": int(scan_summary.get("series", 0)),
        "series_included": int(scan_summary.get("series_included", 0)),
        "image_size": int(cache.config.size),
        **{f"cohort_{row}": int(cell["total"][row]) for row in ("patients", "volumes", "slices")},
    }
    for split in ("train", "val", "test"):
        values[f"{split}_patients"] = int(cell[split]["patients"])
        values[f"{split}_triplets_k1"] = int(cell[split]["triplets k=1"])
    values["test_triplets_k2"] = int(cell["test"]["triplets k=2"])
    values["test_triplets_common"] = int(cell["test"]["triplets, common to k=1 and k=2"])
    return values


# k=1 against k=2 ----------------------------------------------------------------------
def k_comparison(
    common1: Results, common2: Results, methods: Sequence[str]
) -> tuple[pd.DataFrame, float]:
    """Each method's SSIM and PSNR at both k on the same slices and k=1's relative SSIM gain
    (mean over patients); also the mean gain (%) of the deterministic models among them."""
    rows, gains = [], []
    for method in (m for m in methods if m in common1.methods and m in common2.methods):
        a, b = common1.row(method), common2.row(method)
        gain = float(k_ratio(common1, common2, method).mean())
        if method in DETERMINISTIC_MODELS:
            gains.append(gain)
        psnr_gain = f"{a['psnr_mean'] - b['psnr_mean']:+.2f}"
        rows.append({"method": method_label(method), "slices": int(a["n_slices"]),
                     "SSIM k=1": fmt(a["ssim_mean"], 3), "SSIM k=2": fmt(b["ssim_mean"], 3),
                     "SSIM gain of k=1": f"{gain:+.1f} %", "PSNR k=1 (dB)": fmt(a["psnr_mean"]),
                     "PSNR k=2 (dB)": fmt(b["psnr_mean"]),
                     "PSNR gain of k=1 (dB)": psnr_gain})  # fmt: skip
    if not rows:
        raise SlicelibError("no method was evaluated at both k=1 and k=2")
    return pd.DataFrame(rows).set_index("method"), float(np.mean(gains)) if gains else np.nan


def k_numbers(common1: Results, common2: Results, mean_gain: float) -> dict[str, Any]:
    """The mean SSIM gain of k=1 (and the original's), common slices, each SSIM at both k."""
    values: dict[str, Any] = {
        "k_ssim_gain_pct": mean_gain,
        "k_ssim_gain_claimed_pct": original.K1_OVER_K2_SSIM_GAIN_PCT,
        "common_slices": int(common1.summary["n_slices"].max()),
    }
    for method in (m for m in common1.methods if m in common2.methods):
        values[f"common_{method}_ssim_k1"] = common1.row(method)["ssim_mean"]
        values[f"common_{method}_ssim_k2"] = common2.row(method)["ssim_mean"]
    return values


def input_change(cache: Cache, rows: pd.DataFrame) -> np.ndarray:
    """Per row (patient_id, slice_index, k): mean |S_{i-k} - S_{i+k}| (0: no change)."""
    out = np.empty(len(rows), dtype=np.float64)
    for pid, group in rows.groupby("patient_id", sort=False):
        volume = np.asarray(cache.volume(str(pid)), dtype=np.float32)
        where = rows.index.get_indexer(group.index)
        for pos, i, k in zip(where, group["slice_index"], group["k"]):
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


def _change_rho(group: pd.DataFrame, metric: str) -> float:
    return spearmanr(group["input_change"], group[metric]).statistic


def change_correlation(rows: pd.DataFrame, methods: Sequence[str]) -> pd.DataFrame:
    """Spearman correlation of input change with PSNR and SSIM per method and k."""
    out = [
        {"method": method_label(str(method)), "k": int(str(k)), "slices": len(group),
         "Spearman rho, change vs PSNR": fmt(_change_rho(group, "psnr"), 2),
         "Spearman rho, change vs SSIM": fmt(_change_rho(group, "ssim"), 2)}
        for (method, k), group in rows.groupby(["method", "k"], sort=False)
        if method in methods and len(group) >= 3
    ]  # fmt: skip
    return pd.DataFrame(out).set_index(["method", "k"])


def change_numbers(rows: pd.DataFrame) -> dict[str, Any]:
    """``change_k<k>_mean`` and, for linear and the U-Net, ``change_rho_<method>_k<k>``."""
    values: dict[str, Any] = {}
    for k in (1, 2):
        at_k = rows[rows["k"] == k]
        values[f"change_k{k}_mean"] = float(at_k["input_change"].mean())
        for method in ("linear", "unet"):
            group = at_k[at_k["method"] == method]
            if len(group) >= 3:
                values[f"change_rho_{method}_k{k}"] = float(_change_rho(group, "psnr"))
    return values


def pick_slices(
    rows: pd.DataFrame, positions: Sequence[float], patient: str | None = None
) -> list[tuple[str, int]]:
    """Per relative ``position`` (0: first slice, 1: last), the nearest slice of ``patient``
    (default: the first with the most) among the slices every method scored."""
    counts = rows.groupby(["patient_id", "slice_index"]).size()
    everywhere = counts[counts == rows["method"].nunique()]
    scored = (counts if everywhere.empty else everywhere).reset_index()
    if patient is None:
        patient = str(scored["patient_id"].value_counts().idxmax())
    mine = rows[rows["patient_id"] == patient].drop_duplicates("slice_index")
    mine = mine[mine["slice_index"].isin(scored["slice_index"][scored["patient_id"] == patient])]
    if mine.empty:
        raise SlicelibError(f"patient {patient!r} has no evaluated test slice")
    where, indices = mine["position"].to_numpy(), mine["slice_index"].to_numpy()
    return [(patient, int(indices[int(np.argmin(np.abs(where - p)))])) for p in positions]


# The DDPM -----------------------------------------------------------------------------
def _best_epoch(history: pd.DataFrame) -> int:
    return int(history["epoch"].to_numpy()[int(np.argmin(history["val_loss"].to_numpy()))])


def ddpm_loss_table(history: pd.DataFrame) -> tuple[pd.DataFrame, list[int], list[int]]:
    """The DDPM's losses at the epochs supplement 4.1 lists, beside its values; also the
    listed epochs this run has and those it lacks."""
    by_epoch = history.set_index("epoch")
    present = [e for e in original.DDPM_LOSSES if e in by_epoch.index]
    absent = [e for e in original.DDPM_LOSSES if e not in by_epoch.index]
    best, last = _best_epoch(history), int(by_epoch.index.to_numpy().max())
    rows = []
    for epoch in present + ([] if last in present else [last]):
        train, val = original.DDPM_LOSSES.get(epoch, (None, None))
        theirs = val is not None and epoch == original.DDPM_BEST_EPOCH
        rows.append({"epoch": epoch, "train loss": fmt(by_epoch.loc[epoch, "train_loss"], 4),
                     "val loss": fmt(by_epoch.loc[epoch, "val_loss"], 4)
                     + (" (best)" if epoch == best else ""),
                     "original train loss": fmt(train, 4),
                     "original val loss": fmt(val, 4) + (" (best)" if theirs else "")})  # fmt: skip
    return pd.DataFrame(rows).set_index("epoch"), present, absent


def ddpm_epoch_numbers(
    history: pd.DataFrame, present: list[int], absent: list[int]
) -> dict[str, Any]:
    """Which of the supplement's epochs this DDPM run has, and its first and last losses."""
    first, last = history.iloc[0], history.iloc[-1]
    return {
        "ddpm_epochs": int(len(history)),
        "ddpm_epochs_present": ", ".join(str(e) for e in present) or "none",
        "ddpm_epochs_absent": ", ".join(str(e) for e in absent) or "none",
        "ddpm_best_epoch": _best_epoch(history),
        "ddpm_first_train_loss": float(first["train_loss"]),
        "ddpm_last_train_loss": float(last["train_loss"]),
        "ddpm_first_val_loss": float(first["val_loss"]),
        "ddpm_last_val_loss": float(last["val_loss"]),
    }


@dataclasses.dataclass(frozen=True)
class Samples:
    """Several ancestral DDPM samples of one slice: ``samples`` (n, H, W) in [0, 1],
    ``target`` and ``linear`` (H, W), and each sample's PSNR and SSIM."""

    samples: np.ndarray
    target: np.ndarray
    linear: np.ndarray
    psnr: np.ndarray
    ssim: np.ndarray


def ddpm_samples(study: Study, k: int, slice_: tuple[str, int], n: int) -> Samples:
    """``n`` ancestral samples of the study's DDPM for one test slice."""
    import torch

    from slicelib.baselines import linear, neighbours
    from slicelib.checkpoint import load_run
    from slicelib.interpolator import Predictor
    from slicelib.metrics import psnr, ssim

    cache = study.cache()
    run = load_run(study.run("ddpm", k), device=study.device, k=k, image_size=cache.size)
    volume = np.asarray(cache.volume(slice_[0]), dtype=np.float32)
    nb = neighbours(volume, slice_[1], k)
    inputs = torch.from_numpy(np.stack([nb.before, nb.after])[None])
    predictor = Predictor(run, sampler="ancestral", samples=n, seed=study.preset.eval.seed)
    samples = predictor.stack(inputs)[:, 0, 0].cpu().numpy().astype(np.float32)
    target = volume[slice_[1]]
    return Samples(samples, target, linear(nb.before, nb.after),
                   psnr=np.array([psnr(s, target, 1.0) for s in samples]),
                   ssim=np.array([ssim(s, target, 1.0) for s in samples]))  # fmt: skip


def variability_table(drawn: Samples) -> pd.DataFrame:
    """Each sample's PSNR and SSIM, and their spread, beside linear on the same slice."""
    from slicelib.metrics import psnr, ssim

    rows = [(f"sample {i + 1}", p, s) for i, (p, s) in enumerate(zip(drawn.psnr, drawn.ssim))]
    rows.append(("std over samples", drawn.psnr.std(), drawn.ssim.std()))
    images = {"mean of the samples": drawn.samples.mean(axis=0), "linear": drawn.linear}
    for name, image in images.items():
        rows.append((name, psnr(image, drawn.target, 1.0), ssim(image, drawn.target, 1.0)))
    table = pd.DataFrame(rows, columns=["sample", "PSNR (dB)", "SSIM"]).set_index("sample")
    return table.round({"PSNR (dB)": 2, "SSIM": 3})


def variability_numbers(drawn: Samples) -> dict[str, Any]:
    return {
        "samples_n": int(len(drawn.samples)),
        "samples_psnr_min": float(drawn.psnr.min()),
        "samples_psnr_max": float(drawn.psnr.max()),
        "samples_psnr_std": float(drawn.psnr.std()),
        "samples_pixel_std": float(drawn.samples.std(axis=0).mean()),
    }


def sampler_table(res: Results) -> pd.DataFrame:
    """The DDPM's samplers beside linear and the U-Net: PSNR, SSIM, time, gain over linear."""
    names = [m for m in res.methods if family_of(m) == "ddpm"]
    rows = []
    for name in names + [m for m in ("linear", "unet") if m in res.methods]:
        r = res.row(name)
        rows.append({"method": method_label(name), "slices": int(r["n_slices"]),
                     "PSNR (dB)": present.fmt_pm(r["psnr_mean"], r["psnr_std"]),
                     "SSIM": present.fmt_pm(r["ssim_mean"], r["ssim_std"], 3),
                     "PSNR vs linear (dB)": fmt_signed(r.get("psnr_gain_db")),
                     "PSNR vs linear 95% CI": fmt_ci(r.get("psnr_gain_ci_low"),
                                                     r.get("psnr_gain_ci_high")),
                     "ms per slice": wall_clock(r["ms_per_slice"], 1, " ms")})  # fmt: skip
    return pd.DataFrame(rows).set_index("method")


def sampler_numbers(res: Results, **kwargs: Any) -> dict[str, Any]:
    """Ancestral sampling, the best DDIM variant and ``sampler_sentence`` comparing their PSNR
    (``kwargs``: for ``compare``)."""

    def scores(prefix: str, name: str) -> dict[str, Any]:
        r = res.row(name)
        return {f"{prefix}_psnr": r["psnr_mean"], f"{prefix}_ssim": r["ssim_mean"],
                f"{prefix}_ms": WallClock(r["ms_per_slice"])}  # fmt: skip

    text = "This run scored no DDIM variant beside ancestral sampling."
    values: dict[str, Any] = {"sampler_sentence": text}
    ancestral, ddim = ANCESTRAL in res.methods, [m for m in res.methods if is_ddim(m)]
    if ancestral:
        values.update(scores("ddpm_ancestral", ANCESTRAL))
        values["ddpm_slices"] = int(res.row(ANCESTRAL)["n_slices"])
    if ddim:
        best = max(ddim, key=lambda m: res.row(m)["psnr_mean"])
        values.update(ddim_best=method_label(best), **scores("ddim_best", best))
        if ancestral:
            c = compare(res.rows, ANCESTRAL, best, "psnr", **kwargs)
            values["sampler_sentence"] = present.comparison_sentence(
                c, "Ancestral sampling", f"the best DDIM variant ({method_label(best)})", " dB"
            )
    if "unet" in res.methods and ancestral:
        unet = res.row("unet")["ms_per_slice"]
        values["unet_ms"] = WallClock(unet)
        values["ddpm_unet_ratio"] = WallClock(res.row(ANCESTRAL)["ms_per_slice"] / unet)
    return values


def timing_table(res: Results) -> pd.DataFrame:
    """Time per slice of the DDPM's samplers and the deterministic models beside the original's."""
    low, high = original.DETERMINISTIC_MS_PER_SLICE
    rows = []
    for name in (m for m in res.methods if family_of(m) == "ddpm" or m in DETERMINISTIC_MODELS):
        claimed = f"{low:.0f}-{high:.0f}" if name in DETERMINISTIC_MODELS else "-"
        if name == ANCESTRAL:
            claimed = f"{original.DDPM_MS_PER_SLICE:.0f}"
        r = res.row(name)
        rows.append({"method": method_label(name), "device": r.get("device", "-"),
                     "ms per slice": wall_clock(r["ms_per_slice"], 1, " ms"),
                     "original (ms, its GPU)": claimed})  # fmt: skip
    return pd.DataFrame(rows).set_index("method")


# The DDPM's schedule ablation ---------------------------------------------------------
def variant_label(variant: str) -> str:
    labels = {
        ORIGINAL: "original (linear betas, [0, 1])",
        "cosine": "cosine schedule",
        "rescaled": "data in [-1, 1]",
    }
    return labels.get(variant, variant)


def signal_at_T(diffusion: DiffusionConfig) -> tuple[float, float]:
    """(signal, noise): x_T = signal x_0 + noise epsilon at the schedule's last step."""
    from slicelib.diffusion import GaussianDiffusion

    abar = float(GaussianDiffusion(diffusion).alphas_cumprod[-1])
    return abar**0.5, (1.0 - abar) ** 0.5


def ablation_comparisons(
    rows: pd.DataFrame, method: str = ANCESTRAL, metric: str = "psnr", **kwargs: Any
) -> dict[str, Comparison]:
    """Each variant against the original, paired over patients on the slices both scored."""
    chosen = rows[rows["method"] == method]
    frame = chosen.assign(method=chosen["variant"])  # one pseudo-method per variant
    variants = [v for v in dict.fromkeys(frame["variant"]) if v != ORIGINAL]
    return {v: compare(frame, v, ORIGINAL, metric, **kwargs) for v in variants}


def ablation_table(
    rows: pd.DataFrame, diffusions: dict[str, DiffusionConfig], **kwargs: Any
) -> pd.DataFrame:
    """Per variant: x_T's signal, each sampler's PSNR (ancestral: SSIM) and the ancestral
    PSNR's change against the original with its interval and p-value."""
    samplers = sorted(set(rows["method"]), key=lambda m: (is_ddim(m), m != ANCESTRAL, m))
    compared = ablation_comparisons(rows, **kwargs)
    table = []
    for variant in dict.fromkeys(rows["variant"]):
        mine, (signal, noise) = rows[rows["variant"] == variant], signal_at_T(diffusions[variant])
        entry: dict[str, Any] = {
            "variant": variant_label(variant),
            "x_T": f"{signal:.2f} x_0 + {noise:.2f} noise",
            "slices": int(mine[mine["method"] == ANCESTRAL].shape[0]),
        }
        for m in samplers:
            at = mine[mine["method"] == m]
            entry[f"{method_label(m)}: PSNR (dB)"] = fmt(at["psnr"].mean())
            if m == ANCESTRAL:
                entry[f"{method_label(m)}: SSIM"] = fmt(at["ssim"].mean(), 3)
        c = compared.get(variant)
        entry["ancestral PSNR vs original (dB)"] = "-" if c is None else fmt_signed(c.gain)
        entry["95% CI"] = "-" if c is None else fmt_ci(c.ci_low, c.ci_high)
        entry["p"] = "-" if c is None else (p_text(c.p_value, c.n_patients) if c.tested else c.test)
        table.append(entry)
    return pd.DataFrame(table).set_index("variant")


def ablation_numbers(rows: pd.DataFrame, **kwargs: Any) -> dict[str, Any]:
    """``abl_variants``, ``abl_<variant>_psnr`` (ancestral), ``abl_<variant>_sentence``,
    ``abl_sentences`` and ``abl_summary`` (what the ablation found, from the intervals)."""
    if rows.empty:
        return {
            "abl_variants": 0,
            "abl_sentences": "This preset trains no ablation variant.",
            "abl_summary": "The schedule's part in the DDPM's result is therefore not tested here.",
        }
    compared = ablation_comparisons(rows, **kwargs)
    values: dict[str, Any] = {"abl_variants": len(compared)}
    anc = rows[rows["method"] == ANCESTRAL]
    for variant in dict.fromkeys(rows["variant"]):
        values[f"abl_{variant}_psnr"] = float(anc[anc["variant"] == variant]["psnr"].mean())
    sentences = []
    for variant, c in compared.items():
        sentence = present.comparison_sentence(
            c, f"With the {variant_label(variant)}, ancestral sampling", "the original", " dB"
        )
        values[f"abl_{variant}_sentence"] = sentence
        sentences.append(sentence[:1].upper() + sentence[1:])
    values["abl_sentences"] = " ".join(sentences)
    values["abl_summary"] = ablation_summary(compared)
    return values


def ablation_summary(compared: dict[str, Comparison]) -> str:
    """What the ablation found, from the intervals of the ancestral PSNR changes."""
    tested = {v: c for v, c in compared.items() if c.tested}
    if not tested:
        n = max((c.n_patients for c in compared.values()), default=0)
        return (
            f"With {present.plural(n, 'test patient')} (fewer than {MIN_TEST_PATIENTS}) the "
            "ablation's changes are reported but not tested: it neither supports nor "
            "refutes the schedule explanation."
        )
    helped = [variant_label(v) for v, c in tested.items() if c.above_zero]
    hurt = [variant_label(v) for v, c in tested.items() if c.below_zero]
    if helped:
        return (
            f"The ablation supports the schedule explanation: the {' and the '.join(helped)} "
            "raised the ancestral PSNR with the same network and budget, by an interval "
            "that excludes no change."
        )
    if hurt:
        return (
            f"The ablation does not support the schedule explanation: the "
            f"{' and the '.join(hurt)} lowered the ancestral PSNR, and no variant raised it."
        )
    return (
        "The ablation does not support the schedule explanation at this budget: no "
        "variant changed the ancestral PSNR by an interval that excludes no change."
    )


def ablation_seconds(study: Study) -> WallClock:
    """The training time the ablation's variants added to the study."""
    runs = study.ablation_runs().values()
    return WallClock(sum(float(pd.read_csv(run / "history.csv")["seconds"].sum()) for run in runs))


# The real-anatomy arm -----------------------------------------------------------------
HEADROOM_LABELS: dict[str, str] = {
    "ls_filter": "best 9x9 linear filter (least squares on training subjects)",
    "filter": "9x9 linear filter trained by the training loop",
    "oracle_tile": "oracle blend per 8x8 tile (bound)",
    "oracle_pixel": "oracle blend per pixel (bound)",
}
# Every verdict of this arm carries it: none reads as a test of the original's prostate data.
REAL_NOTE = "real data of another organ and contrast (IXI T1 head), resampled slices"
# The share of the least-squares filter's gain the trained filter must reach for the
# training loop to count as learning what a linear predictor can.
FILTER_CHECK_SHARE = 0.8


def _gains(results: Sequence[Results], names: Sequence[str] | None = None) -> list[dict]:
    """The summary rows (gains over linear) of ``names`` (or all but linear), with ``k``."""
    return [
        {**r, "k": res.k}
        for res in results
        for r in res.summary.to_dict("records")
        if r["method"] != "linear" and (names is None or r["method"] in names)
    ]


def gain_table(results: Sequence[Results], labels: dict[str, str] | None = None) -> pd.DataFrame:
    """Each method's PSNR gain over linear per k with its 95 % interval, p and subjects
    (``labels``: only these methods, so named, without p or linear)."""
    table: dict[str, dict[str, Any]] = {}
    for res in results if labels is None else []:
        linear = res.row("linear")
        table.setdefault("linear", {"method": method_label("linear")}).update(
            {f"k={res.k}: gain (dB)": f"0 (PSNR {linear['psnr_mean']:.2f} dB)",
             f"k={res.k}: 95 % CI": "-", f"k={res.k}: p": "-",
             f"k={res.k}: subjects": str(int(linear["n_patients"]))}
        )  # fmt: skip
    for r in _gains(results, None if labels is None else list(labels)):
        name, k = r["method"], r["k"]
        row = table.setdefault(name, {"method": (labels or {}).get(name, method_label(name))})
        row[f"k={k}: gain (dB)"] = fmt_signed(r["psnr_gain_db"])
        row[f"k={k}: 95 % CI"] = fmt_ci(r["psnr_gain_ci_low"], r["psnr_gain_ci_high"])
        if labels is None:
            row[f"k={k}: p"] = fmt_p(r["p_psnr_vs_linear"])
        row[f"k={k}: subjects"] = str(int(r["n_patients_vs_linear"]))
    order = list(table) if labels is None else [m for m in labels if m in table]
    frame = pd.DataFrame([table[m] for m in order]).fillna("-").set_index("method")
    return frame.rename_axis("method" if labels is None else "reference")


def gain_numbers(results: Sequence[Results], prefix: str = "real") -> dict[str, Any]:
    """``<prefix>_k<k>_<method>_gain`` (dB) with ``_lo``, ``_hi``, ``_p``;
    ``<prefix>_k<k>_linear_psnr``, ``<prefix>_k<k>_subjects``, ``<prefix>_k<k>_slices``;
    ``<prefix>_p_floor_note``: what the p-values can show with the first k's subjects."""
    values: dict[str, Any] = {}
    for res in results:
        linear = res.row("linear")
        values[f"{prefix}_k{res.k}_linear_psnr"] = linear["psnr_mean"]
        values[f"{prefix}_k{res.k}_subjects"] = int(linear["n_patients"])
        values[f"{prefix}_k{res.k}_slices"] = int(linear["n_slices"])
        values.setdefault(f"{prefix}_p_floor_note", present.p_floor_note(int(linear["n_patients"])))
    for r in _gains(results):
        key = f"{prefix}_k{r['k']}_{r['method']}"
        values[f"{key}_gain"], values[f"{key}_p"] = r["psnr_gain_db"], fmt_p(r["p_psnr_vs_linear"])
        values[f"{key}_lo"], values[f"{key}_hi"] = r["psnr_gain_ci_low"], r["psnr_gain_ci_high"]
    return values


def headroom_results(study: Study) -> list[Results]:
    """The headroom references beside linear, one :class:`Results` per k, summarised."""
    seed = study.preset.eval.seed
    return [
        Results(rows=part, summary=summarize(part, reference="linear", seed=seed), info={},
                k=int(str(k)))
        for k, part in study.headroom().groupby("k", sort=True)
    ]  # fmt: skip


def headroom_numbers(results: Sequence[Results]) -> dict[str, Any]:
    """``real_headroom_<reference>_k<k>`` (gain over linear, dB) with ``_lo`` and ``_hi``."""
    values: dict[str, Any] = {}
    for r in _gains(results, list(HEADROOM_LABELS)):
        key = f"real_headroom_{r['method']}_k{r['k']}"
        values.update({key: r["psnr_gain_db"], f"{key}_lo": r["psnr_gain_ci_low"],
                       f"{key}_hi": r["psnr_gain_ci_high"]})  # fmt: skip
    return values


def filter_check(results: Sequence[Results]) -> dict[str, Any]:
    """The training loop's check: ``real_filter_share_k<k>``, the trained 9 x 9 filter's gain
    over linear as a share (%) of the least-squares filter's, and ``real_filter_sentence``:
    whether it reached :data:`FILTER_CHECK_SHARE` at every k (or was not trained)."""
    gains: dict[int, dict[str, float]] = {}
    for r in _gains(results, ["ls_filter", "filter"]):
        gains.setdefault(int(r["k"]), {})[str(r["method"])] = float(r["psnr_gain_db"])
    if not any("filter" in g for g in gains.values()):
        return {"real_filter_sentence": "This run does not train the 9 x 9 filter."}
    shares = {k: 100.0 * g["filter"] / g["ls_filter"] for k, g in sorted(gains.items())}
    each = " and ".join(
        f"{share:.0f} % at k={k} ({gains[k]['filter']:+.2f} of {gains[k]['ls_filter']:+.2f} dB)"
        for k, share in shares.items()
    )
    verdict = (
        "the loop learns what a linear predictor can"
        if all(share >= 100 * FILTER_CHECK_SHARE for share in shares.values())
        else f"below the {100 * FILTER_CHECK_SHARE:.0f} % the check asks: the loop falls short "
        "of what a linear predictor can learn"
    )
    sentence = (
        f"Trained by the same loop as the networks, the 9 x 9 filter reached {each} of the "
        f"least-squares filter's gain over linear: {verdict}."
    )
    return {**{f"real_filter_share_k{k}": v for k, v in shares.items()},
            "real_filter_sentence": sentence}  # fmt: skip


def over_flow(results: Sequence[Results], model: str = "mcnet") -> dict[str, Any]:
    """``real_k<k>_<model>_over_flow``: ``model``'s PSNR gain over optical flow per k, paired by
    subject (dB), with ``_lo``, ``_hi`` and ``_p`` (none at a k that lacks either)."""
    values: dict[str, Any] = {}
    for res in (r for r in results if {model, "flow"} <= set(r.methods)):
        c, key = compare(res.rows, model, "flow", "psnr"), f"real_k{res.k}_{model}_over_flow"
        values.update({key: c.gain, f"{key}_lo": c.ci_low, f"{key}_hi": c.ci_high,
                       f"{key}_p": fmt_p(c.p_value)})  # fmt: skip
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


def training_runs(study: Study) -> pd.DataFrame:
    """Per epoch of every run: ``model, k, epoch, val_gain_db`` (over linear), and cumulative
    ``steps, samples, seconds`` with ``crop``."""
    from slicelib.baselines import linear
    from slicelib.data.dataset import TripletDataset
    from slicelib.metrics import psnr

    cache, frames = study.cache(), []
    for model, k in study.runs():
        cfg, history = study.train_config(model, k), study.history(model, k)
        inputs, target = TripletDataset(cache, "val", k, max_slices=cfg.val_max_slices).arrays()
        base = float(np.mean([psnr(linear(a, b), t, 1.0) for (a, b), t in zip(inputs, target)]))
        steps = cfg.steps_per_epoch or len(TripletDataset(cache, "train", k)) // cfg.batch_size
        epoch, crop = history["epoch"], cfg.crop or study.preset.prepare.size
        frame = {"model": model, "k": k, "epoch": epoch, "val_gain_db": history["val_psnr"] - base,
                 "steps": epoch * steps, "samples": epoch * steps * cfg.batch_size, "crop": crop,
                 "seconds": history["seconds"].cumsum()}  # fmt: skip
        frames.append(pd.DataFrame(frame))
    return pd.concat(frames, ignore_index=True)


def _last_change(gains: pd.Series) -> float:
    return float(gains.iloc[-1] - gains.iloc[-2]) if len(gains) > 1 else float("nan")


def budget_table(runs: pd.DataFrame, study: Study) -> pd.DataFrame:
    """Per run: its budget, last validation gain over linear and its change in the last epoch."""
    rows = []
    for (model, k), part in runs.groupby(["model", "k"], sort=False):
        last = part.iloc[-1]
        rows.append({"run": f"{method_label(str(model))}, k={k}", "steps": int(last["steps"]),
                     "crop (px)": int(last["crop"]), "training samples": int(last["samples"]),
                     "seconds": wall_clock(last["seconds"], 1, " s"),
                     "val gain, last epoch (dB)": fmt_signed(last["val_gain_db"]),
                     "change over the last epoch (dB)":
                         fmt_signed(_last_change(part["val_gain_db"]))})  # fmt: skip
    return pd.DataFrame(rows).set_index("run")


def budget_numbers(runs: pd.DataFrame) -> dict[str, Any]:
    """The training budget, and the ratio of the original U-Net's training pixels (triplets
    times epochs, 256 px) to this arm's U-Net run's (else the largest run's)."""
    paper_samples = original.REPORTED_COHORT["train triplets"] * PAPER_EPOCHS["unet"]
    grouped = runs.groupby(["model", "k"], sort=False)
    lasts, changes = grouped.tail(1), grouped["val_gain_db"].apply(_last_change)
    unet = lasts[lasts["model"] == "unet"]
    ours = (unet if len(unet) else lasts).sort_values("samples").iloc[-1]
    samples, crop = int(ours["samples"]), int(ours["crop"])
    per_model = lasts.groupby("model", sort=False)["samples"].max()
    text = ", ".join(f"{method_label(str(m))} {int(n):,}" for m, n in per_model.items())
    largest = f"{float(changes.abs().max()):.2f} dB" if changes.notna().any() else None
    return {
        "real_samples_text": text,
        "real_runs": len(lasts),
        "real_samples": samples,
        "real_crop": crop,
        "real_train_seconds": WallClock(lasts["seconds"].sum()),
        "real_max_last_change": largest or "not measured (one epoch per run)",
        "real_paper_samples": paper_samples,
        "real_budget_ratio": paper_samples * PAPER.prepare.size**2 / (samples * crop**2),
    }


def run_models(study: Study) -> list[str]:
    """The networks the arm trains at every k of its preset."""
    return [m for m in study.preset.models if all(m in study.models_at(k) for k in study.preset.ks)]


def untrained_models(study: Study) -> list[str]:
    """The study's networks that the arm does not train at every k."""
    return [m for m in MODEL_NAMES if m not in run_models(study)]


def panel_models(study: Study) -> list[str]:
    """The trained networks the example panels show, after linear and optical flow."""
    return [m for m in run_models(study) if m in ("unet", "mcnet")]


def marked_verdicts(table: pd.DataFrame) -> pd.DataFrame:
    """The claims table, each verdict marked with :data:`REAL_NOTE` (without the code checks)."""
    rows = table.assign(verdict=table["verdict"] + NOTE_SEPARATOR + REAL_NOTE)
    return rows[["original", "this run", "margin", "rule", "verdict"]]


# The budget curve ---------------------------------------------------------------------
def _subject_gain(rows: pd.DataFrame, model: str) -> pd.Series:
    pivot = rows.pivot_table(index=["patient_id", "slice_index"], columns="method", values="psnr")
    return (pivot[model] - pivot["linear"]).groupby(level="patient_id").mean()


def budget_curve(rows: pd.DataFrame, cfg: EvalConfig) -> pd.DataFrame:
    """Per model and budget: ``model, samples, run, gain, lo, hi, subjects, seconds``, the
    test gain over linear (mean over subjects, 95 % interval) and training time."""
    out = []
    for (run, model, samples), part in rows.groupby(["run", "model", "samples"], sort=True):
        inf = infer_mean(_subject_gain(part, str(model)).to_numpy(), seed=cfg.seed)
        out.append({"model": model, "samples": int(str(samples)), "run": run, "gain": inf.mean,
                    "lo": inf.ci_low, "hi": inf.ci_high, "subjects": inf.n_patients,
                    "seconds": float(part["seconds"].iloc[0])})  # fmt: skip
    columns = ["model", "samples", "run", "gain", "lo", "hi", "subjects", "seconds"]
    return pd.DataFrame(out, columns=columns).sort_values(["model", "samples"], ignore_index=True)


def budget_points(curve: pd.DataFrame) -> str:
    """The budgets the curve shows, per model ("U-Net: 640, 1,280 and 2,560 samples")."""
    parts = []
    for model, part in curve.groupby("model", sort=False):
        counts = [f"{int(n):,}" for n in part["samples"]]
        parts.append(f"{method_label(str(model))}: {present.word_list(counts)} samples")
    return "; ".join(parts) or "none"


def curve_table(curve: pd.DataFrame) -> pd.DataFrame:
    """The budget curve as the chapter shows it."""
    rows = [
        {"network": method_label(str(r["model"])), "training samples": f"{int(r['samples']):,}",
         "gain over linear (dB)": fmt_signed(r["gain"]), "95 % CI": fmt_ci(r["lo"], r["hi"]),
         "subjects": int(r["subjects"]), "training": wall_clock(r["seconds"], 1, " s")}
        for r in curve.to_dict("records")
    ]  # fmt: skip
    return pd.DataFrame(rows).set_index(["network", "training samples"])


def budget_sentence(
    rows: pd.DataFrame, curve: pd.DataFrame, references: dict[str, float], cfg: EvalConfig
) -> str:
    """Whether each model was still learning at its largest budget (the paired gain from its
    second-largest has an interval above 0) or where it stopped against ``references``
    (label -> gain, dB)."""
    sentences = []
    for model, part in curve.groupby("model", sort=False):
        if len(part) < 2:
            continue
        before, last = part.iloc[-2], part.iloc[-1]
        gains = [_subject_gain(rows[rows["run"] == r], str(model)) for r in part["run"].iloc[-2:]]
        step = infer_mean((gains[1] - gains[0]).dropna().to_numpy(), seed=cfg.seed)
        change = (
            f"from {int(before['samples']):,} to {int(last['samples']):,} training samples its "
            f"gain over linear went from {before['gain']:+.2f} to {last['gain']:+.2f} dB "
            f"(change {step.mean:+.2f} dB {fmt_ci(step.ci_low, step.ci_high)})"
        )
        label = method_label(str(model))
        if step.above_zero:
            sentences.append(f"The {label} was still learning: {change}; not learned yet.")
            continue
        refs = [(f"{name} ({level:+.2f} dB)", level) for name, level in references.items()]
        above = ", ".join(text for text, level in refs if last["gain"] >= level)
        below = ", ".join(text for text, level in refs if last["gain"] < level)
        where = f"at or above {above}" + (f" and below {below}" if below else "")
        sentences.append(
            f"The {label} had stopped gaining at this budget: {change}, "
            f"{where if above else f'below {below}'}."
        )
    return " ".join(sentences) or "This run trains no budget curve."
