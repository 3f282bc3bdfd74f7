"""``slicelib scan DATA_ROOT [--csv FILE]``: one row per series, criteria, summary."""

from __future__ import annotations

import argparse
import dataclasses
from pathlib import Path

from slicelib.config import ScanConfig


def register(sub: argparse._SubParsersAction) -> argparse.ArgumentParser:
    parser = sub.add_parser(
        "scan",
        help="list the DICOM series under a folder and which pass the inclusion criteria",
        description="Read every DICOM header under DATA_ROOT (no pixel data), group files by "
        "SeriesInstanceUID, apply the inclusion criteria and choose one series per patient.",
    )
    parser.add_argument("data_root", type=Path, metavar="DATA_ROOT")
    parser.add_argument("--csv", type=Path, metavar="FILE", help="write one row per series here")
    parser.add_argument(
        "--workers",
        type=int,
        default=None,
        help=f"header-reading processes (0: one per CPU core; default {ScanConfig.workers})",
    )
    parser.add_argument("--no-progress", action="store_true", help="hide the progress bar")
    parser.set_defaults(func=handler)
    return parser


def handler(args: argparse.Namespace) -> int:
    from slicelib.data.scan import scan

    cfg = ScanConfig()
    if args.workers is not None:
        cfg = dataclasses.replace(cfg, workers=args.workers)
    result = scan(args.data_root, cfg, progress=not args.no_progress)
    result.log_summary()
    if args.csv is not None:
        result.write_csv(args.csv)
    return 0
