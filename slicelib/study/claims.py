"""The original's claims against this run: each claim, the rule that decides it, and
the verdict (reproduced, not reproduced, not testable here), computed from the
results. The claims' numbers come from :mod:`slicelib.original`."""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from typing import TYPE_CHECKING

import pandas as pd

from slicelib import original
from slicelib.config import PAPER
from slicelib.study.labels import DETERMINISTIC_MODELS, fmt, fmt_p, method_label

if TYPE_CHECKING:
    from slicelib.study.workspace import Results, Study

REPRODUCED = "reproduced"
NOT_REPRODUCED = "not reproduced"
NOT_TESTABLE = "not testable here"
ALPHA = 0.05


@dataclass(frozen=True)
class Evidence:
    """What a claim is checked against."""

    study: Study
    k1: Results  # every method at k=1
    k2: Results  # every method at k=2
    common1: Results  # k=1 on the slices common to k=1 and k=2
    common2: Results  # k=2 on the same slices


@dataclass(frozen=True)
class Verdict:
    this_run: str
    verdict: str


@dataclass(frozen=True)
class Claim:
    text: str
    source: str
    original: str
    rule: str
    check: Callable[[Evidence], Verdict]


def _has(res: Results, method: str) -> bool:
    return method in res.methods


def _unet_best(ev: Evidence) -> Verdict:
    best = str(ev.k1.summary["best_psnr"].iloc[0])
    psnr = ev.k1.row(best)["psnr_mean"]
    text = f"best: {method_label(best)} ({fmt(psnr)} dB)"
    if best == "unet":
        return Verdict(text, REPRODUCED)
    if not _has(ev.k1, "unet"):
        return Verdict(text, NOT_TESTABLE)
    p = ev.k1.row("unet")["p_psnr_vs_best"]
    tied = p >= ALPHA
    return Verdict(
        f"{text}; U-Net {fmt(ev.k1.row('unet')['psnr_mean'])} dB (p = {fmt_p(p)})",
        REPRODUCED if tied else NOT_REPRODUCED,
    )


def _unet_gain(ev: Evidence) -> Verdict:
    r = ev.k1.row("unet")
    gain, p = r["psnr_gain_pct"], r["p_psnr_vs_linear"]
    claimed = original.UNET_PSNR_GAIN_PCT
    ok = p < ALPHA and claimed / 2 <= gain <= claimed * 2
    return Verdict(f"{gain:+.1f} % (p = {fmt_p(p)})", REPRODUCED if ok else NOT_REPRODUCED)


def _deep_beat_linear(ev: Evidence) -> Verdict:
    parts, ok = [], True
    for model in DETERMINISTIC_MODELS:
        if not _has(ev.k1, model):
            continue
        r = ev.k1.row(model)
        beats = r["psnr_gain_db"] > 0 and r["p_psnr_vs_linear"] < ALPHA
        ok &= bool(beats)
        parts.append(f"{method_label(model)} {r['psnr_gain_db']:+.2f} dB")
    return Verdict("; ".join(parts), REPRODUCED if ok and parts else NOT_REPRODUCED)


def _k_gain(ev: Evidence) -> Verdict:
    gains = []
    for model in DETERMINISTIC_MODELS:
        if _has(ev.common1, model) and _has(ev.common2, model):
            s1 = ev.common1.row(model)["ssim_mean"]
            s2 = ev.common2.row(model)["ssim_mean"]
            gains.append(100.0 * (s1 / s2 - 1.0))
    if not gains:
        return Verdict("no deterministic model at both k", NOT_TESTABLE)
    mean = sum(gains) / len(gains)
    claimed = original.K1_OVER_K2_SSIM_GAIN_PCT
    ok = claimed / 2 <= mean <= claimed * 2
    return Verdict(
        f"{mean:+.1f} % (mean of {len(gains)} models, same slices)",
        REPRODUCED if ok else NOT_REPRODUCED,
    )


def _k2_saturation(ev: Evidence) -> Verdict:
    values = [ev.k2.row(m)["ssim_mean"] for m in DETERMINISTIC_MODELS if _has(ev.k2, m)]
    if len(values) < 2:
        return Verdict("fewer than two models at k=2", NOT_TESTABLE)
    spread = max(values) - min(values)
    return Verdict(
        f"SSIM {min(values):.3f}-{max(values):.3f} (spread {spread:.3f})",
        REPRODUCED if spread <= 0.03 else NOT_REPRODUCED,
    )


def _k2_plateau(ev: Evidence) -> Verdict:
    first, last = original.K2_PLATEAU_EPOCHS
    histories = {
        model: ev.study.history(model, 2).set_index("epoch")
        for model in DETERMINISTIC_MODELS
        if (model, 2) in ev.study.runs()
    }
    if not histories:
        return Verdict("no model trained at k=2", NOT_TESTABLE)
    epochs = [int(h.index.to_numpy().max()) for h in histories.values()]
    if min(epochs) < last:
        span = f"{min(epochs)}-{max(epochs)}" if min(epochs) != max(epochs) else str(max(epochs))
        return Verdict(f"this preset trains {span} epochs at k=2", NOT_TESTABLE)
    parts, ok = [], True
    for model, history in histories.items():
        gain = 100.0 * (history["val_ssim"].iloc[-1] / history.loc[first, "val_ssim"] - 1.0)
        ok &= bool(gain < 1.0)
        parts.append(f"{method_label(model)} {gain:+.1f} %")
    return Verdict(
        f"val SSIM gain after epoch {first}: " + "; ".join(parts),
        REPRODUCED if ok else NOT_REPRODUCED,
    )


def _ddpm_below(ev: Evidence) -> Verdict:
    if not _has(ev.k1, "ddpm_ancestral"):
        return Verdict("no DDPM in this run", NOT_TESTABLE)
    ddpm = ev.k1.row("ddpm_ancestral")
    others = [ev.k1.row(m)["psnr_mean"] for m in DETERMINISTIC_MODELS if _has(ev.k1, m)]
    ok = bool(others) and ddpm["psnr_mean"] < min(others)
    return Verdict(
        f"DDPM {fmt(ddpm['psnr_mean'])} dB / {fmt(ddpm['ssim_mean'], 3)}; "
        f"deterministic models {fmt(min(others))}-{fmt(max(others))} dB",
        REPRODUCED if ok else NOT_REPRODUCED,
    )


def _ddpm_slow(ev: Evidence) -> Verdict:
    if not (_has(ev.k1, "ddpm_ancestral") and _has(ev.k1, "unet")):
        return Verdict("no DDPM or U-Net in this run", NOT_TESTABLE)
    ddpm = ev.k1.row("ddpm_ancestral")["ms_per_slice"]
    unet = ev.k1.row("unet")["ms_per_slice"]
    ratio = ddpm / unet
    return Verdict(
        f"{ddpm:.0f} ms against {unet:.1f} ms for the U-Net ({ratio:.0f}x), "
        f"{ev.k1.row('unet').get('device', '')}",
        REPRODUCED if ratio >= 30 else NOT_REPRODUCED,
    )


def _ddpm_stable(ev: Evidence) -> Verdict:
    if not ev.study.preset.ddpm_ks:
        return Verdict("no DDPM in this run", NOT_TESTABLE)
    k = ev.study.preset.ddpm_ks[0]
    if ("ddpm", k) not in ev.study.runs():
        return Verdict("no DDPM in this run", NOT_TESTABLE)
    history = ev.study.history("ddpm", k)
    if len(history) < 2:
        return Verdict("one epoch only", NOT_TESTABLE)
    first, last = history.iloc[0], history.iloc[-1]
    ok = last["train_loss"] < first["train_loss"] and last["val_loss"] < first["val_loss"]
    return Verdict(
        f"train {first['train_loss']:.4f} -> {last['train_loss']:.4f}, "
        f"val {first['val_loss']:.4f} -> {last['val_loss']:.4f} (epochs 1-{len(history)})",
        REPRODUCED if ok else NOT_REPRODUCED,
    )


def _ddim_better(ev: Evidence) -> Verdict:
    ddim = [m for m in ev.k1.methods if m.startswith("ddpm_ddim")]
    if not ddim or not _has(ev.k1, "ddpm_ancestral"):
        return Verdict("no DDPM in this run", NOT_TESTABLE)
    from slicelib.stats import paired_values, paired_wilcoxon

    best = max(ddim, key=lambda m: ev.k1.row(m)["psnr_mean"])
    a, b = paired_values(ev.k1.rows, best, "ddpm_ancestral", "psnr")
    p = paired_wilcoxon(a, b)
    gain = float(a.mean() - b.mean())
    return Verdict(
        f"{method_label(best)}: {gain:+.2f} dB over ancestral (p = {fmt_p(p)})",
        REPRODUCED if gain > 0 and p < ALPHA else NOT_REPRODUCED,
    )


def _absolute(method: str, k: int) -> Callable[[Evidence], Verdict]:
    def check(ev: Evidence) -> Verdict:
        res = ev.k1 if k == 1 else ev.k2
        if not _has(res, method):
            return Verdict("not evaluated", NOT_TESTABLE)
        r = res.row(method)
        text = f"{fmt(r['psnr_mean'])} dB, SSIM {fmt(r['ssim_mean'], 3)}"
        if ev.study.synthetic or ev.study.preset.name != "paper":
            why = "synthetic cohort" if ev.study.synthetic else f"{ev.study.preset.name} preset"
            return Verdict(f"{text} ({why}: absolute values not comparable)", NOT_TESTABLE)
        claimed = original.reported(method, k)
        assert claimed is not None
        ok = (
            abs(r["psnr_mean"] - claimed.psnr) <= 0.5 and abs(r["ssim_mean"] - claimed.ssim) <= 0.01
        )
        return Verdict(text, REPRODUCED if ok else NOT_REPRODUCED)

    return check


def _parameters(model: str, part: str) -> Callable[[Evidence], Verdict]:
    def check(ev: Evidence) -> Verdict:
        from slicelib.models import parameter_counts

        count = parameter_counts(PAPER.model)[model][part]
        entry = original.reported_model(model)
        stated = entry.parameters[part]
        tol = original.APPROXIMATE_TOLERANCE.get(model, 0.05) if entry.approximate else 0.0
        ok = abs(count - stated) <= tol * stated
        return Verdict(f"{count:,} (paper settings)", REPRODUCED if ok else NOT_REPRODUCED)

    return check


CLAIMS: tuple[Claim, ...] = (
    Claim(
        "The U-Net is the best method at k=1",
        original.ABSTRACT,
        "U-Net 30.08 dB, SSIM 0.898",
        "the U-Net has the highest mean PSNR, or is not significantly below the best",
        _unet_best,
    ),
    Claim(
        "The U-Net improves PSNR over linear interpolation by 10.1 %",
        original.ABSTRACT,
        "+10.1 % (30.08 / 27.31 dB)",
        "gain significant (Wilcoxon p < 0.05) and between half and twice 10.1 %",
        _unet_gain,
    ),
    Claim(
        "Every deep model beats linear interpolation at k=1",
        original.CODE_RESULTS,
        "CNN, U-Net, GANs 29.67-30.08 dB against 27.31 dB",
        "each deterministic model's PSNR gain over linear is positive with p < 0.05",
        _deep_beat_linear,
    ),
    Claim(
        "k=1 gives 58 % higher SSIM than k=2 across the deterministic models",
        original.K1_OVER_K2_SOURCE,
        "+58 %",
        "mean SSIM gain of k=1 over k=2 on the same slices between half and twice 58 %",
        _k_gain,
    ),
    Claim(
        "At k=2 all four architectures saturate at a similar SSIM",
        "supplement 3.1",
        f"SSIM about {original.K2_SATURATION_SSIM} for all four",
        "the four models' mean SSIM at k=2 lie within 0.03",
        _k2_saturation,
    ),
    Claim(
        "k=2 validation metrics plateau around epoch 15-20",
        "supplement 3.1",
        "plateau at epochs 15-20",
        "validation SSIM gains less than 1 % after epoch 15 (needs 20 or more epochs)",
        _k2_plateau,
    ),
    Claim(
        "The DDPM falls far below the deterministic models",
        original.ABSTRACT,
        "DDPM 17.89 dB, SSIM 0.585",
        "ancestral DDPM's mean PSNR is below every deterministic model's",
        _ddpm_below,
    ),
    Claim(
        "DDPM inference is about 100 times slower than the deterministic models",
        "supplement 2.5",
        "300 ms against 3-5 ms per image",
        "ancestral DDPM at least 30 times the U-Net's time per slice, same device",
        _ddpm_slow,
    ),
    Claim(
        "DDPM training is stable: training and validation losses decrease",
        "supplement 4.1",
        "train 0.1119 -> 0.0798, val 0.0927 -> 0.0821",
        "both losses lower at the last epoch than at the first",
        _ddpm_stable,
    ),
    Claim(
        "DDIM (deterministic) sampling could improve the DDPM's reconstruction metrics",
        "supplement 4.3",
        "proposed, not measured",
        "the best DDIM variant's PSNR exceeds ancestral sampling's with p < 0.05",
        _ddim_better,
    ),
    Claim(
        "U-Net at k=1: 30.08 dB, SSIM 0.898",
        original.ABSTRACT,
        "30.08 dB, SSIM 0.898",
        "within 0.5 dB and 0.01 SSIM (paper preset on the real collection only)",
        _absolute("unet", 1),
    ),
    Claim(
        "Linear interpolation at k=1: 27.31 dB, SSIM 0.838",
        original.CODE_RESULTS,
        "27.31 dB, SSIM 0.838",
        "within 0.5 dB and 0.01 SSIM (paper preset on the real collection only)",
        _absolute("linear", 1),
    ),
    Claim(
        "U-Net at k=2: 22.48 dB, SSIM 0.584",
        original.CODE_RESULTS,
        "22.48 dB, SSIM 0.584",
        "within 0.5 dB and 0.01 SSIM (paper preset on the real collection only)",
        _absolute("unet", 2),
    ),
    Claim(
        "The CNN has 297,217 parameters",
        "supplement 2.1",
        "297,217",
        "equal to the count of the code's CNN",
        _parameters("cnn", "generator"),
    ),
    Claim(
        "The U-Net has 1,862,273 parameters",
        "supplement 2.2",
        "1,862,273",
        "equal to the count of the code's U-Net",
        _parameters("unet", "generator"),
    ),
    Claim(
        "The improved GAN's generator has 0.6 M parameters",
        "supplement 2.4",
        "0.6 M",
        "within 10 % of the code's generator",
        _parameters("gan_improved", "generator"),
    ),
    Claim(
        "The DDPM's denoiser has 20.5 M parameters",
        "supplement 2.5",
        "20.5 M",
        "within 2 % of the code's denoiser",
        _parameters("ddpm", "denoiser"),
    ),
)


def claims_table(evidence: Evidence) -> pd.DataFrame:
    """One row per claim: the claim, its source, the original's number, this run's,
    the rule and the verdict."""
    rows = []
    for claim in CLAIMS:
        verdict = claim.check(evidence)
        rows.append(
            {
                "claim": claim.text,
                "source": claim.source,
                "original": claim.original,
                "this run": verdict.this_run,
                "rule": claim.rule,
                "verdict": verdict.verdict,
            }
        )
    return pd.DataFrame(rows).set_index("claim")


def reported_table(k1: Results, k2: Results) -> pd.DataFrame:
    """The original's published numbers beside this run's, per method and k
    (scikit-image SSIM defaults, the original's test protocol)."""
    rows = []
    for result in original.REPORTED_RESULTS:
        res = k1 if result.k == 1 else k2
        ours = res.row(result.method) if _has(res, result.method) else None
        rows.append(
            {
                "method": method_label(result.method),
                "k": result.k,
                "original PSNR (dB)": fmt(result.psnr),
                "this run PSNR (dB)": fmt(ours["psnr_mean"]) if ours else "-",
                "original SSIM": fmt(result.ssim, 3),
                "this run SSIM": fmt(ours["ssim_mean"], 3) if ours else "-",
                "note on the original's number": result.note or "-",
            }
        )
    return pd.DataFrame(rows).set_index(["method", "k"])


def verdict_counts(table: pd.DataFrame) -> dict[str, int]:
    """How many claims got each verdict."""
    counts = table["verdict"].value_counts()
    return {v: int(counts.get(v, 0)) for v in (REPRODUCED, NOT_REPRODUCED, NOT_TESTABLE)}


__all__ = [
    "CLAIMS",
    "NOT_REPRODUCED",
    "NOT_TESTABLE",
    "REPRODUCED",
    "Claim",
    "Evidence",
    "claims_table",
    "reported_table",
    "verdict_counts",
]
