"""What a trained run was trained on and is fit for: its training domain and model card.

:func:`training_domain` summarises the training split of a cache (slice spacing,
pixel size, matrix, series descriptions, modality, patients per split) from the
cache manifest; training stores it in every checkpoint (``training_domain``) and
:func:`write_model_card` writes it, with the run's metrics and its intended use
and limits, to ``model_card.md`` beside ``best.pt``. :func:`domain_differences`
says how an input to ``slicelib upsample`` differs from that domain, the distance
between the neighbours the model was trained on (``2k`` slice spacings) included.

Values unknown to the cache (a cache written without DICOM metadata, the
modality of NIfTI volumes) are None and are not compared.
"""

from __future__ import annotations

import logging
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any

import numpy as np

from slicelib import __version__
from slicelib.io import write_text

log = logging.getLogger(__name__)

MODEL_CARD = "model_card.md"
# A spacing or pixel size within this fraction of the training range is inside it
# (scanners round; resampled caches differ in the last digits).
DOMAIN_REL_TOL = 0.1


def _range(values: Sequence[Any]) -> list[float] | None:
    """[min, max] of the finite values, or None when there are none."""
    finite = [float(v) for v in values if v is not None and np.isfinite(float(v))]
    return [round(min(finite), 4), round(max(finite), 4)] if finite else None


def training_domain(manifest: Mapping[str, Any]) -> dict[str, Any]:
    """The domain of a cache's training split, from its manifest (plain values only).

    Keys: ``input_kind``, ``modality``, ``series_descriptions`` (sorted, unique),
    ``slice_spacing_mm`` and ``pixel_spacing_mm`` ([min, max] over the training
    volumes, before resizing), ``matrix`` (the distinct [rows, columns] acquired),
    ``image_size`` (the cache's side in pixels), ``patients`` (count per split).
    """
    patients = list(manifest.get("patients", []))
    train = [p for p in patients if p.get("split") == "train"]
    kind = manifest.get("source", {}).get("kind")
    scan_config = manifest.get("scan_config") or {}
    splits: dict[str, int] = {}
    for p in patients:
        splits[str(p.get("split"))] = splits.get(str(p.get("split")), 0) + 1
    matrices = {
        tuple(int(n) for n in p["original_shape"][1:]) for p in train if p.get("original_shape")
    }
    pixel = [v for p in train for v in p.get("original_pixel_spacing_mm", [])]
    return {
        "input_kind": kind,
        "modality": scan_config.get("modality") if kind == "dicom" else None,
        "series_descriptions": sorted(
            {str(p["series_description"]) for p in train if p.get("series_description")}
        ),
        "slice_spacing_mm": _range([p.get("spacing_mm") for p in train]),
        "pixel_spacing_mm": _range(pixel),
        "matrix": [list(m) for m in sorted(matrices)],
        "image_size": manifest.get("config", {}).get("size"),
        "patients": splits,
    }


def _outside(value: float, bounds: Sequence[float] | None) -> bool:
    if bounds is None:
        return False
    lo, hi = bounds
    return not lo * (1 - DOMAIN_REL_TOL) <= value <= hi * (1 + DOMAIN_REL_TOL)


def _mm(bounds: Sequence[float]) -> str:
    lo, hi = bounds
    return f"{lo:.2f} mm" if abs(hi - lo) < 1e-6 else f"{lo:.2f}-{hi:.2f} mm"


def neighbour_distance(k: int, slice_spacing_mm: Sequence[float]) -> list[float]:
    """[min, max] distance in mm between the two inputs a model saw in training: its
    neighbours ``S_{i-k}`` and ``S_{i+k}`` are ``2k`` slice spacings apart."""
    return [round(2 * k * float(v), 4) for v in slice_spacing_mm]


def domain_differences(
    domain: Mapping[str, Any] | None,
    *,
    slice_spacing: float,
    pixel_spacing: Sequence[float],
    matrix: Sequence[int],
    modality: str | None = None,
    description: str | None = None,
    k: int = 1,
) -> list[str]:
    """How an input to ``slicelib upsample`` differs from a training ``domain``
    (:func:`training_domain`) of a model trained at ``k``: one short phrase per property
    that differs, with by how much; [] when none does or nothing is known.

    The through-plane property is the neighbour distance: upsampling gives the model
    two acquired slices ``slice_spacing`` apart, which should be the distance it
    learned to fill, ``2k`` training slice spacings (:func:`neighbour_distance`).
    """
    if not domain:
        return []
    found: list[str] = []
    spacing = domain.get("slice_spacing_mm")
    if spacing is not None:
        distance = neighbour_distance(k, spacing)
        if _outside(slice_spacing, distance):
            ratio = slice_spacing / float(np.mean(distance))
            found.append(
                f"neighbour distance {slice_spacing:.2f} mm (the k={k} model was trained on "
                f"neighbours {_mm(distance)} apart, x{ratio:.2f})"
            )
    pixel = domain.get("pixel_spacing_mm")
    if pixel is not None and any(_outside(float(p), pixel) for p in pixel_spacing):
        shown = "x".join(f"{float(p):.2f}" for p in pixel_spacing)
        ratio = float(np.mean(pixel_spacing)) / float(np.mean(pixel))
        found.append(f"pixel size {shown} mm (trained on {_mm(pixel)}, x{ratio:.2f})")
    matrices = [tuple(m) for m in domain.get("matrix") or []]
    if matrices and tuple(int(n) for n in matrix) not in matrices:
        trained = ", ".join(f"{r}x{c}" for r, c in matrices[:3])
        found.append(f"matrix {matrix[0]}x{matrix[1]} (trained on {trained})")
    trained_modality = domain.get("modality")
    if modality and trained_modality and modality.upper() != str(trained_modality).upper():
        found.append(f"modality {modality} (trained on {trained_modality})")
    names = [str(n) for n in domain.get("series_descriptions") or []]
    if description and names and description.strip().lower() not in {n.lower() for n in names}:
        shown = ", ".join(repr(n) for n in names[:3])
        found.append(f"sequence {description!r} (trained on {shown})")
    return found


# Settings that say where a run trained, not what: ignored when matching a preset.
_PLACE = frozenset({"device", "precision", "compile", "num_workers", "data_on_device"})


def matching_presets(train_config: Mapping[str, Any], cache_config: Mapping[str, Any]) -> str:
    """The presets whose cache and training settings the run used, or a note that none did."""
    from slicelib.config import PRESETS, to_dict

    names = []
    for name, preset in PRESETS.items():
        try:
            wanted = to_dict(preset.train_config(train_config["model"], int(train_config["k"])))
        except Exception:  # a model or k the preset does not train
            continue
        same_train = all(wanted.get(k) == v for k, v in train_config.items() if k not in _PLACE)
        if same_train and to_dict(preset.prepare) == dict(cache_config):
            names.append(name)
    return ", ".join(names) if names else "none (settings of its own)"


def _fmt(value: Any) -> str:
    if value is None or value == []:
        return "unknown"
    if isinstance(value, list) and value and isinstance(value[0], list):
        return ", ".join("x".join(str(n) for n in m) for m in value)
    if isinstance(value, list) and len(value) == 2 and all(isinstance(v, float) for v in value):
        return f"{value[0]:g}" if value[0] == value[1] else f"{value[0]:g} to {value[1]:g}"
    if isinstance(value, list):
        return ", ".join(str(v) for v in value)
    return str(value)


def _distance(k: Any, spacing: Sequence[float] | None) -> list[float] | None:
    return neighbour_distance(int(k), spacing) if spacing is not None and k else None


def write_model_card(
    run_dir: str | Path,
    train_config: Mapping[str, Any],
    cache_dir: str | Path,
    domain: Mapping[str, Any],
    history: Sequence[Mapping[str, float]],
    best_epoch: int,
) -> Path:
    """Write the model card of a run (see the module docstring) as markdown to
    ``run_dir/model_card.md``; returns the path."""
    from slicelib.data.cache import read_manifest

    preset = matching_presets(train_config, read_manifest(Path(cache_dir)).get("config", {}))
    best = next((row for row in history if int(row["epoch"]) == best_epoch), None)
    splits = [f"{split} {n}" for split, n in sorted(domain["patients"].items())]
    model, k = train_config.get("model"), train_config.get("k")
    lines = [
        f"# Model card: {model} at k={k}",
        "",
        f"Run `{Path(run_dir)}`, written by slicelib {__version__}. "
        "The checkpoint `best.pt` holds the same training domain (`training_domain`).",
        "",
        "## Data",
        "",
        f"- cache: `{Path(cache_dir).resolve()}` ({_fmt(domain.get('input_kind'))} input)",
        f"- preset: {preset}",
        f"- patients per split: {_fmt(splits)}",
        f"- model input: {_fmt(domain.get('image_size'))} px square slices, min-max normalised "
        "per volume",
        "",
        "## Domain (training split)",
        "",
        f"- modality: {_fmt(domain.get('modality'))}",
        f"- sequence (series description): {_fmt(domain.get('series_descriptions'))}",
        f"- slice spacing (mm): {_fmt(domain.get('slice_spacing_mm'))}",
        f"- neighbour distance (mm, the inputs S_i-k and S_i+k at k={k}): "
        f"{_fmt(_distance(k, domain.get('slice_spacing_mm')))}",
        f"- pixel size (mm, acquired): {_fmt(domain.get('pixel_spacing_mm'))}",
        f"- matrix (rows x columns, acquired): {_fmt(domain.get('matrix'))}",
        "",
        "## Training",
        "",
        f"- epochs: {len(history)}, steps per epoch: {_fmt(train_config.get('steps_per_epoch'))}, "
        f"batch size {_fmt(train_config.get('batch_size'))}, lr {_fmt(train_config.get('lr'))}, "
        f"crop {_fmt(train_config.get('crop'))}, seed {_fmt(train_config.get('seed'))}",
    ]
    if best is not None:
        lines += [
            f"- best epoch {best_epoch}: validation PSNR {best['val_psnr']:.2f} dB, "
            f"SSIM {best['val_ssim']:.4f}, loss {best['val_loss']:.4g}",
        ]
    lines += [
        "",
        "## Intended use",
        "",
        f"Research on through-plane slice interpolation: predicting the slice half-way "
        f"between two acquired slices {2 * int(k or 1)} spacings apart (k={k}), and "
        "`slicelib upsample` of series like the training ones (same modality, sequence, "
        "pixel size and matrix, and slices as far apart as the neighbour distance above: "
        "the gap the model learned to fill). Synthesized slices are labelled as such.",
        "",
        "## Limits",
        "",
        "- Not for diagnosis: a synthesized slice is a prediction, not a measurement; it "
        "can miss or invent small structures.",
        "- Outside the domain above (another organ, contrast, scanner, spacing or "
        "resolution) the network has not been tested; `slicelib upsample` warns when an "
        "input differs from it.",
        "- Validation metrics come from the cache's validation split; test-split scores come "
        "from `slicelib evaluate`, with patient-level intervals.",
        "",
    ]
    path = Path(run_dir) / MODEL_CARD
    write_text(path, "\n".join(lines))
    log.info("wrote %s", path)
    return path
