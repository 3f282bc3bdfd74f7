"""Triplets from the cache: indices, content, options, workers, samplers; write_cache."""

from __future__ import annotations

import pickle
from pathlib import Path

import numpy as np
import pytest
import torch
from torch.utils.data import DataLoader, DistributedSampler

from slicelib.config import PrepareConfig
from slicelib.data.cache import Cache, write_cache
from slicelib.data.dataset import Triplet, TripletDataset, evaluable_indices
from slicelib.errors import SlicelibError

SIZE = 12
STEP = 0.02  # intensity added per slice


def ramp_volume(n_slices: int, seed: int) -> np.ndarray:
    """Slice s = P + s * STEP for an asymmetric pattern P: every transform shows."""
    pattern = np.random.default_rng(seed).random((SIZE, SIZE)) * 0.3
    s = np.arange(n_slices)[:, None, None]
    return (pattern[None] + s * STEP).astype(np.float32)


@pytest.fixture(scope="module")
def cache(tmp_path_factory: pytest.TempPathFactory) -> Cache:
    volumes = {"A": ramp_volume(10, 0), "B": ramp_volume(7, 1), "C": ramp_volume(9, 2)}
    splits = {"A": "train", "B": "train", "C": "val"}
    meta = {pid: {"series_uid": f"uid-{pid}", "spacing_mm": 1.5} for pid in volumes}
    target = tmp_path_factory.mktemp("ds") / "cache"
    return write_cache(target, volumes, splits, PrepareConfig(size=SIZE), meta)


@pytest.mark.parametrize(
    ("n", "k", "common", "expected"),
    [
        (10, 1, False, list(range(1, 9))),
        (10, 2, False, list(range(2, 8))),
        (10, 1, True, list(range(2, 8))),
        (10, 2, True, list(range(2, 8))),
        (10, 3, True, list(range(3, 7))),
        (5, 1, True, [2]),
        (4, 2, False, []),
        (1, 1, False, []),
    ],
)
def test_evaluable_indices(n: int, k: int, common: bool, expected: list[int]) -> None:
    assert evaluable_indices(n, k, common).tolist() == expected


def test_evaluable_indices_rejects_k0() -> None:
    with pytest.raises(SlicelibError, match="k must be >= 1"):
        evaluable_indices(10, 0)


@pytest.mark.parametrize("k", [1, 2, 3])
def test_triplets_hold_the_right_slices(cache: Cache, k: int) -> None:
    ds = TripletDataset(cache, "train", k)
    assert len(ds) == (10 - 2 * k) + (7 - 2 * k)
    for item in range(len(ds)):
        t = ds[item]
        assert isinstance(t, Triplet) and t.k == k
        assert t.inputs.shape == (2, SIZE, SIZE) and t.target.shape == (1, SIZE, SIZE)
        assert t.inputs.dtype == torch.float32
        vol = cache.volume(t.patient).astype(np.float32)
        np.testing.assert_array_equal(t.inputs[0].numpy(), vol[t.index - k])
        np.testing.assert_array_equal(t.inputs[1].numpy(), vol[t.index + k])
        np.testing.assert_array_equal(t.target[0].numpy(), vol[t.index])
        assert t.position == pytest.approx(t.index / (cache.entry(t.patient).n_slices - 1))


def test_common_subset_and_max_slices(cache: Cache) -> None:
    common = TripletDataset(cache, "train", 1, common=True)
    assert len(common) == len(TripletDataset(cache, "train", 2))
    assert min(common[i].index for i in range(len(common))) == 2
    full = TripletDataset(cache, "train", 1)
    sub = TripletDataset(cache, "train", 1, max_slices=5)
    assert len(sub) == 5
    picked = [(sub[i].patient, sub[i].index) for i in range(5)]
    assert picked == [(sub[i].patient, sub[i].index) for i in range(5)]  # deterministic
    assert picked[0] == (full[0].patient, full[0].index)
    last = full[len(full) - 1]
    assert picked[-1] == (last.patient, last.index)


def test_augment_and_crop_are_identical_across_channels(cache: Cache) -> None:
    ds = TripletDataset(cache, "train", 2, augment=True, crop=8, seed=3)
    changed = 0
    for item in range(len(ds)):
        t = ds[item]
        assert t.inputs.shape == (2, 8, 8) and t.target.shape == (1, 8, 8)
        # inputs = T(P + (i -/+ k) STEP), target = T(P + i STEP) for the same T.
        below = (t.target - t.inputs[0]).numpy()
        above = (t.inputs[1] - t.target).numpy()
        np.testing.assert_allclose(below, 2 * STEP, atol=2e-3)
        np.testing.assert_allclose(above, 2 * STEP, atol=2e-3)
        plain = cache.volume(t.patient)[t.index].astype(np.float32)
        windows = np.lib.stride_tricks.sliding_window_view(plain, (8, 8))
        changed += not np.any(np.all(windows == t.target[0].numpy(), axis=(2, 3)))
    assert changed > 0  # some samples were flipped or rotated


def test_set_epoch_reproducible_and_different(cache: Cache) -> None:
    ds = TripletDataset(cache, "train", 1, augment=True, crop=6, seed=0)
    first = torch.stack([ds[i].target for i in range(len(ds))])
    assert torch.equal(first, torch.stack([ds[i].target for i in range(len(ds))]))
    ds.set_epoch(1)
    assert not torch.equal(first, torch.stack([ds[i].target for i in range(len(ds))]))
    ds.set_epoch(0)
    assert torch.equal(first, torch.stack([ds[i].target for i in range(len(ds))]))


def test_pickles_without_open_files_and_loads_in_workers(cache: Cache) -> None:
    ds = TripletDataset(cache.root, "train", 1)
    _ = ds[0]  # opens a memmap
    clone = pickle.loads(pickle.dumps(ds))
    assert clone.cache._open == {}
    assert torch.equal(clone[3].inputs, ds[3].inputs)
    loader = DataLoader(ds, batch_size=4, num_workers=2)
    batches = list(loader)
    assert sum(len(b.patient) for b in batches) == len(ds)
    first = batches[0]
    assert first.inputs.shape == (4, 2, SIZE, SIZE) and first.target.shape == (4, 1, SIZE, SIZE)
    assert first.index.tolist() == [ds[i].index for i in range(4)]


def test_distributed_sampler_splits_the_triplets(cache: Cache) -> None:
    ds = TripletDataset(cache, "train", 1)
    seen = []
    for rank in range(2):
        sampler = DistributedSampler(ds, num_replicas=2, rank=rank, shuffle=True, seed=0)
        seen.append(set(sampler))
    assert seen[0] | seen[1] == set(range(len(ds)))
    assert len(seen[0] & seen[1]) <= len(ds) % 2  # the sampler pads an odd length by one


def test_bad_arguments(cache: Cache, tmp_path: Path) -> None:
    with pytest.raises(SlicelibError, match="unknown split"):
        TripletDataset(cache, "training", 1)
    with pytest.raises(SlicelibError, match="k must be"):
        TripletDataset(cache, "train", 0)
    with pytest.raises(SlicelibError, match="crop"):
        TripletDataset(cache, "train", 1, crop=SIZE + 1)
    with pytest.raises(SlicelibError, match="does not exist"):
        TripletDataset(tmp_path / "none", "train", 1)
    with pytest.raises(IndexError):
        TripletDataset(cache, "val", 1)[100]


def test_write_cache_validates_and_is_idempotent(cache: Cache, tmp_path: Path) -> None:
    cfg = PrepareConfig(size=SIZE)
    vol = ramp_volume(5, 0)
    with pytest.raises(SlicelibError, match="volume shape"):
        write_cache(tmp_path / "c1", {"A": vol[:, :8]}, {"A": "train"}, cfg)
    with pytest.raises(SlicelibError, match=r"in \[0, 1\]"):
        write_cache(tmp_path / "c1", {"A": vol * 100}, {"A": "train"}, cfg)
    with pytest.raises(SlicelibError, match="no split"):
        write_cache(tmp_path / "c1", {"A": vol}, {}, cfg)
    assert list(tmp_path.iterdir()) == []  # nothing half-written
    first = write_cache(tmp_path / "c1", {"A": vol}, {"A": "train"}, cfg)
    stamp = (first.root / "manifest.json").stat().st_mtime_ns
    again = write_cache(tmp_path / "c1", {"A": vol}, {"A": "train"}, cfg)
    assert (again.root / "manifest.json").stat().st_mtime_ns == stamp
    with pytest.raises(SlicelibError, match="other settings"):
        write_cache(tmp_path / "c1", {"A": vol * 0.5}, {"A": "train"}, cfg)
    replaced = write_cache(tmp_path / "c1", {"A": vol * 0.5}, {"A": "test"}, cfg, force=True)
    assert replaced.entries()[0].split == "test"
    assert sorted(p.name for p in tmp_path.iterdir()) == ["c1"]
