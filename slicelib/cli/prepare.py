"""``slicelib prepare DATA_ROOT CACHE_DIR [--size N] [--seed S] [--clip-percentiles] [--force]``."""

from __future__ import annotations

import argparse
import dataclasses
from pathlib import Path
from typing import Any

from slicelib.config import (
    DEFAULT_PRESET,
    ORIGINAL_CLIP_PERCENTILES,
    PrepareConfig,
    ScanConfig,
    get_preset,
)


def register(sub: argparse._SubParsersAction) -> argparse.ArgumentParser:
    parser = sub.add_parser(
        "prepare",
        help="scan, filter, normalise and resize a cohort into a cache with a seeded split",
        description="Build the preprocessed cache from a DICOM tree (or a folder of NIfTI "
        "volumes, one per patient). Unset options come from the preset (default: demo).",
    )
    parser.add_argument("data_root", type=Path, metavar="DATA_ROOT")
    parser.add_argument("cache_dir", type=Path, metavar="CACHE_DIR")
    parser.add_argument(
        "--preset",
        default=DEFAULT_PRESET,
        help=f"settings to start from (demo, paper, smoke; default {DEFAULT_PRESET})",
    )
    parser.add_argument(
        "--size",
        type=int,
        default=None,
        help=f"slice size in pixels (default: the preset's; paper {PrepareConfig.size})",
    )
    parser.add_argument(
        "--seed",
        type=int,
        default=None,
        help=f"split seed (default: the preset's; paper {PrepareConfig.seed})",
    )
    lo, hi = ORIGINAL_CLIP_PERCENTILES
    parser.add_argument(
        "--clip-percentiles",
        action="store_true",
        help=f"clip to the {lo:g}-{hi:g}th percentiles before min-max (the original code)",
    )
    parser.add_argument(
        "--workers",
        type=int,
        default=None,
        help=f"header-reading processes (0: one per CPU core; default {ScanConfig.workers})",
    )
    parser.add_argument(
        "--force", action="store_true", help="replace an existing cache made with other settings"
    )
    parser.add_argument("--no-progress", action="store_true", help="hide the progress bars")
    parser.set_defaults(func=handler)
    return parser


def handler(args: argparse.Namespace) -> int:
    from slicelib.data.prepare import prepare

    preset = get_preset(args.preset)
    changes: dict[str, Any] = {}
    if args.size is not None:
        changes["size"] = args.size
    if args.seed is not None:
        changes["seed"] = args.seed
    if args.clip_percentiles:
        changes["clip_percentiles"] = ORIGINAL_CLIP_PERCENTILES
    cfg = dataclasses.replace(preset.prepare, **changes)
    scan_cfg = preset.scan
    if args.workers is not None:
        scan_cfg = dataclasses.replace(scan_cfg, workers=args.workers)
    prepare(
        args.data_root,
        args.cache_dir,
        cfg,
        scan_cfg,
        force=args.force,
        progress=not args.no_progress,
    )
    return 0
