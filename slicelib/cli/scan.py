"""``slicelib scan DATA_ROOT [--csv FILE]``: one row per series, criteria, summary."""

from __future__ import annotations

import argparse
import dataclasses
from typing import Any

from slicelib.cli.types import bounded_float, non_negative_int, output_file, path_arg
from slicelib.config import ScanConfig, given

# Bounds of the numeric options shared by scan, prepare and upsample.
MAX_WORKERS = 1024
MAX_SLICE_MB_LIMIT = 65536.0
MAX_VOLUME_MB_LIMIT = 1048576.0


def add_size_caps(parser: argparse.ArgumentParser, *, volume: bool = True) -> None:
    """--max-slice-mb (and, with ``volume``, --max-volume-mb): the safety caps on what a
    header announces, checked before any pixel is read or decompressed."""
    parser.add_argument(
        "--max-slice-mb",
        type=bounded_float(0.0, MAX_SLICE_MB_LIMIT, lo_open=True),
        default=None,
        help="largest decoded image a file may announce in its header, in MB "
        f"(rows x columns x frames x bytes; checked before any pixel is read; "
        f"default {ScanConfig.max_slice_mb:g})",
    )
    if volume:
        parser.add_argument(
            "--max-volume-mb",
            type=bounded_float(0.0, MAX_VOLUME_MB_LIMIT, lo_open=True),
            default=None,
            help="largest volume (a DICOM series, a NIfTI file) as read into float32, in "
            "MB, from the headers before any voxel is read or decompressed (default "
            f"{ScanConfig.max_volume_mb:g})",
        )


def add_scan_options(parser: argparse.ArgumentParser, *, volume_cap: bool = False) -> None:
    """--workers and the size caps (:func:`add_size_caps`), shared with ``prepare``."""
    parser.add_argument(
        "--workers",
        type=non_negative_int(MAX_WORKERS),
        default=None,
        help=f"header-reading processes (0: one per CPU core; default {ScanConfig.workers})",
    )
    add_size_caps(parser, volume=volume_cap)


def size_caps(args: argparse.Namespace) -> dict[str, float]:
    """The caps of :func:`add_size_caps` that were given, by ScanConfig field."""
    names = ("max_slice_mb", "max_volume_mb")
    return given(**{n: getattr(args, n, None) for n in names})


def scan_config(cfg: ScanConfig, args: argparse.Namespace) -> ScanConfig:
    """``cfg`` with the options of :func:`add_scan_options` that were given."""
    changes: dict[str, Any] = {**size_caps(args), **given(workers=args.workers)}
    return dataclasses.replace(cfg, **changes)


def register(sub: argparse._SubParsersAction) -> argparse.ArgumentParser:
    parser = sub.add_parser(
        "scan",
        help="list the DICOM series under a folder and which pass the inclusion criteria",
        description="Read every DICOM header under DATA_ROOT (no pixel data), group files by "
        "SeriesInstanceUID, apply the inclusion criteria and choose one series per patient.",
    )
    parser.add_argument("data_root", type=path_arg, metavar="DATA_ROOT")
    parser.add_argument(
        "--csv", type=output_file, metavar="FILE", help="write one row per series here"
    )
    add_scan_options(parser)
    parser.add_argument("--no-progress", action="store_true", help="hide the progress bar")
    parser.set_defaults(func=handler)
    return parser


def handler(args: argparse.Namespace) -> int:
    from slicelib.data.scan import scan

    cfg = scan_config(ScanConfig(), args)
    result = scan(args.data_root, cfg, progress=not args.no_progress)
    result.log_summary()
    if args.csv is not None:
        result.write_csv(args.csv)
    return 0
