"""What a study runs beside its preset's data, models and training (:mod:`slicelib.config`),
one :class:`StudyConfig` per preset, and where its checkout and real-anatomy data are."""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from slicelib.config import (
    PAPER,
    DiffusionConfig,
    PresetName,
    differences,
    get_preset,
    preset_differences,
    replace_checked,
)
from slicelib.errors import SlicelibError, lookup

# Where the real-anatomy arm's data lives in a checkout, and its folder in a workspace.
REAL_DATA = Path("data") / "ixi-t1-2mm"
REAL_WORKSPACE = "real"


@dataclass(frozen=True)
class UncertaintyConfig:
    """Per-pixel uncertainty (supplement 6.3): a deep ensemble and MC dropout U-Nets."""

    k: int = 1
    members: int = 5  # ensemble U-Nets, seeds seed .. seed + members - 1
    dropout: float = 0.1  # Dropout2d rate of the MC-dropout U-Net
    mc_samples: int = 16  # stochastic passes of the MC-dropout U-Net
    bins: int = 10  # calibration curve: equal-count bins of predicted std
    max_slices: int | None = None  # test slices scored (None: all)
    seed: int = 0


# Does the schedule's signal at the last step explain the DDPM's failure? With T=100 linear
# betas x_T = 0.60 x_0 + 0.80 noise, so sampling starts from pure noise where training never
# went. The cosine schedule brings alpha_bar_T to about 0; data in [-1, 1] centres the
# images, so what is left of x_0 at T is a signal around 0 rather than a bright offset.
DDPM_SCHEDULE_ABLATION: dict[str, dict[str, Any]] = {
    "cosine": {"schedule": "cosine"},
    "rescaled": {"rescale": True},
}


@dataclass(frozen=True)
class StudyConfig:
    """What a study runs beside its preset's training and evaluation.

    ``ddpm_ablation``: DDPM variants of the same network and budget (name -> the
    :class:`~slicelib.config.DiffusionConfig` fields that differ); ``real_arm``: the preset
    of the real-anatomy arm run on the checkout's IXI data beside it; ``budgets``: the budget
    curve, each model trained at ``budget_k`` for each epoch count with the preset's recipe;
    ``filter_check``: train the 9 x 9 filter at every k, scored beside the least-squares one
    (does the training loop reach what a linear predictor can?).
    """

    uncertainty: UncertaintyConfig = field(default_factory=UncertaintyConfig)
    ddpm_ablation: dict[str, dict[str, Any]] = field(default_factory=dict)
    real_arm: PresetName | None = None
    budgets: dict[str, tuple[int, ...]] = field(default_factory=dict)
    budget_k: int = 1
    filter_check: bool = False

    def ablation_diffusion(self, diffusion: DiffusionConfig, variant: str) -> DiffusionConfig:
        """``diffusion`` with ablation ``variant``'s fields replaced."""
        if variant not in self.ddpm_ablation:
            known = ", ".join(sorted(self.ddpm_ablation)) or "none in this preset"
            raise SlicelibError(f"unknown DDPM ablation variant {variant!r} (known: {known})")
        return replace_checked(diffusion, **self.ddpm_ablation[variant])


DEMO_UNCERTAINTY = UncertaintyConfig(members=2, mc_samples=8)
STUDY_CONFIGS: dict[str, StudyConfig] = {
    "paper": StudyConfig(),
    "demo": StudyConfig(DEMO_UNCERTAINTY, DDPM_SCHEDULE_ABLATION, real_arm="real"),
    "real": StudyConfig(
        DEMO_UNCERTAINTY,
        budgets={"unet": (2, 4, 8, 16), "mcnet": (2, 4, 8, 16, 26)},
        filter_check=True,
    ),
    # two DDPMs of two steps each: seconds
    "smoke": StudyConfig(
        UncertaintyConfig(members=2, mc_samples=3, bins=4, max_slices=4),
        DDPM_SCHEDULE_ABLATION,
        budgets={"unet": (1, 2), "mcnet": (1, 2)},
        filter_check=True,
    ),
}


def find_source_root(start: Path | None = None) -> Path:
    """The checkout (``_config.yml``, ``_toc.yml``, ``notebooks/``): ``start`` when given,
    else the one the package was imported from, else the current directory."""
    candidates = [start] if start is not None else [Path(__file__).resolve().parents[2], Path.cwd()]
    for root in candidates:
        book = all((root / name).is_file() for name in ("_config.yml", "_toc.yml"))
        if book and (root / "notebooks").is_dir():
            return root.resolve()
    raise SlicelibError(
        f"{start if start is not None else Path.cwd()}: not a slicelib checkout (needs "
        "_config.yml, _toc.yml, book/ and notebooks/); run from the repository or pass --source"
    )


def real_data_root(source_root: Path) -> Path | None:
    """The checkout's real cohort, or None when the checkout does not carry it."""
    root = source_root / REAL_DATA
    return root if root.is_dir() and any(root.glob("*.nii*")) else None


def study_config(preset: str) -> StudyConfig:
    """The study settings of ``preset`` (demo, paper, real, smoke)."""
    return lookup(STUDY_CONFIGS, preset, "preset")


def study_differences(preset: str) -> list[str]:
    """Every setting of ``preset`` and its study that differs from the paper's (the real arm
    is another study), one line each, e.g. ``"crop: 40 (paper: None)"``."""
    study = differences(study_config(preset), study_config(PAPER.name), PAPER.name, ("real_arm",))
    return [*preset_differences(get_preset(preset)), *study]
