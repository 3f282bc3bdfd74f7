"""The study's refinement steps (supplement 4.3): the refiner trained on top of the
study's U-Net, and its scores on the slices the study's DDPM was scored on."""

from __future__ import annotations

import dataclasses
from pathlib import Path

import pandas as pd

from slicelib import __version__
from slicelib.config import RefineConfig, run_defining, to_dict
from slicelib.io import atomic_write
from slicelib.methods import family_of
from slicelib.study.sources import code_hash
from slicelib.study.stamps import Stamp, digest
from slicelib.study.step import Step, ensure
from slicelib.study.workspace import Study


def study_refine_config(study: Study) -> RefineConfig:
    """The preset's refinement settings with its DDPM architecture and schedule
    (diffusing in [-1, 1]) on the study's device."""
    preset = study.preset
    train = dataclasses.replace(
        preset.refine.train,
        model_cfg=preset.model,
        diffusion=dataclasses.replace(preset.diffusion, rescale=True),
        device=study.device,
    )
    return dataclasses.replace(preset.refine, train=train)


def refine_identity(study: Study) -> str:
    """What defines the study's refinement run: cache, U-Net run, the settings that
    define a run (not its epochs), version."""
    cfg = study_refine_config(study)
    own = {"recon_weight": cfg.recon_weight, "residual_quantile": cfg.residual_quantile}
    return digest(
        {
            "cache": study.cache_hash(),
            "unet": study.run_hash("unet", cfg.k),
            "refine": {**own, "train": run_defining(cfg.train)},
            "version": __version__,
            "code": code_hash("slicelib.train", "slicelib.refine"),
        }
    )


def refine_hash(study: Study) -> str:
    """The input hash of the study's refinement run: its identity and its epochs."""
    epochs = study_refine_config(study).train.epochs
    return digest({"identity": refine_identity(study), "epochs": epochs})


def refine_run(study: Study) -> Path:
    """``runs/refine_k<k>``: the refiner on top of the study's U-Net, trained (or resumed,
    when it has the same identity and no more epochs) when needed."""
    from slicelib.train import train

    cfg = study_refine_config(study)
    run_dir = study.runs_dir / f"refine_k{cfg.k}"
    identity = refine_identity(study)

    def resumable(stamp: Stamp | None) -> bool:
        if stamp is None:
            return False
        same = stamp.inputs.get("identity") == identity
        return same and int(stamp.inputs.get("epochs", 0)) <= cfg.train.epochs

    def make() -> None:
        unet = study.run("unet", cfg.k)
        train(
            dataclasses.replace(cfg, unet_run=str(unet)), study.cache_dir, run_dir,
            progress=study.progress,
        )  # fmt: skip

    inputs = {
        "identity": identity,
        "epochs": cfg.train.epochs,
        "cache": study.cache_hash(),
        "unet": str(study.run_dir("unet", cfg.k)),
        "refine": to_dict(cfg),
    }
    name = run_dir.name
    step = Step(
        name, run_dir, refine_hash(study), inputs, make, resumable, what=f"training {name}"
    )
    return ensure(step, study.lock_dir)


def refine_results(study: Study) -> pd.DataFrame:
    """The refiner's per-slice rows on the slices the study's DDPM was scored on
    (``results/refine_k<k>.csv``), computed when missing or made from other inputs."""
    from slicelib.evaluate import evaluate

    k = study.preset.refine.k
    hash_ = digest(
        {
            "results": study.results_hash(k),
            "refine": refine_hash(study),
            "code": code_hash("slicelib.evaluate", "slicelib.refine"),
        }
    )
    csv_path = study.results_dir / f"refine_k{k}.csv"

    def make() -> None:
        run_dir = refine_run(study)
        study.results(k)  # the DDPM's slices: the refiner's are the same evenly spaced ones
        cfg = dataclasses.replace(study.preset.eval, device=study.device)
        res = evaluate(study.cache_dir, k, cfg, [run_dir], methods=[], progress=False)
        rows = res.rows[[family_of(str(m)) == "refine" for m in res.rows["method"]]]
        atomic_write(csv_path, lambda tmp: rows.to_csv(tmp, index=False))

    inputs = {"results": study.results_hash(k)}
    step = Step(f"results_{csv_path.stem}", csv_path, hash_, inputs, make, resumable=True)
    ensure(step, study.lock_dir)
    return pd.read_csv(csv_path, dtype={"patient_id": str})
