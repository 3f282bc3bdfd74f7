"""Data pipeline figures: scan headers/s (against a bare pydicom loop), prepare slices/s,
triplets/s from the cache at 256x256 on one worker.

Inputs are written on the fly: Siemens-like T2 axial series (320x320, 40 slices,
a 12 kB private header blob like a vendor's) with the test suite's DICOM factory.
"""

from __future__ import annotations

import dataclasses
import logging
import sys
import tempfile
import time
from collections.abc import Callable
from pathlib import Path

import numpy as np
import pydicom
from torch.utils.data import DataLoader

from slicelib.config import PrepareConfig, ScanConfig
from slicelib.data.dataset import TripletDataset
from slicelib.data.prepare import prepare
from slicelib.data.scan import read_headers, resolve_workers, scan, walk_files

sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "tests"))
from dicom_factory import write_cohort  # noqa: E402

PATIENTS = 10
SLICES = 40
MATRIX = 320
SIZE = 256


def timed(fn: Callable[[], object], repeats: int) -> tuple[float, float]:
    """Best (wall seconds, CPU seconds of this process) over ``repeats`` runs.

    On a shared machine the CPU time shows what the code costs; the wall time
    what the machine delivered at the moment.
    """
    wall, cpu = float("inf"), float("inf")
    for _ in range(repeats):
        w, c = time.perf_counter(), time.process_time()
        fn()
        wall = min(wall, time.perf_counter() - w)
        cpu = min(cpu, time.process_time() - c)
    return wall, cpu


def rate(n: int, seconds: tuple[float, float], unit: str) -> str:
    return f"{n / seconds[0]:8.0f} {unit}/s wall, {n / seconds[1]:8.0f} per CPU-second"


def bench_scan(root: Path) -> None:
    files = walk_files(root)
    n = len(files)

    def bare() -> None:
        for f in files:
            pydicom.dcmread(f, stop_before_pixels=True)

    def ours() -> None:
        for _ in read_headers(files, workers=1, progress=False):
            pass

    # Interleaved, best of 5: load from elsewhere on the machine hits both alike.
    t_bare, t_ours = (float("inf"), float("inf")), (float("inf"), float("inf"))
    for _ in range(5):
        b, o = timed(bare, 1), timed(ours, 1)
        t_bare = (min(t_bare[0], b[0]), min(t_bare[1], b[1]))
        t_ours = (min(t_ours[0], o[0]), min(t_ours[1], o[1]))
    print(f"scan: {n} files ({MATRIX}x{MATRIX}, 12 kB private header)")
    print(f"  bare dcmread(stop_before_pixels) loop : {rate(n, t_bare, 'headers')}")
    print(f"  slicelib header reader, 1 worker      : {rate(n, t_ours, 'headers')}")
    print(
        f"  ratio to bare (target >= 0.8)         : {t_bare[0] / t_ours[0]:8.2f} wall, "
        f"{t_bare[1] / t_ours[1]:8.2f} CPU"
    )
    cfg1 = ScanConfig(workers=1)
    wall1, _ = timed(lambda: scan(root, cfg1, progress=False), 3)
    workers = resolve_workers(0)
    cfg_all = dataclasses.replace(cfg1, workers=workers)
    wall_all, _ = timed(lambda: scan(root, cfg_all, progress=False), 3)
    print(f"  scan() end to end, 1 worker           : {n / wall1:8.0f} headers/s wall")
    print(f"  scan() end to end, {workers} workers          : {n / wall_all:8.0f} headers/s wall")


def bench_prepare(root: Path, cache_dir: Path) -> Path:
    cfg = PrepareConfig(size=SIZE)
    w, c = time.perf_counter(), time.process_time()
    cache = prepare(root, cache_dir, cfg, ScanConfig(workers=1), progress=False)
    seconds = (time.perf_counter() - w, time.process_time() - c)
    slices = sum(e.n_slices for e in cache.entries())
    print(f"prepare: {len(cache)} volumes, {slices} slices {MATRIX}x{MATRIX} -> {SIZE}x{SIZE}")
    print(f"  scan, load, normalise, resize, write  : {rate(slices, seconds, 'slices')}")
    return cache_dir


def bench_triplets(cache_dir: Path) -> None:
    print(f"triplets: cache at {SIZE}x{SIZE} float16, page cache warm (target >= 2000/s)")
    for label, options in (("plain", {}), ("flips+rot90", {"augment": True})):
        ds = TripletDataset(cache_dir, "train", 1, **options)  # type: ignore[arg-type]
        order = np.random.default_rng(0).permutation(np.tile(np.arange(len(ds)), 8))

        def run(ds: TripletDataset = ds, order: np.ndarray = order) -> None:
            for i in order:
                ds[int(i)]

        figures = rate(len(order), timed(run, 3), "triplets")
        print(f"  __getitem__, {label:<12}             : {figures}")
    ds = TripletDataset(cache_dir, "train", 1, augment=True)
    for workers in (0, 1, 2):
        # 0: batches are loaded in the training process itself (the CPU default)
        loader = DataLoader(
            ds, batch_size=4, shuffle=True, num_workers=workers, persistent_workers=workers > 0
        )

        def epochs(loader: DataLoader = loader) -> None:
            for _ in range(4):
                for _ in loader:
                    pass

        wall, _ = timed(epochs, 2)
        label = f"{workers} worker{'s' if workers != 1 else ''}"
        print(
            f"  DataLoader, {label:<9}, batch 4, augment: {4 * len(ds) / wall:8.0f} triplets/s wall"
        )


def main() -> None:
    logging.getLogger("slicelib").setLevel(logging.WARNING)
    with tempfile.TemporaryDirectory(prefix="bench_data_") as tmp:
        root = Path(tmp) / "dicom"
        start = time.perf_counter()
        write_cohort(
            root,
            PATIENTS,
            SLICES,
            rows=MATRIX,
            cols=MATRIX,
            private_bytes=12_000,
            pixel_spacing=(0.5, 0.5),
        )
        print(f"(wrote {PATIENTS * SLICES} files in {time.perf_counter() - start:.1f} s)")
        bench_scan(root)
        cache_dir = bench_prepare(root, Path(tmp) / "cache")
        bench_triplets(cache_dir)


if __name__ == "__main__":
    main()
