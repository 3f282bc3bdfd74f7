"""``slicelib prepare DATA_ROOT CACHE_DIR [--size N] [--seed S] [--clip-percentiles] [--force]``."""

from __future__ import annotations

import argparse
import dataclasses

from slicelib.cli.scan import add_scan_options, scan_config
from slicelib.cli.types import (
    MAX_SEED,
    add_preset_option,
    bounded_int,
    non_negative_int,
    path_arg,
)
from slicelib.config import (
    DEFAULT_INPUT_KIND,
    INPUT_KIND_RULE,
    INPUT_KINDS,
    ORIGINAL_CLIP_PERCENTILES,
    USER_PRESET,
    PrepareConfig,
    get_preset,
    given,
)

# A slice of 4096 x 4096 float32 is 64 MB; beyond that a typo, not a study setting.
MIN_SIZE, MAX_SIZE = 8, 4096


def register(sub: argparse._SubParsersAction) -> argparse.ArgumentParser:
    parser = sub.add_parser(
        "prepare",
        help="scan, filter, normalise and resize a cohort into a cache with a seeded split",
        description="Build the preprocessed cache from a DICOM tree (or a folder of NIfTI "
        "volumes, one per patient). Unset options come from the preset (default: paper, "
        "the study's settings).",
    )
    parser.add_argument("data_root", type=path_arg, metavar="DATA_ROOT")
    parser.add_argument("cache_dir", type=path_arg, metavar="CACHE_DIR")
    add_preset_option(parser, "settings to start from", USER_PRESET)
    parser.add_argument(
        "--size",
        type=bounded_int(MIN_SIZE, MAX_SIZE),
        default=None,
        help=f"slice size in pixels (default: the preset's; paper {PrepareConfig.size})",
    )
    parser.add_argument(
        "--seed",
        type=non_negative_int(MAX_SEED),
        default=None,
        help=f"split seed (default: the preset's; paper {PrepareConfig.seed})",
    )
    lo, hi = ORIGINAL_CLIP_PERCENTILES
    parser.add_argument(
        "--clip-percentiles",
        action="store_true",
        help=f"clip to the {lo:g}-{hi:g}th percentiles before min-max (the original code)",
    )
    add_scan_options(parser, volume_cap=True)
    parser.add_argument(
        "--input-kind",
        choices=INPUT_KINDS,
        default=DEFAULT_INPUT_KIND,
        help=f"what DATA_ROOT holds ({INPUT_KIND_RULE})",
    )
    parser.add_argument(
        "--slice-axis",
        type=int,
        choices=(0, 1, 2),
        default=None,
        help="NIfTI only: the through-plane voxel axis (default: from the header's dim_info, "
        "else the axis of largest spacing, else the third axis)",
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
    changes = given(size=args.size, seed=args.seed, slice_axis=args.slice_axis)
    if args.clip_percentiles:
        changes["clip_percentiles"] = ORIGINAL_CLIP_PERCENTILES
    cfg = dataclasses.replace(preset.prepare, **changes)
    scan_cfg = scan_config(preset.scan, args)
    prepare(
        args.data_root,
        args.cache_dir,
        cfg,
        scan_cfg,
        force=args.force,
        progress=not args.no_progress,
        input_kind=args.input_kind,
    )
    return 0
