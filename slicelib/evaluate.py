"""Score every method on a cache (its test split by default): one row per method and slice.

A method is an :class:`~slicelib.interpolator.Interpolator` with a name (the
:class:`~slicelib.methods.MethodSpec` of a trained run's sampler, a classical method's
name, or any name given with an interpolator): :class:`Method`. Classical methods are
:class:`~slicelib.baselines.BaselineInterpolator` s, which also get the wider context
the cubic one uses (and record where it fell back to linear); each trained run
(``best.pt``) adds one method, the DDPM and the refiner several (ancestral sampling with
all T steps, DDIM with each of ``EvalConfig.ddim_steps`` steps, the mean of
``EvalConfig.ddpm_samples`` ancestral samples).

All methods are scored on the same slices, except that a method may be restricted to
an evenly spaced subset (the DDPM's ``EvalConfig.ddpm_max_slices``); the summary's gains
and paired tests are always computed on the slices two methods share. Predictions are
clipped to [0, 1] and scored with data range 1 (:mod:`slicelib.metrics`). Inference
time is measured per batch, after one warm-up call, and divided by the batch's slices.
A method that draws several predictions per slice also gives its per-pixel standard
deviation (:attr:`Results.std`; every pixel with ``keep_pixels``, for calibration).
"""

from __future__ import annotations

import logging
import math
import time
from collections.abc import Iterator, Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, NamedTuple, cast

import numpy as np
import pandas as pd
import torch
from tqdm import tqdm

from slicelib.baselines import (
    FLOW_METHODS,
    BaselineInterpolator,
    Neighbours,
    neighbours,
)
from slicelib.checkpoint import LoadedRun, load_run
from slicelib.config import EVAL_SPLITS, EvalConfig, EvalSplit, to_dict
from slicelib.data.cache import Cache
from slicelib.data.triplets import evaluable_indices, evenly_spaced, part_centres
from slicelib.device import resolve_device
from slicelib.environment import device_label, record_environment
from slicelib.errors import SlicelibError
from slicelib.interpolator import Interpolator, Predictor, with_std
from slicelib.methods import MethodSpec
from slicelib.metrics import clip01, slice_metrics
from slicelib.results import Results
from slicelib.stats import KEY, METRICS, MIN_TEST_PATIENTS, summarize

__all__ = [
    "ROW_COLUMNS",
    "Batch",
    "Method",
    "Prediction",
    "SlicePredictions",
    "SliceRef",
    "build_methods",
    "evaluate",
    "format_summary",
    "predict_slices",
    "predictor_for",
    "run_methods",
    "sampling_specs",
    "select_slices",
    "summarize_on_slices",
]

log = logging.getLogger(__name__)

# One row per method and scored slice: what identifies it, its metrics, the method's time
# per slice and whether a classical method fell back to linear there.
ROW_COLUMNS: tuple[str, ...] = (
    ("method", *KEY, "position", "k") + METRICS + ("ms_per_slice", "fallback")
)
REFERENCE = "linear"
DATA_RANGE = 1.0
CPU = torch.device("cpu")


class SliceRef(NamedTuple):
    """One target slice: patient, index i in the volume, and i / (S - 1)."""

    patient_id: str
    slice_index: int
    position: float


@dataclass(frozen=True)
class Batch:
    """The inputs of N predictions from one volume (slices (H, W) in [0, 1]) and their
    targets (N, H, W), which only a bound that knows the answer may read."""

    refs: list[SliceRef]
    items: list[Neighbours]
    targets: np.ndarray

    def inputs(self) -> np.ndarray:
        """The two neighbours as an array (N, 2, H, W) float32: S_{i-k}, S_{i+k}."""
        return np.stack([np.stack([nb.before, nb.after]) for nb in self.items]).astype(np.float32)

    def __len__(self) -> int:
        return len(self.items)


@dataclass
class Prediction:
    """Predicted slices (N, H, W) float32 (unclipped), which fell back to linear
    (N,) bool, and for sampled means the per-pixel std across samples (N, H, W)."""

    images: np.ndarray
    fallback: np.ndarray
    std: np.ndarray | None = None


@dataclass(eq=False)
class Method:
    """A named :class:`~slicelib.interpolator.Interpolator` as the evaluation sees it.

    ``torch_device``: where it computes; ``keep_std``: it draws several predictions per
    slice, and their per-pixel std is kept; ``max_slices``: scored on an evenly spaced
    subset of at most this many slices (None: every slice); ``run``: the trained run it
    comes from, if any. An interpolator with ``predict_batch(batch) -> Prediction``
    (a classical method with its wider context, an oracle bound) is called with the
    whole :class:`Batch`.
    """

    name: str
    interpolator: Interpolator
    torch_device: torch.device = CPU
    keep_std: bool = False
    max_slices: int | None = None
    run: LoadedRun | None = None

    @property
    def device(self) -> str:
        """Where it computes, for the summary."""
        return device_label(self.torch_device)

    @property
    def batched(self) -> bool:
        """False for the classical methods, which predict one slice at a time."""
        return not isinstance(self.interpolator, BaselineInterpolator)

    def predict(self, batch: Batch) -> Prediction:
        """Predictions for every item of ``batch``: a classical method sees each slice's
        :class:`~slicelib.baselines.Neighbours` (the cubic one its wider context), a bound
        that knows the answer (``bound(inputs, targets)``, e.g. an oracle blend) the
        targets, any other interpolator the two neighbours."""
        if isinstance(self.interpolator, BaselineInterpolator):
            outs = [self.interpolator.predict(nb) for nb in batch.items]
            return Prediction(
                images=np.stack([o.prediction for o in outs]).astype(np.float32),
                fallback=np.array([o.fallback for o in outs], dtype=bool),
            )
        bound = getattr(self.interpolator, "bound", None)
        if bound is not None:
            images = np.asarray(bound(batch.inputs(), batch.targets), dtype=np.float32)
            return Prediction(images=images, fallback=np.zeros(len(batch), dtype=bool))
        x = torch.from_numpy(batch.inputs()).to(self.torch_device)
        mean, std = (
            with_std(self.interpolator, x) if self.keep_std else (self.interpolator(x), None)
        )
        return Prediction(
            images=mean[:, 0].float().cpu().numpy().astype(np.float32),
            fallback=np.zeros(len(batch), dtype=bool),
            std=None if std is None else std[:, 0].float().cpu().numpy().astype(np.float32),
        )

    def warm_up(self, batch: Batch) -> None:
        """One pass before timing (first-call allocations, kernel selection). An
        interpolator's own ``warm_up`` leaves a sampler's seeded generator untouched, so
        that results do not depend on warm-up."""
        warm = getattr(self.interpolator, "warm_up", None)
        if warm is None:
            self.predict(batch)
        else:
            warm(torch.from_numpy(batch.inputs()[:1]).to(self.torch_device))
        self.synchronize()

    def synchronize(self) -> None:
        """Wait for queued device work so that wall-clock time covers it."""
        if self.torch_device.type == "cuda":
            torch.cuda.synchronize(self.torch_device)


def _check_config(cfg: EvalConfig) -> None:
    if cfg.flow.method not in FLOW_METHODS:
        raise SlicelibError(
            f"unknown flow method {cfg.flow.method!r} (choose {', '.join(FLOW_METHODS)})"
        )
    if cfg.batch_size < 1:
        raise SlicelibError(f"batch_size must be >= 1 (got {cfg.batch_size})")
    if cfg.ddpm_samples < 1:
        raise SlicelibError(f"ddpm_samples must be >= 1 (got {cfg.ddpm_samples})")
    if cfg.slices_per_patient is not None and cfg.slices_per_patient < 1:
        raise SlicelibError(f"slices_per_patient must be >= 1 (got {cfg.slices_per_patient})")
    if cfg.ddpm_max_slices is not None and cfg.ddpm_max_slices < 1:
        raise SlicelibError(f"ddpm_max_slices must be >= 1 (got {cfg.ddpm_max_slices})")
    if any(s < 1 for s in cfg.ddim_steps):
        raise SlicelibError(f"ddim_steps must be >= 1 (got {list(cfg.ddim_steps)})")


def build_methods(names: Sequence[str], cfg: EvalConfig) -> list[Method]:
    """The classical methods called ``names``; unknown names are a one-line error."""
    methods: list[Method] = []
    for name in names:
        try:
            baseline = BaselineInterpolator(name, cfg.flow)
        except SlicelibError:
            raise SlicelibError(
                f"unknown method {name!r} (classical methods: nearest, linear, cubic, flow; "
                "trained models are evaluated with --run RUN_DIR)"
            ) from None
        methods.append(Method(name, baseline))
    return methods


def run_methods(
    run_dir: str | Path, *, k: int, image_size: int, cfg: EvalConfig, device: torch.device
) -> list[Method]:
    """The methods of one trained run, loaded strictly from ``run_dir/best.pt``.

    A deterministic model gives one method named after it (``unet``); the DDPM
    gives ``ddpm_ancestral``, ``ddpm_ddim<steps>`` per DDIM step count and
    ``ddpm_mean<n>``, and a refinement run the same as ``refine_...``. A run trained at
    another k or image size is an error.
    """
    run_dir = Path(run_dir)
    if not run_dir.is_dir():
        raise SlicelibError(f"run folder {run_dir} not found")
    if not (run_dir / "best.pt").is_file():
        raise SlicelibError(f"run folder {run_dir} has no checkpoint best.pt (train it first)")
    run = load_run(run_dir, which="best", device=device, k=k, image_size=image_size)
    specs = sampling_specs(run.name, cfg) if run.samples_noise else [MethodSpec(run.name)]
    return [
        Method(
            spec.name,
            predictor_for(run, spec, cfg.seed),
            run.device,
            keep_std=spec.samples > 1,
            max_slices=cfg.ddpm_max_slices if run.samples_noise else None,
            run=run,
        )
        for spec in specs
    ]


def sampling_specs(family: str, cfg: EvalConfig) -> list[MethodSpec]:
    """How a sampling ``family`` (the DDPM, the refiner) is evaluated: ancestral with
    all T steps, DDIM with each of ``cfg.ddim_steps`` steps, and the mean of
    ``cfg.ddpm_samples`` ancestral samples."""
    return [
        MethodSpec(family, "ancestral"),
        *(MethodSpec(family, "ddim", steps=steps) for steps in cfg.ddim_steps),
        MethodSpec(family, "ancestral", samples=cfg.ddpm_samples),
    ]


def predictor_for(run: LoadedRun, spec: MethodSpec, seed: int = 0) -> Predictor:
    """The predictor of ``run`` sampling as ``spec`` says (seeded)."""
    if spec.sampler is None:
        return Predictor(run, seed=seed)
    steps = spec.steps if spec.sampler == "ddim" else None
    return Predictor(run, sampler=spec.sampler, steps=steps, samples=spec.samples, seed=seed)


def _unique_names(methods: list[Method], run_dirs: list[Path | None]) -> None:
    """Rename duplicates (two runs of one model) after their run folder."""
    seen: set[str] = set()
    for method, run_dir in zip(methods, run_dirs):
        if method.name in seen and run_dir is not None:
            method.name = f"{method.name}_{run_dir.name}"
        if method.name in seen:
            raise SlicelibError(f"method {method.name!r} requested twice")
        seen.add(method.name)


def _open_cache(cache: Cache | str | Path) -> tuple[Cache, str]:
    if isinstance(cache, Cache):
        return cache, str(cache.root)
    path = Path(cache)
    if not path.is_dir():
        raise SlicelibError(f"cache folder {path} not found")
    return Cache(path), str(path)


def select_slices(
    cache: Cache,
    k: int,
    *,
    common: bool = False,
    split: EvalSplit = "test",
    per_patient: int | None = None,
) -> list[SliceRef]:
    """Every evaluable slice at ``k`` of the patients of ``split`` ("all": every
    patient of the cache), patients in cache order.

    ``per_patient``: at most this many slices of each patient, the centres of equal
    parts of the slices both k=1 and k=2 can score (so every k scores the same slices,
    and none at the volume's ends)."""
    if split not in EVAL_SPLITS:
        raise SlicelibError(f"unknown split {split!r} (choose from {', '.join(EVAL_SPLITS)})")
    entries = cache.entries(None if split == "all" else split)
    if not entries:
        raise SlicelibError(f"the cache's {split} split is empty: nothing to evaluate")
    refs: list[SliceRef] = []
    for entry in entries:
        n = int(entry.n_slices)
        indices = evaluable_indices(n, k, common=common)
        if per_patient is not None:
            both = np.intersect1d(indices, evaluable_indices(n, k, common=True))
            indices = part_centres(both, per_patient)
        for i in indices:
            refs.append(SliceRef(entry.patient_id, int(i), float(i) / (n - 1)))
    if not refs:
        raise SlicelibError(
            f"no {split} slice has neighbours at k={k}{' (common)' if common else ''}: "
            f"the {split} volumes are too short"
        )
    return refs


def _evenly_spaced(refs: list[SliceRef], limit: int | None) -> set[SliceRef]:
    return {refs[int(i)] for i in evenly_spaced(len(refs), limit)}


def _batches(volume: np.ndarray, refs: list[SliceRef], k: int, size: int) -> Iterator[Batch]:
    for start in range(0, len(refs), size):
        chunk = refs[start : start + size]
        items = [neighbours(volume, r.slice_index, k) for r in chunk]
        targets = np.stack([volume[r.slice_index] for r in chunk])
        yield Batch(chunk, items, targets)


class _StdCollector:
    """The per-pixel std of a sampling method: per slice its mean and the MAE of the mean
    prediction, maps of the first ``examples`` slices, and with ``pixels`` every pixel's
    std and signed error (for calibration)."""

    def __init__(self, examples: int, pixels: bool) -> None:
        self.examples = examples
        self.values: dict[str, list[Any]] = {k: [] for k in ("patient_id", "slice_index")}
        self.values.update(std_mean=[], mae=[])
        self.maps: dict[str, list[np.ndarray]] = {"mean": [], "std": [], "target": []}
        self.example_slice: list[str] = []
        self.pixels: tuple[list[np.ndarray], list[np.ndarray]] | None = ([], []) if pixels else None

    def add(self, ref: SliceRef, mean: np.ndarray, std: np.ndarray, target: np.ndarray) -> None:
        error = clip01(mean) - target
        self.values["patient_id"].append(ref.patient_id)
        self.values["slice_index"].append(ref.slice_index)
        self.values["std_mean"].append(float(std.mean()))
        self.values["mae"].append(float(np.abs(error).mean()))
        if self.pixels is not None:
            self.pixels[0].append(std.astype(np.float32))
            self.pixels[1].append(error.astype(np.float32))
        if len(self.maps["mean"]) < self.examples:
            for key, image in (("mean", mean), ("std", std), ("target", target)):
                self.maps[key].append(image.astype(np.float32))
            self.example_slice.append(f"{ref.patient_id}:{ref.slice_index}")

    def arrays(self, prefix: str) -> dict[str, np.ndarray]:
        out = {f"{prefix}/{key}": np.asarray(val) for key, val in self.values.items()}
        for key, maps in self.maps.items():
            if maps:
                out[f"{prefix}/example_{key}"] = np.stack(maps)
        out[f"{prefix}/example_slice"] = np.asarray(self.example_slice)
        return out


def _prepare(
    cache: Cache | str | Path,
    k: int,
    cfg: EvalConfig,
    runs: Sequence[str | Path],
    methods: Sequence[str] | None,
    interpolators: Mapping[str, object],
) -> tuple[Cache, str, list[Method], torch.device, dict[str, Any]]:
    if k < 1:
        raise SlicelibError(f"k must be >= 1 (got {k})")
    _check_config(cfg)
    cache_obj, cache_path = _open_cache(cache)
    names = list(cfg.methods if methods is None else methods)
    device = resolve_device(cfg.device)
    all_methods = build_methods(names, cfg)
    run_dirs: list[Path | None] = [None] * len(all_methods)
    run_info: dict[str, Any] = {}
    for run_dir in runs:
        added = run_methods(
            run_dir, k=k, image_size=int(cache_obj.config.size), cfg=cfg, device=device
        )
        all_methods.extend(added)
        run_dirs.extend([Path(run_dir)] * len(added))
        run = added[0].run
        assert run is not None
        run_info[str(run_dir)] = {
            "methods": [m.name for m in added],
            "checkpoint": str(run.path),
            "epoch": run.epoch,
            "best_epoch": run.best_epoch,
            "train_config": to_dict(run.config),
        }
    for name, interpolator in interpolators.items():
        all_methods.append(_named_method(name, interpolator, device))
        run_dirs.append(None)
    _unique_names(all_methods, run_dirs)
    return cache_obj, cache_path, all_methods, device, run_info


def _named_method(name: str, interpolator: object, device: torch.device) -> Method:
    """A method given by name: a :class:`Method` as it is, or an interpolator on the
    evaluation's device (one that draws samples keeps its std)."""
    if isinstance(interpolator, Method):
        return interpolator
    sampling = hasattr(interpolator, "stack")
    where = CPU if hasattr(interpolator, "bound") else device
    return Method(name, cast(Interpolator, interpolator), where, keep_std=sampling)


def score_batch(
    method: Method, batch: Batch, volume: np.ndarray, k: int
) -> tuple[list[dict[str, Any]], Prediction]:
    """Predict ``batch`` with ``method``, timed, and score each slice against ``volume``
    (S, H, W) in [0, 1]: one row per slice in the :data:`ROW_COLUMNS` format."""
    method.synchronize()
    start = time.perf_counter()
    pred = method.predict(batch)
    method.synchronize()
    ms = 1000.0 * (time.perf_counter() - start) / len(batch)
    rows: list[dict[str, Any]] = []
    for j, ref in enumerate(batch.refs):
        scores = slice_metrics(clip01(pred.images[j]), volume[ref.slice_index], DATA_RANGE)
        rows.append(
            {
                "method": method.name,
                "patient_id": ref.patient_id,
                "slice_index": ref.slice_index,
                "position": ref.position,
                "k": k,
                **scores._asdict(),
                "ms_per_slice": ms,
                "fallback": bool(pred.fallback[j]),
            }
        )
    return rows, pred


def evaluate(
    cache: Cache | str | Path,
    k: int,
    cfg: EvalConfig | None = None,
    runs: Sequence[str | Path] = (),
    *,
    methods: Sequence[str] | None = None,
    interpolators: Mapping[str, object] | None = None,
    keep_pixels: bool = False,
    progress: bool = True,
) -> Results:
    """Score the classical ``methods`` (default ``cfg.methods``), every run in ``runs`` and
    every named interpolator of ``interpolators`` (an ensemble, a fitted filter, an oracle
    bound; or a :class:`Method` with its own settings) on ``cfg.split`` of ``cache``
    (default the test split; "all": every patient) at neighbour distance ``k``.

    The linear baseline is always included: it is the summary's reference. A method that
    draws samples gives its per-pixel std in :attr:`Results.std`; ``keep_pixels`` also
    keeps every pixel's std and error (:attr:`Results.pixels`, for calibration).
    Raises :class:`SlicelibError` for an unknown method, a run folder without
    ``best.pt``, a run trained at another k or image size, an empty split.
    """
    cfg = cfg if cfg is not None else EvalConfig()
    names = list(cfg.methods if methods is None else methods)
    if REFERENCE not in names:
        log.info("adding %r: it is the reference of the summary", REFERENCE)
        names.insert(0, REFERENCE)
    cache_obj, cache_path, all_methods, device, run_info = _prepare(
        cache, k, cfg, runs, names, dict(interpolators or {})
    )
    refs = select_slices(
        cache_obj, k, common=cfg.common, split=cfg.split, per_patient=cfg.slices_per_patient
    )
    subsets = {m.name: _evenly_spaced(refs, m.max_slices) for m in all_methods}
    total = sum(len(s) for s in subsets.values())
    log.info(
        "evaluating %d method(s) on %d test slice(s) of %d patient(s) at k=%d",
        len(all_methods),
        len(refs),
        len({r.patient_id for r in refs}),
        k,
    )

    by_patient: dict[str, list[SliceRef]] = {}
    for ref in refs:
        by_patient.setdefault(ref.patient_id, []).append(ref)
    first_pid = refs[0].patient_id
    first_volume = np.asarray(cache_obj.volume(first_pid), dtype=np.float32)
    warm = next(_batches(first_volume, by_patient[first_pid][:1], k, 1))
    for method in all_methods:
        method.warm_up(warm)

    records: list[dict[str, Any]] = []
    collectors: dict[str, _StdCollector] = {}
    bar = tqdm(total=total, desc=f"evaluate k={k}", unit="slice", disable=not progress)
    for pid, patient_refs in by_patient.items():
        volume = np.asarray(cache_obj.volume(pid), dtype=np.float32)
        for method in all_methods:
            chosen = [r for r in patient_refs if r in subsets[method.name]]
            size = cfg.batch_size if method.batched else 1
            for batch in _batches(volume, chosen, k, size):
                scored, pred = score_batch(method, batch, volume, k)
                records.extend(scored)
                if pred.std is not None:
                    collector = collectors.setdefault(
                        method.name, _StdCollector(cfg.std_examples, keep_pixels)
                    )
                    for j, ref in enumerate(batch.refs):
                        collector.add(ref, pred.images[j], pred.std[j], batch.targets[j])
                bar.update(len(batch))
    bar.close()

    order = {m.name: n for n, m in enumerate(all_methods)}
    rows = pd.DataFrame.from_records(records, columns=list(ROW_COLUMNS))
    rows = rows.sort_values(
        ["method", *KEY],
        key=lambda c: c.map(order) if c.name == "method" else c,
    ).reset_index(drop=True)
    summary = summarize(rows, reference=REFERENCE, seed=cfg.seed)
    summary["device"] = summary["method"].map({m.name: m.device for m in all_methods})
    summary["split"] = cfg.split  # which patients were scored
    for name, collector in collectors.items():
        std_mean = float(np.mean(collector.values["std_mean"]))
        log.info("%s: mean per-pixel std across samples %.4f", name, std_mean)
    info = {
        "k": k,
        "split": cfg.split,
        "cache": cache_path,
        "cache_config": to_dict(cache_obj.config),
        "eval_config": to_dict(cfg),
        "methods": {
            m.name: {
                "device": m.device,
                "slices": len(subsets[m.name]),
                "subset": len(subsets[m.name]) < len(refs),
            }
            for m in all_methods
        },
        "runs": run_info,
        "evaluation_device": str(device),
        "n_slices": len(refs),
        "n_patients": len(by_patient),
        "environment": record_environment(),
    }
    std: dict[str, np.ndarray] = {}
    pixels: dict[str, tuple[np.ndarray, np.ndarray]] = {}
    for name, collector in collectors.items():
        std.update(collector.arrays(name))
        if collector.pixels is not None:
            pixels[name] = (
                np.concatenate(collector.pixels[0]),
                np.concatenate(collector.pixels[1]),
            )
    return Results(rows=rows, summary=summary, info=info, std=std, pixels=pixels, k=k)


def summarize_on_slices(
    rows: pd.DataFrame, subset: pd.DataFrame, cfg: EvalConfig | None = None
) -> pd.DataFrame:
    """The summary of ``rows`` and ``subset`` (rows in the :data:`ROW_COLUMNS` format)
    restricted to the slices ``subset`` was scored on, so that every method is compared
    on the same slices (e.g. the refiner's, on the DDPM's); gains and tests are against
    linear."""
    cfg = cfg or EvalConfig()
    keys = set(zip(subset["patient_id"].astype(str), subset["slice_index"].astype(int)))
    mine = [(str(p), int(i)) in keys for p, i in zip(rows["patient_id"], rows["slice_index"])]
    both = pd.concat([rows[mine], subset], ignore_index=True)
    return summarize(both, reference=REFERENCE, seed=cfg.seed)


def format_summary(summary: pd.DataFrame) -> str:
    """The summary as a fixed-width text table for the terminal."""
    ref = f"p_psnr_vs_{REFERENCE}"
    lines = [
        f"{'method':<16} {'n':>5} {'pat':>4} {'PSNR dB':>14} {'pat.mean':>8} {'95% CI':>15} "
        f"{'SSIM':>13} "
        f"{'SSIM gauss':>10} {'MAE':>7} {'vs lin dB':>9} {'gain 95% CI':>15} {'%':>6} "
        f"{'p lin':>8} {'p best':>8} "
        f"{'ms/slice':>9}"
    ]

    def p(value: Any) -> str:
        return (
            "-"
            if value is None or (isinstance(value, float) and math.isnan(value))
            else f"{value:.2g}"
        )

    for r in summary.to_dict("records"):
        lines.append(
            f"{r['method']:<16} {r['n_slices']:>5} {r['n_patients']:>4} "
            f"{r['psnr_mean']:>7.2f}±{r['psnr_std']:<6.2f} {r['psnr_patient_mean']:>8.2f} "
            f"[{r['psnr_ci_low']:>6.2f},{r['psnr_ci_high']:>6.2f}] "
            f"{r['ssim_mean']:>6.3f}±{r['ssim_std']:<6.3f} {r['ssim_gauss_mean']:>10.3f} "
            f"{r['mae_mean']:>7.4f} {r.get('psnr_gain_db', math.nan):>+9.2f} "
            f"[{r.get('psnr_gain_ci_low', math.nan):>+6.2f},"
            f"{r.get('psnr_gain_ci_high', math.nan):>+6.2f}] "
            f"{r.get('psnr_gain_pct', math.nan):>+6.1f} {p(r.get(ref)):>8} "
            f"{p(r.get('p_psnr_vs_best')):>8} {r['ms_per_slice']:>9.2f}"
        )
    best = summary["best_psnr"].iloc[0] if len(summary) else "-"
    cubic = (
        summary.loc[summary["method"] == "cubic", "fallback"].tolist()
        if "fallback" in summary.columns
        else []
    )
    lines.append(
        f"best PSNR: {best}; mean ± std over slices; pat.mean: mean of per-patient means; "
        "95% CI: Student t over patients; gain and p: paired per-patient means, sign-flip "
        f"permutation test on PSNR ('-': fewer than {MIN_TEST_PATIENTS} patients; with n "
        "patients p is at least 2/2^n); p vs best: against a winner picked from the same data"
    )
    if len(cubic):
        lines.append(f"cubic fell back to linear on {int(cubic[0])} slice(s) near the ends")
    return "\n".join(lines)


@dataclass
class SlicePredictions:
    """Predictions of several methods for chosen slices, for figures.

    ``inputs`` (n, 2, H, W), ``targets`` (n, H, W), ``predictions[method]``
    (n, H, W) clipped to [0, 1], ``std[method]`` (n, H, W) for sampled means.
    """

    slices: list[SliceRef]
    inputs: np.ndarray
    targets: np.ndarray
    predictions: dict[str, np.ndarray]
    std: dict[str, np.ndarray] = field(default_factory=dict)


def predict_slices(
    cache: Cache | str | Path,
    k: int,
    slices: Sequence[tuple[str, int]],
    cfg: EvalConfig | None = None,
    runs: Sequence[str | Path] = (),
    *,
    methods: Sequence[str] | None = None,
) -> SlicePredictions:
    """Predictions of every method (``methods`` default ``cfg.methods``, plus every run) for
    the chosen ``(patient_id, slice_index)`` pairs of ``cache`` at distance ``k``."""
    if not slices:
        raise SlicelibError("predict_slices needs at least one (patient_id, slice_index)")
    cfg = cfg if cfg is not None else EvalConfig()
    cache_obj, _, all_methods, _, _ = _prepare(cache, k, cfg, runs, methods, {})
    known = {e.patient_id: int(e.n_slices) for e in cache_obj.entries()}
    refs: list[SliceRef] = []
    items: list[Neighbours] = []
    targets: list[np.ndarray] = []
    for pid, index in slices:
        if pid not in known:
            raise SlicelibError(f"patient {pid!r} is not in the cache")
        volume = np.asarray(cache_obj.volume(pid), dtype=np.float32)
        items.append(neighbours(volume, int(index), k))
        targets.append(volume[int(index)])
        refs.append(SliceRef(pid, int(index), int(index) / (known[pid] - 1)))
    batch = Batch(refs, items, np.stack(targets))
    predictions: dict[str, np.ndarray] = {}
    std: dict[str, np.ndarray] = {}
    for method in all_methods:
        pred = method.predict(batch)
        predictions[method.name] = clip01(pred.images)
        if pred.std is not None:
            std[method.name] = pred.std
    return SlicePredictions(
        slices=refs,
        inputs=batch.inputs(),
        targets=np.stack(targets).astype(np.float32),
        predictions=predictions,
        std=std,
    )
