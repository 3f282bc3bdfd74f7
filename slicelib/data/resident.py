"""Training triplets drawn from a cache held in the training device's memory.

A DataLoader hands over a few hundred 256-pixel triplets per second per worker
process; a GPU training the U-Net wants thousands. When the training split's
cache fits in the device's memory, :class:`ResidentTriplets` copies it there once
(in the cache dtype, float16: half the bytes) and builds each batch on the device
with a few indexing kernels.

The batches are the same as the loader's: the same order of triplets (the same
:class:`~torch.utils.data.DistributedSampler`, batch by batch), the same crops,
flips and rot90 (:meth:`TripletDataset.draw`, from the same ``(seed, epoch,
item)`` generators), the same float32 values. Only the small per-batch table of
slice indices and random choices is made on the host.
"""

from __future__ import annotations

import logging
from collections.abc import Iterable, Iterator, Sequence
from typing import NamedTuple

import numpy as np
import psutil
import torch

from slicelib.config import DataOnDevice
from slicelib.data.dataset import TripletDataset
from slicelib.errors import SlicelibError

log = logging.getLogger(__name__)

MEMORY_MARGIN = 0.8  # the cache may take at most this share of the device's free memory


class Batch(NamedTuple):
    """One training batch on the device. ``inputs``: float32 (B, 2, h, w) in [0, 1],
    (S_{i-k}, S_{i+k}); ``target``: float32 (B, 1, h, w), S_i."""

    inputs: torch.Tensor
    target: torch.Tensor


def cache_bytes(dataset: TripletDataset) -> int:
    """Bytes of the dataset's split's volumes in the cache dtype (what the device would hold)."""
    cache = dataset.cache
    itemsize = np.dtype(cache.config.dtype).itemsize
    return sum(n * cache.size * cache.size * itemsize for n in dataset.n_slices)


def free_memory(device: torch.device) -> int:
    """Bytes free for new tensors on ``device`` (CUDA: the driver's count; CPU: available RAM)."""
    if device.type == "cuda":
        free, _total = torch.cuda.mem_get_info(device)
        return int(free)
    return int(psutil.virtual_memory().available)


def use_resident(dataset: TripletDataset, device: torch.device, mode: DataOnDevice) -> bool:
    """Whether to train from a device-resident cache.

    ``never``: the loader. ``always``: resident whatever the device (on the CPU it
    holds the split in RAM). ``auto``: resident on CUDA when the split takes at most
    :data:`MEMORY_MARGIN` of the free device memory; the loader on the CPU, where it
    already reads in-process from the page cache.
    """
    if mode not in ("auto", "always", "never"):
        raise SlicelibError(f"data_on_device={mode!r} is invalid (choose auto, always or never)")
    if mode == "never" or (mode == "auto" and device.type != "cuda"):
        return False
    if dataset.motion is not None:  # flow estimates are read from the store on the host
        log.info("training data stays on the host: the inputs include flow estimates")
        return False
    need, free = cache_bytes(dataset), free_memory(device)
    fits = need <= MEMORY_MARGIN * free
    if mode == "auto" and not fits:
        log.info(
            "training data stays on the host: %.2f GB of cache, %.2f GB free on %s",
            need / 1e9, free / 1e9, device,
        )  # fmt: skip
    return fits or mode == "always"


class ResidentTriplets:
    """The triplets of ``dataset`` from a copy of its volumes on ``device``, in batches.

    ``sampler``: the order of triplet indices for this process (re-read on every
    iteration, so :meth:`~torch.utils.data.DistributedSampler.set_epoch` and
    :meth:`TripletDataset.set_epoch` work as with a DataLoader). ``batch_size``:
    triplets per batch; the last batch may be smaller (as the loader's).
    """

    def __init__(
        self,
        dataset: TripletDataset,
        sampler: Iterable[int],
        batch_size: int,
        device: torch.device,
    ) -> None:
        if batch_size < 1:
            raise SlicelibError(f"batch_size must be >= 1 (got {batch_size})")
        self.dataset, self.sampler, self.batch_size = dataset, sampler, batch_size
        self.device = device
        cache, size = dataset.cache, dataset.cache.size
        # One (total slices, size, size) tensor: slice s of patient p is row offsets[p] + s.
        starts = np.concatenate([[0], np.cumsum(dataset.n_slices)[:-1]]).astype(np.int64)
        self.volumes = torch.empty(
            (sum(dataset.n_slices), size, size),
            dtype=getattr(torch, cache.config.dtype),
            device=device,
        )
        for p, patient in enumerate(dataset.patients):
            vol = torch.from_numpy(np.array(cache.volume(patient)))  # a writable copy
            self.volumes[starts[p] : starts[p] + len(vol)].copy_(vol)
        k = dataset.k
        target = starts[dataset.index[:, 0]] + dataset.index[:, 1]  # (triplets,) rows of S_i
        # rows of (S_{i-k}, S_{i+k}, S_i) per triplet, the loader's channel order
        self.rows = np.stack([target - k, target + k, target], axis=1)
        log.info(
            "training data on %s: %d slices, %.2f GB",
            device, len(self.volumes), self.volumes.numel() * self.volumes.element_size() / 1e9,
        )  # fmt: skip

    def __len__(self) -> int:
        n = len(self.sampler)  # type: ignore[arg-type]
        return (n + self.batch_size - 1) // self.batch_size

    def __iter__(self) -> Iterator[Batch]:
        order = list(self.sampler)
        for start in range(0, len(order), self.batch_size):
            yield self.batch(order[start : start + self.batch_size])

    def batch(self, items: Sequence[int]) -> Batch:
        """The triplets ``items`` (dataset indices) as one batch on the device."""
        size, crop = self.dataset.cache.size, self.dataset.crop
        draws = np.array([self.dataset.draw(int(i), size, size) for i in items], dtype=np.int64)
        table = np.concatenate([self.rows[np.asarray(items, dtype=np.int64)], draws], axis=1)
        # one small host-to-device copy per batch, asynchronous from pinned memory
        host = torch.from_numpy(table)
        if self.device.type == "cuda":
            host = host.pin_memory()
        t = host.to(self.device, non_blocking=True)
        rows, top, left = t[:, :3], t[:, 3], t[:, 4]
        if crop is None:
            stack = self.volumes[rows]  # (B, 3, size, size)
        else:
            span = torch.arange(crop, device=self.device)
            ys = (top[:, None] + span)[:, None, :, None]  # (B, 1, crop, 1)
            xs = (left[:, None] + span)[:, None, None, :]  # (B, 1, 1, crop)
            stack = self.volumes[rows[:, :, None, None], ys, xs]  # (B, 3, crop, crop)
        if self.dataset.augment:
            flip_w, flip_h, rotate = (t[:, j].bool()[:, None, None, None] for j in (5, 6, 7))
            stack = torch.where(flip_w, stack.flip(-1), stack)
            stack = torch.where(flip_h, stack.flip(-2), stack)
            # np.rot90(axes=(1, 2)) and torch.rot90(dims=(-2, -1)) turn the same way
            stack = torch.where(rotate, stack.rot90(1, dims=(-2, -1)), stack)
        stack = stack.float()
        return Batch(inputs=stack[:, :2], target=stack[:, 2:])
