"""The DDPM mechanism ablation: is the noise schedule part of why the DDPM fails?

With T=100 linear betas the forward process ends at x_T = 0.60 x_0 + 0.80 noise,
while sampling starts from noise alone. Each variant of ``Preset.ddpm_ablation``
(a cosine schedule, whose x_T is noise; data in [-1, 1]) trains the preset's DDPM
again with only its diffusion changed: same network, epochs, steps, batch, crop,
learning rate and seed. Each is scored with the same samplers on the same test
slices as the study's DDPM, and compared with it paired over patients.
"""

from __future__ import annotations

import dataclasses
import logging
from pathlib import Path
from typing import Any

import pandas as pd

from slicelib.config import DiffusionConfig, EvalConfig, TrainConfig, to_dict
from slicelib.io import atomic_write
from slicelib.methods import family_of, is_ddim, method_label
from slicelib.stats import MIN_TEST_PATIENTS, Comparison, compare
from slicelib.study.labels import fmt, fmt_ci, fmt_signed
from slicelib.study.sources import code_hash
from slicelib.study.stamps import digest
from slicelib.study.step import Step, ensure
from slicelib.study.workspace import Study

logger = logging.getLogger(__name__)

# The study's own DDPM, the reference every variant is compared with.
ORIGINAL = "original"
ANCESTRAL = "ddpm_ancestral"

VARIANT_LABELS: dict[str, str] = {
    ORIGINAL: "original (linear betas, [0, 1])",
    "cosine": "cosine schedule",
    "rescaled": "data in [-1, 1]",
}


def variant_label(variant: str) -> str:
    return VARIANT_LABELS.get(variant, variant)


def variants(study: Study) -> tuple[str, ...]:
    """The preset's ablation variants, in its order (empty: no ablation)."""
    return tuple(study.preset.ddpm_ablation)


def ablation_k(study: Study) -> int:
    """The k the ablation runs at: the first k the preset trains its DDPM at."""
    return study.preset.ddpm_ks[0]


def variant_config(study: Study, variant: str) -> TrainConfig:
    return study.preset.ablation_train_config(variant, ablation_k(study), device=study.device)


def variant_diffusion(study: Study, variant: str) -> DiffusionConfig:
    if variant == ORIGINAL:
        return study.preset.diffusion
    return study.preset.ablation_diffusion(variant)


def ablation_run(study: Study, variant: str) -> Path:
    """``runs/ddpm_k<k>_<variant>``, trained when needed."""
    name = f"ddpm_k{ablation_k(study)}_{variant}"
    return study.trained_run(name, variant_config(study, variant))


def eval_config(study: Study) -> EvalConfig:
    """The study's evaluation settings with DDIM at its largest step count only: the
    ablation asks about the schedule, not about the number of DDIM steps."""
    cfg = study.preset.eval
    return dataclasses.replace(cfg, device=study.device, ddim_steps=cfg.ddim_steps[-1:])


def ablation_hash(study: Study) -> str:
    k = ablation_k(study)
    cfg = to_dict(eval_config(study))
    cfg.pop("device", None)
    runs = {v: study.config_hash(variant_config(study, v)) for v in variants(study)}
    return digest(
        {
            "results": study.results_hash(k),
            "runs": runs,
            "eval": cfg,
            "code": code_hash("slicelib.evaluate"),
        }
    )


def ablation_results(study: Study) -> pd.DataFrame:
    """Per-slice rows of the DDPM's samplers for the study's DDPM (``variant`` =
    ``original``, from the study's results) and each variant, on the same slices
    (``results/ddpm_ablation_k<k>.csv``); empty when the preset has no ablation."""
    from slicelib.evaluate import evaluate

    if not variants(study):
        return pd.DataFrame(columns=["variant", "method", "patient_id", "slice_index"])
    k = ablation_k(study)
    csv = study.results_dir / f"ddpm_ablation_k{k}.csv"
    cfg = eval_config(study)

    def make() -> None:
        res = study.results(k)
        frames = []
        for variant in variants(study):
            run = ablation_run(study, variant)
            scored = evaluate(study.cache(), k, cfg, [run], methods=[], progress=study.progress)
            frames.append(scored.rows.assign(variant=variant))
        # the DDPM's samplers every variant was scored with (linear comes along as the
        # evaluation's reference and is left out)
        shared = set.intersection(*(set(f["method"]) for f in frames))
        shared = {m for m in shared if family_of(m) == "ddpm"}
        base = res.rows[res.rows["method"].isin(shared)].assign(variant=ORIGINAL)
        rows = pd.concat([base, *frames], ignore_index=True)
        rows = rows[rows["method"].isin(shared)]
        rows = rows[["variant", *[c for c in rows.columns if c != "variant"]]]
        study.results_dir.mkdir(parents=True, exist_ok=True)
        atomic_write(csv, lambda tmp: rows.to_csv(tmp, index=False))

    inputs = {
        "k": k,
        "variants": {v: to_dict(variant_diffusion(study, v)) for v in variants(study)},
    }
    what = f"scoring the DDPM ablation at k={k}"
    step = Step(csv.stem, csv, ablation_hash(study), inputs, make, resumable=True, what=what)
    ensure(step, study.lock_dir)
    return pd.read_csv(csv, dtype={"patient_id": str})


def signal_at_T(diffusion: DiffusionConfig) -> tuple[float, float]:
    """(signal, noise): x_T = signal x_0 + noise epsilon at the schedule's last step."""
    from slicelib.diffusion import GaussianDiffusion

    abar = float(GaussianDiffusion(diffusion).alphas_cumprod[-1])
    return abar**0.5, (1.0 - abar) ** 0.5


def _as_method(rows: pd.DataFrame, method: str) -> pd.DataFrame:
    """The rows of sampler ``method``, one pseudo-method per variant (for :func:`compare`)."""
    chosen = rows[rows["method"] == method]
    return chosen.assign(method=chosen["variant"])


def comparisons(
    rows: pd.DataFrame, method: str = ANCESTRAL, metric: str = "psnr", **kwargs: Any
) -> dict[str, Comparison]:
    """Each variant against the original, paired over patients on the slices both scored."""
    frame = _as_method(rows, method)
    return {
        v: compare(frame, v, ORIGINAL, metric, **kwargs)
        for v in dict.fromkeys(frame["variant"])
        if v != ORIGINAL
    }


def ablation_table(
    rows: pd.DataFrame, diffusions: dict[str, DiffusionConfig], **kwargs: Any
) -> pd.DataFrame:
    """One row per variant: x_T's signal, each sampler's mean PSNR and SSIM, and the
    ancestral PSNR's change against the original with its interval and p-value."""
    from slicelib.study.labels import p_text

    samplers = sorted(set(rows["method"]), key=lambda m: (is_ddim(m), m != ANCESTRAL, m))
    compared = comparisons(rows, **kwargs)
    table = []
    for variant in dict.fromkeys(rows["variant"]):
        mine = rows[rows["variant"] == variant]
        signal, noise = signal_at_T(diffusions[variant])
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
        entry["p"] = "-" if c is None else (p_text(c.p_value) if c.tested else c.test)
        table.append(entry)
    return pd.DataFrame(table).set_index("variant")


def ablation_numbers(rows: pd.DataFrame, **kwargs: Any) -> dict[str, Any]:
    """Numbers and sentences for the chapter: ``abl_variants``, ``abl_<variant>_psnr``
    (ancestral), ``abl_<variant>_sentence``, and ``abl_summary`` (what the ablation
    found, written from the intervals)."""
    from slicelib.study import prose

    values: dict[str, Any] = {}
    if rows.empty:
        values["abl_variants"] = 0
        values["abl_sentences"] = "This preset trains no ablation variant."
        values["abl_summary"] = (
            "The schedule's part in the DDPM's result is therefore not tested here."
        )
        return values
    compared = comparisons(rows, **kwargs)
    values["abl_variants"] = len(compared)
    anc = rows[rows["method"] == ANCESTRAL]
    for variant in dict.fromkeys(rows["variant"]):
        values[f"abl_{variant}_psnr"] = float(anc[anc["variant"] == variant]["psnr"].mean())
    for variant, c in compared.items():
        values[f"abl_{variant}_sentence"] = prose.comparison_sentence(
            c, f"With the {variant_label(variant)}, ancestral sampling", "the original", " dB"
        )
    values["abl_sentences"] = " ".join(
        values[f"abl_{variant}_sentence"][:1].upper() + values[f"abl_{variant}_sentence"][1:]
        for variant in compared
    )
    values["abl_summary"] = summary_sentence(compared)
    return values


def training_seconds(study: Study) -> float:
    """The training time the ablation's variants added to the study (their histories)."""
    total = 0.0
    for variant in variants(study):
        history = pd.read_csv(ablation_run(study, variant) / "history.csv")
        total += float(history["seconds"].sum())
    return total


def summary_sentence(compared: dict[str, Comparison]) -> str:
    """What the ablation found, from the intervals of the ancestral PSNR changes."""
    from slicelib.study.prose import plural

    tested = {v: c for v, c in compared.items() if c.tested}
    if not tested:
        n = max((c.n_patients for c in compared.values()), default=0)
        return (
            f"With {plural(n, 'test patient')} (fewer than {MIN_TEST_PATIENTS}) the "
            "ablation's changes "
            "are reported but not tested: it neither supports nor refutes the schedule "
            "explanation."
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
