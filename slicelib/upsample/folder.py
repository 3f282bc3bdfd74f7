"""The folder-level upsampling API: one DICOM series or NIfTI volume in, a folder out.

``upsample_to_folder`` checks everything it can before the slow work, predicts the
missing slices with a trained run (and, on request, their per-pixel std), and
writes the result atomically: a labelled DERIVED DICOM series (or a NIfTI file),
the std series beside it, and ``upsample.json`` recording what was done. The output
folder is one writer's at a time (a lock beside it names the holder), and what a
killed run left beside it is removed first.
"""

from __future__ import annotations

import hashlib
import json
import logging
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any

from slicelib import __version__
from slicelib.baselines import BaselineInterpolator
from slicelib.config import FACTOR, FlowConfig, ScanConfig, UpsampleConfig, to_dict
from slicelib.errors import SlicelibError
from slicelib.io import write_json
from slicelib.outputs import require_path, writing

if TYPE_CHECKING:
    from slicelib.interpolator import Interpolator
    from slicelib.upsample.volume import Upsampled

log = logging.getLogger(__name__)

IMAGE_FOLDER = "interpolated"
STD_FOLDER = "uncertainty"
RECORD = "upsample.json"


@dataclass
class UpsampleReport:
    """What :func:`upsample_to_folder` wrote and measured."""

    output: Path
    files: dict[str, list[Path]]
    slices_in: int
    slices_out: int
    seconds_predict: float
    seconds_total: float
    record: dict[str, Any] = field(default_factory=dict)


def _is_nifti(path: Path) -> bool:
    from slicelib.data.nifti import is_nifti

    return path.is_file() and is_nifti(path)


def _load_input(
    path: Path,
    slice_axis: int | None = None,
    *,
    max_slice_mb: float = ScanConfig.max_slice_mb,
    max_volume_mb: float = ScanConfig.max_volume_mb,
) -> Any:
    """The input as a :class:`~slicelib.data.dicom.Volume`; one-line errors otherwise
    (an image or a volume beyond its cap among them, decided from the headers)."""
    from slicelib.data.dicom import has_dicom_preamble, load_series
    from slicelib.data.headers import looks_like_dicom_name
    from slicelib.data.nifti import load_nifti

    if not path.exists():
        raise SlicelibError(f"input {path} does not exist")
    caps = {"max_slice_mb": max_slice_mb, "max_volume_mb": max_volume_mb}
    if _is_nifti(path):
        return load_nifti(path, slice_axis, **caps)
    if path.is_dir():
        # Every file named like a DICOM image is a slice: one that cannot be read is
        # an error naming it, never a slice silently left out of the new series.
        try:
            files = sorted(
                p for p in path.iterdir() if p.is_file() and looks_like_dicom_name(p.name)
            )
        except OSError as exc:
            raise SlicelibError(f"input {path}: cannot list ({exc.strerror})") from None
        if not files:
            raise SlicelibError(f"input {path}: no DICOM files")
        return load_series(files, **caps)
    if has_dicom_preamble(path):
        return load_series(path, **caps)
    raise SlicelibError(f"input {path}: unreadable (not a DICOM series folder or a NIfTI file)")


def _load_runs(checkpoint: Path, ensemble: Sequence[Path], device: str) -> list[Any]:
    from slicelib.checkpoint import load_run

    runs = [load_run(path, device=device) for path in [checkpoint, *ensemble]]
    for run in runs:
        cache = run.cache_config
        if cache is not None and int(cache.size) != int(run.image_size):
            raise SlicelibError(
                f"checkpoint {run.path}: trained at {run.image_size} px but its cache was "
                f"{cache.size} px; the checkpoint is inconsistent"
            )
    if len(runs) > 1:
        from slicelib.uncertainty import check_ensemble

        check_ensemble(runs)
    return runs


def _header_text(path: Path, keyword: str) -> str | None:
    """A text attribute of one DICOM file's header (None when missing or damaged)."""
    from slicelib.data.dicom import read_dataset
    from slicelib.data.headers import dataset_value

    got = dataset_value(read_dataset(path), keyword, "text")
    return None if got.reason else str(got.value)


def check_training_domain(run: Any, volume: Any, where: str) -> list[str]:
    """Log ONE warning line when ``volume`` lies outside the training domain that
    ``run``'s checkpoint records (the neighbour distance for its k, pixel size, matrix,
    modality, sequence); returns the differences (empty when none, or none recorded)."""
    from slicelib.model_card import domain_differences

    domain = run.training_domain
    first = volume.files[0] if volume.files else None
    found = domain_differences(
        domain,
        slice_spacing=float(volume.slice_spacing),
        pixel_spacing=[float(p) for p in volume.pixel_spacing],
        matrix=[int(n) for n in volume.pixels.shape[1:]],
        modality=_header_text(first, "Modality") if first else None,
        description=_header_text(first, "SeriesDescription") if first else None,
        k=int(run.config.k),
    )
    if found:
        log.warning(
            "%s is outside the training domain of checkpoint %s: %s",
            where, run.path, "; ".join(found),
        )  # fmt: skip
    return found


def file_sha256(path: Path) -> str:
    """The SHA-256 of a file's bytes, read in chunks (a checkpoint may be large)."""
    digest = hashlib.sha256()
    try:
        with path.open("rb") as handle:
            for chunk in iter(lambda: handle.read(1 << 20), b""):
                digest.update(chunk)
    except OSError as exc:
        raise SlicelibError(f"checkpoint {path}: cannot read ({exc.strerror})") from None
    return digest.hexdigest()


def derivation_identity(
    runs: Sequence[Any], *, method: str, uncertainty: str, factor: int, cfg: UpsampleConfig
) -> str:
    """A digest of everything that decides the new pixels: the checkpoints' contents (not
    their paths), the method with its sampler and seed, the uncertainty estimate, the
    factor, the CPU precision and the software version. The derived series' UIDs follow
    from it and the source instances, so upsampling the same series the same way again
    gives the same UIDs and a PACS that holds the series already recognises it; a new
    slicelib version gives new UIDs, as its output may differ."""
    payload = {
        "slicelib": __version__,
        "checkpoints": [file_sha256(Path(r.path)) for r in runs],
        "method": method,
        "uncertainty": uncertainty,
        "factor": factor,
        "cpu_precision": cfg.cpu_precision,
    }
    return hashlib.sha256(json.dumps(payload, sort_keys=True).encode()).hexdigest()


# What ``upsample --method`` offers: the classical methods that need no trained model.
CLASSICAL_METHODS: tuple[str, ...] = ("linear", "cubic", "flow")


def classical_label(method: str) -> str:
    """How a classical method is named in the derived series: ``flow (TV-L1 optical flow,
    3 warps, 5 iterations, attachment 30)``."""
    if method != "flow":
        return f"{method} interpolation"
    cfg = FlowConfig()
    if cfg.method != "tvl1":
        return f"flow ({cfg.method} optical flow)"
    return (
        f"flow (TV-L1 optical flow, {cfg.num_warp} warps, {cfg.num_iter} iterations, "
        f"attachment {cfg.attachment:g})"
    )


def _method_name(run: Any, ddim_steps: int, seed: int) -> str:
    name = f"{run.name} (k={run.config.k})"
    if run.samples_noise:
        name += f", DDIM {ddim_steps} steps, seed {seed}"
    return name


def _uncertainty(
    runs: Sequence[Any], mc_samples: int, seed: int, make: Callable[[Any], Any]
) -> tuple[Interpolator, str]:
    from slicelib.uncertainty import DeepEnsemble, MCDropout, has_dropout

    if len(runs) > 1:
        return DeepEnsemble([make(r) for r in runs]), f"deep ensemble of {len(runs)} models"
    run = runs[0]
    if run.samples_noise or not has_dropout(run.model):
        raise SlicelibError(
            f"checkpoint {run.path} has no dropout (ModelConfig.dropout = 0): --uncertainty "
            "needs a checkpoint trained with dropout or --ensemble CKPT ..."
        )
    return MCDropout(run.model, mc_samples, seed=seed), f"MC dropout, {mc_samples} passes"


def upsample_to_folder(
    input_path: str | Path,
    output: str | Path,
    checkpoint: str | Path | None = None,
    *,
    method: str | None = None,
    factor: int = FACTOR,
    force: bool = False,
    device: str = "auto",
    uncertainty: bool = False,
    mc_samples: int | None = None,
    ensemble: Sequence[str | Path] = (),
    cfg: UpsampleConfig | None = None,
    progress: bool = False,
    slice_axis: int | None = None,
    max_slice_mb: float = ScanConfig.max_slice_mb,
    max_volume_mb: float = ScanConfig.max_volume_mb,
    source_name: str | None = None,
) -> UpsampleReport:
    """Upsample the series or NIfTI at ``input_path`` into the new folder ``output``.

    Checks everything it can before the slow work: the paths (none empty), the factor,
    that ``output`` is neither inside nor around the input and is new, empty or (with
    ``force``) an upsampled series slicelib wrote, the checkpoints, the series (at least
    2 uniformly spaced slices, each image and the volume within ``max_slice_mb`` and
    ``max_volume_mb``, from the headers). ``slice_axis``: the through-plane voxel axis
    of a NIfTI input (None: from its header). ``source_name``: how messages and
    ``upsample.json`` name the input (default: its path; a DICOMweb URL when the series
    was downloaded into ``input_path``). ``method``: a classical method (linear, cubic,
    flow: :data:`CLASSICAL_METHODS`) at the full matrix instead of a ``checkpoint``.
    """
    from slicelib.checkpoint import checkpoint_digest, checkpoint_label
    from slicelib.environment import code_version
    from slicelib.interpolator import Predictor
    from slicelib.io import atomic_directory
    from slicelib.upsample.dicom_writer import (
        Derivation,
        check_new_output,
        check_output_location,
        write_dicom_series,
    )
    from slicelib.upsample.nifti_writer import write_nifti
    from slicelib.upsample.volume import (
        check_factor,
        check_upsamplable,
        outside_neighbours_message,
        upsample_volume,
    )

    started = time.perf_counter()
    cfg = cfg or UpsampleConfig()
    input_path = require_path(input_path, "input")
    output = require_path(output, "output")
    if (checkpoint is None) == (method is None):
        raise SlicelibError("give a --checkpoint or a --method (one of them)")
    if method is not None and method not in CLASSICAL_METHODS:
        raise SlicelibError(f"--method {method!r}: choose from {', '.join(CLASSICAL_METHODS)}")
    if method is not None and uncertainty:
        raise SlicelibError("--uncertainty needs a trained model (--checkpoint), not --method")
    checkpoint = None if checkpoint is None else require_path(checkpoint, "--checkpoint")
    members = [require_path(p, "--ensemble") for p in ensemble]
    check_factor(factor)
    if cfg.batch_size < 1:
        raise SlicelibError(f"--batch-size must be >= 1 (got {cfg.batch_size})")
    if mc_samples is not None and not uncertainty:
        raise SlicelibError("--mc-samples needs --uncertainty")
    if ensemble and not uncertainty:
        raise SlicelibError("--ensemble needs --uncertainty")
    samples = cfg.mc_samples if mc_samples is None else mc_samples
    if not input_path.exists():
        raise SlicelibError(f"input {input_path} does not exist")
    check_output_location(output, [input_path])
    check_new_output(output, force=force)

    # One writer at a time (the lock names it); what a killed run left is removed first.
    with writing(output, "output"):
        check_new_output(output, force=force)  # again, now that no one else writes there
        runs = [] if checkpoint is None else _load_runs(checkpoint, members, device)
        run = runs[0] if runs else None

        def make(r: Any) -> Any:
            steps = min(cfg.ddim_steps, r.config.diffusion.timesteps)
            return Predictor(
                r, sampler="ddim", steps=steps, seed=cfg.seed, cpu_precision=cfg.cpu_precision
            )

        std_method, std_name = (None, "")
        if uncertainty:
            std_method, std_name = _uncertainty(runs, samples, cfg.seed, make)
        volume = _load_input(
            input_path, slice_axis, max_slice_mb=max_slice_mb, max_volume_mb=max_volume_mb
        )
        where = f"input {source_name or input_path}"
        check_upsamplable(volume, where)
        if run is None:  # a classical method: no training domain, plain min-max
            assert method is not None
            predictor: Any = BaselineInterpolator(method, FlowConfig())
            outside, clip, image_size, label = [], None, 0, classical_label(method)
        else:
            predictor, outside = make(run), check_training_domain(run, volume, where)
            clip = run.cache_config.clip_percentiles if run.cache_config is not None else None
            steps = min(cfg.ddim_steps, run.config.diffusion.timesteps)
            image_size, label = run.image_size, _method_name(run, steps, cfg.seed)

        predict_start = time.perf_counter()
        up: Upsampled = upsample_volume(
            volume,
            predictor,
            image_size,
            uncertainty=std_method,
            method=label,
            batch_size=cfg.batch_size,
            clip_percentiles=clip,
            progress=progress,
            where=where,
        )
        seconds_predict = time.perf_counter() - predict_start
        if up.outside_neighbours:
            log.warning("%s", outside_neighbours_message(where, up))
        # The model is named by its content: a local path means nothing where it goes.
        labels = [checkpoint_label(r.path) for r in runs]
        identity = derivation_identity(
            runs, method=label, uncertainty=std_name, factor=factor, cfg=cfg
        )
        detail = (
            "no trained model, full matrix"
            if run is None
            else f"epoch {run.epoch}, model input {run.image_size}x{run.image_size}"
        )
        derivation = Derivation(
            method=label,
            checkpoint=labels[0] if labels else "none",
            detail=detail
            + (f"; uncertainty: {std_name}" if std_name else "")
            + (f" with {', '.join(labels[1:])}" if len(labels) > 1 else ""),
            identity=identity,
        )
        files: dict[str, list[Path]] = {}
        with atomic_directory(output, kind="upsampled series") as tmp:
            if volume.files:
                written = write_dicom_series(up, tmp / IMAGE_FOLDER, derivation)
                files["image"] = [output / IMAGE_FOLDER / p.name for p in written]
                if uncertainty:
                    written = write_dicom_series(up, tmp / STD_FOLDER, derivation, kind="std")
                    files["std"] = [output / STD_FOLDER / p.name for p in written]
            else:
                from slicelib.data.nifti import nifti_stem

                suffix = ".nii.gz" if input_path.name.lower().endswith(".gz") else ".nii"
                stem = nifti_stem(input_path)
                name = write_nifti(up, input_path, tmp / f"{stem}_x2{suffix}", axis=slice_axis).name
                files["image"] = [output / name]
                if uncertainty:
                    name = write_nifti(
                        up, input_path, tmp / f"{stem}_x2_std{suffix}", kind="std", axis=slice_axis
                    ).name
                    files["std"] = [output / name]
            record = {
                "slicelib_version": __version__,
                "slicelib_commit": code_version()["commit"],
                "input": source_name or str(input_path.resolve()),
                "output": {k: [p.name for p in v] for k, v in files.items()},
                "checkpoint": None if run is None else str(run.path),
                "checkpoint_sha256": None if run is None else checkpoint_digest(run.path),
                "model": method if run is None else run.name,
                "k": None if run is None else run.config.k,
                "epoch": None if run is None else run.epoch,
                "image_size": None if run is None else run.image_size,
                "method": label,
                "derivation_identity": identity,
                "uncertainty": std_name or None,
                "ensemble": [str(r.path) for r in runs[1:]],
                "ensemble_sha256": [checkpoint_digest(r.path) for r in runs[1:]],
                "slices_in": volume.n_slices,
                "slices_out": up.n_slices,
                "spacing_in_mm": volume.slice_spacing,
                "spacing_out_mm": up.slice_spacing,
                "outside_training_domain": outside,
                "outside_neighbour_range": [
                    {"between_acquired": [i + 1, i + 2], "excess": round(excess, 4)}
                    for i, excess in up.outside_neighbours
                ],
                "synthesized_instances": [j + 1 for j in range(up.n_slices) if not up.acquired[j]],
                "device": "cpu" if run is None else str(run.device),
                "seconds_predict": round(seconds_predict, 3),
                "config": to_dict(cfg),
            }
            write_json(tmp / RECORD, record)
        total = time.perf_counter() - started
        log.info("%d -> %d slices in %.1f s (%s)", volume.n_slices, up.n_slices, total, output)
        return UpsampleReport(
            output=output,
            files=files,
            slices_in=volume.n_slices,
            slices_out=up.n_slices,
            seconds_predict=seconds_predict,
            seconds_total=total,
            record=record,
        )
