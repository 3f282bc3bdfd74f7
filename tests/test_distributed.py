"""DistributedDataParallel on the CPU (gloo): two processes equal one with the same effective
batch, so the study adopts such a run; a run of another effective batch is another setting."""

from __future__ import annotations

import dataclasses
import json
import os
import subprocess
import sys
from pathlib import Path
from typing import Any

import pytest
import torch

from slicelib.checkpoint import read_checkpoint
from slicelib.config import SMOKE
from slicelib.distributed import DistInfo, env_info
from slicelib.errors import SlicelibError
from slicelib.io import OUTPUT_MARKER
from slicelib.models import build_generator
from slicelib.study import Study
from slicelib.train import train

pytestmark = pytest.mark.usefixtures("one_thread")


def test_two_gloo_processes_match_one_process(tiny_cache: Path, tmp_path: Path) -> None:
    # The basic GAN: two networks, the discriminator called twice per step. The effective
    # batch 4 (2 on each of 2 ranks) against batch 4 in one process; augmentation is
    # seeded per triplet, so it is the same in both.
    cfg = SMOKE.train_config("gan", 1, epochs=1, batch_size=4, device="cpu")
    single = train(cfg, tiny_cache, tmp_path / "single", progress=False)

    env = {**os.environ, "OMP_NUM_THREADS": "1"}
    command = [
        sys.executable, "-m", "torch.distributed.run", "--standalone", "--nproc_per_node", "2",
        "-m", "slicelib", "-q", "train", "--model", "gan", "--k", "1", "--preset", "smoke",
        "--cache", str(tiny_cache), "--out", str(tmp_path / "ddp"), "--device", "cpu",
        "--epochs", "1", "--batch-size", "4",
    ]  # fmt: skip
    done = subprocess.run(command, env=env, capture_output=True, text=True, timeout=300)
    assert done.returncode == 0, done.stderr[-3000:]
    assert done.stdout.count("gan k=1: best epoch 1") == 1  # rank 0 reports, alone

    one = read_checkpoint(tmp_path / "single" / "last.pt")
    two = read_checkpoint(tmp_path / "ddp" / "last.pt")
    assert (one["world_size"], two["world_size"]) == (1, 2)
    assert (two["train_config"]["batch_size"], two["process_batch"]) == (4, 2)
    for role in ("generator", "discriminator"):
        a, b = one["models"][role], two["models"][role]
        assert a.keys() == b.keys()
        for key in a:
            # Adam divides by the gradients' RMS: rounding in near-zero gradients moves a
            # weight by a small fraction of lr=1e-4, a wrong batch split by about lr
            assert torch.allclose(a[key], b[key], rtol=0, atol=2e-5), (role, key)
    # the tolerance is far below what training moved: the comparison can fail
    torch.manual_seed(cfg.seed)
    initial = build_generator("gan", cfg.model_cfg).state_dict()
    moved = max(float((one["models"]["generator"][k] - v).abs().max()) for k, v in initial.items())
    assert moved > 1e-4
    row1, row2 = single.history[0], two["history"][0]
    for column in ("train_loss", "train_l1", "train_d", "val_loss", "val_psnr", "val_ssim"):
        assert row2[column] == pytest.approx(row1[column], rel=1e-4), column
    assert sorted(p.name for p in (tmp_path / "ddp").iterdir()) == [
        OUTPUT_MARKER, "best.pt", "config.json", "history.csv", "last.pt", "model_card.md",
    ]  # fmt: skip

    # The rule (BATCH_RULE): the same effective batch is the same setting, so the study
    # adopts this run in place of its own 1-process run; another batch is not adopted.
    study = Study("smoke", tmp_path / "study", device="cpu")
    saved = json.loads((tmp_path / "ddp" / "config.json").read_text())
    saved["cache"]["dir"] = str(study.cache_dir)  # as if trained on the study's cache
    assert (saved["world_size"], saved["process_batch"]) == (2, 2)
    foreign = tmp_path / "foreign"
    foreign.mkdir()

    def adopted(record: dict[str, Any], batch: int) -> bool:
        (foreign / "config.json").write_text(json.dumps(record))
        return study._adoptable(foreign, dataclasses.replace(cfg, batch_size=batch))

    assert adopted(saved, 4)
    assert not adopted(saved, 2)  # a 1-process run of batch 2 is another setting
    # A run recorded before the rule (slicelib 0.1) took batch_size in every process: its
    # 2 processes of batch 4 are an effective batch of 8, not the preset's 4.
    old = {k: v for k, v in saved.items() if k != "process_batch"}
    old["train"] = {**saved["train"], "batch_size": 4}
    assert not adopted(old, 4) and adopted(old, 8)
    # Resuming follows the same rule: one process continues the run at batch 4, not at 2.
    with pytest.raises(SlicelibError, match="effective_batch=4, not 2"):
        train(dataclasses.replace(cfg, batch_size=2, epochs=2), tiny_cache, tmp_path / "ddp")


def test_env_info(monkeypatch: pytest.MonkeyPatch) -> None:
    for name in ("RANK", "WORLD_SIZE", "LOCAL_RANK"):
        monkeypatch.delenv(name, raising=False)
    assert env_info() == DistInfo(0, 1, 0) and not env_info().enabled

    monkeypatch.setenv("RANK", "3")
    monkeypatch.setenv("WORLD_SIZE", "4")
    monkeypatch.setenv("LOCAL_RANK", "1")
    info = env_info()
    assert (info.rank, info.world_size, info.local_rank) == (3, 4, 1)
    assert info.enabled and not info.is_main

    monkeypatch.setenv("RANK", "4")
    with pytest.raises(SlicelibError, match="RANK=4 is outside WORLD_SIZE=4"):
        env_info()
    monkeypatch.setenv("WORLD_SIZE", "two")
    with pytest.raises(SlicelibError, match="WORLD_SIZE='two' is not an integer"):
        env_info()
