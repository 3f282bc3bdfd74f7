"""Seeded patient-level split into train / val / test."""

from __future__ import annotations

import logging
from collections.abc import Iterable

import numpy as np

from slicelib.errors import SlicelibError

log = logging.getLogger(__name__)


def split_counts(n: int, fractions: tuple[float, float, float]) -> tuple[int, int, int]:
    """Patients in (train, val, test) for ``n`` patients.

    Rounded from ``fractions``; with 3 or more patients val and test get at least
    one each and train keeps at least one.
    """
    if len(fractions) != 3 or min(fractions) < 0 or abs(sum(fractions) - 1.0) > 1e-6:
        raise SlicelibError(
            f"split fractions must be 3 non-negative numbers summing to 1 (got {fractions})"
        )
    n_val = round(n * fractions[1])
    n_test = round(n * fractions[2])
    if n >= 3:
        n_val, n_test = max(1, n_val), max(1, n_test)
    while n_val + n_test > max(0, n - 1):
        if n_test >= n_val and n_test > 0:
            n_test -= 1
        elif n_val > 0:
            n_val -= 1
        else:
            break
    return n - n_val - n_test, n_val, n_test


def split_patients(
    patient_ids: Iterable[str], fractions: tuple[float, float, float], seed: int
) -> dict[str, str]:
    """{patient: "train" | "val" | "test"}: a seeded shuffle of the sorted ids.

    The same ids and seed give the same split whatever the input order.
    """
    ids = sorted(set(patient_ids))
    n_train, n_val, _ = split_counts(len(ids), fractions)
    if 0 < len(ids) < 3:
        log.warning("only %d patient(s): val and/or test split will be empty", len(ids))
    order = np.random.default_rng(seed).permutation(len(ids))
    splits: dict[str, str] = {}
    for rank, i in enumerate(order):
        if rank < n_train:
            splits[ids[i]] = "train"
        elif rank < n_train + n_val:
            splits[ids[i]] = "val"
        else:
            splits[ids[i]] = "test"
    return dict(sorted(splits.items()))
