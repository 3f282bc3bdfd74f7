"""The training loop: every model learns, runs resume exactly, outputs and bad input."""

from __future__ import annotations

import csv
import json
import logging
import re
from pathlib import Path

import numpy as np
import pandas as pd
import pytest
import torch

import slicelib
import slicelib.train as train_module
from slicelib.checkpoint import read_checkpoint
from slicelib.cli import main
from slicelib.config import MODEL_NAMES, SMOKE, ModelConfig, PrepareConfig, TrainConfig
from slicelib.errors import SlicelibError
from slicelib.objectives import L1Objective
from slicelib.study import present
from slicelib.train import HISTORY_COLUMNS, duration, train

# Narrow networks: the loop, not the architectures, is under test here.
TINY_MODELS = ModelConfig(
    features=8, cnn_blocks=2, improved_blocks=2, ddpm_channels=8, ddpm_time_dim=32
)


pytestmark = pytest.mark.usefixtures("one_thread")


def tiny_config(model: str, k: int = 1, **overrides: object) -> TrainConfig:
    settings: dict[str, object] = {
        "epochs": 2,
        "batch_size": 4,
        "steps_per_epoch": 3,
        "val_max_slices": 4,
        "crop": 24,
        "device": "cpu",
        "model_cfg": TINY_MODELS,
        "val_ddim_steps": 2,
    }
    settings.update(overrides)
    return SMOKE.train_config(model, k, **settings)  # type: ignore[arg-type]


def weights(path: Path, role: str = "generator") -> dict[str, torch.Tensor]:
    return read_checkpoint(path)["models"][role]


@pytest.mark.parametrize("model", MODEL_NAMES)
def test_tiny_run_lowers_the_training_loss(model: str, tiny_cache: Path, tmp_path: Path) -> None:
    cfg = tiny_config(model, lr=2e-3, epochs=3)
    result = train(cfg, tiny_cache, tmp_path / model, progress=False)

    # the GANs' total loss includes the adversarial game: their L1 part must fall
    key = "train_l1" if model.startswith("gan") else "train_loss"
    losses = [row[key] for row in result.history]
    assert losses[-1] < losses[0], losses
    assert [row["epoch"] for row in result.history] == [1, 2, 3]
    if model.startswith("gan"):
        assert {"train_adv", "train_d"} <= set(result.history[0])
        assert ("train_fm" in result.history[0]) == (model == "gan_improved")
    # best.pt: highest validation SSIM, for the DDPM and squared error the lowest validation loss
    if model == "ddpm" or cfg.loss == "mse":
        expected = int(np.argmin([row["val_loss"] for row in result.history])) + 1
    else:
        expected = int(np.argmax([row["val_ssim"] for row in result.history])) + 1
    assert result.best_epoch == expected
    assert read_checkpoint(tmp_path / model / "best.pt")["epoch"] == expected
    assert read_checkpoint(tmp_path / model / "last.pt")["epoch"] == 3
    assert present.best_epoch(pd.DataFrame(result.history), cfg) == expected


@pytest.mark.parametrize("model", ["unet", "ddpm"])
def test_a_decaying_rate_keeps_the_last_epoch(
    model: str, tiny_cache: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    # validation is reported, not used to choose: epoch 2 validates best on every measure,
    # the constant-rate run keeps it, the decaying one keeps the end of its schedule
    scores = {1: (0.5, 0.1), 2: (0.9, 0.01), 3: (0.6, 0.05), 4: (0.7, 0.04)}
    epochs = iter([1, 2, 3, 4, 1, 2, 3, 4])

    def validate(*args: object) -> dict[str, float]:
        ssim, loss = scores[next(epochs)]
        return {"val_loss": loss, "val_psnr": 20.0, "val_ssim": ssim}

    monkeypatch.setattr(train_module, "_validate", validate)
    constant = tiny_config(model, epochs=4, steps_per_epoch=1)
    assert train(constant, tiny_cache, tmp_path / "c", progress=False).best_epoch == 2
    cfg = tiny_config(model, epochs=4, steps_per_epoch=1, schedule="cosine")
    result = train(cfg, tiny_cache, tmp_path / "d", progress=False)
    assert result.best_epoch == 4 == read_checkpoint(tmp_path / "d" / "best.pt")["epoch"]
    assert present.best_epoch(pd.DataFrame(result.history), cfg) == 4
    assert present.best_epoch(pd.DataFrame(result.history), constant) == 2
    assert present.selection_rule(cfg).startswith("the last")


def test_history_csv_and_config_json(tiny_cache: Path, tmp_path: Path) -> None:
    cfg = tiny_config("gan", epochs=2)
    result = train(cfg, tiny_cache, tmp_path / "run", progress=False)

    with open(tmp_path / "run" / "history.csv", newline="") as handle:
        rows = list(csv.DictReader(handle))
    assert tuple(rows[0])[: len(HISTORY_COLUMNS)] == HISTORY_COLUMNS
    assert {"train_l1", "train_adv", "train_d"} <= set(rows[0])
    assert len(rows) == 2
    for row, expected in zip(rows, result.history):
        assert int(row["epoch"]) == expected["epoch"]
        for column in HISTORY_COLUMNS[1:]:
            assert float(row[column]) == pytest.approx(expected[column])
        assert float(row["samples_per_s"]) > 0
        assert 0 < float(row["val_ssim"]) <= 1

    config = json.loads((tmp_path / "run" / "config.json").read_text())
    assert config["slicelib_version"] == slicelib.__version__
    assert config["train"]["model"] == "gan"
    assert config["train"]["adv_weight"] == 0.001
    assert config["train"]["model_cfg"]["features"] == 8
    assert config["cache"]["config"]["size"] == 32
    assert config["image_size"] == 32


def test_interrupted_run_resumes_to_the_same_weights(
    tiny_cache: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    cfg = tiny_config("unet", augment=True)  # random crops and flips depend on the epoch
    straight = train(cfg, tiny_cache, tmp_path / "straight", progress=False)

    # kill the second run in the middle of epoch 2 (step 5 of 3 + 3)
    calls = {"n": 0}
    original = L1Objective.train_step

    def dies_in_epoch_2(self: L1Objective, *args: torch.Tensor) -> dict[str, torch.Tensor]:
        calls["n"] += 1
        if calls["n"] == 5:
            raise KeyboardInterrupt
        return original(self, *args)

    monkeypatch.setattr(L1Objective, "train_step", dies_in_epoch_2)
    with pytest.raises(KeyboardInterrupt):
        train(cfg, tiny_cache, tmp_path / "resumed", progress=False)
    assert read_checkpoint(tmp_path / "resumed" / "last.pt")["epoch"] == 1
    monkeypatch.setattr(L1Objective, "train_step", original)

    resumed = train(cfg, tiny_cache, tmp_path / "resumed", progress=False)
    a, b = weights(tmp_path / "straight" / "last.pt"), weights(tmp_path / "resumed" / "last.pt")
    assert a.keys() == b.keys()
    assert all(torch.equal(a[key], b[key]) for key in a)
    drop = ("seconds", "samples_per_s")
    assert [{k: v for k, v in row.items() if k not in drop} for row in resumed.history] == [
        {k: v for k, v in row.items() if k not in drop} for row in straight.history
    ]

    # a finished run resumes as a no-op that returns its result
    before = (tmp_path / "resumed" / "last.pt").stat().st_mtime_ns
    again = train(cfg, tiny_cache, tmp_path / "resumed", progress=False)
    assert again.history == resumed.history and again.best_epoch == resumed.best_epoch
    assert (tmp_path / "resumed" / "last.pt").stat().st_mtime_ns == before


def test_stopping_after_an_epoch_and_extending_matches_a_longer_run(
    tiny_cache: Path, tmp_path: Path
) -> None:
    cfg = tiny_config("gan", epochs=2, steps_per_epoch=2)
    train(cfg, tiny_cache, tmp_path / "straight", progress=False)
    one = train(cfg, tiny_cache, tmp_path / "steps", progress=False, on_epoch_end=lambda row: True)
    assert len(one.history) == 1
    train(cfg, tiny_cache, tmp_path / "steps", progress=False)
    for role in ("generator", "discriminator"):
        a = weights(tmp_path / "straight" / "last.pt", role)
        b = weights(tmp_path / "steps" / "last.pt", role)
        assert all(torch.equal(a[key], b[key]) for key in a), role
    optim_a = read_checkpoint(tmp_path / "straight" / "last.pt")["optimizers"]["discriminator"]
    optim_b = read_checkpoint(tmp_path / "steps" / "last.pt")["optimizers"]["discriminator"]
    assert optim_a["state"][0]["step"] == optim_b["state"][0]["step"] == 4


def test_resuming_with_other_settings_is_refused(tiny_cache: Path, tmp_path: Path) -> None:
    train(tiny_config("cnn", epochs=1, steps_per_epoch=1), tiny_cache, tmp_path, progress=False)
    with pytest.raises(SlicelibError, match="effective_batch=4, not 2"):
        train(tiny_config("cnn", batch_size=2), tiny_cache, tmp_path, progress=False)
    with pytest.raises(SlicelibError, match="holds model 'cnn' .* expected model 'unet'"):
        train(tiny_config("unet"), tiny_cache, tmp_path, progress=False)
    # without resume the directory is simply reused
    result = train(tiny_config("unet", epochs=1, steps_per_epoch=1), tiny_cache, tmp_path,
                   resume=False, progress=False)  # fmt: skip
    assert result.best_epoch == 1


def test_a_run_folder_has_one_training_process(tiny_cache: Path, tmp_path: Path) -> None:
    import os

    from slicelib.locking import hold_lock, lock_path

    cfg = tiny_config("cnn", epochs=1, steps_per_epoch=1)
    run_dir = tmp_path / "run"
    run_dir.mkdir()
    with hold_lock(run_dir, "training run"), pytest.raises(SlicelibError) as info:
        train(cfg, tiny_cache, run_dir, progress=False)
    message = str(info.value)
    assert "\n" not in message and f"pid {os.getpid()}" in message and str(run_dir) in message
    assert not (run_dir / "last.pt").exists()  # nothing was written
    train(cfg, tiny_cache, run_dir, progress=False)  # the lock went with its holder
    assert (run_dir / "last.pt").exists() and not lock_path(run_dir).exists()


def test_non_finite_loss_stops_with_a_clear_error(tiny_cache: Path, tmp_path: Path) -> None:
    cfg = tiny_config("cnn", lr=1e30, epochs=1)  # one Adam step makes the weights ~1e30
    with pytest.raises(SlicelibError, match=r"loss is (nan|inf) for model 'cnn' at epoch 1, step"):
        train(cfg, tiny_cache, tmp_path, progress=False)
    assert not (tmp_path / "last.pt").exists()


@pytest.mark.parametrize(
    ("override", "message"),
    [
        ({"k": 0}, r"k=0 is invalid \(must be >= 1\)"),
        ({"epochs": 0}, "epochs=0"),
        ({"batch_size": 0}, "batch_size=0"),
        ({"model": "vit"}, "unknown model 'vit'"),
        ({"precision": "fp8"}, "precision='fp8'"),
    ],
)
def test_invalid_settings(
    override: dict[str, object], message: str, tiny_cache: Path, tmp_path: Path
) -> None:
    import dataclasses

    cfg = dataclasses.replace(tiny_config("cnn"), **override)  # type: ignore[arg-type]
    with pytest.raises(SlicelibError, match=message):
        train(cfg, tiny_cache, tmp_path, progress=False)


def test_too_few_slices_for_k(tiny_cache: Path, tmp_path: Path) -> None:
    cfg = tiny_config("cnn", k=10)
    with pytest.raises(SlicelibError, match="no train triplets at k=10 .*at least 21 slices"):
        train(cfg, tiny_cache, tmp_path, progress=False)


# ---- the command line ----------------------------------------------------------------


def run_cli(args: list[str], capsys: pytest.CaptureFixture[str]) -> tuple[int, list[str]]:
    try:
        code = main(["train", *args])
    except SystemExit as exc:  # argparse refused an argument
        code = int(exc.code or 0)
    err = capsys.readouterr().err.strip().splitlines()
    return code, err


@pytest.fixture(scope="module")
def short_cache(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """Volumes of 3 slices: enough for k=1, too few for k=2."""
    from slicelib.data.cache import write_cache

    rng = np.random.default_rng(1)
    volumes = {f"S{i}": rng.random((3, 16, 16)).astype(np.float32) for i in range(3)}
    splits = {"S0": "train", "S1": "val", "S2": "test"}
    cache_dir = tmp_path_factory.mktemp("short") / "cache"
    write_cache(cache_dir, volumes, splits, PrepareConfig(size=16))
    return cache_dir


def test_cli_trains_and_reports(
    tiny_cache: Path, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    code = main(["-q", "train", "--model", "cnn", "--k", "1", "--cache", str(tiny_cache),
                 "--out", str(tmp_path / "run"), "--preset", "smoke", "--device", "cpu",
                 "--batch-size", "2"])  # fmt: skip
    out = capsys.readouterr().out
    assert code == 0
    assert "cnn k=1: best epoch 1" in out
    saved = read_checkpoint(tmp_path / "run" / "best.pt")
    assert saved["train_config"]["batch_size"] == 2
    assert saved["train_config"]["epochs"] == SMOKE.epochs["cnn"]


@pytest.mark.parametrize(
    ("args", "message"),
    [
        (["--model", "vit", "--k", "1"], "argument --model: invalid choice: 'vit'"),
        (["--model", "cnn", "--k", "2"], "no train triplets at k=2"),
        (["--model", "cnn", "--k", "1", "--preset", "huge"], "invalid choice: 'huge'"),
        (["--model", "cnn", "--k", "1", "--precision", "fp8"], "invalid choice: 'fp8'"),
        (["--model", "cnn", "--k", "1", "--device", "tpu"], "unknown device 'tpu'"),
    ],
)
def test_cli_bad_input_is_one_line(
    args: list[str],
    message: str,
    short_cache: Path,
    tmp_path: Path,
    capsys: pytest.CaptureFixture[str],
) -> None:
    common = ["--cache", str(short_cache), "--out", str(tmp_path / "run"), "--preset", "smoke"]
    code, err = run_cli([*common, *args], capsys)
    assert code == 2
    assert len(err) == 1
    assert err[0].startswith("slicelib train: error: ") and message in err[0]


def test_cli_bad_paths_are_one_line(
    short_cache: Path, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    base = ["--model", "cnn", "--k", "1", "--preset", "smoke", "--device", "cpu"]
    code, err = run_cli([*base, "--cache", str(tmp_path / "none"), "--out", str(tmp_path)], capsys)
    assert code == 2 and len(err) == 1 and "cache directory" in err[0]

    blocker = tmp_path / "a_file"
    blocker.write_text("not a directory")
    code, err = run_cli([*base, "--cache", str(short_cache), "--out", str(blocker / "run")], capsys)
    assert code == 2 and len(err) == 1 and "cannot write to run directory" in err[0]

    # a run directory holding another model's checkpoint
    run = tmp_path / "run"
    assert main(["-q", "train", *base, "--cache", str(short_cache), "--out", str(run)]) == 0
    capsys.readouterr()
    other = ["--model", "unet", "--k", "1", "--preset", "smoke", "--device", "cpu"]
    code, err = run_cli([*other, "--cache", str(short_cache), "--out", str(run)], capsys)
    assert code == 2 and len(err) == 1
    assert "holds model 'cnn'" in err[0] and "expected model 'unet'" in err[0]


def test_device_helpers() -> None:
    from slicelib.device import amp_dtype, grad_scaler, resolve_device

    assert resolve_device("cpu") == torch.device("cpu")
    assert resolve_device("auto").type == ("cuda" if torch.cuda.is_available() else "cpu")
    with pytest.raises(SlicelibError, match="unknown device 'gpu'"):
        resolve_device("gpu")
    if not torch.cuda.is_available():
        with pytest.raises(SlicelibError, match="CUDA is not available"):
            resolve_device("cuda")
    cpu = torch.device("cpu")
    # mixed precision is for CUDA only: the CPU trains in float32 without loss scaling
    assert amp_dtype(cpu, "fp16") is None and not grad_scaler(cpu, "fp16").is_enabled()
    bf16_ok = torch.cuda.is_available() and torch.cuda.is_bf16_supported()
    assert amp_dtype(torch.device("cuda"), "bf16") == (torch.bfloat16 if bf16_ok else torch.float16)
    assert amp_dtype(torch.device("cuda"), "fp32") is None
    with pytest.raises(SlicelibError, match="unknown precision 'fp64'"):
        amp_dtype(cpu, "fp64")


def test_every_epoch_logs_one_line_with_losses_throughput_and_time_left(
    tiny_cache: Path, tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    caplog.set_level(logging.INFO, logger="slicelib.train")
    cfg = tiny_config("cnn", epochs=3, steps_per_epoch=1)
    train(cfg, tiny_cache, tmp_path / "run", progress=False)
    lines = [r.getMessage() for r in caplog.records if " epoch " in r.getMessage()]
    assert len(lines) == 3
    pattern = (
        r"cnn k=1 epoch {}/3: train loss \d\.\d{{4}}, val loss \d\.\d{{4}}, PSNR [\d.]+ dB, "
        r"SSIM [\d.]+, [\d.]+ samples/s, [\d.]+ s this epoch, (?P<left>[\d.]+ s) left"
    )
    for epoch, line in enumerate(lines, 1):
        assert re.match(pattern.format(epoch), line), line
    assert lines[-1].split(", ")[-1].startswith("0.0 s left")


@pytest.mark.parametrize(
    ("seconds", "text"),
    [(8.24, "8.2 s"), (276, "4 min 36 s"), (7500, "2 h 05 min"), (59.96, "1 min 00 s")],
)
def test_durations_read_as_spans(seconds: float, text: str) -> None:
    assert duration(seconds) == text
