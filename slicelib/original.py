"""What the original study reported, written once, with where each number comes from.

Sources: the main paper's abstract ("Deep Learning for MRI Slice Interpolation:
The Critical Role of Problem Formulation", S. Savant, 2026), its supplementary
material (section numbers below), and the results its public code published.
The book compares these numbers with the run it describes
(:mod:`slicelib.study.claims`); nothing here is computed.
"""

from __future__ import annotations

from dataclasses import dataclass

ABSTRACT = "main paper, abstract"
CODE_RESULTS = "original code, published test results"


@dataclass(frozen=True)
class ReportedResult:
    """A test-set result of the original: per-slice mean, scikit-image SSIM defaults."""

    method: str  # the method's name in slicelib
    k: int
    psnr: float
    ssim: float
    source: str
    note: str = ""


_UNTRAINED = (
    "the original's evaluation loaded this model's residual blocks at random "
    "initialisation (a key-name mismatch loaded with strict=False)"
)

REPORTED_RESULTS: tuple[ReportedResult, ...] = (
    ReportedResult("nearest", 1, 22.25, 0.686, CODE_RESULTS),
    ReportedResult("linear", 1, 27.31, 0.838, CODE_RESULTS),
    ReportedResult("cnn", 1, 29.89, 0.894, CODE_RESULTS, _UNTRAINED),
    ReportedResult("unet", 1, 30.08, 0.898, ABSTRACT),
    ReportedResult("gan", 1, 29.83, 0.893, CODE_RESULTS, _UNTRAINED),
    ReportedResult("gan_improved", 1, 29.67, 0.892, CODE_RESULTS, _UNTRAINED),
    ReportedResult("ddpm_ancestral", 1, 17.89, 0.585, ABSTRACT, "200 unseeded random test samples"),
    ReportedResult("cnn", 2, 22.27, 0.570, CODE_RESULTS, _UNTRAINED),
    ReportedResult("unet", 2, 22.48, 0.584, CODE_RESULTS),
    ReportedResult("gan", 2, 22.15, 0.566, CODE_RESULTS, _UNTRAINED),
    ReportedResult("gan_improved", 2, 21.66, 0.575, CODE_RESULTS, _UNTRAINED),
)

# The validation-set linear baseline the original's code printed.
LINEAR_VALIDATION: tuple[float, float] = (26.68, 0.826)

# "+58 % SSIM for k=1 across the deterministic models" (abstract).
K1_OVER_K2_SSIM_GAIN_PCT = 58.0
K1_OVER_K2_SOURCE = ABSTRACT

# "10.1 % over linear interpolation": the U-Net's relative PSNR gain (abstract).
UNET_PSNR_GAIN_PCT = 10.1

# "All four architectures reached similar poor performance (SSIM 0.56)" (supplement 3.1).
K2_SATURATION_SSIM = 0.56

# Supplement 1.3: the cohort after preprocessing.
REPORTED_COHORT: dict[str, int] = {
    "patients": 58,
    "volumes": 58,
    "slices": 46_329,
    "train triplets": 32_547,
    "val triplets": 6_842,
    "test triplets": 6_963,
}


@dataclass(frozen=True)
class ReportedModel:
    """Supplement section 2: size and training of one model."""

    model: str
    parameters: dict[str, int]  # component -> count as the supplement states it
    approximate: bool  # the supplement gives a rounded count ("0.6M", "20.5M")
    epochs: int
    batch_size: int
    minutes_per_epoch: float
    best_epoch: int
    section: str


REPORTED_MODELS: tuple[ReportedModel, ...] = (
    ReportedModel("cnn", {"generator": 297_217}, False, 25, 4, 18, 23, "supplement 2.1"),
    ReportedModel("unet", {"generator": 1_862_273}, False, 25, 4, 9, 24, "supplement 2.2"),
    # The basic GAN's generator is the CNN; the supplement gives no discriminator count.
    ReportedModel("gan", {"generator": 297_217}, False, 25, 4, 24, 23, "supplement 2.3"),
    ReportedModel("gan_improved", {"generator": 600_000}, True, 10, 4, 48, 7, "supplement 2.4"),
    ReportedModel("ddpm", {"denoiser": 20_500_000}, True, 20, 8, 19, 16, "supplement 2.5"),
)

# Tolerances for the rounded counts: "0.6M" and "20.5M +/- 2 %".
APPROXIMATE_TOLERANCE: dict[str, float] = {"gan_improved": 0.10, "ddpm": 0.02}

# Supplement 4.1: DDPM (train loss, validation loss) at the epochs it lists.
DDPM_LOSSES: dict[int, tuple[float, float]] = {
    1: (0.1119, 0.0927),
    5: (0.0956, 0.0861),
    10: (0.0891, 0.0844),
    16: (0.0808, 0.0813),
    20: (0.0798, 0.0821),
}
DDPM_BEST_EPOCH = 16

# Supplement 2.5: inference time per image.
DDPM_MS_PER_SLICE = 300.0
DETERMINISTIC_MS_PER_SLICE: tuple[float, float] = (3.0, 5.0)

# Supplement 4.4, Fig. 3: the DDPM example's scores.
FIG3_DDPM: tuple[float, float] = (19.40, 0.6666)

# Supplement 3.1: "validation metrics plateaued around epoch 15-20" at k=2.
K2_PLATEAU_EPOCHS: tuple[int, int] = (15, 20)


def reported(method: str, k: int) -> ReportedResult | None:
    """The original's result for ``method`` at ``k``, or None when it reported none."""
    for result in REPORTED_RESULTS:
        if result.method == method and result.k == k:
            return result
    return None


def reported_model(model: str) -> ReportedModel:
    """The supplement's section-2 figures for ``model``."""
    for entry in REPORTED_MODELS:
        if entry.model == model:
            return entry
    raise KeyError(model)
