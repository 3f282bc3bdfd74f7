"""Checkpoints: atomic writes, strict loads, trained runs ready to predict.

A checkpoint is a dict of tensors and plain Python values only, so that it loads
with ``torch.load(..., weights_only=True)``:

``format``, ``slicelib_version``, ``model`` (name), ``k``, ``image_size``,
``train_config`` and ``cache_config`` (dicts), ``epoch`` (epochs completed),
``history`` (list of dicts), ``best_epoch``, ``best_value``, ``world_size`` and
``process_batch`` (each process's share of ``train_config``'s effective batch),
``models`` / ``optimizers`` / ``scalers`` (dicts by role: ``generator``,
``discriminator``, ``denoiser``), ``objective`` (the objective's plain values).
A refinement run (``model`` ``"refine"``) adds ``refine_config``; its ``models`` hold
the denoiser and the frozen U-Net (``generator``), its ``objective`` the residual scale.

Loading is strict everywhere: a key missing from or unexpected in a checkpoint,
or a tensor of another shape, is a one-line :class:`SlicelibError` naming the
file and the first such key (the original evaluation silently kept untrained
residual blocks this way).
"""

from __future__ import annotations

import hashlib
import logging
import pickle
import re
import zipfile
from collections.abc import Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import torch
from torch import nn

from slicelib import refine
from slicelib.config import PrepareConfig, RefineConfig, TrainConfig, from_dict
from slicelib.device import resolve_device
from slicelib.errors import SlicelibError
from slicelib.io import atomic_write
from slicelib.models import build_generator

log = logging.getLogger(__name__)

CHECKPOINT_FORMAT = 1


def checkpoint_header(
    model: str,
    k: int,
    image_size: int,
    epoch: int,
    history: list[dict[str, float]],
    best: tuple[int, float],
) -> dict[str, Any]:
    """The fields every slicelib checkpoint starts with (plain values only)."""
    from slicelib import __version__

    return {
        "format": CHECKPOINT_FORMAT,
        "slicelib_version": __version__,
        "model": model,
        "k": k,
        "image_size": int(image_size),
        "epoch": epoch,
        "history": [dict(row) for row in history],
        "best_epoch": best[0],
        "best_value": best[1],
    }


CHECKPOINT_NAMES: tuple[str, ...] = ("best", "last")


def generator_role(model: str) -> str:
    """The checkpoint role of the network that makes predictions: ``denoiser`` for the DDPM."""
    return "denoiser" if model == "ddpm" else "generator"


def save_checkpoint(path: Path, state: Mapping[str, Any]) -> None:
    """Write ``state`` to ``path`` atomically and durably, so a crash never leaves a
    truncated checkpoint behind (and a full disk is an OS error naming ``path``)."""

    def write(tmp: Path) -> None:
        # Through a Python file: a failed write is then an OSError that torch's own error
        # carries, where torch writing to a path reports only a zip position.
        with tmp.open("wb") as handle:
            torch.save(dict(state), handle)

    atomic_write(path, write, durable=True)


def read_checkpoint(path: Path, device: str | torch.device = "cpu") -> dict[str, Any]:
    """Load a slicelib checkpoint with ``weights_only=True``; one-line errors otherwise."""
    path = Path(path)
    if not path.is_file():
        raise SlicelibError(f"checkpoint {path} not found")
    if not zipfile.is_zipfile(path):  # what torch.save has written since PyTorch 1.6
        raise SlicelibError(f"checkpoint {path} is not a readable PyTorch file (not a zip archive)")
    try:
        state = torch.load(path, map_location=device, weights_only=True)
    except pickle.UnpicklingError as exc:
        found = re.search(r"GLOBAL (\S+)", str(exc))
        what = f" ({found.group(1)})" if found else ""
        raise SlicelibError(
            f"checkpoint {path} holds objects other than tensors and plain values{what}; "
            "refusing to load it (weights_only)"
        ) from None
    except (RuntimeError, EOFError, OSError) as exc:
        reason = str(exc).strip().splitlines()[0] if str(exc).strip() else type(exc).__name__
        raise SlicelibError(
            f"checkpoint {path} is not a readable PyTorch file ({reason})"
        ) from None
    if not isinstance(state, dict) or state.get("format") != CHECKPOINT_FORMAT:
        raise SlicelibError(
            f"checkpoint {path} is not a slicelib checkpoint (format {CHECKPOINT_FORMAT})"
        )
    return state


def load_state(module: nn.Module, state_dict: Mapping[str, Any], *, path: Path, role: str) -> None:
    """Load ``state_dict`` into ``module`` strictly, naming the first mismatching key."""
    expected = module.state_dict()
    missing = [key for key in expected if key not in state_dict]
    unexpected = [key for key in state_dict if key not in expected]
    problems: list[str] = []
    if missing:
        problems.append(f"key {missing[0]!r} of the {role} missing from the checkpoint")
    if unexpected:
        problems.append(f"unexpected {role} key {unexpected[0]!r}")
    if problems:
        extra = len(missing) + len(unexpected) - len(problems)
        more = f" (and {extra} more mismatched keys)" if extra else ""
        raise SlicelibError(f"checkpoint {path}: {'; '.join(problems)}{more}")
    for key, tensor in expected.items():
        saved = state_dict[key]
        if isinstance(saved, torch.Tensor) and saved.shape != tensor.shape:
            raise SlicelibError(
                f"checkpoint {path}: {role} key {key!r} has shape {tuple(saved.shape)}, "
                f"the model expects {tuple(tensor.shape)}"
            )
    module.load_state_dict(state_dict, strict=True)


def check_finite_weights(state_dict: Mapping[str, Any], *, path: Path, role: str) -> None:
    """Refuse a checkpoint whose weights hold NaN or infinite values (a diverged or
    damaged run would otherwise predict black slices without an error)."""
    for key, tensor in state_dict.items():
        if (
            isinstance(tensor, torch.Tensor)
            and tensor.is_floating_point()
            and not bool(torch.isfinite(tensor).all())
        ):
            raise SlicelibError(
                f"checkpoint {path}: {role} key {key!r} holds NaN or infinite values"
            )


def check_compatible(
    state: Mapping[str, Any],
    path: Path,
    *,
    model: str | None = None,
    k: int | None = None,
    image_size: int | None = None,
) -> None:
    """Raise unless the checkpoint holds ``model`` trained at ``k`` on ``image_size`` images
    (each check skipped when None)."""
    saved = (state.get("model"), state.get("k"), state.get("image_size"))
    wanted = (model, k, image_size)
    if any(w is not None and w != s for w, s in zip(wanted, saved)):

        def describe(m: Any, kk: Any, size: Any) -> str:
            return f"model {m!r} at k={kk} on {size} px images"

        raise SlicelibError(
            f"checkpoint {path} holds {describe(*saved)}, expected "
            f"{describe(*(w if w is not None else s for w, s in zip(wanted, saved)))}"
        )


@dataclass
class LoadedRun:
    """A trained network ready to predict (through :class:`Predictor`).

    A refinement run also has ``refine`` (its settings; ``config`` is ``refine.train``),
    ``base`` (the U-Net it refines, eval mode) and ``residual_scale``.
    """

    config: TrainConfig
    image_size: int  # side of the cache images it was trained on
    model: nn.Module  # eval mode: the generator, or the DDPM's (or refiner's) denoiser
    epoch: int  # epochs completed when the checkpoint was written
    history: list[dict[str, float]]
    path: Path  # the checkpoint file
    device: torch.device
    best_epoch: int
    cache_config: PrepareConfig | None = None
    slicelib_version: str = ""
    refine: RefineConfig | None = None
    base: nn.Module | None = None
    residual_scale: float | None = None
    # what the run was trained on (slicelib.model_card.training_domain); None in older runs
    training_domain: dict[str, Any] | None = None

    @property
    def name(self) -> str:
        """The model's name, or ``"refine"`` for a refinement run (its methods' family)."""
        return refine.KIND if self.refine is not None else self.config.model

    @property
    def samples_noise(self) -> bool:
        """True when predictions are sampled (the DDPM, the refiner)."""
        return self.refine is not None or self.config.model == "ddpm"


# Hex digits of a checkpoint's SHA-256 that name it in what leaves the machine (64 bits:
# unique among any realistic number of checkpoints, short enough to read).
DIGEST_CHARS = 16


def checkpoint_digest(path: Path) -> str:
    """The SHA-256 (hex) of the checkpoint file's bytes: the model's name in derived
    data, the same wherever the file lies."""
    sha = hashlib.sha256()
    try:
        with open(path, "rb") as fh:
            for block in iter(lambda: fh.read(1 << 20), b""):
                sha.update(block)
    except OSError as exc:
        raise SlicelibError(f"checkpoint {path}: cannot read ({exc.strerror or exc})") from None
    return sha.hexdigest()


def checkpoint_label(path: Path) -> str:
    """``sha256:<first DIGEST_CHARS hex digits>`` of the checkpoint at ``path``."""
    return f"sha256:{checkpoint_digest(path)[:DIGEST_CHARS]}"


def checkpoint_path(run_dir: str | Path, which: str = "best") -> Path:
    """``run_dir/{which}.pt``; a path to a ``.pt`` file is returned as it is."""
    run_dir = Path(run_dir)
    if run_dir.suffix == ".pt":
        return run_dir
    if which not in CHECKPOINT_NAMES:
        raise SlicelibError(f"unknown checkpoint {which!r} (choose {', '.join(CHECKPOINT_NAMES)})")
    return run_dir / f"{which}.pt"


def load_run(
    run_dir: str | Path,
    *,
    which: str = "best",
    device: str | torch.device = "cpu",
    model: str | None = None,
    k: int | None = None,
    image_size: int | None = None,
) -> LoadedRun:
    """Rebuild the network of a training run from ``run_dir/{which}.pt`` in eval mode.

    ``model``, ``k`` and ``image_size``, when given, must match what the checkpoint
    was trained with (a checkpoint of another model or size is a one-line error).
    """
    path = checkpoint_path(run_dir, which)
    torch_device = resolve_device(device) if isinstance(device, str) else device
    state = read_checkpoint(path, torch_device)
    check_compatible(state, path, model=model, k=k, image_size=image_size)
    is_refine = state.get("model") == refine.KIND
    try:
        config = from_dict(TrainConfig, state["train_config"])
        cache_config = (
            from_dict(PrepareConfig, state["cache_config"]) if state.get("cache_config") else None
        )
        role = "denoiser" if is_refine else generator_role(config.model)
        weights = state["models"][role]
        extra: dict[str, Any] = {}
        if is_refine:
            extra["refine"] = from_dict(RefineConfig, state["refine_config"])
            unet_config = from_dict(TrainConfig, state["objective"]["unet_config"])
            base = build_generator(unet_config.model, unet_config.model_cfg)
            check_finite_weights(state["models"]["generator"], path=path, role="generator")
            load_state(base, state["models"]["generator"], path=path, role="generator")
            extra["base"] = base.to(torch_device).eval()
            extra["residual_scale"] = float(state["objective"]["residual_scale"])
    except (KeyError, TypeError) as exc:
        raise SlicelibError(f"checkpoint {path} lacks its {exc} entry") from None
    if is_refine:
        network: nn.Module = refine.build_denoiser(config.model_cfg)
    else:
        network = build_generator(config.model, config.model_cfg)
    check_finite_weights(weights, path=path, role=role)
    load_state(network, weights, path=path, role=role)
    network.to(torch_device).eval()
    log.info("loaded %s (epoch %d) from %s", state["model"], state["epoch"], path)
    return LoadedRun(
        **extra,
        config=config,
        image_size=int(state["image_size"]),
        model=network,
        epoch=int(state["epoch"]),
        history=list(state.get("history", [])),
        path=path,
        device=torch_device,
        best_epoch=int(state.get("best_epoch", state["epoch"])),
        cache_config=cache_config,
        slicelib_version=str(state.get("slicelib_version", "")),
        training_domain=state.get("training_domain"),
    )
