"""The study's refinement steps (supplement 4.3): the refiner trained on top of the
study's U-Net, and its scores on the slices the study's DDPM was scored on."""

from __future__ import annotations

import dataclasses
from pathlib import Path

import pandas as pd

from slicelib.config import RUN_INVARIANT_FIELDS, RefineConfig, to_dict
from slicelib.io import atomic_write
from slicelib.study.sources import code_hash
from slicelib.study.stamps import digest
from slicelib.study.step import Step, ensure
from slicelib.study.workspace import Study


def study_refine_config(study: Study) -> RefineConfig:
    """The preset's refinement settings with its DDPM architecture and schedule
    (diffusing in [-1, 1])."""
    preset = study.preset
    return dataclasses.replace(
        preset.refine,
        model_cfg=preset.model,
        diffusion=dataclasses.replace(preset.diffusion, rescale=True),
        device=study.device,
    )


def refine_hash(study: Study) -> str:
    """The input hash of the study's refinement run: cache, U-Net run, settings, version."""
    cfg = study_refine_config(study)
    hashed = {k: v for k, v in to_dict(cfg).items() if k not in RUN_INVARIANT_FIELDS}
    return digest(
        {
            "cache": study.cache_hash(),
            "unet": study.run_hash("unet", cfg.k),
            "refine": hashed,
            "code": code_hash("slicelib.refine"),
        }
    )


def refine_run(study: Study) -> Path:
    """``runs/refine_k<k>``: the refiner on top of the study's U-Net, trained when needed."""
    from slicelib.refine import train_refiner

    cfg = study_refine_config(study)
    run_dir = study.runs_dir / f"refine_k{cfg.k}"

    def make() -> None:
        unet = study.run("unet", cfg.k)
        train_refiner(cfg, study.cache_dir, unet, run_dir, progress=study.progress)

    inputs = {
        "cache": study.cache_hash(),
        "unet": str(study.run_dir("unet", cfg.k)),
        "refine": to_dict(cfg),
    }
    name = run_dir.name
    step = Step(name, run_dir, refine_hash(study), inputs, make, what=f"training {name}")
    return ensure(step, study.lock_dir)


def refine_results(study: Study) -> pd.DataFrame:
    """The refiner's per-slice rows on the slices the study's DDPM was scored on
    (``results/refine_k<k>.csv``), computed when missing or made from other inputs."""
    from slicelib.refine import ddpm_slices, score_refinement

    k = study.preset.refine.k
    hash_ = digest(
        {
            "results": study.results_hash(k),
            "refine": refine_hash(study),
            "code": code_hash("slicelib.refine"),
        }
    )
    csv_path = study.results_dir / f"refine_k{k}.csv"

    def make() -> None:
        run_dir = refine_run(study)
        res = study.results(k)
        cfg = dataclasses.replace(study.preset.eval, device=study.device)
        rows = score_refinement(study.cache_dir, k, run_dir, ddpm_slices(res.rows), cfg)
        atomic_write(csv_path, lambda tmp: rows.to_csv(tmp, index=False))

    inputs = {"results": study.results_hash(k)}
    ensure(
        Step(f"results_{csv_path.stem}", csv_path, hash_, inputs, make, resumable=True),
        study.lock_dir,
    )
    return pd.read_csv(csv_path, dtype={"patient_id": str})
