"""Residual diffusion refining the U-Net: encoding, hybrid loss, training through the one
training loop (resume included), loading, sampling, scoring."""

from __future__ import annotations

import dataclasses
from pathlib import Path

import numpy as np
import pandas as pd
import pytest
import torch

from slicelib.checkpoint import load_run, read_checkpoint, save_checkpoint
from slicelib.config import DiffusionConfig, EvalConfig, ModelConfig, RefineConfig, TrainConfig
from slicelib.diffusion import GaussianDiffusion
from slicelib.errors import SlicelibError
from slicelib.evaluate import evaluate, summarize_on_slices
from slicelib.interpolator import Predictor, SamplingInterpolator
from slicelib.methods import method_label, method_spec
from slicelib.refine import (
    build_denoiser,
    conditioning,
    decode_residual,
    encode_residual,
    hybrid_loss,
)
from slicelib.train import train

TINY_MODEL = ModelConfig(features=4, ddpm_channels=4, ddpm_time_dim=16)
TINY_DIFFUSION = DiffusionConfig(timesteps=4)


def test_residual_encoding_round_trips_within_the_scale() -> None:
    r = torch.linspace(-0.2, 0.2, 11)
    data = encode_residual(r, 0.2)
    assert float(data.min()) == pytest.approx(0.0) and float(data.max()) == pytest.approx(1.0)
    assert torch.allclose(decode_residual(data, 0.2), r, atol=1e-6)
    assert torch.equal(encode_residual(torch.tensor([-1.0, 1.0]), 0.2), torch.tensor([0.0, 1.0]))


@pytest.mark.parametrize("size", [(16, 16), (13, 21)])
def test_denoiser_takes_three_conditioning_channels(size: tuple[int, int]) -> None:
    net = build_denoiser(TINY_MODEL)
    x = torch.rand(2, 1, *size)
    cond = conditioning(torch.rand(2, 2, *size), torch.rand(2, 1, *size))
    assert cond.shape == (2, 3, *size)
    out = net(x, torch.tensor([0, 3]), cond)
    assert out.shape == (2, 1, *size)


def test_hybrid_loss_is_the_diffusion_noise_loss_plus_reconstruction() -> None:
    torch.manual_seed(0)
    diffusion = GaussianDiffusion(TINY_DIFFUSION)
    net = build_denoiser(TINY_MODEL)
    inputs, target = torch.rand(3, 2, 8, 8), torch.rand(3, 1, 8, 8)
    base = (target + 0.05 * torch.randn_like(target)).clamp(0, 1)
    t, noise = torch.tensor([0, 2, 3]), torch.randn(3, 1, 8, 8)
    with torch.no_grad():
        parts = hybrid_loss(diffusion, net, inputs, base, target, 0.5, 2.0, t=t, noise=noise)
        reference = diffusion.training_losses(
            net, encode_residual(target - base, 0.5), t, conditioning(inputs, base), noise=noise
        )
    assert float(parts["noise"]) == pytest.approx(float(reference), rel=1e-5)
    assert float(parts["loss"]) == pytest.approx(float(parts["noise"] + 2.0 * parts["recon"]))

    def oracle(x_t: torch.Tensor, t_: torch.Tensor, cond: torch.Tensor) -> torch.Tensor:
        return noise  # the exact noise: x0 is recovered, so is the target

    exact = hybrid_loss(diffusion, oracle, inputs, base, target, 0.5, 1.0, t=t, noise=noise)  # type: ignore[arg-type]
    assert float(exact["noise"]) == 0.0
    assert float(exact["recon"]) < 1e-5


def refine_config(unet_run: Path, epochs: int = 1) -> RefineConfig:
    return RefineConfig(
        train=TrainConfig(
            model="ddpm",
            epochs=epochs,
            batch_size=4,
            steps_per_epoch=2,
            val_max_slices=2,
            val_ddim_steps=2,
            device="cpu",
            model_cfg=TINY_MODEL,
            diffusion=dataclasses.replace(TINY_DIFFUSION, rescale=True),
        ),
        unet_run=str(unet_run),
    )


@pytest.fixture(scope="module")
def trained(tiny_cache: Path, tmp_path_factory: pytest.TempPathFactory) -> dict[str, Path]:
    root = tmp_path_factory.mktemp("refine")
    runs = {}
    for model in ("unet", "ddpm"):
        cfg = TrainConfig(
            model=model,  # type: ignore[arg-type]
            epochs=1,
            batch_size=4,
            steps_per_epoch=1,
            val_max_slices=2,
            val_ddim_steps=2,
            device="cpu",
            model_cfg=TINY_MODEL,
            diffusion=TINY_DIFFUSION,
        )
        train(cfg, tiny_cache, root / model, progress=False)
        runs[model] = root / model
    result = train(refine_config(runs["unet"]), tiny_cache, root / "refine", progress=False)
    assert [row["epoch"] for row in result.history] == [1]
    row = result.history[0]
    assert np.isfinite(row["val_psnr"]) and np.isfinite(row["val_unet_psnr"])
    # the hybrid loss is its two terms (recon_weight 1)
    assert row["train_loss"] == pytest.approx(row["train_noise"] + row["train_recon"], rel=1e-5)
    runs["refine"] = root / "refine"
    return runs


def test_training_writes_a_run_and_sampling_gives_slices(trained: dict[str, Path]) -> None:
    run = trained["refine"]
    assert {"best.pt", "last.pt", "history.csv", "config.json"} <= {p.name for p in run.iterdir()}
    history = pd.read_csv(run / "history.csv")
    assert {"train_noise", "train_recon", "val_unet_psnr"} <= set(history.columns)
    state = read_checkpoint(run / "best.pt")
    assert state["model"] == "refine" and state["objective"]["residual_scale"] > 0
    loaded = load_run(run)
    assert loaded.name == "refine" and loaded.samples_noise
    assert loaded.image_size == 32 and loaded.config.k == 1 and loaded.refine is not None
    assert loaded.residual_scale == state["objective"]["residual_scale"]
    x = torch.rand(3, 2, 32, 32)
    for sampler, steps in (("ddim", 3), ("ancestral", None)):
        out = Predictor(loaded, sampler=sampler, steps=steps, seed=1)(x)  # type: ignore[arg-type]
        assert out.shape == (3, 1, 32, 32)
        assert float(out.min()) >= 0.0 and float(out.max()) <= 1.0
    assert isinstance(Predictor(loaded), SamplingInterpolator)  # the one interface
    several = Predictor(loaded, sampler="ancestral", samples=2, seed=1).stack(x)
    assert several.shape == (2, 3, 1, 32, 32) and not torch.equal(several[0], several[1])
    assert loaded.config.diffusion.rescale  # the residual diffuses around the origin
    a = Predictor(loaded, sampler="ddim", steps=3, seed=5)(x)
    b = Predictor(loaded, sampler="ddim", steps=3, seed=5)(x)
    assert torch.equal(a, b)  # DDIM at eta=0 from the same start is deterministic
    # Refinement changes the U-Net's prediction.
    assert loaded.base is not None
    assert not torch.allclose(a, loaded.base(x).clamp(0, 1))


def test_refinement_run_resumes_to_the_same_weights(
    trained: dict[str, Path], tiny_cache: Path, tmp_path: Path
) -> None:
    whole = train(refine_config(trained["unet"], 2), tiny_cache, tmp_path / "whole", progress=False)
    part = tmp_path / "part"
    train(refine_config(trained["unet"], 1), tiny_cache, part, progress=False)
    first = read_checkpoint(part / "last.pt")
    resumed = train(refine_config(trained["unet"], 2), tiny_cache, part, progress=False)
    assert [r["epoch"] for r in resumed.history] == [1, 2]
    last = read_checkpoint(part / "last.pt")
    assert last["objective"]["residual_scale"] == first["objective"]["residual_scale"]
    reference = read_checkpoint(tmp_path / "whole" / "last.pt")["models"]["denoiser"]
    for key, value in last["models"]["denoiser"].items():
        assert torch.equal(value, reference[key]), key
    assert resumed.history[-1]["val_psnr"] == pytest.approx(whole.history[-1]["val_psnr"])
    other = dataclasses.replace(refine_config(trained["unet"], 3), recon_weight=0.5)
    with pytest.raises(SlicelibError, match="recon_weight"):
        train(other, tiny_cache, part, progress=False)


def test_refinement_needs_a_deterministic_unet_and_rescaled_diffusion(
    trained: dict[str, Path], tiny_cache: Path, tmp_path: Path
) -> None:
    with pytest.raises(SlicelibError, match="deterministic"):
        train(refine_config(trained["ddpm"]), tiny_cache, tmp_path / "a", progress=False)
    cfg = refine_config(trained["unet"])
    plain = dataclasses.replace(cfg, train=dataclasses.replace(cfg.train, diffusion=TINY_DIFFUSION))
    with pytest.raises(SlicelibError, match="rescale"):
        train(plain, tiny_cache, tmp_path / "b", progress=False)


def test_refinement_checkpoints_load_strictly(trained: dict[str, Path], tmp_path: Path) -> None:
    state = read_checkpoint(trained["refine"] / "best.pt")
    weights = state["models"]["denoiser"]
    weights["renamed"] = weights.pop(next(iter(weights)))
    bad = tmp_path / "best.pt"
    save_checkpoint(bad, state)
    with pytest.raises(SlicelibError, match="denoiser"):
        load_run(bad)
    with pytest.raises(SlicelibError, match="holds model 'unet'"):
        load_run(trained["unet"], model="refine")


def test_refinement_is_scored_on_the_ddpm_slices(
    trained: dict[str, Path], tiny_cache: Path
) -> None:
    cfg = EvalConfig(ddim_steps=(2,), ddpm_samples=2, ddpm_max_slices=3, device="cpu")
    runs = [trained["unet"], trained["ddpm"], trained["refine"]]
    ev = evaluate(tiny_cache, 1, cfg, runs, methods=["linear"], progress=False)
    methods = list(ev.summary["method"])
    assert {"linear", "unet", "ddpm_ddim2", "refine_ddim2", "refine_ancestral"} <= set(methods)

    def slices(name: str) -> set[tuple[str, int]]:
        part = ev.rows[ev.rows["method"] == name]
        return set(zip(part["patient_id"], part["slice_index"]))

    assert len(slices("refine_ddim2")) == 3
    assert slices("refine_ddim2") == slices("ddpm_ddim2") == slices("refine_ancestral")
    assert slices("refine_ddim2") < slices("linear")
    refined = ev.rows[ev.rows["method"] == "refine_ddim2"]
    assert np.all(np.isfinite(refined["psnr"])) and np.all(refined["ms_per_slice"] > 0)
    info = ev.info["runs"][str(trained["refine"])]
    assert info["methods"] == ["refine_ancestral", "refine_ddim2", "refine_mean2"]
    assert slices("refine_mean2") == slices("ddpm_mean2")
    assert "refine_mean2/std_mean" in ev.std  # the mean of samples keeps its std


def test_network_passes_and_titles() -> None:
    def passes(name: str) -> int | None:
        spec = method_spec(name)
        assert spec is not None and spec.name == name
        return spec.network_passes(100)

    assert passes("unet") == 1
    assert passes("ddpm_ancestral") == 100
    assert passes("ddpm_ddim20") == 20
    assert passes("ddpm_mean4") == 400
    assert passes("refine_ddim10") == 11
    assert passes("refine_ddim500") == 101
    assert passes("refine_mean4") == 401
    assert passes("linear") is None
    assert method_label("refine_ddim10") == "refiner, DDIM 10 steps"
    assert method_label("refine_ancestral") == "refiner, ancestral"
    assert method_label("refine_mean4") == "refiner, mean of 4 samples"
    assert method_label("ddpm_ddim20") == "DDPM, DDIM 20 steps"
    assert method_spec("ddpm_ddimx") is None and method_label("nosuch") == "nosuch"


def test_combined_summary_compares_every_method_on_the_refined_slices() -> None:
    def rows(method: str, slices: list[int], psnr: float) -> pd.DataFrame:
        return pd.DataFrame(
            {
                "method": method,
                "patient_id": "P1",
                "slice_index": slices,
                "position": [s / 10 for s in slices],
                "k": 1,
                "psnr": psnr + np.arange(len(slices)),
                "ssim": 0.5,
                "ssim_gauss": 0.5,
                "mae": 0.1,
                "ms_per_slice": 1.0,
                "fallback": False,
            }
        )

    evaluation = pd.concat([rows("linear", [1, 2, 3, 4], 20.0), rows("unet", [1, 2, 3, 4], 25.0)])
    refined = rows("refine_ddim2", [2, 4], 26.0)
    summary = summarize_on_slices(evaluation, refined, EvalConfig())
    summary = summary.set_index("method")
    assert summary["n_slices"].tolist() == [2, 2, 2]
    assert summary.loc["linear", "psnr_mean"] == pytest.approx(22.0)  # slices 2 and 4: 21, 23
    assert summary.loc["refine_ddim2", "psnr_gain_db"] == pytest.approx(26.5 - 22.0)
