"""The study's own settings: what it runs beside the preset's data, models and training.

A preset (:mod:`slicelib.config`) says how to prepare data and train and evaluate
models; a :class:`StudyConfig` says what else the study makes of them: the uncertainty
runs, the DDPM schedule ablation and the real-anatomy arm. Each preset has one
(:func:`study_config`), and the book lists where the demo's differ from the paper's
(:func:`study_differences`).
"""

from __future__ import annotations

import dataclasses
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


# The DDPM schedule ablation: does the schedule's signal at the last step explain the
# DDPM's failure? With T=100 linear betas x_T = 0.60 x_0 + 0.80 noise, so sampling
# starts from pure noise where training never went. The cosine schedule brings
# alpha_bar_T to about 0 (x_T is noise); data in [-1, 1] centres the images, so what
# is left of x_0 at T is a signal around 0 rather than a bright offset.
DDPM_SCHEDULE_ABLATION: dict[str, dict[str, Any]] = {
    "cosine": {"schedule": "cosine"},
    "rescaled": {"rescale": True},
}


@dataclass(frozen=True)
class StudyConfig:
    """What a study runs beside its preset's training and evaluation.

    ``uncertainty``: the ensemble and MC-dropout runs; ``ddpm_ablation``: DDPM variants
    trained with the same network and budget (variant name -> the
    :class:`~slicelib.config.DiffusionConfig` fields that differ); ``real_arm``: the
    preset of the real-anatomy arm run beside it on the checkout's IXI data (None: none).
    """

    uncertainty: UncertaintyConfig = field(default_factory=UncertaintyConfig)
    ddpm_ablation: dict[str, dict[str, Any]] = field(default_factory=dict)
    real_arm: PresetName | None = None
    # The budget curve: each model of ``budgets`` trained at ``budget_k`` for each of its
    # epoch counts (the preset's recipe, steps per epoch and batch: budgets in training
    # samples on a log scale when the counts double), scored on the test split.
    budgets: dict[str, tuple[int, ...]] = field(default_factory=dict)
    budget_k: int = 1
    # Train the learned 9 x 9 filter at every k, scored beside the least-squares one: the
    # check that the training loop reaches what a linear predictor can.
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
        DEMO_UNCERTAINTY, budgets={"unet": (2, 4, 8, 16), "mcnet": (2, 4, 8, 16, 26)},
        filter_check=True,
    ),
    # two DDPMs of two steps each: seconds
    "smoke": StudyConfig(
        UncertaintyConfig(members=2, mc_samples=3, bins=4, max_slices=4), DDPM_SCHEDULE_ABLATION,
        budgets={"unet": (1, 2), "mcnet": (1, 2)}, filter_check=True,
    ),
}


BOOK_FILES: tuple[str, ...] = ("_config.yml", "_toc.yml")


def find_source_root(start: Path | None = None) -> Path:
    """The checkout holding ``_config.yml``, ``_toc.yml``, ``book/``, ``notebooks/`` (and
    ``data/``): ``start`` when given, else the one the package was imported from, else the
    current directory."""
    candidates = [start] if start is not None else [Path(__file__).resolve().parents[2], Path.cwd()]
    for root in candidates:
        if all((root / name).is_file() for name in BOOK_FILES) and (root / "notebooks").is_dir():
            return root.resolve()
    where = start if start is not None else Path.cwd()
    raise SlicelibError(
        f"{where}: not a slicelib checkout (needs _config.yml, _toc.yml, book/ and notebooks/); "
        "run from the repository or pass --source"
    )


def real_data_root(source_root: Path) -> Path | None:
    """The checkout's real cohort, or None when the checkout does not carry it."""
    root = source_root / REAL_DATA
    return root if root.is_dir() and any(root.glob("*.nii*")) else None


def study_config(preset: str) -> StudyConfig:
    """The study settings of ``preset`` (demo, paper, real, smoke)."""
    return lookup(STUDY_CONFIGS, preset, "preset")


def study_differences(preset: str) -> list[str]:
    """Every setting of ``preset`` and of its study in which it differs from the paper's
    (the real arm is another study), one line each, e.g. ``"crop: 40 (paper: None)"``."""
    theirs = dataclasses.replace(study_config(PAPER.name), real_arm=None)
    ours = dataclasses.replace(study_config(preset), real_arm=None)
    return [*preset_differences(get_preset(preset)), *differences(ours, theirs, PAPER.name)]
