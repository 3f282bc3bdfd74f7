"""One evaluation's results: per-slice rows, the per-method summary, what produced
them, and the sampling methods' standard deviations; saved as files beside each other.

``RESULTS.csv`` (rows), ``RESULTS_summary.csv``, ``RESULTS.json`` (configs, devices,
environment) and ``RESULTS.std.npz`` (only with a sampling method); see
:func:`output_paths`.
"""

from __future__ import annotations

import json
import math
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, cast

import numpy as np
import pandas as pd

from slicelib.errors import SlicelibError
from slicelib.io import atomic_write, write_json


def output_paths(out_csv: str | Path) -> dict[str, Path]:
    """Files written for ``RESULTS.csv``: rows, ``RESULTS_summary.csv``, ``RESULTS.json``
    (config and environment) and ``RESULTS.std.npz`` (only with a sampling method)."""
    out = Path(out_csv)
    return {
        "rows": out,
        "summary": out.with_name(f"{out.stem}_summary.csv"),
        "info": out.with_name(f"{out.stem}.json"),
        "std": out.with_name(f"{out.stem}.std.npz"),
    }


def _json_safe(value: Any) -> Any:
    if isinstance(value, dict):
        return {str(k): _json_safe(v) for k, v in value.items()}
    if isinstance(value, (list, tuple)):
        return [_json_safe(v) for v in value]
    if isinstance(value, float) and not math.isfinite(value):
        return str(value)
    return value


@dataclass
class Results:
    """One evaluation.

    ``rows``: one per method and slice (method, patient_id, slice_index, position, k,
    psnr, ssim, ssim_gauss, mae, ms_per_slice, fallback); ``summary``: one per method
    (:func:`slicelib.stats.summarize`); ``info``: configs, devices, environment.
    ``std`` holds the per-pixel standard deviations of the methods that draw several
    predictions per slice (empty without one): per method ``<m>/patient_id``,
    ``<m>/slice_index``, ``<m>/std_mean`` (mean per-pixel std of each slice), ``<m>/mae``
    (MAE of the mean), and for the first few slices ``<m>/example_mean``,
    ``<m>/example_std``, ``<m>/example_target`` (n, H, W) with ``<m>/example_slice``.
    ``pixels`` (not saved): per method every scored pixel's std and signed error of the
    mean, two float32 arrays (n, H, W), when the evaluation kept them. ``common``: the
    rows are restricted to the slices where k=1 and k=2 are both evaluable.
    """

    rows: pd.DataFrame
    summary: pd.DataFrame
    info: dict[str, Any]
    std: dict[str, np.ndarray] = field(default_factory=dict)
    pixels: dict[str, tuple[np.ndarray, np.ndarray]] = field(default_factory=dict)
    k: int | None = None
    common: bool = False

    @property
    def methods(self) -> list[str]:
        """The methods evaluated, in the summary's order."""
        return [str(m) for m in self.summary["method"]]

    def row(self, method: str) -> dict[str, Any]:
        """The summary row of ``method`` (KeyError when it was not evaluated)."""
        match = self.summary[self.summary["method"] == method]
        if match.empty:
            raise KeyError(method)
        return {str(key): value for key, value in match.iloc[0].items()}

    def save(self, out_csv: str | Path) -> dict[str, Path]:
        """Write the files of :func:`output_paths` atomically; returns those written."""
        paths = output_paths(out_csv)
        if paths["rows"].suffix.lower() != ".csv":
            raise SlicelibError(f"results file {paths['rows']} must end in .csv")

        def write_npz(tmp: Path) -> None:
            with tmp.open("wb") as handle:
                np.savez_compressed(handle, **cast(dict[str, Any], self.std))

        atomic_write(paths["rows"], lambda p: self.rows.to_csv(p, index=False))
        atomic_write(paths["summary"], lambda p: self.summary.to_csv(p, index=False))
        write_json(paths["info"], _json_safe(self.info))
        written = {key: paths[key] for key in ("rows", "summary", "info")}
        if self.std:
            atomic_write(paths["std"], write_npz)
            written["std"] = paths["std"]
        return written

    @classmethod
    def load(
        cls,
        csv: str | Path,
        *,
        k: int | None = None,
        common: bool = False,
        std_from: Path | None = None,
    ) -> Results:
        """The results saved at ``csv``; the standard deviations from ``std_from``
        (another results file of the same evaluation) when given."""
        paths = output_paths(csv)
        std_path = output_paths(std_from or csv)["std"]
        std: dict[str, np.ndarray] = {}
        if std_path.is_file():
            with np.load(std_path, allow_pickle=False) as data:
                std = {key: data[key] for key in data.files}
        return cls(
            rows=pd.read_csv(paths["rows"], dtype={"patient_id": str}),
            summary=pd.read_csv(paths["summary"]),
            info=json.loads(paths["info"].read_text()),
            std=std,
            k=k,
            common=common,
        )
