"""``slicelib train``: train one model at one k on a prepared cache.

Works the same under ``torchrun --nproc_per_node N -m slicelib train ...``
(DistributedDataParallel; ``--batch-size`` is the effective batch, split over the
processes: :data:`slicelib.config.BATCH_RULE`).
"""

from __future__ import annotations

import argparse
from typing import get_args

from slicelib.cli.types import (
    MAX_BATCH,
    MAX_COUNT,
    MAX_K,
    add_preset_option,
    path_arg,
    positive_int,
)
from slicelib.config import MODEL_NAMES, USER_PRESET, Precision, get_preset, given
from slicelib.errors import SlicelibError


def register(sub: argparse._SubParsersAction) -> argparse.ArgumentParser:  # type: ignore[type-arg]
    parser = sub.add_parser(
        "train",
        help="train a model on a prepared cache",
        description=(
            "Train one model at one k. Defaults come from the preset; the run directory "
            "receives best.pt, last.pt, history.csv and config.json, and an existing run "
            "there resumes from last.pt."
        ),
    )
    parser.add_argument("--model", required=True, choices=MODEL_NAMES, help="the network to train")
    parser.add_argument(
        "--k", type=positive_int(MAX_K), required=True, help=f"neighbour distance (1..{MAX_K})"
    )
    parser.add_argument("--cache", type=path_arg, required=True, help="prepared cache directory")
    parser.add_argument("--out", type=path_arg, required=True, help="run directory")
    add_preset_option(parser, "settings to start from", USER_PRESET)
    parser.add_argument(
        "--epochs", type=positive_int(MAX_COUNT), help="override the preset's epochs"
    )
    parser.add_argument(
        "--batch-size",
        type=positive_int(MAX_BATCH),
        help="override the preset's batch size, the effective batch over all processes "
        "(under torchrun each of N processes takes 1/N of it)",
    )
    parser.add_argument("--device", help="auto, cpu, cuda or cuda:N (default auto)")
    parser.add_argument(
        "--precision", choices=get_args(Precision), help="mixed precision on CUDA (default fp16)"
    )
    parser.add_argument("--compile", action="store_true", help="torch.compile the networks")
    parser.add_argument(
        "--no-resume", action="store_true", help="start afresh even if the run directory has one"
    )
    parser.set_defaults(func=handler)
    return parser


def handler(args: argparse.Namespace) -> int:
    from slicelib.device import check_precision, resolve_device
    from slicelib.distributed import env_info
    from slicelib.train import train

    overrides = given(
        epochs=args.epochs, batch_size=args.batch_size, device=args.device, precision=args.precision
    )
    if args.compile:
        overrides["compile"] = True
    if args.precision is not None:
        check_precision(args.precision)
    if args.device is not None:
        resolve_device(args.device)
    if not args.cache.is_dir():
        raise SlicelibError(f"cache directory {args.cache} not found")
    cfg = get_preset(args.preset).train_config(args.model, args.k, **overrides)
    result = train(cfg, args.cache, args.out, resume=not args.no_resume)
    best = next(row for row in result.history if row["epoch"] == result.best_epoch)
    if env_info().is_main:
        print(
            f"{cfg.model} k={cfg.k}: best epoch {result.best_epoch} "
            f"(val PSNR {best['val_psnr']:.2f} dB, SSIM {best['val_ssim']:.4f}, "
            f"loss {best['val_loss']:.4f}) -> {result.run_dir / 'best.pt'}"
        )
    return 0
