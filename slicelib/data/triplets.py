"""Which slices can be predicted from neighbours at distance k, and how many triplets."""

from __future__ import annotations

from collections.abc import Iterable
from typing import Any

import numpy as np

from slicelib.errors import SlicelibError

SPLITS: tuple[str, ...] = ("train", "val", "test")


def evaluable_indices(n_slices: int, k: int, common: bool = False) -> np.ndarray:
    """Target indices i (int64, ascending) with both S_{i-k} and S_{i+k} in the volume.

    ``k <= i <= S-1-k``; with ``common`` also ``2 <= i <= S-3`` (the subset where
    k=1 and k=2 can both be evaluated, used for every k=1 versus k=2 comparison).
    """
    if k < 1:
        raise SlicelibError(f"k must be >= 1 (got {k})")
    margin = max(k, 2) if common else k
    return np.arange(margin, n_slices - margin, dtype=np.int64)


def evenly_spaced(n: int, limit: int | None) -> np.ndarray:
    """Positions (int64, ascending, distinct) of at most ``limit`` evenly spaced items
    among ``n``, first and last included; all ``n`` when ``limit`` is None or larger."""
    if limit is None or limit >= n:
        return np.arange(n, dtype=np.int64)
    return np.unique(np.linspace(0, n - 1, limit).round().astype(np.int64))


def part_centres(indices: np.ndarray, count: int | None) -> np.ndarray:
    """The elements of ``indices`` at the centres of ``count`` equal parts of it (all of them
    when ``count`` is None or not smaller): evenly spaced, away from both ends."""
    if count is None or count >= len(indices):
        return indices
    centres = (np.arange(count) + 0.5) * len(indices) / count
    return indices[np.unique(centres.astype(np.int64))]


def cohort_statistics(entries: Iterable[Any]) -> dict[str, dict[str, int]]:
    """Supplement 1.3 counts per split and in total.

    ``entries``: objects with ``split`` and ``n_slices`` (cache entries). Returns
    ``{split: {"patients", "volumes", "slices", "triplets_k1", "triplets_k2",
    "triplets_common"}}`` for each split present, plus ``"total"``.
    """
    stats: dict[str, dict[str, int]] = {}
    for e in entries:
        for key in (e.split, "total"):
            s = stats.setdefault(
                key,
                dict.fromkeys(
                    (
                        "patients",
                        "volumes",
                        "slices",
                        "triplets_k1",
                        "triplets_k2",
                        "triplets_common",
                    ),
                    0,
                ),
            )
            s["patients"] += 1
            s["volumes"] += 1
            s["slices"] += e.n_slices
            s["triplets_k1"] += len(evaluable_indices(e.n_slices, 1))
            s["triplets_k2"] += len(evaluable_indices(e.n_slices, 2))
            s["triplets_common"] += len(evaluable_indices(e.n_slices, 1, common=True))
    order = [s for s in (*SPLITS, "total") if s in stats]
    return {k: stats[k] for k in order}


def format_statistics(stats: dict[str, dict[str, int]]) -> list[str]:
    """Lines of a small table of :func:`cohort_statistics` for the log."""
    lines = [
        f"{'split':<6} {'patients':>8} {'volumes':>7} {'slices':>7} "
        f"{'trip k=1':>8} {'trip k=2':>8} {'common':>7}"
    ]
    for split, s in stats.items():
        lines.append(
            f"{split:<6} {s['patients']:>8} {s['volumes']:>7} {s['slices']:>7} "
            f"{s['triplets_k1']:>8} {s['triplets_k2']:>8} {s['triplets_common']:>7}"
        )
    return lines
