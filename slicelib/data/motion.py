"""Motion-compensated estimates of cache slices, computed once and kept with the cache.

The motion-compensated network (``mcnet``) takes the two neighbours of a slice and the
optical-flow estimate of it (:func:`slicelib.baselines.flow`, both neighbours warped
half-way). Optical flow costs about 13 ms per 128 px slice on one core, more than a
training step of that network, so the estimates of the slices a run trains and
validates on are computed once, in worker processes, and kept in the cache folder::

    <cache>/motion/<flow settings>/k<k>/<patient>.npy        (n, H, W) float16
    <cache>/motion/<flow settings>/k<k>/<patient>.index.npy  (n,) slice indices, ascending

Later runs (other budgets, seeds, models) read them back; slices not there yet are
added, each patient's files rewritten atomically under the store's lock.
"""

from __future__ import annotations

import concurrent.futures as cf
import logging
import os
from collections.abc import Iterable, Mapping
from pathlib import Path

import numpy as np
import torch

from slicelib.baselines import flow, neighbours
from slicelib.config import FlowConfig, to_dict
from slicelib.data.cache import Cache
from slicelib.data.scan import die_with_parent
from slicelib.errors import SlicelibError
from slicelib.io import atomic_write
from slicelib.locking import hold_file_lock

log = logging.getLogger(__name__)

FOLDER = "motion"


def flow_key(cfg: FlowConfig) -> str:
    """The store's folder name for ``cfg``: ``tvl1-num_warp3-num_iter5-attachment30.0``."""
    fields = to_dict(cfg)
    method = fields.pop("method")
    if method != "tvl1":  # only TV-L1 reads the other settings
        return str(method)
    return "-".join([str(method), *(f"{k}{v}" for k, v in fields.items())])


def _estimates(volume_path: str, k: int, indices: list[int], cfg: FlowConfig) -> np.ndarray:
    """The flow estimates (n, H, W) float16 of ``indices`` of one cache volume."""
    volume = np.load(volume_path, mmap_mode="r")
    out = [flow(nb.before, nb.after, cfg) for nb in (neighbours(volume, i, k) for i in indices)]
    return np.clip(np.stack(out), 0.0, 1.0).astype(np.float16)


def with_estimate(inputs: torch.Tensor, cfg: FlowConfig) -> torch.Tensor:
    """Neighbours (N, 2, H, W) in [0, 1] -> (N, 3, H, W): the flow estimate of the middle
    slice appended as a third channel (computed with numpy, on the inputs' device)."""
    pairs = inputs.detach().float().cpu().numpy()
    estimates = np.stack([np.clip(flow(a, b, cfg), 0.0, 1.0) for a, b in pairs[:, :2]])
    extra = torch.from_numpy(estimates[:, None].astype(np.float32)).to(inputs.device)
    return torch.cat([inputs[:, :2], extra.to(inputs.dtype)], dim=1)


class MotionStore:
    """The flow estimates of one cache at distance ``k`` with the settings ``cfg``."""

    def __init__(self, cache: Cache, k: int, cfg: FlowConfig) -> None:
        self.cache, self.k, self.cfg = cache, k, cfg
        self.folder = cache.root / FOLDER / flow_key(cfg) / f"k{k}"
        self._loaded: dict[str, tuple[np.ndarray, np.ndarray]] = {}

    def _paths(self, patient: str) -> tuple[Path, Path]:
        return self.folder / f"{patient}.index.npy", self.folder / f"{patient}.npy"

    def _read(self, patient: str) -> tuple[np.ndarray, np.ndarray]:
        index_path, data_path = self._paths(patient)
        if not index_path.is_file():
            return np.zeros(0, dtype=np.int64), np.zeros((0, 1, 1), dtype=np.float16)
        try:
            return np.load(index_path), np.load(data_path, mmap_mode="r")
        except (OSError, ValueError) as exc:
            raise SlicelibError(f"motion estimates {data_path}: unreadable ({exc})") from None

    def ensure(self, wanted: Mapping[str, Iterable[int]], workers: int = 0) -> int:
        """Compute and store the estimates of ``wanted`` (patient -> slice indices) that the
        store lacks, in ``workers`` processes (0: one per core); returns how many."""
        todo = {}
        for patient, indices in wanted.items():
            have = set(self._read(patient)[0].tolist())
            missing = sorted(set(int(i) for i in indices) - have)
            if missing:
                todo[patient] = missing
        if not todo:
            return 0
        try:
            self.folder.mkdir(parents=True, exist_ok=True)
        except OSError as exc:
            raise SlicelibError(f"cannot write motion estimates to {self.folder} ({exc})") from None
        count = sum(len(v) for v in todo.values())
        log.info("optical flow for %d slices at k=%d (%s)", count, self.k, flow_key(self.cfg))
        with hold_file_lock(self.folder / ".lock", f"motion estimates {self.folder}", wait=True):
            workers = workers or os.cpu_count() or 1
            jobs = [
                (str(self.cache.entry(p).path), self.k, idx, self.cfg) for p, idx in todo.items()
            ]
            if workers == 1 or count < 16:
                results = [_estimates(*job) for job in jobs]
            else:
                with cf.ProcessPoolExecutor(
                    max_workers=workers, initializer=die_with_parent, initargs=(os.getpid(),)
                ) as pool:
                    results = list(pool.map(_estimates, *zip(*jobs)))
            for (patient, indices), new in zip(todo.items(), results):
                self._merge(patient, np.asarray(indices, dtype=np.int64), new)
        self._loaded.clear()
        return count

    def _merge(self, patient: str, indices: np.ndarray, new: np.ndarray) -> None:
        """Add ``new`` estimates of ``indices`` to the patient's files (atomically)."""
        old_index, old = self._read(patient)
        index = np.concatenate([old_index, indices])
        data = np.concatenate([np.asarray(old), new]) if len(old_index) else new
        order = np.argsort(index, kind="stable")
        index_path, data_path = self._paths(patient)
        atomic_write(data_path, lambda tmp: np.save(tmp, data[order]))
        atomic_write(index_path, lambda tmp: np.save(tmp, index[order]))

    def get(self, patient: str, index: int) -> np.ndarray:
        """The estimate (H, W) float16 of slice ``index`` of ``patient`` (stored before)."""
        if patient not in self._loaded:
            self._loaded[patient] = self._read(patient)
        indices, data = self._loaded[patient]
        at = int(np.searchsorted(indices, index))
        if at >= len(indices) or indices[at] != index:
            raise SlicelibError(
                f"no motion estimate of slice {index} of {patient} at k={self.k} in {self.folder}"
            )
        return np.asarray(data[at])

    def __getstate__(self) -> dict[str, object]:
        return {**self.__dict__, "_loaded": {}}  # memmaps stay in the process that opened them
