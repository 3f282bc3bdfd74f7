"""Claims on small hand-built result tables, on both sides of every threshold."""

from __future__ import annotations

from collections.abc import Callable

import pandas as pd
import pytest

from slicelib import stats
from slicelib.errors import SlicelibError
from slicelib.study import claims
from slicelib.study.claims import (
    ILLUSTRATION,
    INCONCLUSIVE,
    NOT_REPRODUCED,
    NOT_TESTABLE,
    REPRODUCED,
    TOO_FEW_PATIENTS,
    Evidence,
)
from slicelib.study.workspace import Results

# (patient, slice) -> (PSNR dB, SSIM) of one method.
Score = Callable[[int, int], tuple[float, float]]
MODELS = ("cnn", "unet", "gan", "gan_improved")


def base(p: int, i: int) -> tuple[float, float]:
    """Linear interpolation: patients differ, slices differ a little."""
    return 25.0 + 0.7 * p + 0.1 * i, 0.80 + 0.01 * p + 0.001 * i


def shifted(db: float, ssim: float = 0.0, jitter: float = 0.05) -> Score:
    """Linear plus a gain that varies a little (and keeps its sign) across patients."""

    def score(p: int, i: int) -> tuple[float, float]:
        psnr, s = base(p, i)
        return psnr + db + jitter * (p % 3), s + ssim + jitter / 100 * (p % 3)

    return score


def tied(p: int, i: int) -> tuple[float, float]:
    """As linear on average, but half the patients above and half below."""
    psnr, s = base(p, i)
    sign = 1 if p % 2 else -1
    return psnr + sign * 0.5, s + sign * 0.005


def results(
    k: int,
    scores: dict[str, Score],
    *,
    patients: int = 6,
    slices: int = 4,
    subset: dict[str, int] | None = None,
    ms: dict[str, float] | None = None,
) -> Results:
    """``subset``: method -> slice index it alone was scored on (as the DDPM's subset)."""
    records = []
    for method, score in scores.items():
        for p in range(patients):
            for i in range(slices):
                if subset and method in subset and i != subset[method]:
                    continue
                psnr, ssim = score(p, i)
                records.append(
                    {
                        "method": method,
                        "patient_id": f"P{p:02d}",
                        "slice_index": i,
                        "psnr": psnr,
                        "ssim": ssim,
                        "ssim_gauss": ssim,
                        "mae": 0.01,
                        "ms_per_slice": (ms or {}).get(method, 1.0),
                    }
                )
    rows = pd.DataFrame(records)
    summary = stats.summarize(rows, n_boot=50).assign(device="cpu")
    return Results(k=k, common=False, rows=rows, summary=summary, info={})


def evidence(
    k1: dict[str, Score],
    k2: dict[str, Score] | None = None,
    *,
    cohort: claims.CohortKind = "real",
    preset: str = "demo",
    **kwargs: object,
) -> Evidence:
    r1 = results(1, k1, **kwargs)  # type: ignore[arg-type]
    r2 = results(2, k2 or {"linear": base}, **kwargs)  # type: ignore[arg-type]
    return Evidence(r1, r2, r1, r2, cohort=cohort, preset=preset, n_boot=100)


def check(index: int, ev: Evidence) -> claims.Verdict:
    return claims.CLAIMS[index].check(ev)


UNET_BEST, UNET_GAIN, DEEP, K_GAIN, K2_SAT, PLATEAU, DDPM_BELOW, SLOW, STABLE, DDIM = range(10)


def networks(db: float, ssim: float = 0.0, **override: Score) -> dict[str, Score]:
    scores: dict[str, Score] = {"linear": base}
    scores.update({m: shifted(db, ssim) for m in MODELS})
    scores.update(override)
    return scores


def test_unet_best_needs_a_significant_margin_over_every_method() -> None:
    better = networks(0.5, unet=shifted(1.0))
    assert check(UNET_BEST, evidence(better)).outcome == REPRODUCED
    # A tie with the CNN: higher mean or not, never "best, reproduced".
    tie = networks(0.5, unet=shifted(0.5), cnn=shifted(0.5))
    assert check(UNET_BEST, evidence(tie)).outcome == INCONCLUSIVE
    worse = networks(0.5, unet=shifted(0.2), cnn=shifted(1.0))
    assert check(UNET_BEST, evidence(worse)).outcome == NOT_REPRODUCED
    assert check(UNET_BEST, evidence(better, patients=5)).outcome == TOO_FEW_PATIENTS
    assert check(UNET_BEST, evidence({"linear": base})).outcome == NOT_TESTABLE


def test_deep_models_beat_linear() -> None:
    assert check(DEEP, evidence(networks(1.0))).outcome == REPRODUCED
    assert check(DEEP, evidence(networks(1.0, gan=shifted(-1.0)))).outcome == NOT_REPRODUCED
    assert check(DEEP, evidence(networks(1.0, gan=tied))).outcome == INCONCLUSIVE
    verdict = check(DEEP, evidence(networks(1.0), patients=3))
    assert verdict.outcome == TOO_FEW_PATIENTS and stats.TOO_FEW in verdict.this_run


def test_unet_gain_magnitude_only_on_the_original_collection() -> None:
    # 10 % of about 27 dB is 2.7 dB.
    gain = networks(1.0, unet=shifted(2.7))
    assert check(UNET_GAIN, evidence(gain)).outcome == NOT_TESTABLE
    tcia = {"cohort": "tcia", "preset": "paper"}
    assert check(UNET_GAIN, evidence(gain, **tcia)).outcome == REPRODUCED  # type: ignore[arg-type]
    big = networks(1.0, unet=shifted(8.0))  # about 29 %, beyond twice 10.1 %
    assert check(UNET_GAIN, evidence(big, **tcia)).outcome == NOT_REPRODUCED  # type: ignore[arg-type]
    small = networks(1.0, unet=shifted(1.0))  # about 3.7 %, below half
    assert check(UNET_GAIN, evidence(small, **tcia)).outcome == NOT_REPRODUCED  # type: ignore[arg-type]


def test_k_gain_is_judged_against_linears_own_k_effect() -> None:
    k2 = {m: shifted(-3.0, -0.2, jitter=0.0) for m in ("linear", *MODELS)}
    # Every network gains exactly what linear gains from k=1: the data's effect.
    same = evidence(networks(0.0, 0.0), k2)
    verdict = check(K_GAIN, same)
    assert verdict.outcome == INCONCLUSIVE and "linear alone" in verdict.this_run
    # Networks gain more from k=1 than linear does.
    more = evidence(networks(0.5, 0.05), k2)
    assert check(K_GAIN, more).outcome == REPRODUCED
    # Networks gain less than linear: not a property of the networks.
    less = evidence(networks(-0.5, -0.05), k2)
    assert check(K_GAIN, less).outcome == NOT_REPRODUCED
    assert check(K_GAIN, evidence(networks(0.5, 0.05), k2, patients=4)).outcome == TOO_FEW_PATIENTS
    # On the original's collection the size counts too: about +35 % here, inside 29-116 %.
    tcia = evidence(networks(0.5, 0.05), k2, cohort="tcia", preset="paper")
    assert check(K_GAIN, tcia).outcome == REPRODUCED
    k2_close = {m: shifted(-1.0, -0.05, jitter=0.0) for m in ("linear", *MODELS)}
    tcia_small = evidence(networks(0.5, 0.05), k2_close, cohort="tcia", preset="paper")
    assert check(K_GAIN, tcia_small).outcome == NOT_REPRODUCED


def test_k2_saturation_needs_the_k1_contrast() -> None:
    flat_k2 = {"linear": base, **{m: tied for m in MODELS}}
    assert check(K2_SAT, evidence(networks(1.0, 0.02), flat_k2)).outcome == REPRODUCED
    # Everything at linear at both k: no saturation to speak of.
    nothing = {"linear": base, **{m: tied for m in MODELS}}
    assert check(K2_SAT, evidence(nothing, flat_k2)).outcome == INCONCLUSIVE
    # A network still gains at k=2: not saturated.
    learning = dict(flat_k2, unet=shifted(0.5, 0.02))
    assert check(K2_SAT, evidence(networks(1.0, 0.02), learning)).outcome == NOT_REPRODUCED
    few = evidence(networks(1.0, 0.02), flat_k2, patients=5)
    assert check(K2_SAT, few).outcome == TOO_FEW_PATIENTS


def test_ddpm_compared_on_its_own_slices() -> None:
    scores = networks(1.0, ddpm_ancestral=shifted(-5.0))
    ev = evidence(scores, subset={"ddpm_ancestral": 2})
    verdict = check(DDPM_BELOW, ev)
    assert verdict.outcome == REPRODUCED and "6 slices" in verdict.this_run
    close = networks(0.0, ddpm_ancestral=tied)
    assert check(DDPM_BELOW, evidence(close, subset={"ddpm_ancestral": 2})).outcome == INCONCLUSIVE
    above = networks(1.0, ddpm_ancestral=shifted(3.0))
    assert check(DDPM_BELOW, evidence(above)).outcome == NOT_REPRODUCED
    few = evidence(scores, subset={"ddpm_ancestral": 2}, patients=4)
    assert check(DDPM_BELOW, few).outcome == TOO_FEW_PATIENTS


def test_ddim_needs_bonferroni_significance() -> None:
    ddim = networks(1.0, ddpm_ancestral=shifted(-5.0), ddpm_ddim10=shifted(-4.0))
    assert check(DDIM, evidence(ddim)).outcome == REPRODUCED
    # Two variants: 2/64 = 0.031 is not below 0.05 / 2 with six patients.
    two = dict(ddim, ddpm_ddim20=shifted(-4.5))
    assert check(DDIM, evidence(two)).outcome == INCONCLUSIVE
    assert check(DDIM, evidence(two, patients=7)).outcome == REPRODUCED
    worse = networks(1.0, ddpm_ancestral=shifted(-5.0), ddpm_ddim10=shifted(-6.0))
    assert check(DDIM, evidence(worse)).outcome == NOT_REPRODUCED


def test_inference_cost() -> None:
    scores = networks(1.0, ddpm_ancestral=shifted(-5.0))
    slow = evidence(scores, ms={"unet": 2.0, "ddpm_ancestral": 100.0})
    assert check(SLOW, slow).outcome == REPRODUCED
    fast = evidence(scores, ms={"unet": 2.0, "ddpm_ancestral": 40.0})
    assert check(SLOW, fast).outcome == NOT_REPRODUCED


def test_absolute_numbers_only_with_the_paper_preset_on_the_original_collection() -> None:
    def unet_at(psnr: float) -> Score:
        return lambda p, i: (psnr, 0.898)

    absolute = next(i for i, c in enumerate(claims.CLAIMS) if c.text.startswith("U-Net at k=1"))
    near = networks(1.0, unet=unet_at(30.08 + 0.4))
    far = networks(1.0, unet=unet_at(30.08 + 0.6))
    assert check(absolute, evidence(near, cohort="tcia", preset="paper")).outcome == REPRODUCED
    assert check(absolute, evidence(far, cohort="tcia", preset="paper")).outcome == NOT_REPRODUCED
    for cohort, preset in (("tcia", "demo"), ("real", "paper"), ("synthetic", "paper")):
        ev = evidence(near, cohort=cohort, preset=preset)  # type: ignore[arg-type]
        assert check(absolute, ev).outcome == NOT_TESTABLE


def test_synthetic_cohort_marks_every_data_verdict_as_illustration() -> None:
    ev = evidence(networks(1.0, 0.02, unet=shifted(2.0)), cohort="synthetic")
    table = claims.claims_table(ev)
    data_claims = [c.text for c in claims.CLAIMS if c.from_data]
    assert table.loc[data_claims, "verdict"].str.endswith(ILLUSTRATION).all()
    assert table.loc["Every deep model beats linear interpolation at k=1", "verdict"] == (
        f"{REPRODUCED} — {ILLUSTRATION}"
    )
    code_claims = [c.text for c in claims.CLAIMS if not c.from_data]
    assert not table.loc[code_claims, "verdict"].str.contains("synthetic").any()
    assert {"rule", "why this rule"} <= set(table.columns)
    counts = claims.verdict_counts(table)
    assert sum(counts.values()) == len(claims.CLAIMS)
    assert counts[REPRODUCED] >= 1 and counts[NOT_TESTABLE] >= 1
    # On a real cohort the verdicts stand alone.
    real = claims.claims_table(evidence(networks(1.0, 0.02)))
    assert not real["verdict"].str.contains("synthetic").any()


def test_evidence_rejects_an_unknown_cohort() -> None:
    r = results(1, {"linear": base})
    with pytest.raises(SlicelibError, match="cohort must be one of"):
        Evidence(r, r, r, r, cohort="prostate", preset="demo")  # type: ignore[arg-type]
