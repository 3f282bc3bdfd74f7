"""Slice triplets (S_{i-k}, S_i, S_{i+k}) from the cache as a PyTorch dataset.

Volumes are memory-mapped lazily in each process (the dataset pickles without
open files), so it works with DataLoader workers and DistributedSampler.
Augmentation (horizontal flip, vertical flip, rot90, p=0.5 each, as the
original) and random crops are drawn from a generator seeded by
``(seed, epoch, index)``: reproducible, and different each epoch after
:meth:`TripletDataset.set_epoch`.
"""

from __future__ import annotations

from pathlib import Path
from typing import NamedTuple

import numpy as np
import torch
from torch.utils.data import Dataset

from slicelib.config import FlowConfig
from slicelib.data.cache import Cache
from slicelib.data.motion import MotionStore
from slicelib.data.triplets import evaluable_indices, evenly_spaced, part_centres
from slicelib.errors import SlicelibError

__all__ = ["Triplet", "TripletDataset", "evaluable_indices"]


CAST_CHUNK = 16_384  # elements: below torch's grain size, so each cast runs on this thread


def to_float32(array: np.ndarray) -> torch.Tensor:
    """A C-contiguous float16/float32 array as a new float32 tensor of the same shape.

    torch casts float16 several times faster than numpy; casting in chunks keeps
    every call below torch's parallel grain size, so no intra-op threads are woken
    for a few hundred kilobytes (that costs more than it saves in loader processes).
    """
    src = torch.from_numpy(array).reshape(-1)
    out = torch.empty(src.numel(), dtype=torch.float32)
    for start in range(0, src.numel(), CAST_CHUNK):
        out[start : start + CAST_CHUNK].copy_(src[start : start + CAST_CHUNK])
    return out.view(array.shape)


class Triplet(NamedTuple):
    """One sample. ``inputs``: float32 (2, H, W) in [0, 1], (S_{i-k}, S_{i+k}) (and their
    flow estimate of S_i as a third channel, with a motion store);
    ``target``: float32 (1, H, W), S_i; ``position``: i / (S - 1) in [0, 1]."""

    inputs: torch.Tensor
    target: torch.Tensor
    patient: str
    index: int  # type: ignore[assignment]  # the contract's name; shadows tuple.index
    k: int
    position: float


class TripletDataset(Dataset[Triplet]):
    """Every evaluable triplet at distance ``k`` of one split of a cache.

    ``crop``: random square crop of this many pixels (None: whole slices).
    ``augment``: random flips and rot90, identical for inputs and target.
    ``common``: only targets where k=1 and k=2 are both evaluable (2 <= i <= S-3).
    ``max_slices``: an evenly spaced, deterministic subset of at most this many
    triplets (e.g. a quick validation pass). ``slices_per_patient``: at most this many
    evenly spaced target slices of each patient (the centres of equal parts).
    ``motion``: the inputs get a third channel, the flow estimate of the target slice with
    these settings (:class:`~slicelib.data.motion.MotionStore`, computed once for the
    dataset's triplets and kept with the cache).
    """

    def __init__(
        self,
        cache: Cache | str | Path,
        split: str,
        k: int,
        *,
        crop: int | None = None,
        augment: bool = False,
        common: bool = False,
        seed: int = 0,
        max_slices: int | None = None,
        slices_per_patient: int | None = None,
        motion: FlowConfig | None = None,
    ) -> None:
        self.cache = cache if isinstance(cache, Cache) else Cache(cache)
        if k < 1:
            raise SlicelibError(f"k must be >= 1 (got {k})")
        size = self.cache.size
        if crop is not None and not 1 <= crop <= size:
            raise SlicelibError(f"crop must be between 1 and the cache size {size} (got {crop})")
        if max_slices is not None and max_slices < 1:
            raise SlicelibError(f"max_slices must be >= 1 (got {max_slices})")
        self.split, self.k, self.crop = split, k, crop
        self.augment, self.common, self.seed = augment, common, seed
        self.epoch = 0
        entries = self.cache.entries(split)
        self.patients = [e.patient_id for e in entries]
        self.n_slices = [e.n_slices for e in entries]
        pairs = [
            (p, i)
            for p, e in enumerate(entries)
            for i in part_centres(evaluable_indices(e.n_slices, k, common), slices_per_patient)
        ]
        index = np.asarray(pairs, dtype=np.int64).reshape(-1, 2)
        if max_slices is not None and len(index) > max_slices:
            index = index[evenly_spaced(len(index), max_slices)]
        self.index = index
        self.motion: MotionStore | None = None
        if motion is not None:
            self.motion = MotionStore(self.cache, k, motion)
            wanted: dict[str, list[int]] = {}
            for p, i in index.tolist():
                wanted.setdefault(self.patients[p], []).append(i)
            self.motion.ensure(wanted)

    def __len__(self) -> int:
        return len(self.index)

    def arrays(self) -> tuple[np.ndarray, np.ndarray]:
        """Every triplet as float32 arrays: inputs (N, 2, H, W) and targets (N, H, W), in
        the dataset's order (as drawn: crop and augmentation apply when set)."""
        items = [self[i] for i in range(len(self))]
        inputs = np.stack([it.inputs.numpy() for it in items]).astype(np.float32)
        return inputs, np.stack([it.target[0].numpy() for it in items]).astype(np.float32)

    def set_epoch(self, epoch: int) -> None:
        """Change the random crops and augmentations (call once per epoch, in every process)."""
        self.epoch = int(epoch)

    def _rng(self, item: int) -> np.random.Generator:
        return np.random.default_rng((self.seed, self.epoch, item))

    def draw(self, item: int, height: int, width: int) -> tuple[int, int, bool, bool, bool]:
        """The random choices of triplet ``item`` (0 <= item < len) this epoch: crop corner
        ``(top, left)`` (0, 0 without cropping) and ``(flip_w, flip_h, rotate)`` (all False
        without augmentation). Applied in that order: flip along W, along H, then rot90."""
        if not (self.crop or self.augment):
            return 0, 0, False, False, False
        rng = self._rng(item)
        top = left = 0
        if self.crop is not None:
            top = int(rng.integers(0, height - self.crop + 1))
            left = int(rng.integers(0, width - self.crop + 1))
        if not self.augment:
            return top, left, False, False, False
        flip_w, flip_h, rotate = (rng.random(3) < 0.5).tolist()
        return top, left, flip_w, flip_h, rotate

    def __getitem__(self, item: int) -> Triplet:
        if not -len(self) <= item < len(self):
            raise IndexError(f"triplet {item} out of range ({len(self)})")
        p, i = (int(v) for v in self.index[item])
        patient, k = self.patients[p], self.k
        vol = self.cache.volume(patient)
        h, w = vol.shape[1:]
        top, left, flip_w, flip_h, rotate = self.draw(item % len(self), h, w)
        ch, cw = (self.crop, self.crop) if self.crop is not None else (h, w)
        # Slices i-k, i+k, i in one read, still in the cache dtype (float16: half the bytes).
        stack = vol[[i - k, i + k, i], top : top + ch, left : left + cw]
        if self.motion is not None:  # the flow estimate of S_i, cropped alike, before S_i
            estimate = self.motion.get(patient, i)[None, top : top + ch, left : left + cw]
            stack = np.concatenate([stack[:2], estimate.astype(stack.dtype), stack[2:]])
        if self.augment:
            if flip_w:
                stack = stack[:, :, ::-1]
            if flip_h:
                stack = stack[:, ::-1, :]
            if rotate:
                stack = np.rot90(stack, 1, axes=(1, 2))
            stack = np.ascontiguousarray(stack)
        tensor = to_float32(stack)
        return Triplet(
            inputs=tensor[:-1],
            target=tensor[-1:],
            patient=patient,
            index=i,
            k=k,
            position=i / (self.n_slices[p] - 1),
        )
