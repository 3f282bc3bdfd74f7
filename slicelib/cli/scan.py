"""``slicelib scan DATA_ROOT [--csv FILE]``: one row per series, criteria, summary."""

from __future__ import annotations

import argparse
import dataclasses
from pathlib import Path

from slicelib.cli.types import bounded_float, non_negative_int, output_file
from slicelib.config import ScanConfig

# Bounds of the numeric options shared by scan and prepare.
MAX_WORKERS = 1024
MAX_SLICE_MB_LIMIT = 65536.0


def add_scan_options(parser: argparse.ArgumentParser) -> None:
    """--workers and --max-slice-mb, shared with ``prepare``."""
    parser.add_argument(
        "--workers",
        type=non_negative_int(MAX_WORKERS),
        default=None,
        help=f"header-reading processes (0: one per CPU core; default {ScanConfig.workers})",
    )
    parser.add_argument(
        "--max-slice-mb",
        type=bounded_float(0.0, MAX_SLICE_MB_LIMIT, lo_open=True),
        default=None,
        help="largest decoded image a file may announce in its header, in MB "
        f"(rows x columns x frames x bytes; checked before any pixel is read; "
        f"default {ScanConfig.max_slice_mb:g})",
    )


def scan_config(cfg: ScanConfig, args: argparse.Namespace) -> ScanConfig:
    """``cfg`` with the options of :func:`add_scan_options` that were given."""
    changes = {
        k: v
        for k, v in (("workers", args.workers), ("max_slice_mb", args.max_slice_mb))
        if v is not None
    }
    return dataclasses.replace(cfg, **changes)


def register(sub: argparse._SubParsersAction) -> argparse.ArgumentParser:
    parser = sub.add_parser(
        "scan",
        help="list the DICOM series under a folder and which pass the inclusion criteria",
        description="Read every DICOM header under DATA_ROOT (no pixel data), group files by "
        "SeriesInstanceUID, apply the inclusion criteria and choose one series per patient.",
    )
    parser.add_argument("data_root", type=Path, metavar="DATA_ROOT")
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
