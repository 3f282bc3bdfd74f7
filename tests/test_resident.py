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


@pytest.mark.usefixtures("one_thread")
def test_training_from_resident_data_gives_the_same_weights(
    tiny_cache: Path, tmp_path: Path
) -> None:
    from slicelib.checkpoint import read_checkpoint
    from slicelib.config import SMOKE, ModelConfig
    from slicelib.train import train

    def run(mode: str) -> dict[str, torch.Tensor]:
        cfg = SMOKE.train_config(
            "cnn", 1, epochs=2, batch_size=4, steps_per_epoch=3, val_max_slices=4, crop=24,
            device="cpu", model_cfg=ModelConfig(features=8, cnn_blocks=2),
            data_on_device=mode,
        )  # fmt: skip
        train(cfg, tiny_cache, tmp_path / mode, progress=False)
        return dict(read_checkpoint(tmp_path / mode / "last.pt")["models"]["generator"])

    loader, resident = run("never"), run("always")
    assert loader.keys() == resident.keys()
    assert all(torch.equal(loader[key], resident[key]) for key in loader)
