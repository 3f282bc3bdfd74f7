"""Whole-volume x2 upsampling: the grid, the model's view, NIfTI output and the command line."""

from __future__ import annotations

import dataclasses
import json
from pathlib import Path

import nibabel as nib
import numpy as np
import pydicom
import pytest
import torch
from test_dicom_writer import linear_predict, oblique_orientation, write_test_series

from slicelib.checkpoint import read_checkpoint, save_checkpoint
from slicelib.cli import main
from slicelib.config import ModelConfig, TrainConfig
from slicelib.data.dicom import Volume, load_series, normal
from slicelib.data.nifti import load_nifti
from slicelib.data.preprocess import square_crop
from slicelib.errors import SlicelibError
from slicelib.upsample.dicom_writer import SYNTHESIZED_COMMENT
from slicelib.upsample.nifti_writer import write_nifti
from slicelib.upsample.volume import (
    check_factor,
    crop_box,
    interleaved_positions,
    upsample_volume,
)


def make_volume(slices: int = 5, rows: int = 16, cols: int = 16, seed: int = 0) -> Volume:
    """An axial volume at 1.5 mm spacing with smooth random values in 100..1100."""
    rng = np.random.default_rng(seed)
    pixels = (100 + 1000 * rng.random((slices, rows, cols))).astype(np.float32)
    iop = np.array([1.0, 0, 0, 0, 1, 0])
    positions = np.array([[0.0, 0.0, 1.5 * s] for s in range(slices)])
    return Volume(pixels, positions, iop, (0.5, 0.5), 1.5, 1.5, "P", "1.2.3")


def constant_predict(value: float):  # noqa: ANN201
    def predict(inputs: torch.Tensor) -> torch.Tensor:
        return torch.full((inputs.shape[0], 1, *inputs.shape[2:]), value)

    return predict


def test_acquired_slices_are_kept_bit_for_bit_and_counted() -> None:
    vol = make_volume()
    up = upsample_volume(vol, constant_predict(0.3), 8)
    assert up.n_slices == 9
    assert np.array_equal(up.pixels[0::2], vol.pixels)
    assert list(up.acquired) == [True, False] * 4 + [True]
    assert up.sources(0) == (0,) and up.sources(3) == (1, 2)
    assert up.slice_spacing == pytest.approx(0.75)


def test_linear_predictor_at_full_size_reproduces_linear_interpolation() -> None:
    vol = make_volume()
    up = upsample_volume(vol, linear_predict, 16)
    expected = 0.5 * (vol.pixels[:-1] + vol.pixels[1:])
    assert np.allclose(up.pixels[1::2], expected, rtol=0, atol=1e-3)


def test_the_model_sees_its_training_size_in_unit_range() -> None:
    vol = make_volume(rows=20, cols=28)
    seen: list[torch.Tensor] = []

    def predict(inputs: torch.Tensor) -> torch.Tensor:
        seen.append(inputs)
        return inputs.mean(dim=1, keepdim=True)

    up = upsample_volume(vol, predict, 12, batch_size=3)
    assert [tuple(x.shape) for x in seen] == [(3, 2, 12, 12), (1, 2, 12, 12)]
    assert all(float(x.min()) >= 0 and float(x.max()) <= 1 for x in seen)
    assert up.pixels.shape == (9, 20, 28)


def test_non_square_frames_use_the_model_in_the_centre_square_only() -> None:
    vol = make_volume(rows=10, cols=16)
    up = upsample_volume(vol, constant_predict(0.5), 8)
    top, left, h, w = crop_box((10, 16), vol.pixel_spacing)
    kept, _ = square_crop(vol.pixels, vol.pixel_spacing)
    assert (top, left, h, w) == (0, 3, 10, 10)
    assert np.array_equal(vol.pixels[:, top : top + h, left : left + w], kept)
    lo, hi = float(vol.pixels.min()), float(vol.pixels.max())
    synth = up.pixels[1::2]
    assert np.allclose(synth[:, :, left : left + w], lo + 0.5 * (hi - lo), atol=1e-2)
    linear = 0.5 * (vol.pixels[:-1] + vol.pixels[1:])
    assert np.allclose(synth[:, :, :left], linear[:, :, :left], atol=1e-2)
    assert np.allclose(synth[:, :, left + w :], linear[:, :, left + w :], atol=1e-2)


def test_predictions_map_back_to_original_units_with_clipping() -> None:
    vol = make_volume()
    lo, hi = float(vol.pixels.min()), float(vol.pixels.max())
    assert np.allclose(upsample_volume(vol, constant_predict(1.7), 8).pixels[1::2], hi, atol=1e-2)
    assert np.allclose(upsample_volume(vol, constant_predict(0.0), 8).pixels[1::2], lo, atol=1e-2)
    up = upsample_volume(vol, constant_predict(0.25), 8, clip_percentiles=(1.0, 99.0))
    p1, p99 = np.percentile(vol.pixels, (1.0, 99.0))
    assert np.allclose(up.pixels[1::2], p1 + 0.25 * (p99 - p1), atol=1e-2)


def test_positions_on_an_oblique_grid_are_midpoints_along_the_normal() -> None:
    n = normal(oblique_orientation())
    positions = np.array([5.0, -3.0, 2.0]) + np.arange(4)[:, None] * 2.0 * n
    out = interleaved_positions(positions)
    assert out.shape == (7, 3)
    assert np.allclose(np.diff(out, axis=0), 1.0 * n)
    assert np.array_equal(out[0::2], positions)


def test_single_slice_and_non_uniform_spacing_are_refused() -> None:
    vol = make_volume(slices=1)
    with pytest.raises(SlicelibError, match="1 slice"):
        upsample_volume(vol, linear_predict, 8)
    vol = make_volume()
    positions = vol.positions.copy()
    positions[3:, 2] += 1.5  # a missing slice
    gappy = dataclasses.replace(vol, positions=positions)
    with pytest.raises(SlicelibError, match="non-uniform slice spacing"):
        upsample_volume(gappy, linear_predict, 8)


@pytest.mark.parametrize("factor", [1, 3, 4])
def test_only_factor_two_is_supported(factor: int) -> None:
    with pytest.raises(SlicelibError, match="only x2"):
        check_factor(factor)


def write_nifti_volume(path: Path, *, flip: bool) -> np.ndarray:
    """An int16 NIfTI with scaling and an oblique affine; returns its affine."""
    rng = np.random.default_rng(1)
    stored = rng.integers(0, 2000, size=(12, 10, 5)).astype(np.int16)
    rot = np.array([[0.98, -0.17, 0.0], [0.17, 0.98, 0.0], [0.0, 0.0, 1.0]]) @ np.diag(
        [0.6, 0.7, -2.0 if flip else 2.0]
    )
    affine = np.eye(4)
    affine[:3, :3] = rot
    affine[:3, 3] = [10.0, -20.0, 30.0]
    img = nib.Nifti1Image(stored, affine)
    img.header.set_slope_inter(0.5, 10.0)
    nib.save(img, path)
    return affine


@pytest.mark.parametrize("flip", [False, True])
def test_nifti_out_has_the_halved_affine_and_untouched_stored_values(
    tmp_path: Path, flip: bool
) -> None:
    src = tmp_path / "vol.nii.gz"
    affine = write_nifti_volume(src, flip=flip)
    vol = load_nifti(src)
    up = upsample_volume(vol, linear_predict, 10)
    out = write_nifti(up, src, tmp_path / "out" / "vol_x2.nii.gz")
    img = nib.load(out)
    assert img.shape == (12, 10, 9)
    expected = affine.copy()
    expected[:3, 2] /= 2
    assert np.allclose(img.affine, expected, atol=1e-5)
    assert np.allclose(img.affine[:3, 3], affine[:3, 3])
    assert img.header.get_zooms()[2] == pytest.approx(1.0)
    raw_in = np.asarray(nib.load(src).dataobj.get_unscaled())
    raw_out = np.asarray(img.dataobj.get_unscaled())
    assert raw_out.dtype == np.int16
    assert np.array_equal(raw_out[:, :, 0::2], raw_in)
    back = load_nifti(out)
    assert np.allclose(back.positions, up.positions, atol=1e-4)
    assert np.allclose(back.pixels, up.pixels, atol=0.5 * 0.5 + 1e-3)
    with pytest.raises(SlicelibError, match="already exists"):
        write_nifti(up, src, out)
    with pytest.raises(SlicelibError, match="input"):
        write_nifti(up, src, src, force=True)


# The command line, with tiny trained checkpoints --------------------------------------


def _train(cache: Path, run: Path, **model: float) -> Path:
    from slicelib.train import train

    cfg = TrainConfig(
        model="unet",
        epochs=1,
        batch_size=4,
        steps_per_epoch=1,
        val_max_slices=2,
        device="cpu",
        model_cfg=ModelConfig(features=4, **model),  # type: ignore[arg-type]
    )
    train(cfg, cache, run, progress=False)
    # One step leaves the output below 0 everywhere, which clipping to [0, 1] would turn
    # into constant predictions; centre it in the range instead.
    state = read_checkpoint(run / "best.pt")
    state["models"]["generator"]["final.bias"] += 0.5
    save_checkpoint(run / "best.pt", state)
    return run


@pytest.fixture(scope="module")
def runs(tiny_cache: Path, tmp_path_factory: pytest.TempPathFactory) -> dict[str, Path]:
    root = tmp_path_factory.mktemp("upsample_runs")
    return {
        "plain": _train(tiny_cache, root / "plain"),
        "dropout": _train(tiny_cache, root / "dropout", dropout=0.2),
    }


def test_cli_writes_a_labelled_series_read_back_by_slicelib_and_pydicom(
    runs: dict[str, Path], series: Path, tmp_path: Path
) -> None:
    out = tmp_path / "x2"
    assert main(["upsample", str(series), str(out), "--checkpoint", str(runs["plain"])]) == 0
    volume = load_series(out / "interpolated")
    source = load_series(series)
    assert volume.n_slices == 7
    assert np.array_equal(volume.pixels[0::2], source.pixels)
    assert volume.slice_spacing == pytest.approx(0.75, abs=1e-3)
    datasets = sorted(
        (pydicom.dcmread(p) for p in (out / "interpolated").iterdir()),
        key=lambda ds: int(ds.InstanceNumber),
    )
    assert [ds.ImageComments == SYNTHESIZED_COMMENT for ds in datasets] == [
        False, True, False, True, False, True, False,
    ]  # fmt: skip
    assert "unet (k=1)" in datasets[1].DerivationDescription
    record = json.loads((out / "upsample.json").read_text())
    assert record["slices_in"] == 4 and record["slices_out"] == 7
    assert record["synthesized_instances"] == [2, 4, 6]
    assert not (out / "uncertainty").exists()


def test_cli_refuses_overwrite_unless_forced(
    runs: dict[str, Path], series: Path, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    out = tmp_path / "x2"
    args = ["upsample", str(series), str(out), "--checkpoint", str(runs["plain"])]
    assert main(args) == 0
    before = sorted(p.name for p in (out / "interpolated").iterdir())
    capsys.readouterr()
    assert main(args) == 2
    assert "already exists (use --force" in capsys.readouterr().err
    assert main([*args, "--force"]) == 0
    assert sorted(p.name for p in (out / "interpolated").iterdir()) == before


@pytest.mark.parametrize(
    ("extra", "message"),
    [
        (["--factor", "3"], "--factor 3 is not supported"),
        (["--mc-samples", "4"], "--mc-samples needs --uncertainty"),
        (["--uncertainty"], "has no dropout"),
    ],
)
def test_cli_option_errors(
    runs: dict[str, Path],
    series: Path,
    tmp_path: Path,
    capsys: pytest.CaptureFixture[str],
    extra: list[str],
    message: str,
) -> None:
    args = ["upsample", str(series), str(tmp_path / "o"), "--checkpoint", str(runs["plain"])]
    assert main([*args, *extra]) == 2
    err = capsys.readouterr().err
    assert message in err and "Traceback" not in err
    assert not (tmp_path / "o").exists()


def test_cli_never_writes_into_the_input(
    runs: dict[str, Path], series: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    for out in (series / "x2", series, series.parent):
        rc = main(
            ["upsample", str(series), str(out), "--checkpoint", str(runs["plain"]), "--force"]
        )
        assert rc == 2
        assert "input" in capsys.readouterr().err
    assert sorted(p.name for p in series.iterdir()) == sorted(
        f"slice_{i:03d}.dcm" for i in range(4)
    )


def test_cli_input_errors(
    runs: dict[str, Path], tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    single, gappy, junk = tmp_path / "single", tmp_path / "gappy", tmp_path / "junk.txt"
    write_test_series(single, slices=1)
    write_test_series(gappy, slices=4, gaps=[1.5, 3.0, 1.5])
    junk.write_text("not an image")
    cases = [
        (single, "1 slice(s)"),
        (gappy, "non-uniform slice spacing"),
        (junk, "unreadable"),
        (tmp_path / "missing", "does not exist"),
    ]
    for path, message in cases:
        out = tmp_path / f"out_{path.name}"
        assert main(["upsample", str(path), str(out), "--checkpoint", str(runs["plain"])]) == 2
        assert message in capsys.readouterr().err
        assert not out.exists()


def test_cli_rejects_a_checkpoint_that_does_not_match_its_model(
    runs: dict[str, Path], series: Path, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    state = read_checkpoint(runs["plain"] / "best.pt")
    weights = state["models"]["generator"]
    weights["renamed.weight"] = weights.pop(next(iter(weights)))
    bad = tmp_path / "bad" / "best.pt"
    bad.parent.mkdir()
    save_checkpoint(bad, state)
    assert main(["upsample", str(series), str(tmp_path / "o"), "--checkpoint", str(bad)]) == 2
    assert f"checkpoint {bad}" in capsys.readouterr().err

    state = read_checkpoint(runs["plain"] / "best.pt")
    state["cache_config"]["size"] = 64  # says 64 px, trained at 32 px
    save_checkpoint(bad, state)
    assert main(["upsample", str(series), str(tmp_path / "o"), "--checkpoint", str(bad)]) == 2
    assert "trained at 32 px" in capsys.readouterr().err


def test_cli_uncertainty_series_with_mc_dropout_and_with_an_ensemble(
    runs: dict[str, Path], series: Path, tmp_path: Path
) -> None:
    out = tmp_path / "mc"
    args = ["upsample", str(series), str(out), "--checkpoint", str(runs["dropout"])]
    assert main([*args, "--uncertainty", "--mc-samples", "3"]) == 0
    std = load_series(out / "uncertainty")
    assert std.pixels.shape == (7, 20, 24)
    assert std.pixels.min() >= 0 and std.pixels[1::2].max() > 0
    assert np.all(std.pixels[0::2] == 0)
    assert "MC dropout, 3 passes" in json.loads((out / "upsample.json").read_text())["uncertainty"]

    out = tmp_path / "ens"
    args = ["upsample", str(series), str(out), "--checkpoint", str(runs["plain"])]
    assert main([*args, "--uncertainty", "--ensemble", str(runs["dropout"])]) == 0
    assert load_series(out / "uncertainty").pixels[1::2].max() > 0


def test_cli_nifti_in_nifti_out(runs: dict[str, Path], tmp_path: Path) -> None:
    src = tmp_path / "vol.nii.gz"
    write_nifti_volume(src, flip=False)
    out = tmp_path / "out"
    assert main(["upsample", str(src), str(out), "--checkpoint", str(runs["plain"])]) == 0
    img = nib.load(out / "vol_x2.nii.gz")
    assert img.shape == (12, 10, 9)
    assert np.allclose(img.affine[:3, 3], [10.0, -20.0, 30.0])
