"""The original's claims against this run: each claim, its margin (smallest effect of
interest) and why, the rule that decides it, and the verdict.

A claim rests on estimates (paired per-patient differences, a ratio, a time), each with its
95 % Student-t interval over patients and the range the claim needs: beyond the margin in
the claimed direction for a gain, inside it for no gain, within it of the original's number
for an absolute one. An estimate holds when its interval lies inside that range and fails
when it lies wholly outside, after Holm across a verdict's estimates
(:func:`slicelib.stats.decide`). A claim about every estimate is reproduced when all hold,
not reproduced when one fails, inconclusive otherwise.

Gates come first: networks whose validation curve still moved by more than the margin over
the last epoch (or trained one epoch) make a claim not testable at this budget; models not
trained here make it not testable here, unless a trained one already fails it; too few
paired test patients leave it untested. A comparison of models trained or started
differently than the original's is an illustration, as is every verdict on the synthetic
cohort. Checks of the code are apart (:func:`slicelib.study.present.code_checks_table`).
"""

from __future__ import annotations

import logging
import math
from collections.abc import Callable, Iterable, Mapping, Sequence
from dataclasses import dataclass, field
from functools import partial
from typing import TYPE_CHECKING, Literal

import numpy as np
import pandas as pd

from slicelib import original, stats
from slicelib.config import PAPER, EvalConfig, ModelConfig, ModelName
from slicelib.errors import SlicelibError
from slicelib.methods import ANCESTRAL, CLASSICAL, DETERMINISTIC_MODELS, is_ddim, method_label
from slicelib.stats import Estimate, Margin
from slicelib.study.present import fmt, wall_clock

if TYPE_CHECKING:
    from slicelib.study.workspace import Results, Study

log = logging.getLogger(__name__)

CohortKind = Literal["synthetic", "real", "tcia"]
COHORT_KINDS: tuple[CohortKind, ...] = ("synthetic", "real", "tcia")

REPRODUCED = "reproduced"
NOT_REPRODUCED = "not reproduced"
INCONCLUSIVE = "inconclusive"
TOO_FEW_PATIENTS = stats.TOO_FEW
NOT_AT_BUDGET = "not testable at this budget"
NOT_TESTABLE = "not testable here"
OUTCOMES = (REPRODUCED, NOT_REPRODUCED, INCONCLUSIVE, TOO_FEW_PATIENTS, NOT_AT_BUDGET, NOT_TESTABLE)
ILLUSTRATION = "illustration (synthetic cohort)"
# A verdict decided by wall-clock times (``make verify`` leaves its outcome out).
TIMED = "timed on this machine"
# Separates the outcome from the notes in the verdict column.
NOTE_SEPARATOR = " — "

# Each margin: its name, value, unit, decimals and why (a signed difference unless not).
PSNR = Margin("0.1 dB PSNR", 0.1, " dB", 2, "0.1 dB is a 2.3 % change of the mean squared error, "
              "the smallest PSNR difference by which interpolators are told apart; a gain below "
              "it changes no reading of an image")  # fmt: skip
SSIM = Margin("0.005 SSIM", 0.005, "", 3, "a twelfth of the original's gap between linear "
              "interpolation and the networks at k=1, 0.838 to 0.898; SSIM differences of a "
              "thousandth are within the spread of a window choice")  # fmt: skip
K_POINTS = Margin("1 point of the k=1/k=2 SSIM gain", 1.0, " points", 1, "1 % of the SSIM at "
                  "k=2, about 0.56, is 0.0056 SSIM: the SSIM margin")  # fmt: skip
FAR = Margin("1 dB PSNR ('far')", 1.0, " dB", 2, "'far below' is more than a difference: ten "
             "times the PSNR margin, a twelfth of the original's 12 dB gap")  # fmt: skip
ABS_PSNR = Margin("0.5 dB PSNR of the original's number", 0.5, " dB", 2, "the original's split "
                  "was an unseeded 15 % of patients and its preprocessing differs in small ways, "
                  "clipping; a few tenths of a dB is the spread such choices make, far below the "
                  "2.8 dB gain over linear under discussion")  # fmt: skip
ABS_SSIM = Margin("0.01 SSIM of the original's number", 0.01, "", 3, "the same spread in SSIM: a "
                  "sixth of the 0.06 gain over linear under discussion")  # fmt: skip
BAND = Margin("half to twice the claimed +10.1 %", 2.0, " %", 1, "the size of a gain over linear "
              "depends on how hard the collection is; a factor of two accepts the same order of "
              "effect under another split and rejects one that vanished or doubled")  # fmt: skip
SLOW = Margin("a factor of 30", 30.0, "×", 0, "100 sampling steps against one forward pass make "
              "two orders of magnitude on any device; 30x, half an order below the claimed 100x, "
              "leaves room for a smaller denoiser or a faster device", signed=False)  # fmt: skip
LOSS = Margin("a 2 % decrease", 2.0, " %", 1, "the original's validation loss fell 11 %; a change "
              "under 2 % of the first epoch's loss is within the epoch-to-epoch wobble of a "
              "validation loss on few slices", signed=False)  # fmt: skip
PLATEAU = Margin("1 % of validation SSIM", 1.0, " %", 1, "a change under 1 % over the last "
                 "five epochs is flat at the precision a 16-slice validation SSIM is read "
                 "to")  # fmt: skip
# The validation curve each margin is read on, to tell whether training had converged.
CURVE = {PSNR: "val_psnr", FAR: "val_psnr", ABS_PSNR: "val_psnr", SSIM: "val_ssim"}
ABOVE = (PSNR.value, math.inf)  # a PSNR gain beyond the margin


def judge(estimates: Sequence[Estimate], every: bool = True) -> tuple[str, str]:
    """The outcome and text of a claim about ``every`` estimate (else about any one)."""
    if not all(e.tested for e in estimates):
        return TOO_FEW_PATIENTS, "; ".join(e.text() for e in estimates)
    holds, fails, text = stats.decide(estimates)
    if every:
        return (NOT_REPRODUCED if any(fails) else REPRODUCED if all(holds) else INCONCLUSIVE), text
    return (REPRODUCED if any(holds) else NOT_REPRODUCED if all(fails) else INCONCLUSIVE), text


@dataclass(frozen=True)
class Evidence:
    """What the claims are checked against: every method at k=1 and k=2 (``k1``, ``k2``)
    and on the slices common to both k (``common1``, ``common2``, supplement 1.3); what
    the data is (``cohort``); the preset's name (absolute numbers need ``"paper"``); the
    per-epoch training histories by ``(model, k)`` (a run without one is not checked for
    convergence); the k the DDPM was trained at (None: no DDPM); the preset's
    architecture options and diffusion steps (is the comparison the original's?)."""

    k1: Results
    k2: Results
    common1: Results
    common2: Results
    cohort: CohortKind
    preset: str
    histories: Mapping[tuple[str, int], pd.DataFrame] = field(default_factory=dict)
    ddpm_k: int | None = None
    model: ModelConfig = field(default_factory=ModelConfig)
    timesteps: int = PAPER.diffusion.timesteps
    min_patients: int = stats.MIN_TEST_PATIENTS
    seed: int = EvalConfig.seed

    def __post_init__(self) -> None:
        if self.cohort not in COHORT_KINDS:
            raise SlicelibError(
                f"cohort must be one of {', '.join(COHORT_KINDS)} (got {self.cohort!r})"
            )

    @classmethod
    def from_study(
        cls,
        study: Study,
        k1: Results,
        k2: Results,
        common1: Results,
        common2: Results,
        *,
        cohort: CohortKind | None = None,
    ) -> Evidence:
        """Evidence of a study run. ``cohort`` None: ``"synthetic"`` for the generated
        cohort, else ``"tcia"`` under the paper preset (whose scan criteria select the
        original's series) and ``"real"`` under any other; a real-data arm on another
        collection passes ``cohort="real"``."""
        preset = study.preset
        if cohort is None:
            tcia = preset.name == PAPER.name
            cohort = "synthetic" if study.synthetic else "tcia" if tcia else "real"
            log.info("claims judged as cohort %r", cohort)
        histories: dict[tuple[str, int], pd.DataFrame] = {
            (m, k): study.history(m, k) for m, k in study.runs()
        }
        ddpm_k = next((k for m, k in histories if m == "ddpm"), None)
        return cls(k1, k2, common1, common2, cohort, preset.name, histories, ddpm_k, preset.model,
                   preset.diffusion.timesteps, seed=preset.eval.seed)  # fmt: skip

    def compare(self, res: Results, method: str, other: str, metric: str) -> stats.Comparison:
        return stats.compare(res.rows, method, other, metric, min_patients=self.min_patients,
                             seed=self.seed)  # fmt: skip

    def infer(self, values: pd.Series | np.ndarray) -> stats.Inference:
        return stats.infer_mean(np.asarray(values), min_patients=self.min_patients, seed=self.seed)

    def gains(
        self,
        res: Results,
        method: str,
        others: Iterable[str],
        metric: str,
        needed: tuple[float, float],
        margin: Margin,
        reverse: bool = False,
        every: bool = True,
    ) -> tuple[str, str]:
        """:func:`judge` on ``method`` minus each of ``others`` (``reverse``: each of
        ``others`` minus ``method``) on ``metric``, paired per patient, needing ``needed``."""
        estimates = []
        for other in others:
            pair = (other, method) if reverse else (method, other)
            c = self.compare(res, *pair, metric)
            estimates.append(Estimate.of(method_label(other), c, needed, margin))
        return judge(estimates, every)

    @property
    def absolute_testable(self) -> bool:
        """The original's absolute numbers: only the paper preset on the original's collection."""
        return self.cohort == "tcia" and self.preset == PAPER.name

    def verdict(
        self,
        judged: tuple[str, str],
        margin: Margin,
        runs: Iterable[tuple[str, int]],
        missing: Sequence[str] = (),
        caveat: str = "",
    ) -> Verdict:
        """The verdict from ``judged`` (outcome, text) after the gates: the networks in
        ``runs`` converged on ``margin``'s curve, none of ``missing`` (not trained)."""
        outcome, text = judged
        column = CURVE[margin]
        moving = []
        for model, k in runs:
            history = self.histories.get((model, k))
            if history is None:
                continue
            run = f"{method_label(model)} at k={k}"
            change = float(history[column].diff().iloc[-1])  # NaN after one epoch
            if len(history) < 2:
                moving.append(f"{run} (one epoch)")
            elif abs(change) > margin.value:
                moving.append(f"{run} ({margin.fmt(change)})")
        if moving:
            metric = column.removeprefix("val_").upper()
            text += (
                f"; training had not converged (validation {metric} changed by more than "
                f"{margin.value:g}{margin.unit} over the last epoch, or one epoch only): "
                + ", ".join(moving)
            )
            return Verdict(text, NOT_AT_BUDGET, caveat)
        if missing and outcome != NOT_REPRODUCED:
            text += f"; not trained here: {', '.join(method_label(m) for m in missing)}"
            return Verdict(text, NOT_TESTABLE, caveat)
        return Verdict(text, outcome, caveat)


@dataclass(frozen=True)
class Verdict:
    this_run: str
    outcome: str
    caveat: str = ""  # why the comparison is an illustration even on real data
    timed: bool = False  # decided by wall-clock times: may change from run to run


@dataclass(frozen=True)
class Claim:
    """A claim of the original, its margin, the rule that decides it and why."""

    text: str
    source: str
    original: str
    margin: Margin
    rule: str
    rationale: str
    check: Callable[[Evidence], Verdict]


def _has(res: Results, *methods: str) -> bool:
    return all(m in res.methods for m in methods)


def _trained(*results: Results) -> tuple[list[ModelName], list[ModelName]]:
    """The deterministic models scored in every one of ``results``, and the others."""
    found = [m for m in DETERMINISTIC_MODELS if all(_has(r, m) for r in results)]
    return found, [m for m in DETERMINISTIC_MODELS if m not in found]


def _not_the_original(ev: Evidence, start: bool = False, steps: bool = False) -> str:
    """How this preset's models differ from the original's where a comparison depends on
    it: how the networks start against the DDPM, the DDPM's width, its diffusion steps."""
    reasons = []
    if start and ev.model.residual_from_linear:
        reasons.append("the networks start at linear interpolation, the DDPM from noise")
    if ev.model.ddpm_channels != PAPER.model.ddpm_channels:
        reasons.append(
            f"a DDPM of {ev.model.ddpm_channels} base channels, not the original's "
            f"{PAPER.model.ddpm_channels}"
        )
    if steps and ev.timesteps != PAPER.diffusion.timesteps:
        reasons.append(f"{ev.timesteps} diffusion steps, not {PAPER.diffusion.timesteps}")
    return "; ".join(reasons)


def _unet_best(ev: Evidence) -> Verdict:
    if not _has(ev.k1, "unet"):
        return Verdict("no U-Net in this run", NOT_TESTABLE)
    models, missing = _trained(ev.k1)
    # The DDPM and its samplers are judged by their own claims (on their slice subset).
    others = [m for m in (*CLASSICAL, *models) if m != "unet" and _has(ev.k1, m)]
    outcome, text = ev.gains(ev.k1, "unet", others, "psnr", ABOVE, PSNR)
    return ev.verdict((outcome, "U-Net minus " + text), PSNR, [(m, 1) for m in models], missing)


def _unet_gain(ev: Evidence) -> Verdict:
    if not _has(ev.k1, "unet", "linear"):
        return Verdict("no U-Net or linear in this run", NOT_TESTABLE)
    c = ev.compare(ev.k1, "unet", "linear", "psnr")
    claimed = original.UNET_PSNR_GAIN_PCT
    band = (claimed / BAND.value, claimed * BAND.value)
    gain = Estimate.of("U-Net over linear", c, band, BAND, scale=100.0 / c.mean_other)
    if not ev.absolute_testable:
        text = f"{BAND.fmt(gain.mean)} (the size of the gain depends on the collection)"
        return Verdict(text, NOT_TESTABLE)
    return ev.verdict(judge([gain]), PSNR, [("unet", 1)])


def _deep_beat_linear(ev: Evidence) -> Verdict:
    models, missing = _trained(ev.k1)
    if not models or not _has(ev.k1, "linear"):
        return Verdict("no deterministic model or linear in this run", NOT_TESTABLE)
    judged = ev.gains(ev.k1, "linear", models, "psnr", ABOVE, PSNR, reverse=True)
    return ev.verdict(judged, PSNR, [(m, 1) for m in models], missing)


def k_ratio(common1: Results, common2: Results, method: str) -> pd.Series:
    """Per patient: 100 * (SSIM at k=1 / SSIM at k=2 - 1) of ``method``, on the common
    slices both k scored (the book's one measure of the k=1 SSIM gain)."""
    a = common1.rows.loc[common1.rows["method"] == method, [*stats.KEY, "ssim"]]
    b = common2.rows.loc[common2.rows["method"] == method, [*stats.KEY, "ssim"]]
    both = a.merge(b, on=list(stats.KEY), suffixes=("_1", "_2"))
    means = both.groupby("patient_id", sort=True)[["ssim_1", "ssim_2"]].mean()
    return 100.0 * (means["ssim_1"] / means["ssim_2"] - 1.0)


def _k_gain(ev: Evidence) -> Verdict:
    models, missing = _trained(ev.common1, ev.common2)
    if not models or not (_has(ev.common1, "linear") and _has(ev.common2, "linear")):
        return Verdict("no deterministic model or linear at both k", NOT_TESTABLE)
    ratio = partial(k_ratio, ev.common1, ev.common2)
    networks = pd.concat([ratio(m) for m in models], axis=1).dropna().mean(axis=1)
    ratios = pd.concat({"networks": networks, "linear": ratio("linear")}, axis=1).dropna()
    above = (K_POINTS.value, math.inf)
    claimed = original.K1_OVER_K2_SSIM_GAIN_PCT
    # On the original's collection the size counts too: half to twice the claimed gain.
    size = (claimed / BAND.value, claimed * BAND.value) if ev.absolute_testable else above
    gain = Estimate.of("networks", ev.infer(ratios["networks"]), size, K_POINTS)
    excess = ev.infer(ratios["networks"] - ratios["linear"])
    outcome, text = judge([gain, Estimate.of("networks minus linear", excess, above, K_POINTS)])
    text += (
        f" (SSIM at k=1 over k=2, in %, on the common slices, mean of {len(models)} models; "
        f"linear alone {ratios['linear'].mean():+.1f} %)"
    )
    runs = [(m, k) for m in models for k in (1, 2)]
    return ev.verdict((outcome, text), SSIM, runs, missing)


def _k2_saturation(ev: Evidence) -> Verdict:
    models, missing = _trained(ev.k1, ev.k2)
    if not models or not (_has(ev.k1, "linear") and _has(ev.k2, "linear")):
        return Verdict("no deterministic model or linear at both k", NOT_TESTABLE)
    m = SSIM.value
    flat, flat_text = ev.gains(ev.k2, "linear", models, "ssim", (-m, m), SSIM, True)
    gain, gain_text = ev.gains(ev.k1, "linear", models, "ssim", (m, math.inf), SSIM, True)
    text = f"SSIM gain over linear, k=2: {flat_text}; k=1: {gain_text}"
    if TOO_FEW_PATIENTS in (flat, gain):
        outcome = TOO_FEW_PATIENTS
    elif flat == REPRODUCED and gain == REPRODUCED:
        outcome = REPRODUCED
    elif flat == NOT_REPRODUCED:
        outcome = NOT_REPRODUCED
    else:
        outcome = INCONCLUSIVE
        text += " (no k=1 gain to contrast with)" if gain == NOT_REPRODUCED else ""
    runs = [(x, k) for x in models for k in (1, 2)]
    return ev.verdict((outcome, text), SSIM, runs, missing)


def _k2_plateau(ev: Evidence) -> Verdict:
    first, last = original.K2_PLATEAU_EPOCHS
    histories = {
        model: ev.histories[(model, 2)].set_index("epoch")
        for model in DETERMINISTIC_MODELS
        if (model, 2) in ev.histories
    }
    if not histories:
        return Verdict("no model trained at k=2", NOT_TESTABLE)
    epochs = sorted({int(h.index.to_numpy().max()) for h in histories.values()})
    if epochs[0] < last:
        span = "-".join(str(e) for e in dict.fromkeys((epochs[0], epochs[-1])))
        return Verdict(f"this run trains {span} epochs at k=2, the claim needs {last}",
                       NOT_AT_BUDGET)  # fmt: skip
    flat = (-PLATEAU.value, PLATEAU.value)
    estimates = []
    for model, h in histories.items():
        change = 100.0 * (h["val_ssim"].iloc[-1] / h.loc[first, "val_ssim"] - 1.0)
        estimates.append(Estimate.point(method_label(model), change, flat, PLATEAU))
    outcome, text = judge(estimates)
    return Verdict(f"val SSIM change after epoch {first}: {text}", outcome)


def _ddpm_below(ev: Evidence) -> Verdict:
    models, missing = _trained(ev.k1)
    if not _has(ev.k1, ANCESTRAL) or not models:
        return Verdict("no DDPM or deterministic model in this run", NOT_TESTABLE)
    outcome, text = ev.gains(ev.k1, ANCESTRAL, models, "psnr", (-math.inf, -FAR.value), FAR)
    slices = ev.compare(ev.k1, ANCESTRAL, models[0], "psnr").n_slices
    text = f"DDPM minus {text} (on the DDPM's {slices} slices)"
    runs = [(m, 1) for m in (*models, "ddpm")]
    return ev.verdict((outcome, text), FAR, runs, missing, _not_the_original(ev, start=True))


def _ddpm_slow(ev: Evidence) -> Verdict:
    if not _has(ev.k1, ANCESTRAL, "unet"):
        return Verdict("no DDPM or U-Net in this run", NOT_TESTABLE)
    ddpm, unet = ev.k1.row(ANCESTRAL), ev.k1.row("unet")
    ratio = ddpm["ms_per_slice"] / unet["ms_per_slice"]
    # Written as every timing is (units, "×"), so that ``make verify`` leaves them out.
    times = (
        f"{wall_clock(ddpm['ms_per_slice'], 0, ' ms')} against "
        f"{wall_clock(unet['ms_per_slice'], 1, ' ms')} for the U-Net"
    )
    if unet.get("device") != ddpm.get("device"):
        return Verdict(f"{times} ({wall_clock(ratio, 0, '×')}) on different devices", NOT_TESTABLE)
    outcome, text = judge([Estimate.point("ratio", ratio, (SLOW.value, math.inf), SLOW)])
    text = f"{times}, {unet.get('device', '')}: {text}"
    return Verdict(text, outcome, _not_the_original(ev, steps=True), timed=True)


def _ddpm_stable(ev: Evidence) -> Verdict:
    if ev.ddpm_k is None or ("ddpm", ev.ddpm_k) not in ev.histories:
        return Verdict("no DDPM in this run", NOT_TESTABLE)
    history = ev.histories[("ddpm", ev.ddpm_k)]
    if len(history) < 2:
        return Verdict("one epoch only", NOT_AT_BUDGET)
    first, last = history.iloc[0], history.iloc[-1]
    estimates = [
        Estimate.point(f"{name} {first[column]:.4f} -> {last[column]:.4f}, a decrease of",
                       100.0 * (1.0 - last[column] / first[column]), (LOSS.value, math.inf), LOSS)
        for name, column in (("train", "train_loss"), ("val", "val_loss"))
    ]  # fmt: skip
    outcome, text = judge(estimates)
    return Verdict(f"{text} (epochs 1-{len(history)})", outcome)


def _ddim_better(ev: Evidence) -> Verdict:
    ddim = [m for m in ev.k1.methods if is_ddim(m)]
    if not ddim or not _has(ev.k1, ANCESTRAL):
        return Verdict("no DDPM in this run", NOT_TESTABLE)
    outcome, text = ev.gains(ev.k1, ANCESTRAL, ddim, "psnr", ABOVE, PSNR, True, every=False)
    return ev.verdict((outcome, f"{text} (against ancestral)"), PSNR, [("ddpm", 1)])


def _absolute(method: str, k: int) -> Callable[[Evidence], Verdict]:
    def check(ev: Evidence) -> Verdict:
        res = ev.k1 if k == 1 else ev.k2
        if not _has(res, method):
            return Verdict("not evaluated", NOT_TESTABLE)
        r = res.row(method)
        text = f"{fmt(r['psnr_mean'])} dB, SSIM {fmt(r['ssim_mean'], 3)}"
        if not ev.absolute_testable:
            why = f"{ev.cohort} cohort, {ev.preset} preset"
            return Verdict(f"{text} ({why}: only the paper preset on the original's data)",
                           NOT_TESTABLE)  # fmt: skip
        claimed = original.reported(method, k)
        assert claimed is not None
        per_patient = res.rows[res.rows["method"] == method].groupby("patient_id", sort=True)
        estimates = []
        for metric, margin, value in (
            ("psnr", ABS_PSNR, claimed.psnr),
            ("ssim", ABS_SSIM, claimed.ssim),
        ):
            # Per-patient means against the original's per-slice mean.
            off = ev.infer(per_patient[metric].mean() - value)
            label = f"{metric.upper()} minus the original's"
            estimates.append(Estimate.of(label, off, (-margin.value, margin.value), margin))
        outcome, judged = judge(estimates)
        runs = [(method, k)] if method in DETERMINISTIC_MODELS else []
        return ev.verdict((outcome, f"{text}; {judged}"), ABS_PSNR, runs)

    return check


_ABSOLUTE_RULE = (
    "the interval of this run's per-patient means minus the original's number lies inside "
    "the margin for PSNR and for SSIM; testable only with the paper preset on the "
    "original's collection"
)
# The original's absolute numbers: the claim (the number after its colon), source, method, k.
_ABSOLUTE = (
    ("U-Net at k=1: 30.08 dB, SSIM 0.898", original.ABSTRACT, "unet", 1),
    ("Linear interpolation at k=1: 27.31 dB, SSIM 0.838", original.CODE_RESULTS, "linear", 1),
    ("U-Net at k=2: 22.48 dB, SSIM 0.584", original.CODE_RESULTS, "unet", 2),
)

# Each claim: text, source, the original's number, margin, rule, why this rule, check.
CLAIMS: tuple[Claim, ...] = (
    Claim("The U-Net is the best method at k=1", original.ABSTRACT, "U-Net 30.08 dB, SSIM 0.898",
          PSNR, "the U-Net's PSNR minus each classical method's and each other deterministic "
          "network's, paired per patient, lies above the margin; not reproduced when one lies "
          "below it", "'best' means better than each alternative by an effect that matters; a "
          "tie within the margin is not a win, whichever mean happens to be higher", _unet_best),
    Claim("The U-Net improves PSNR over linear interpolation by 10.1 %", original.ABSTRACT,
          "+10.1 % (30.08 / 27.31 dB)", BAND, "paper preset on the original's collection only: "
          "the U-Net's PSNR gain over linear, in % of linear's, lies inside half to twice "
          "10.1 %; not reproduced when it lies outside", "only the original's collection can "
          "confirm the number; the direction is the next claim", _unet_gain),
    Claim("Every deep model beats linear interpolation at k=1", original.CODE_RESULTS,
          "CNN, U-Net, GANs 29.67-30.08 dB against 27.31 dB", PSNR, "each deterministic "
          "model's PSNR gain over linear lies above the margin; not reproduced when one lies "
          "below it (negligible or negative)", "a network beats linear only if the gain holds "
          "across patients and is large enough to matter", _deep_beat_linear),
    Claim("k=1 gives 58 % higher SSIM than k=2 across the deterministic models",
          original.K1_OVER_K2_SOURCE, "+58 %", K_POINTS, "on the slices common to k=1 and k=2, "
          "per patient: the networks' mean SSIM gain of k=1 over k=2 (in %) and its excess "
          "over linear interpolation's own gain on the same slices both lie above the margin "
          "(with the paper preset on the original's collection, the networks' gain inside "
          "half to twice 58 %)", "closer neighbours make every method better, linear "
          "interpolation included: that part of the gain comes from the data, not from the "
          "networks or the problem formulation they learn", _k_gain),
    Claim("At k=2 all four architectures saturate at a similar SSIM", "supplement 3.1",
          f"SSIM about {original.K2_SATURATION_SSIM} for all four", SSIM, "every model's SSIM "
          "gain over linear at k=2 lies inside ± the margin (equivalence) while at k=1 every "
          "model's lies above it; not reproduced when a k=2 gain lies beyond the margin; "
          "inconclusive when the k=1 gains do not all lie above it", "saturation means the "
          "networks cannot add at k=2 what they add at k=1; models that sit at linear "
          "because they learnt nothing at either k show no saturation", _k2_saturation),
    Claim("k=2 validation metrics plateau around epoch 15-20", "supplement 3.1",
          "plateau at epochs 15-20", PLATEAU, "each model's validation SSIM changes by less "
          "than the margin after epoch 15 (needs 20 or more epochs)", "a plateau is a change "
          "too small to matter, read on the validation curve", _k2_plateau),
    Claim("The DDPM falls far below the deterministic models", original.ABSTRACT,
          "DDPM 17.89 dB, SSIM 0.585", FAR, "on the slices the DDPM was scored on, the "
          "ancestral DDPM's PSNR minus each deterministic model's lies below minus the margin; "
          "not reproduced when one lies above it; an illustration unless the preset starts "
          "and sizes the models as the original did", "paired on the DDPM's subset of slices, "
          "slice difficulty does not enter the gap; a network started at linear interpolation "
          "is at linear's level before it learns anything, a DDPM started from noise is not",
          _ddpm_below),
    Claim("DDPM inference is about 100 times slower than the deterministic models",
          "supplement 2.5", "300 ms against 3-5 ms per image", SLOW, "ancestral DDPM at least "
          "the margin times the U-Net's time per slice, same device; an illustration unless "
          "the DDPM has the original's width and steps", "a narrower denoiser or fewer "
          "diffusion steps make the DDPM faster than the original's", _ddpm_slow),
    Claim("DDPM training is stable: training and validation losses decrease", "supplement 4.1",
          "train 0.1119 -> 0.0798, val 0.0927 -> 0.0821", LOSS, "both losses lower at the last "
          "epoch than at the first by more than the margin", "the original states stability "
          "as a decrease of both losses", _ddpm_stable),
    Claim("DDIM (deterministic) sampling could improve the DDPM's reconstruction metrics",
          "supplement 4.3", "proposed, not measured", PSNR, "a DDIM variant's PSNR gain over "
          "ancestral sampling lies above the margin (Holm across the variants); not "
          "reproduced when every variant's lies below it", "several step counts are tried and "
          "the best would be picked after seeing them: Holm keeps the chance of a false "
          "'better' at 5 %", _ddim_better),
    *(Claim(text, source, text.partition(": ")[2], ABS_PSNR, _ABSOLUTE_RULE, ABS_PSNR.why,
            _absolute(m, k)) for text, source, m, k in _ABSOLUTE),
)  # fmt: skip


def verdict_text(outcome: str, cohort: CohortKind, caveat: str = "", timed: bool = False) -> str:
    """The verdict as the table shows it: the outcome, :data:`TIMED` beside a verdict that
    wall-clock times decided, and why it is an illustration (the synthetic cohort, a
    comparison the original did not make)."""
    reasons = [r for r in ("synthetic cohort" if cohort == "synthetic" else "", caveat) if r]
    notes = [TIMED] if timed else []
    notes += [f"illustration ({'; '.join(reasons)})"] if reasons else []
    return NOTE_SEPARATOR.join([outcome, *notes])


def claims_table(evidence: Evidence) -> pd.DataFrame:
    """One row per claim: the claim, its source, the original's number, this run's, the
    margin with its reason, the rule, why, and the verdict."""
    rows = []
    for claim in CLAIMS:
        v = claim.check(evidence)
        rows.append(
            {
                "claim": claim.text,
                "source": claim.source,
                "original": claim.original,
                "this run": v.this_run,
                "margin": claim.margin.name,
                "why this margin": claim.margin.why,
                "rule": claim.rule,
                "why this rule": claim.rationale,
                "verdict": verdict_text(v.outcome, evidence.cohort, v.caveat, v.timed),
            }
        )
    return pd.DataFrame(rows).set_index("claim")


def margins_text() -> str:
    """Every margin of the claims with its reason, in one sentence for the prose."""
    margins = dict.fromkeys(c.margin for c in CLAIMS)
    return "; ".join(f"{m.name} ({m.why})" for m in margins) + "."


def outcome_of(verdict: str) -> str:
    """The outcome of a verdict cell (without its notes)."""
    return verdict.split(NOTE_SEPARATOR)[0]


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
    """How many claims got each outcome (the table of findings: code checks are apart)."""
    counts = table["verdict"].map(outcome_of).value_counts()
    return {v: int(counts.get(v, 0)) for v in OUTCOMES}
