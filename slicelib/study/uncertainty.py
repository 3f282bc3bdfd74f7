"""The study's uncertainty runs (supplement 6.3): the ensemble's U-Nets, one per
seed, and the U-Net with dropout for Monte Carlo dropout."""

from __future__ import annotations

import dataclasses
from pathlib import Path
from typing import Any

from slicelib.config import TrainConfig, UncertaintyConfig
from slicelib.study.workspace import Study


def member_config(study: Study, cfg: UncertaintyConfig, seed: int) -> TrainConfig:
    """The U-Net of the study's preset at ``cfg.k``, trained with ``seed``."""
    return dataclasses.replace(study.train_config("unet", cfg.k), seed=seed)


def dropout_config(study: Study, cfg: UncertaintyConfig) -> TrainConfig:
    """The preset's U-Net with Dropout2d at ``cfg.dropout`` in its decoder."""
    base = study.train_config("unet", cfg.k)
    return dataclasses.replace(
        base, seed=cfg.seed, model_cfg=dataclasses.replace(base.model_cfg, dropout=cfg.dropout)
    )


def uncertainty_runs(study: Study, cfg: UncertaintyConfig | None = None) -> dict[str, Any]:
    """The ensemble's run folders (member 0 is the study's own U-Net when the seeds
    agree) and the MC-dropout run folder, trained when needed."""
    cfg = cfg or study.preset.uncertainty
    members: list[Path] = []
    for i in range(cfg.members):
        seed = cfg.seed + i
        member = member_config(study, cfg, seed)
        if member == study.train_config("unet", cfg.k):
            members.append(study.run("unet", cfg.k))
        else:
            members.append(study.trained_run(f"unet_k{cfg.k}_seed{seed}", member))
    dropout = study.trained_run(f"unet_k{cfg.k}_dropout", dropout_config(study, cfg))
    return {"ensemble": members, "dropout": dropout}
