"""Evaluation on the tiny cache: rows, same slices for all methods, runs, bad input."""

from __future__ import annotations

import dataclasses
import json
from pathlib import Path

import numpy as np
import pandas as pd
import pytest
import torch

from slicelib import evaluate as ev
from slicelib.baselines import neighbours
from slicelib.cli import main
from slicelib.config import SMOKE, EvalConfig, FlowConfig, PrepareConfig, to_dict
from slicelib.data.cache import Cache, write_cache
from slicelib.errors import SlicelibError
from slicelib.metrics import psnr, ssim
from slicelib.results import Results

# Small and quick: the smoke preset's DDPM settings on 2 evenly spaced slices.
CFG = dataclasses.replace(SMOKE.eval, device="cpu", ddpm_max_slices=2)
N_SLICES = 20  # tiny_cache volumes


def _train_run(cache: Path, run_dir: Path, model: str, k: int = 1) -> Path:
    from slicelib.train import train

    cfg = SMOKE.train_config(
        model,  # type: ignore[arg-type]
        k,
        epochs=1,
        steps_per_epoch=1,
        batch_size=2,
        val_max_slices=2,
        device="cpu",
        model_cfg=dataclasses.replace(SMOKE.model, features=8),
    )
    train(cfg, cache, run_dir, resume=False, progress=False)
    return run_dir


@pytest.fixture(scope="module")
def runs(tiny_cache: Path, tmp_path_factory: pytest.TempPathFactory) -> dict[str, Path]:
    root = tmp_path_factory.mktemp("eval_runs")
    return {m: _train_run(tiny_cache, root / m, m) for m in ("unet", "ddpm")}


@pytest.fixture(scope="module")
def baseline_eval(tiny_cache: Path) -> Results:
    return ev.evaluate(tiny_cache, 1, CFG, progress=False)


def _slices(rows: pd.DataFrame, method: str) -> list[tuple[str, int]]:
    r = rows[rows["method"] == method]
    return list(zip(r["patient_id"], r["slice_index"]))


def test_baselines_write_one_row_per_method_and_slice(
    tiny_cache: Path, baseline_eval: Results
) -> None:
    rows = baseline_eval.rows
    assert list(rows.columns) == list(ev.ROW_COLUMNS)
    assert list(dict.fromkeys(rows["method"])) == ["nearest", "linear", "cubic", "flow"]
    test_ids = [e.patient_id for e in Cache(tiny_cache).entries("test")]
    expected = [(pid, i) for pid in test_ids for i in range(1, N_SLICES - 1)]
    for method in ("nearest", "linear", "cubic", "flow"):
        assert _slices(rows, method) == expected
    lin = rows[rows["method"] == "linear"].set_index("slice_index")
    np.testing.assert_allclose(lin["position"], lin.index / (N_SLICES - 1))
    # Spot-check one row against the metrics computed here.
    vol = np.asarray(Cache(tiny_cache).volume(test_ids[0]), dtype=np.float32)
    pred = np.clip(0.5 * (vol[4] + vol[6]), 0, 1)
    assert lin.loc[5, "psnr"] == pytest.approx(psnr(pred, vol[5], 1.0), abs=1e-6)
    assert lin.loc[5, "ssim_gauss"] == pytest.approx(ssim(pred, vol[5], 1.0, gaussian=True))
    cubic = rows[rows["method"] == "cubic"]
    assert sorted(cubic.loc[cubic["fallback"], "slice_index"]) == [1, 2, 17, 18]
    assert not rows.loc[rows["method"] != "cubic", "fallback"].any()
    assert (rows["ms_per_slice"] > 0).all()


def test_summary_and_files(baseline_eval: Results, tmp_path: Path) -> None:
    summary = baseline_eval.summary.set_index("method")
    assert summary.loc["linear", "psnr_gain_db"] == 0.0
    assert summary.loc["cubic", "fallback"] == 4
    assert (summary["n_slices"] == N_SLICES - 2).all()
    assert summary.loc["nearest", "psnr_mean"] < summary.loc["linear", "psnr_mean"]
    assert summary["device"].str.startswith("cpu").all()
    written = baseline_eval.save(tmp_path / "res.csv")
    assert set(written) == {"rows", "summary", "info"}  # no DDPM, no npz
    back = pd.read_csv(written["rows"])
    assert len(back) == len(baseline_eval.rows)
    assert (tmp_path / "res_summary.csv").is_file()
    info = json.loads((tmp_path / "res.json").read_text())
    assert info["k"] == 1 and info["eval_config"]["flow"] == to_dict(CFG.flow)
    assert "packages" in info["environment"]
    assert not list(tmp_path.glob(".*tmp"))
    text = ev.format_summary(baseline_eval.summary)
    assert "cubic fell back to linear on 4 slice(s)" in text


def test_common_restricts_to_slices_of_both_k(tiny_cache: Path) -> None:
    cfg = dataclasses.replace(CFG, common=True)
    k1 = ev.evaluate(tiny_cache, 1, cfg, methods=["linear"], progress=False).rows
    k2 = ev.evaluate(tiny_cache, 2, cfg, methods=["linear"], progress=False).rows
    assert list(k1["slice_index"]) == list(k2["slice_index"]) == list(range(2, N_SLICES - 2))


def test_runs_are_scored_and_ddpm_expanded(
    tiny_cache: Path, runs: dict[str, Path], tmp_path: Path
) -> None:
    result = ev.evaluate(
        tiny_cache, 1, CFG, [runs["unet"], runs["ddpm"]], methods=["linear"], progress=False
    )
    rows = result.rows
    names = list(dict.fromkeys(rows["method"]))
    assert names == ["linear", "unet", "ddpm_ancestral", "ddpm_ddim2", "ddpm_mean2"]
    assert _slices(rows, "unet") == _slices(rows, "linear")
    ddpm_slices = _slices(rows, "ddpm_ancestral")
    assert len(ddpm_slices) == 2 and ddpm_slices[0] == _slices(rows, "linear")[0]
    for name in ("ddpm_ddim2", "ddpm_mean2"):
        assert _slices(rows, name) == ddpm_slices
    assert rows[["psnr", "ssim", "mae"]].notna().all().all()
    assert result.info["methods"]["ddpm_mean2"]["subset"] is True
    assert result.info["runs"][str(runs["unet"])]["methods"] == ["unet"]
    # The per-pixel std across the two samples is kept and written.
    std_mean = result.std["ddpm_mean2/std_mean"]
    assert std_mean.shape == (2,) and (std_mean > 0).all()
    assert result.std["ddpm_mean2/example_std"].shape == (2, 32, 32)
    written = result.save(tmp_path / "with_runs.csv")
    with np.load(written["std"]) as npz:
        np.testing.assert_allclose(npz["ddpm_mean2/std_mean"], std_mean)


def test_ddpm_sampling_is_seeded(tiny_cache: Path, runs: dict[str, Path]) -> None:
    pid = Cache(tiny_cache).entries("test")[0].patient_id
    vol = np.asarray(Cache(tiny_cache).volume(pid), dtype=np.float32)
    batch = ev.Batch([ev.SliceRef(pid, 5, 5 / 19)], [neighbours(vol, 5, 1)], vol[5:6])

    def ancestral(seed: int) -> np.ndarray:
        cfg = dataclasses.replace(CFG, seed=seed)
        methods = ev.run_methods(
            runs["ddpm"], k=1, image_size=32, cfg=cfg, device=torch.device("cpu")
        )
        assert methods[0].name == "ddpm_ancestral"
        return methods[0].predict(batch).images

    first = ancestral(0)
    np.testing.assert_array_equal(first, ancestral(0))
    assert np.abs(first - ancestral(1)).max() > 1e-3


def test_run_for_another_k_or_size_fails(
    tiny_cache: Path, runs: dict[str, Path], tmp_path: Path
) -> None:
    with pytest.raises(SlicelibError, match=r"best\.pt.*at k=1.*expected.*k=2"):
        ev.evaluate(tiny_cache, 2, CFG, [runs["unet"]], progress=False)
    cache = Cache(tiny_cache)
    small = {
        e.patient_id: np.asarray(cache.volume(e.patient_id))[:, :24, :24] for e in cache.entries()
    }
    splits = {e.patient_id: e.split for e in cache.entries()}
    other = write_cache(tmp_path / "cache24", small, splits, PrepareConfig(size=24))
    with pytest.raises(SlicelibError, match="32 px.*expected.*24 px"):
        ev.evaluate(other.root, 1, CFG, [runs["unet"]], progress=False)


def test_checkpoint_with_mismatching_weights_fails(runs: dict[str, Path], tmp_path: Path) -> None:
    run_dir = tmp_path / "tampered"
    run_dir.mkdir()
    state = torch.load(runs["unet"] / "best.pt", weights_only=True)
    weights = state["models"]["generator"]
    dropped = next(iter(weights))
    del weights[dropped]
    torch.save(state, run_dir / "best.pt")
    with pytest.raises(SlicelibError, match=rf"tampered/best\.pt.*{dropped}.*missing"):
        ev.run_methods(run_dir, k=1, image_size=32, cfg=CFG, device=torch.device("cpu"))


def test_bad_input_is_one_line_error(tiny_cache: Path, tmp_path: Path) -> None:
    with pytest.raises(SlicelibError, match="unknown method 'spline'"):
        ev.evaluate(tiny_cache, 1, CFG, methods=["linear", "spline"], progress=False)
    with pytest.raises(SlicelibError, match="no checkpoint best.pt"):
        ev.evaluate(tiny_cache, 1, CFG, [tmp_path], progress=False)
    with pytest.raises(SlicelibError, match="run folder .* not found"):
        ev.evaluate(tiny_cache, 1, CFG, [tmp_path / "missing"], progress=False)
    with pytest.raises(SlicelibError, match="unknown flow method"):
        farneback = FlowConfig(method="farneback")  # type: ignore[arg-type]
        ev.evaluate(tiny_cache, 1, dataclasses.replace(CFG, flow=farneback), progress=False)
    cache = Cache(tiny_cache)
    vols = {e.patient_id: np.asarray(cache.volume(e.patient_id)) for e in cache.entries()}
    no_test = write_cache(
        tmp_path / "no_test", vols, dict.fromkeys(vols, "train"), PrepareConfig(size=32)
    )
    with pytest.raises(SlicelibError, match="test split is empty"):
        ev.evaluate(no_test.root, 1, CFG, progress=False)
    with pytest.raises(SlicelibError, match="too short"):
        ev.evaluate(tiny_cache, 10, CFG, progress=False)


def test_predict_slices_for_figures(tiny_cache: Path, runs: dict[str, Path]) -> None:
    pid = Cache(tiny_cache).entries("test")[0].patient_id
    out = ev.predict_slices(
        tiny_cache, 2, [(pid, 5), (pid, 9)], EvalConfig(device="cpu"), methods=["linear", "cubic"]
    )
    vol = np.asarray(Cache(tiny_cache).volume(pid), dtype=np.float32)
    assert out.inputs.shape == (2, 2, 32, 32) and out.targets.shape == (2, 32, 32)
    np.testing.assert_allclose(out.predictions["linear"][1], 0.5 * (vol[7] + vol[11]), atol=1e-6)
    np.testing.assert_array_equal(out.targets[0], vol[5])
    assert set(out.predictions) == {"linear", "cubic"}
    with pytest.raises(SlicelibError, match="no neighbours at k=2"):
        ev.predict_slices(tiny_cache, 2, [(pid, 1)], methods=["linear"])
    with pytest.raises(SlicelibError, match="not in the cache"):
        ev.predict_slices(tiny_cache, 2, [("NOBODY", 5)], methods=["linear"])


def test_cli_writes_results_and_reports_errors(
    tiny_cache: Path, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    out = tmp_path / "cli" / "k1.csv"
    argv = ["evaluate", "--cache", str(tiny_cache), "--k", "1", "--out", str(out)]
    code = main([*argv, "--methods", "nearest", "--flow", "ilk", "--no-progress"])
    assert code == 0
    printed = capsys.readouterr().out
    assert "linear" in printed and "nearest" in printed
    rows = pd.read_csv(out)
    assert set(rows["method"]) == {"linear", "nearest"}
    assert (tmp_path / "cli" / "k1_summary.csv").is_file()
    assert main([*argv, "--methods", "bicubic"]) == 2
    assert "error: unknown method 'bicubic'" in capsys.readouterr().err


def test_split_all_scores_every_patient_and_says_so(
    tiny_cache: Path, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    cache = Cache(tiny_cache)
    result = ev.evaluate(tiny_cache, 1, dataclasses.replace(CFG, split="all"), progress=False)
    assert set(result.rows["patient_id"]) == {e.patient_id for e in cache.entries()}
    assert result.info["split"] == "all" and result.info["n_patients"] == len(cache.entries())
    assert set(result.summary["split"]) == {"all"}
    val = ev.evaluate(tiny_cache, 1, dataclasses.replace(CFG, split="val"), progress=False)
    assert set(val.rows["patient_id"]) == {e.patient_id for e in cache.entries("val")}
    out = tmp_path / "all.csv"
    argv = ["evaluate", "--cache", str(tiny_cache), "--k", "1", "--out", str(out)]
    assert main([*argv, "--methods", "nearest", "--split", "all", "--no-progress"]) == 0
    assert "every patient of the cache" in capsys.readouterr().out
    assert json.loads(out.with_suffix(".json").read_text())["split"] == "all"
    with pytest.raises(SystemExit) as exit_info:
        main([*argv, "--split", "everyone"])
    assert exit_info.value.code == 2
    assert "--split: invalid choice" in capsys.readouterr().err


def test_slices_per_patient_are_the_same_at_both_k(tiny_cache: Path) -> None:
    cache = Cache(tiny_cache)
    refs = {k: ev.select_slices(cache, k, split="all", per_patient=4) for k in (1, 2)}
    assert [(r.patient_id, r.slice_index) for r in refs[1]] == [
        (r.patient_id, r.slice_index) for r in refs[2]
    ]
    indices = [r.slice_index for r in refs[1] if r.patient_id == cache.entries()[0].patient_id]
    # centres of four equal parts of the common slices 2..17, never the ends
    assert indices == [4, 8, 12, 16]
    with pytest.raises(SlicelibError, match="unknown split"):
        ev.select_slices(cache, 1, split="everyone")  # type: ignore[arg-type]
