"""The data's identity follows its content (slicelib.data.fingerprint.CONTENT_RULE): moving
the collection or touching its files keeps every step of a study, trained runs included;
changing what a file holds does not."""

from __future__ import annotations

import os
import shutil
from pathlib import Path

import pytest

from slicelib.data import fingerprint
from slicelib.data.fingerprint import SAMPLE_BYTES, content_fingerprint
from slicelib.study import Study


def touch_all(root: Path, when: float = 1_700_000_000.0) -> None:
    for path in root.rglob("*"):
        if path.is_file():
            os.utime(path, (when, when))


def test_identity_follows_content_not_place_or_time(tmp_path: Path) -> None:
    root = tmp_path / "a"
    (root / "P1").mkdir(parents=True)
    big = root / "P1" / "big.dcm"
    big.write_bytes(bytes(range(256)) * 200)  # 51 KB: sampled at both ends
    (root / "P1" / "small.dcm").write_bytes(b"header and pixels")
    first = content_fingerprint(root)
    assert (first["files"], first["bytes"]) == (2, 51200 + 17)

    moved = tmp_path / "elsewhere" / "b"
    moved.parent.mkdir()
    root.rename(moved)
    touch_all(moved)
    assert content_fingerprint(moved) == first

    def changed(edit: int) -> bool:
        data = bytearray((moved / "P1" / "big.dcm").read_bytes())
        data[edit] ^= 0xFF
        (moved / "P1" / "big.dcm").write_bytes(bytes(data))
        try:
            return content_fingerprint(moved) != first
        finally:
            data[edit] ^= 0xFF
            (moved / "P1" / "big.dcm").write_bytes(bytes(data))

    assert changed(10) and changed(-10)  # the header, the end of the pixels
    assert not changed(SAMPLE_BYTES + 100)  # the middle of a file: not sampled (the rule)
    (moved / "P1" / "small.dcm").rename(moved / "P1" / "other.dcm")
    assert content_fingerprint(moved) != first


def test_memo_reads_only_new_or_touched_files(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    root, memo = tmp_path / "data", tmp_path / "memo.json"
    root.mkdir()
    for i in range(5):
        (root / f"{i}.dcm").write_bytes(bytes([i]) * 40_000)
    reads: list[Path] = []
    real = fingerprint.sample_digest

    def counting(path: Path, size: int) -> str:
        reads.append(path)
        return real(path, size)

    monkeypatch.setattr(fingerprint, "sample_digest", counting)
    first = content_fingerprint(root, memo)
    assert len(reads) == 5 and memo.is_file()
    reads.clear()
    assert content_fingerprint(root, memo) == first and reads == []
    os.utime(root / "3.dcm", (1e9, 1e9))
    assert content_fingerprint(root, memo) == first and reads == [root / "3.dcm"]
    memo.write_text("not json")  # a damaged memo costs time, never the identity
    assert content_fingerprint(root, memo) == first


def test_moving_and_touching_the_data_keeps_every_trained_run(
    smoke_cohort: Path, tmp_path: Path
) -> None:
    data, out = tmp_path / "data", tmp_path / "study"
    shutil.copytree(smoke_cohort, data)
    study = Study("smoke", out, data, device="cpu")
    run = study.run("unet", 1)  # scan, cache and a trained run
    hashes = {name: step.hash for name, step in study.steps().items()}
    trained = {p.name: p.stat().st_mtime_ns for p in run.iterdir()}
    cache = (out / "cache" / "manifest.json").stat().st_mtime_ns

    moved = tmp_path / "archive" / "Prostate"
    moved.parent.mkdir()
    data.rename(moved)
    touch_all(moved)
    again = Study("smoke", out, moved, device="cpu")
    assert {name: step.hash for name, step in again.steps().items()} == hashes
    assert again.run_step("unet_k1", again.train_config("unet", 1)).current()
    assert again.run("unet", 1) == run
    assert {p.name: p.stat().st_mtime_ns for p in run.iterdir()} == trained  # not retrained
    assert (out / "cache" / "manifest.json").stat().st_mtime_ns == cache

    # Another content is another collection: the cache and every run would be made again.
    victim = next(p for p in sorted(moved.rglob("*")) if p.is_file())
    content = victim.read_bytes()
    victim.write_bytes(content[:-1] + bytes([content[-1] ^ 0xFF]))
    other = Study("smoke", out, moved, device="cpu")
    assert other.cache_step().hash != hashes["cache"]
    assert other.step_hash("run/unet_k1") != hashes["run/unet_k1"]
