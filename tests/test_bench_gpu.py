"""``python -m benchmarks gpu --device cpu`` at tiny sizes: every part runs and reports."""

from __future__ import annotations

import json
import math
from pathlib import Path

import pytest

from benchmarks.__main__ import main


@pytest.mark.usefixtures("one_thread")
def test_gpu_benchmark_runs_on_the_cpu(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    out = tmp_path / "gpu.json"
    argv = ["gpu", "--device", "cpu", "--steps", "1", "--triplets", "40", "--size", "16"]
    assert main([*argv, "--models", "unet,ddpm", "--out", str(out)]) == 0
    results = json.loads(out.read_text(encoding="utf-8"))
    assert [r["model"] for r in results["models"]] == ["unet", "ddpm"]
    for row in results["models"]:
        assert row["gflop_per_sample"] > 0 and row["samples_per_s"] > 0
        assert math.isclose(
            row["of_peak"], row["samples_per_s"] / row["limit_samples_per_s"], rel_tol=1e-9
        )
    assert {r["source"] for r in results["data_path"]} == {
        "DataLoader, 0 workers",
        "device-resident",
    }
    assert results["paper_epoch"]["triplets"] == 76  # two 40-slice volumes at k=1
    assert [r["ms_per_slice"] > 0 for r in results["sampling"]] == [True, True]
    assert results["ddp"]["backend"] == "gloo" and results["ddp"]["ddp_steps_per_s"] > 0
    assert "GFLOP/sample" in capsys.readouterr().out


def test_options_need_one_benchmark(capsys: pytest.CaptureFixture[str]) -> None:
    assert main(["gpu", "data", "--device", "cpu"]) == 2
    assert "exactly one benchmark" in capsys.readouterr().out
