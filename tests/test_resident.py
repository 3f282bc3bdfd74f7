"""Device-resident triplets: the same batches as the DataLoader, batch for batch."""

from __future__ import annotations

from pathlib import Path

import pytest
import torch
from torch.utils.data import DataLoader, DistributedSampler

from slicelib.data.dataset import TripletDataset
from slicelib.data.resident import ResidentTriplets, cache_bytes, use_resident
from slicelib.errors import SlicelibError

CPU = torch.device("cpu")


@pytest.mark.parametrize(
    ("k", "crop", "augment", "world", "rank"),
    [(1, None, True, 1, 0), (2, 20, True, 1, 0), (1, 17, False, 2, 1), (1, None, False, 2, 0)],
)
def test_resident_batches_equal_loader_batches(
    tiny_cache: Path, k: int, crop: int | None, augment: bool, world: int, rank: int
) -> None:
    data = TripletDataset(tiny_cache, "train", k, crop=crop, augment=augment, seed=3)
    sampler: DistributedSampler[int] = DistributedSampler(
        data, num_replicas=world, rank=rank, shuffle=True, seed=3
    )
    loader = DataLoader(data, batch_size=5, sampler=sampler)
    resident = ResidentTriplets(data, sampler, batch_size=5, device=CPU)
    assert len(resident) == len(loader)
    flipped = 0
    for epoch in (1, 2):
        sampler.set_epoch(epoch)
        data.set_epoch(epoch)
        pairs = list(zip(loader, resident, strict=True))
        for expected, got in pairs:
            assert got.inputs.dtype == torch.float32
            torch.testing.assert_close(got.inputs, expected.inputs, rtol=0, atol=0)
            torch.testing.assert_close(got.target, expected.target, rtol=0, atol=0)
        flipped += sum(sum(data.draw(i, 32, 32)[2:]) for i in range(len(data)))
    assert (flipped > 0) == augment  # the augmented cases did flip and rotate


def test_modes(tiny_cache: Path) -> None:
    data = TripletDataset(tiny_cache, "train", 1)
    assert cache_bytes(data) == 3 * 20 * 32 * 32 * 2  # three float16 training volumes
    assert not use_resident(data, CPU, "auto")  # the CPU keeps its in-process loader
    assert not use_resident(data, CPU, "never")
    assert use_resident(data, CPU, "always")
    with pytest.raises(SlicelibError, match="data_on_device='gpu' is invalid"):
        use_resident(data, CPU, "gpu")  # type: ignore[arg-type]
