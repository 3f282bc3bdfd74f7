"""The original's claims against this run: each claim, the rule that decides it with the
reason for its thresholds, and the verdict computed from the results.

Verdicts are ``reproduced``, ``not reproduced``, ``inconclusive`` (the run cannot tell:
an interval straddles the deciding value), ``too few patients to test`` (fewer than
:data:`slicelib.stats.MIN_TEST_PATIENTS` paired test patients) and ``not testable
here`` (the claim is about another collection or setting). Every comparison of two
methods is patient-level and paired (:func:`slicelib.stats.compare`).

What a cohort can test (:data:`CohortKind`):

- ``"tcia"``: the original's collection. With the paper preset, every claim,
  the original's absolute numbers included.
- ``"real"``: another real cohort (other organ, scanner or collection): the
  relative claims (k=1 against k=2, networks against linear, DDPM against the
  deterministic models, inference cost), not the original's absolute numbers.
- ``"synthetic"``: the generated demo cohort. Claims are evaluated as for a real
  cohort, but every verdict reads :data:`ILLUSTRATION` beside it: the cohort was
  made to look like the task, so it shows how the rules work, not whether the
  original holds.

The claims' numbers come from :mod:`slicelib.original`.
"""

from __future__ import annotations

import logging
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Literal

import numpy as np
import pandas as pd

from slicelib import original
from slicelib.config import PAPER, EvalConfig
from slicelib.errors import SlicelibError
from slicelib.methods import ANCESTRAL, CLASSICAL, DETERMINISTIC_MODELS, is_ddim, method_label
from slicelib.stats import (
    CONFIDENCE,
    KEY,
    MIN_TEST_PATIENTS,
    TOO_FEW,
    Comparison,
    Inference,
    compare,
    infer_mean,
)
from slicelib.study.present import fmt, p_text, wall_clock

if TYPE_CHECKING:
    from slicelib.study.workspace import Results, Study

log = logging.getLogger(__name__)

CohortKind = Literal["synthetic", "real", "tcia"]
COHORT_KINDS: tuple[CohortKind, ...] = ("synthetic", "real", "tcia")

REPRODUCED = "reproduced"
NOT_REPRODUCED = "not reproduced"
INCONCLUSIVE = "inconclusive"
TOO_FEW_PATIENTS = TOO_FEW
NOT_TESTABLE = "not testable here"
OUTCOMES: tuple[str, ...] = (
    REPRODUCED,
    NOT_REPRODUCED,
    INCONCLUSIVE,
    TOO_FEW_PATIENTS,
    NOT_TESTABLE,
)
ILLUSTRATION = "illustration (synthetic cohort)"
CODE_FACT = "from the code, any cohort"
# A verdict decided by wall-clock times (``make verify`` leaves its outcome out).
TIMED = "timed on this machine"
# Separates the outcome from the cohort note in the verdict column.
NOTE_SEPARATOR = " — "

ALPHA = 1.0 - CONFIDENCE  # two-sided, matching the 95 % intervals
# Half to twice a claimed relative gain: the same order of effect.
MAGNITUDE_FACTOR = 2.0
# Absolute numbers: how far this run's per-slice mean may lie from the original's.
PSNR_TOLERANCE_DB = 0.5
SSIM_TOLERANCE = 0.01
# DDPM at least this many times the U-Net's time per slice, on one device.
SLOW_FACTOR = 30.0
# k=2 plateau: validation SSIM gains less than this (%) after the first plateau epoch.
PLATEAU_GAIN_PCT = 1.0


@dataclass(frozen=True)
class Evidence:
    """What the claims are checked against.

    ``k1``, ``k2``: every method at k=1 and k=2; ``common1``, ``common2``: the same on
    the slices common to k=1 and k=2 (supplement 1.3). ``cohort``: what the data is
    (:data:`CohortKind`); ``preset``: the preset's name (absolute numbers need
    ``"paper"``); ``histories``: per-epoch training histories by ``(model, k)``;
    ``ddpm_k``: the k the DDPM was trained at (None: no DDPM).
    """

    k1: Results
    k2: Results
    common1: Results
    common2: Results
    cohort: CohortKind
    preset: str
    histories: Mapping[tuple[str, int], pd.DataFrame] = field(default_factory=dict)
    ddpm_k: int | None = None
    min_patients: int = MIN_TEST_PATIENTS
    n_boot: int = EvalConfig.bootstrap
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
        cohort; otherwise ``"tcia"`` under the paper preset (whose scan criteria select
        the original's series) and ``"real"`` under any other. A real-data arm on
        another collection passes ``cohort="real"``."""
        if cohort is None:
            if study.synthetic:
                cohort = "synthetic"
            else:
                cohort = "tcia" if study.preset.name == PAPER.name else "real"
            log.info("claims judged as cohort %r", cohort)
        runs = study.runs()
        histories: dict[tuple[str, int], pd.DataFrame] = {
            (m, k): study.history(m, k) for m, k in runs
        }
        ddpm_ks = [k for m, k in runs if m == "ddpm"]
        return cls(
            k1=k1,
            k2=k2,
            common1=common1,
            common2=common2,
            cohort=cohort,
            preset=study.preset.name,
            histories=histories,
            ddpm_k=ddpm_ks[0] if ddpm_ks else None,
            n_boot=study.preset.eval.bootstrap,
            seed=study.preset.eval.seed,
        )

    def compare(self, res: Results, method: str, other: str, metric: str) -> Comparison:
        return compare(
            res.rows,
            method,
            other,
            metric,
            min_patients=self.min_patients,
            n_boot=self.n_boot,
            seed=self.seed,
        )

    def infer(self, values: np.ndarray) -> Inference:
        return infer_mean(
            values, min_patients=self.min_patients, n_boot=self.n_boot, seed=self.seed
        )

    @property
    def absolute_testable(self) -> bool:
        """The original's absolute numbers: only the paper preset on the original's collection."""
        return self.cohort == "tcia" and self.preset == PAPER.name


@dataclass(frozen=True)
class Verdict:
    this_run: str
    outcome: str
    timed: bool = False  # decided by wall-clock times: may change from run to run


@dataclass(frozen=True)
class Claim:
    """A claim of the original, the rule that decides it and why its thresholds are what
    they are. ``from_data``: False for facts of the code (parameter counts), which no
    cohort changes."""

    text: str
    source: str
    original: str
    rule: str
    rationale: str
    check: Callable[[Evidence], Verdict]
    from_data: bool = True


def _has(res: Results, *methods: str) -> bool:
    return all(m in res.methods for m in methods)


def _ci(c: Comparison | Inference, digits: int = 2, unit: str = "") -> str:
    """ "+1.23 dB [0.50, 2.00], p = 0.03, n = 6" or "+1.23 dB (n = 3, too few ...)"."""
    gain = c.gain if isinstance(c, Comparison) else c.mean
    text = f"{gain:+.{digits}f}{unit}"
    if not c.tested:
        return f"{text} (n = {c.n_patients}, {c.test})"
    return (
        f"{text} [{c.ci_low:+.{digits}f}, {c.ci_high:+.{digits}f}], "
        f"{p_text(c.p_value)}, n = {c.n_patients}"
    )


def _untested(parts: list[Comparison | Inference]) -> bool:
    return any(not p.tested for p in parts)


def _unet_best(ev: Evidence) -> Verdict:
    res = ev.k1
    if not _has(res, "unet"):
        return Verdict("no U-Net in this run", NOT_TESTABLE)
    # The DDPM and its samplers are judged by their own claims (on their slice subset).
    others = [m for m in (*CLASSICAL, *DETERMINISTIC_MODELS) if m != "unet" and _has(res, m)]
    comps = [ev.compare(res, "unet", m, "psnr") for m in others]
    text = "U-Net minus " + "; ".join(
        f"{method_label(c.other)} {_ci(c, unit=' dB')}" for c in comps
    )
    if not comps:
        return Verdict("no other method", NOT_TESTABLE)
    if any(c.below_zero and c.p_value < ALPHA for c in comps):
        return Verdict(text, NOT_REPRODUCED)
    if _untested(list(comps)):
        return Verdict(text, TOO_FEW_PATIENTS)
    if all(c.above_zero and c.p_value < ALPHA for c in comps):
        return Verdict(text, REPRODUCED)
    return Verdict(text, INCONCLUSIVE)


def _unet_gain(ev: Evidence) -> Verdict:
    if not _has(ev.k1, "unet", "linear"):
        return Verdict("no U-Net or linear in this run", NOT_TESTABLE)
    c = ev.compare(ev.k1, "unet", "linear", "psnr")
    text = f"{c.gain_pct:+.1f} %; {_ci(c, unit=' dB')}"
    if not ev.absolute_testable:
        return Verdict(text + " (size of the gain depends on the collection)", NOT_TESTABLE)
    if not c.tested:
        return Verdict(text, TOO_FEW_PATIENTS)
    claimed = original.UNET_PSNR_GAIN_PCT
    in_band = claimed / MAGNITUDE_FACTOR <= c.gain_pct <= claimed * MAGNITUDE_FACTOR
    if not in_band or c.below_zero:
        return Verdict(text, NOT_REPRODUCED)
    if c.above_zero and c.p_value < ALPHA:
        return Verdict(text, REPRODUCED)
    return Verdict(text, INCONCLUSIVE)


def _deep_beat_linear(ev: Evidence) -> Verdict:
    models = [m for m in DETERMINISTIC_MODELS if _has(ev.k1, m)]
    if not models or not _has(ev.k1, "linear"):
        return Verdict("no deterministic model or linear in this run", NOT_TESTABLE)
    comps = [ev.compare(ev.k1, m, "linear", "psnr") for m in models]
    text = "; ".join(f"{method_label(c.method)} {_ci(c, unit=' dB')}" for c in comps)
    if _untested(list(comps)):
        return Verdict(text, TOO_FEW_PATIENTS)
    if all(c.above_zero and c.p_value < ALPHA for c in comps):
        return Verdict(text, REPRODUCED)
    if any(c.below_zero for c in comps):
        return Verdict(text, NOT_REPRODUCED)
    return Verdict(text, INCONCLUSIVE)


def _k_ratio(ev: Evidence, method: str) -> pd.Series:
    """Per patient: 100 * (SSIM at k=1 / SSIM at k=2 - 1) of ``method``, on the common
    slices both k scored."""
    a = ev.common1.rows.loc[ev.common1.rows["method"] == method, [*KEY, "ssim"]]
    b = ev.common2.rows.loc[ev.common2.rows["method"] == method, [*KEY, "ssim"]]
    both = a.merge(b, on=list(KEY), suffixes=("_1", "_2"))
    means = both.groupby("patient_id", sort=True)[["ssim_1", "ssim_2"]].mean()
    return 100.0 * (means["ssim_1"] / means["ssim_2"] - 1.0)


def _k_gain(ev: Evidence) -> Verdict:
    models = [m for m in DETERMINISTIC_MODELS if _has(ev.common1, m) and _has(ev.common2, m)]
    if not models or not (_has(ev.common1, "linear") and _has(ev.common2, "linear")):
        return Verdict("no deterministic model or linear at both k", NOT_TESTABLE)
    networks = pd.concat([_k_ratio(ev, m) for m in models], axis=1).dropna().mean(axis=1)
    linear = _k_ratio(ev, "linear")
    joined = pd.concat({"networks": networks, "linear": linear}, axis=1).dropna()
    net = ev.infer(joined["networks"].to_numpy())
    excess = ev.infer((joined["networks"] - joined["linear"]).to_numpy())
    text = (
        f"networks {_ci(net, 1, ' %')}; linear alone {joined['linear'].mean():+.1f} %; "
        f"networks minus linear {_ci(excess, 1, ' points')} (common slices, "
        f"mean of {len(models)} models)"
    )
    if _untested([net, excess]):
        return Verdict(text, TOO_FEW_PATIENTS)
    if ev.absolute_testable:
        claimed = original.K1_OVER_K2_SSIM_GAIN_PCT
        if not claimed / MAGNITUDE_FACTOR <= net.mean <= claimed * MAGNITUDE_FACTOR:
            return Verdict(text + " (outside half to twice 58 %)", NOT_REPRODUCED)
    if not net.above_zero or excess.below_zero:
        return Verdict(text, NOT_REPRODUCED)
    if excess.above_zero and excess.p_value < ALPHA and net.p_value < ALPHA:
        return Verdict(text, REPRODUCED)
    return Verdict(text + " (not distinguishable from the data's own k-effect)", INCONCLUSIVE)


def _k2_saturation(ev: Evidence) -> Verdict:
    models = [m for m in DETERMINISTIC_MODELS if _has(ev.k1, m) and _has(ev.k2, m)]
    if len(models) < 2 or not (_has(ev.k1, "linear") and _has(ev.k2, "linear")):
        return Verdict("fewer than two models, or no linear, at both k", NOT_TESTABLE)
    k1 = [ev.compare(ev.k1, m, "linear", "ssim") for m in models]
    k2 = [ev.compare(ev.k2, m, "linear", "ssim") for m in models]
    text = "SSIM gain over linear, k=2: " + "; ".join(
        f"{method_label(c.method)} {_ci(c, 3)}" for c in k2
    )
    text += "; k=1: " + "; ".join(f"{method_label(c.method)} {_ci(c, 3)}" for c in k1)
    if _untested([*k1, *k2]):
        return Verdict(text, TOO_FEW_PATIENTS)
    k2_flat = all(c.ci_low <= 0 <= c.ci_high for c in k2)
    k1_gains = all(c.above_zero for c in k1)
    if k2_flat and k1_gains:
        return Verdict(text, REPRODUCED)
    if not k2_flat:
        return Verdict(text, NOT_REPRODUCED)
    return Verdict(text + " (no k=1 gain to contrast with)", INCONCLUSIVE)


def _k2_plateau(ev: Evidence) -> Verdict:
    first, last = original.K2_PLATEAU_EPOCHS
    histories = {
        model: ev.histories[(model, 2)].set_index("epoch")
        for model in DETERMINISTIC_MODELS
        if (model, 2) in ev.histories
    }
    if not histories:
        return Verdict("no model trained at k=2", NOT_TESTABLE)
    epochs = [int(h.index.to_numpy().max()) for h in histories.values()]
    if min(epochs) < last:
        span = f"{min(epochs)}-{max(epochs)}" if min(epochs) != max(epochs) else str(max(epochs))
        return Verdict(f"this run trains {span} epochs at k=2", NOT_TESTABLE)
    parts, ok = [], True
    for model, history in histories.items():
        gain = 100.0 * (history["val_ssim"].iloc[-1] / history.loc[first, "val_ssim"] - 1.0)
        ok &= bool(gain < PLATEAU_GAIN_PCT)
        parts.append(f"{method_label(model)} {gain:+.1f} %")
    return Verdict(
        f"val SSIM gain after epoch {first}: " + "; ".join(parts),
        REPRODUCED if ok else NOT_REPRODUCED,
    )


DDPM = ANCESTRAL


def _ddpm_below(ev: Evidence) -> Verdict:
    models = [m for m in DETERMINISTIC_MODELS if _has(ev.k1, m)]
    if not _has(ev.k1, DDPM) or not models:
        return Verdict("no DDPM or deterministic model in this run", NOT_TESTABLE)
    comps = [ev.compare(ev.k1, DDPM, m, "psnr") for m in models]
    text = "DDPM minus " + "; ".join(f"{method_label(c.other)} {_ci(c, unit=' dB')}" for c in comps)
    text += f" (on the DDPM's {comps[0].n_slices} slices)"
    if _untested(list(comps)):
        return Verdict(text, TOO_FEW_PATIENTS)
    if all(c.below_zero and c.p_value < ALPHA for c in comps):
        return Verdict(text, REPRODUCED)
    if any(c.above_zero for c in comps):
        return Verdict(text, NOT_REPRODUCED)
    return Verdict(text, INCONCLUSIVE)


def _ddpm_slow(ev: Evidence) -> Verdict:
    if not _has(ev.k1, DDPM, "unet"):
        return Verdict("no DDPM or U-Net in this run", NOT_TESTABLE)
    ddpm, unet = ev.k1.row(DDPM), ev.k1.row("unet")
    ratio = ddpm["ms_per_slice"] / unet["ms_per_slice"]
    # Written as every timing is (units, "×"), so that ``make verify`` leaves them out.
    text = (
        f"{wall_clock(ddpm['ms_per_slice'], 0, ' ms')} against "
        f"{wall_clock(unet['ms_per_slice'], 1, ' ms')} for the U-Net ({wall_clock(ratio, 0, '×')})"
    )
    if unet.get("device") != ddpm.get("device"):
        return Verdict(text + " on different devices", NOT_TESTABLE)
    return Verdict(
        f"{text}, {unet.get('device', '')}",
        REPRODUCED if ratio >= SLOW_FACTOR else NOT_REPRODUCED,
        timed=True,
    )


def _ddpm_stable(ev: Evidence) -> Verdict:
    if ev.ddpm_k is None or ("ddpm", ev.ddpm_k) not in ev.histories:
        return Verdict("no DDPM in this run", NOT_TESTABLE)
    history = ev.histories[("ddpm", ev.ddpm_k)]
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
    ddim = [m for m in ev.k1.methods if is_ddim(m)]
    if not ddim or not _has(ev.k1, DDPM):
        return Verdict("no DDPM in this run", NOT_TESTABLE)
    comps = [ev.compare(ev.k1, m, DDPM, "psnr") for m in ddim]
    alpha = ALPHA / len(comps)  # Bonferroni: the best of several variants is a selection
    text = "; ".join(f"{method_label(c.method)} {_ci(c, unit=' dB')}" for c in comps)
    text += f" against ancestral (p < {alpha:.3g} needed)"
    if _untested(list(comps)):
        return Verdict(text, TOO_FEW_PATIENTS)
    if any(c.above_zero and c.p_value < alpha for c in comps):
        return Verdict(text, REPRODUCED)
    if all(c.below_zero for c in comps):
        return Verdict(text, NOT_REPRODUCED)
    return Verdict(text, INCONCLUSIVE)


def _absolute(method: str, k: int) -> Callable[[Evidence], Verdict]:
    def check(ev: Evidence) -> Verdict:
        res = ev.k1 if k == 1 else ev.k2
        if not _has(res, method):
            return Verdict("not evaluated", NOT_TESTABLE)
        r = res.row(method)
        text = f"{fmt(r['psnr_mean'])} dB, SSIM {fmt(r['ssim_mean'], 3)}"
        if not ev.absolute_testable:
            why = f"{ev.cohort} cohort, {ev.preset} preset"
            return Verdict(
                f"{text} ({why}: only the paper preset on the original's data)", NOT_TESTABLE
            )
        claimed = original.reported(method, k)
        assert claimed is not None
        ok = (
            abs(r["psnr_mean"] - claimed.psnr) <= PSNR_TOLERANCE_DB
            and abs(r["ssim_mean"] - claimed.ssim) <= SSIM_TOLERANCE
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


_PAIRED = (
    "paired per-patient means over the slices both methods scored, 95 % bootstrap "
    "interval over patients, sign-flip permutation p"
)
_MIN = f"fewer than {MIN_TEST_PATIENTS} paired test patients: too few patients to test"
_ABSOLUTE_RULE = (
    f"within {PSNR_TOLERANCE_DB} dB and {SSIM_TOLERANCE} SSIM of the original's per-slice "
    "mean; testable only with the paper preset on the original's collection"
)
_ABSOLUTE_WHY = (
    "the original's split was an unseeded 15 % of patients and its preprocessing differs "
    "in small ways (clipping); a few tenths of a dB is the spread such choices make, and "
    "0.5 dB is far below the 2.8 dB gain over linear under discussion. Another collection "
    "has its own difficulty, so its absolute numbers say nothing about the original's"
)

CLAIMS: tuple[Claim, ...] = (
    Claim(
        "The U-Net is the best method at k=1",
        original.ABSTRACT,
        "U-Net 30.08 dB, SSIM 0.898",
        f"reproduced when the U-Net's PSNR gain over every classical method and every "
        f"other deterministic network has its interval "
        f"above 0 and p < {ALPHA:g} ({_PAIRED}); not reproduced when a method is "
        f"significantly above it; otherwise inconclusive; {_MIN}",
        "'best' means better than each alternative by more than patient-to-patient "
        "variation explains; a tie is not a win, whichever mean happens to be higher",
        _unet_best,
    ),
    Claim(
        "The U-Net improves PSNR over linear interpolation by 10.1 %",
        original.ABSTRACT,
        "+10.1 % (30.08 / 27.31 dB)",
        f"paper preset on the original's collection only: gain interval above 0, "
        f"p < {ALPHA:g}, and the gain between half and twice 10.1 %; not reproduced "
        f"outside that band; {_MIN}",
        "the size of a gain over linear depends on how hard the collection is (slice "
        "spacing, anatomy), so only the original's collection can confirm the number; a "
        "factor of two accepts the same order of effect under a different split and "
        "rejects one that vanished or doubled. The direction is the next claim",
        _unet_gain,
    ),
    Claim(
        "Every deep model beats linear interpolation at k=1",
        original.CODE_RESULTS,
        "CNN, U-Net, GANs 29.67-30.08 dB against 27.31 dB",
        f"each deterministic model's PSNR gain over linear has its interval above 0 and "
        f"p < {ALPHA:g} ({_PAIRED}); not reproduced when one lies significantly below; "
        f"{_MIN}",
        "a network beats linear only if the gain holds across patients, not on average "
        "over slices of a few patients",
        _deep_beat_linear,
    ),
    Claim(
        "k=1 gives 58 % higher SSIM than k=2 across the deterministic models",
        original.K1_OVER_K2_SOURCE,
        "+58 %",
        "on the slices common to k=1 and k=2, per patient: the networks' mean SSIM "
        "ratio k=1/k=2 (as a gain in %) minus linear interpolation's own ratio on the "
        f"same slices; reproduced when both the networks' gain and this excess have "
        f"intervals above 0 (p < {ALPHA:g}); inconclusive when the excess interval "
        "contains 0; on the original's collection with the paper preset the networks' "
        f"gain must also lie between half and twice 58 %; {_MIN}",
        "closer neighbours make every method better, linear interpolation included: the "
        "part of the gain linear interpolation also shows comes from the data, not from "
        "the networks or the problem formulation they learn",
        _k_gain,
    ),
    Claim(
        "At k=2 all four architectures saturate at a similar SSIM",
        "supplement 3.1",
        f"SSIM about {original.K2_SATURATION_SSIM} for all four",
        "reproduced when every model's SSIM gain over linear at k=2 has an interval "
        "containing 0 while at k=1 every model's interval lies above 0; not reproduced "
        "when a model's k=2 interval excludes 0; inconclusive when the k=1 gains are not "
        f"all above 0; {_MIN}",
        "saturation means the networks cannot add anything at k=2 that they do add at "
        "k=1; models that all sit at linear because they learnt nothing at either k "
        "show no saturation, so the k=1 contrast is required",
        _k2_saturation,
    ),
    Claim(
        "k=2 validation metrics plateau around epoch 15-20",
        "supplement 3.1",
        "plateau at epochs 15-20",
        f"validation SSIM gains less than {PLATEAU_GAIN_PCT:g} % after epoch 15 "
        "(needs 20 or more epochs)",
        "a gain under 1 % over the last five epochs is flat at the precision a "
        "16-slice validation SSIM is read to",
        _k2_plateau,
    ),
    Claim(
        "The DDPM falls far below the deterministic models",
        original.ABSTRACT,
        "DDPM 17.89 dB, SSIM 0.585",
        "on the slices the DDPM was scored on, the ancestral DDPM's PSNR minus each "
        f"deterministic model's has its interval below 0 and p < {ALPHA:g} ({_PAIRED}); "
        f"not reproduced when it is significantly above one; {_MIN}",
        "the DDPM is sampled on a subset of slices; comparing it with the others' means "
        "over all slices would mix slice difficulty into the gap, so it is paired",
        _ddpm_below,
    ),
    Claim(
        "DDPM inference is about 100 times slower than the deterministic models",
        "supplement 2.5",
        "300 ms against 3-5 ms per image",
        f"ancestral DDPM at least {SLOW_FACTOR:g} times the U-Net's time per slice, same device",
        "100 sampling steps against one forward pass make two orders of magnitude on "
        "any device; 30x leaves room for a smaller denoiser or a faster device while "
        "still meaning 'orders of magnitude'",
        _ddpm_slow,
    ),
    Claim(
        "DDPM training is stable: training and validation losses decrease",
        "supplement 4.1",
        "train 0.1119 -> 0.0798, val 0.0927 -> 0.0821",
        "both losses lower at the last epoch than at the first",
        "the original states stability as a decrease of both losses; nothing finer is claimed",
        _ddpm_stable,
    ),
    Claim(
        "DDIM (deterministic) sampling could improve the DDPM's reconstruction metrics",
        "supplement 4.3",
        "proposed, not measured",
        "a DDIM variant's PSNR gain over ancestral sampling has its interval above 0 "
        f"and p below {ALPHA:g} divided by the number of DDIM variants ({_PAIRED}); not "
        f"reproduced when every variant is significantly below; {_MIN}",
        "several step counts are tried and the best would be picked after seeing them: "
        "the Bonferroni division keeps the chance of a false 'better' at 5 %",
        _ddim_better,
    ),
    Claim(
        "U-Net at k=1: 30.08 dB, SSIM 0.898",
        original.ABSTRACT,
        "30.08 dB, SSIM 0.898",
        _ABSOLUTE_RULE,
        _ABSOLUTE_WHY,
        _absolute("unet", 1),
    ),
    Claim(
        "Linear interpolation at k=1: 27.31 dB, SSIM 0.838",
        original.CODE_RESULTS,
        "27.31 dB, SSIM 0.838",
        _ABSOLUTE_RULE,
        _ABSOLUTE_WHY,
        _absolute("linear", 1),
    ),
    Claim(
        "U-Net at k=2: 22.48 dB, SSIM 0.584",
        original.CODE_RESULTS,
        "22.48 dB, SSIM 0.584",
        _ABSOLUTE_RULE,
        _ABSOLUTE_WHY,
        _absolute("unet", 2),
    ),
    Claim(
        "The CNN has 297,217 parameters",
        "supplement 2.1",
        "297,217",
        "equal to the count of the code's CNN",
        "an exact count is stated",
        _parameters("cnn", "generator"),
        from_data=False,
    ),
    Claim(
        "The U-Net has 1,862,273 parameters",
        "supplement 2.2",
        "1,862,273",
        "equal to the count of the code's U-Net",
        "an exact count is stated",
        _parameters("unet", "generator"),
        from_data=False,
    ),
    Claim(
        "The improved GAN's generator has 0.6 M parameters",
        "supplement 2.4",
        "0.6 M",
        "within 10 % of the code's generator",
        "'0.6 M' is rounded to one digit: anything from 0.55 to 0.65 M reads so",
        _parameters("gan_improved", "generator"),
        from_data=False,
    ),
    Claim(
        "The DDPM's denoiser has 20.5 M parameters",
        "supplement 2.5",
        "20.5 M",
        "within 2 % of the code's denoiser",
        "'20.5 M' is rounded to three digits",
        _parameters("ddpm", "denoiser"),
        from_data=False,
    ),
)


def verdict_text(outcome: str, cohort: CohortKind, from_data: bool, timed: bool = False) -> str:
    """The verdict as the table shows it: the outcome, and beside it what the cohort
    makes of it (:data:`ILLUSTRATION` on the synthetic cohort), or :data:`TIMED` for a
    verdict that wall-clock times decided (whatever the cohort)."""
    if timed:
        return f"{outcome}{NOTE_SEPARATOR}{TIMED}"
    if not from_data:
        return f"{outcome}{NOTE_SEPARATOR}{CODE_FACT}"
    if cohort == "synthetic":
        return f"{outcome}{NOTE_SEPARATOR}{ILLUSTRATION}"
    return outcome


def claims_table(evidence: Evidence) -> pd.DataFrame:
    """One row per claim: the claim, its source, the original's number, this run's, the
    rule, why its thresholds are what they are, and the verdict."""
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
                "why this rule": claim.rationale,
                "verdict": verdict_text(
                    verdict.outcome, evidence.cohort, claim.from_data, verdict.timed
                ),
            }
        )
    return pd.DataFrame(rows).set_index("claim")


def outcome_of(verdict: str) -> str:
    """The outcome of a verdict cell (without the cohort note)."""
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
    """How many claims got each outcome."""
    counts = table["verdict"].map(outcome_of).value_counts()
    return {v: int(counts.get(v, 0)) for v in OUTCOMES}


__all__ = [
    "CLAIMS",
    "COHORT_KINDS",
    "ILLUSTRATION",
    "INCONCLUSIVE",
    "NOT_REPRODUCED",
    "NOT_TESTABLE",
    "OUTCOMES",
    "REPRODUCED",
    "TIMED",
    "TOO_FEW_PATIENTS",
    "Claim",
    "CohortKind",
    "Evidence",
    "Verdict",
    "claims_table",
    "outcome_of",
    "reported_table",
    "verdict_counts",
    "verdict_text",
]
