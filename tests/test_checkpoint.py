"""Checkpoints: atomic writes, strict loading with weights_only, runs as predictors."""

from __future__ import annotations

import os
from pathlib import Path

import pytest
import torch

from slicelib.checkpoint import (
    load_run,
    read_checkpoint,
    save_checkpoint,
)
from slicelib.config import SMOKE, ModelConfig
from slicelib.errors import SlicelibError
from slicelib.interpolator import Predictor
from slicelib.train import train

TINY_MODELS = ModelConfig(features=8, cnn_blocks=2, ddpm_channels=8, ddpm_time_dim=32)


pytestmark = pytest.mark.usefixtures("one_thread")


def tiny_run(model: str, cache: Path, run_dir: Path) -> Path:
    cfg = SMOKE.train_config(
        model, 1, epochs=1, steps_per_epoch=1, val_max_slices=2, device="cpu",
        model_cfg=TINY_MODELS, val_ddim_steps=2,
    )  # fmt: skip
    train(cfg, cache, run_dir, progress=False)
    return run_dir


@pytest.fixture(scope="module")
def cnn_run(tiny_cache: Path, tmp_path_factory: pytest.TempPathFactory) -> Path:
    return tiny_run("cnn", tiny_cache, tmp_path_factory.mktemp("cnn_run"))


@pytest.fixture(scope="module")
def ddpm_run(tiny_cache: Path, tmp_path_factory: pytest.TempPathFactory) -> Path:
    return tiny_run("ddpm", tiny_cache, tmp_path_factory.mktemp("ddpm_run"))


def inputs(n: int = 3, size: int = 32) -> torch.Tensor:
    return torch.rand(n, 2, size, size, generator=torch.Generator().manual_seed(0))


def test_checkpoint_content(cnn_run: Path) -> None:
    state = read_checkpoint(cnn_run / "last.pt")
    assert state["model"] == "cnn" and state["k"] == 1 and state["image_size"] == 32
    assert state["epoch"] == 1 and state["best_epoch"] == 1 and len(state["history"]) == 1
    assert (
        set(state["models"]) == set(state["optimizers"]) == set(state["scalers"]) == {"generator"}
    )
    assert state["train_config"]["model_cfg"]["features"] == 8
    assert state["cache_config"]["size"] == 32
    assert isinstance(state["slicelib_version"], str)


def test_load_run_rebuilds_the_trained_generator(cnn_run: Path) -> None:
    run = load_run(cnn_run)
    assert run.config.model == "cnn" and run.config.model_cfg == TINY_MODELS
    assert run.image_size == 32 and run.epoch == 1 and run.best_epoch == 1
    assert not run.model.training
    saved = read_checkpoint(cnn_run / "best.pt")["models"]["generator"]
    for key, value in run.model.state_dict().items():
        assert torch.equal(value, saved[key])

    x = inputs()
    pred = Predictor(run)(x)
    assert pred.shape == (3, 1, 32, 32)
    assert float(pred.min()) >= 0.0 and float(pred.max()) <= 1.0
    with torch.no_grad():
        assert torch.allclose(pred, run.model(x).clamp(0, 1))
    # any slice size works, not only the training size
    assert Predictor(run)(inputs(2, 20)).shape == (2, 1, 20, 20)


def test_a_renamed_key_fails_naming_file_and_key(cnn_run: Path, tmp_path: Path) -> None:
    state = read_checkpoint(cnn_run / "best.pt")
    weights = state["models"]["generator"]
    old = next(key for key in weights if "body" in key or "blocks" in key)
    new = old.replace("body", "residual").replace("blocks", "residual")
    weights[new] = weights.pop(old)
    bad = tmp_path / "renamed.pt"
    save_checkpoint(bad, state)

    with pytest.raises(SlicelibError) as info:
        load_run(bad)
    message = str(info.value)
    assert "\n" not in message
    assert str(bad) in message and repr(old) in message and repr(new) in message


def test_a_reshaped_tensor_fails_naming_the_key(cnn_run: Path, tmp_path: Path) -> None:
    state = read_checkpoint(cnn_run / "best.pt")
    weights = state["models"]["generator"]
    key = next(k for k in weights if k.endswith("weight"))
    weights[key] = torch.zeros(1, 1)
    save_checkpoint(tmp_path / "reshaped.pt", state)
    with pytest.raises(SlicelibError, match=f"'{key}' has shape \\(1, 1\\)"):
        load_run(tmp_path / "reshaped.pt")


def test_checkpoint_of_another_model_or_size(cnn_run: Path) -> None:
    with pytest.raises(SlicelibError, match="holds model 'cnn' .* expected model 'unet'"):
        load_run(cnn_run, model="unet")
    with pytest.raises(SlicelibError, match="on 32 px images, expected .* on 256 px images"):
        load_run(cnn_run, image_size=256)
    with pytest.raises(SlicelibError, match="k=1 .* expected .* k=2"):
        load_run(cnn_run, k=2)
    assert load_run(cnn_run, model="cnn", k=1, image_size=32).epoch == 1


class _Payload:
    """Unpickling this would create a file: weights_only must refuse it."""

    def __init__(self, marker: Path) -> None:
        self.marker = marker

    def __reduce__(self) -> tuple[object, tuple[str]]:
        return (os.system, (f"touch {self.marker}",))


def test_loading_is_weights_only(tmp_path: Path) -> None:
    marker = tmp_path / "executed"
    path = tmp_path / "evil.pt"
    torch.save({"format": 1, "payload": _Payload(marker)}, path)
    with pytest.raises(SlicelibError, match="refusing to load it"):
        read_checkpoint(path)
    assert not marker.exists()


def test_unreadable_and_foreign_files(tmp_path: Path) -> None:
    with pytest.raises(SlicelibError, match="not found"):
        read_checkpoint(tmp_path / "missing.pt")
    (tmp_path / "junk.pt").write_bytes(b"not a checkpoint")
    with pytest.raises(SlicelibError, match="junk.pt is not a readable PyTorch file"):
        read_checkpoint(tmp_path / "junk.pt")
    torch.save({"state_dict": {}}, tmp_path / "foreign.pt")
    with pytest.raises(SlicelibError, match="not a slicelib checkpoint"):
        read_checkpoint(tmp_path / "foreign.pt")
    with pytest.raises(SlicelibError, match="unknown checkpoint 'first'"):
        load_run(tmp_path, which="first")


def test_save_is_atomic(tmp_path: Path) -> None:
    path = tmp_path / "c.pt"
    save_checkpoint(path, {"format": 1, "x": torch.ones(2)})
    with pytest.raises(Exception):  # noqa: B017 - whatever torch.save raises for a lambda
        save_checkpoint(path, {"format": 1, "x": lambda: None})
    assert torch.equal(read_checkpoint(path)["x"], torch.ones(2))  # the old file is intact
    assert sorted(p.name for p in tmp_path.iterdir()) == ["c.pt"]  # no temporary left behind


def test_ddpm_predictor_samplers(ddpm_run: Path) -> None:
    run = load_run(ddpm_run, which="last")
    assert run.config.model == "ddpm" and run.config.diffusion.timesteps == 10
    x = inputs(2)

    ddim = Predictor(run, sampler="ddim", steps=3, seed=5)(x)
    assert ddim.shape == (2, 1, 32, 32)
    assert float(ddim.min()) >= 0.0 and float(ddim.max()) <= 1.0
    assert torch.equal(ddim, Predictor(run, sampler="ddim", steps=3, seed=5)(x))
    assert not torch.equal(ddim, Predictor(run, sampler="ddim", steps=3, seed=6)(x))

    several = Predictor(run, sampler="ancestral", seed=1, samples=3)
    stack = several.stack(x)
    assert stack.shape == (3, 2, 1, 32, 32)
    assert float(stack.std(dim=0).mean()) > 0  # ancestral samples differ
    again = Predictor(run, sampler="ancestral", seed=1, samples=3)(x)
    assert torch.allclose(again, stack.mean(dim=0))


def test_predictor_bad_settings(cnn_run: Path, ddpm_run: Path) -> None:
    cnn, ddpm = load_run(cnn_run), load_run(ddpm_run)
    with pytest.raises(SlicelibError, match="deterministic: samples must be 1"):
        Predictor(cnn, samples=2)
    with pytest.raises(SlicelibError, match="ancestral sampling runs all T=10 steps"):
        Predictor(ddpm, sampler="ancestral", steps=5)
    with pytest.raises(SlicelibError, match="steps must be in 1..10"):
        Predictor(ddpm, sampler="ddim", steps=11)
    with pytest.raises(SlicelibError, match="unknown sampler 'euler'"):
        Predictor(ddpm, sampler="euler")  # type: ignore[arg-type]
    with pytest.raises(SlicelibError, match=r"shape \(N, 2, H, W\)"):
        Predictor(cnn)(torch.rand(1, 3, 8, 8))
